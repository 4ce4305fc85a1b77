import Foundation
import Model
import Testing

/// Issue 26, item 2: a Nemotron-H checkpoint Topiary writes loads in transformers
/// (`NemotronHForCausalLM`, no remote code) with Topiary's parameter counts (total,
/// non-embedding, active) and logits within 1e-5, over a sequence that crosses transformers'
/// scan chunks. Needs the torch venv (TOPIARY_TEST_PYTHON), like the torch backend's tests.
struct HybridExportTests {
    static let script = #"""
        import json, sys, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="eager")
        model.eval()
        tokens = torch.tensor([json.loads(sys.argv[2])])
        with torch.no_grad():
            logits = model(input_ids=tokens).logits[0]
        sizes = {n: p.numel() for n, p in model.named_parameters()}
        non_embedding = sum(v for n, v in sizes.items() if n != "model.embeddings.weight" and n != "lm_head.weight")
        print(json.dumps({"parameters": model.num_parameters(), "non_embedding": non_embedding,
                          "class": type(model).__name__, "layers": model.config.layers_block_type,
                          "logits": logits.tolist()}))
        """#

    @Test(arguments: [true, false])
    func transformersLoadsANemotronHCheckpointWithEqualLogits(convBias: Bool) throws {
        guard let python = BackendTests.python("transformersLoadsANemotronHCheckpointWithEqualLogits") else { return }
        var c = ModelConfig(
            family: .nemotronH, vocabSize: 97, hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 5,
            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, maxPositionEmbeddings: 64, initializerRange: 0.2)
        c.hybridLayers = [.mamba, .mlp, .attention, .mamba, .mlp]
        c.mamba = MambaShape(heads: 4, headDim: 6, groups: 2, stateSize: 8, convKernel: 4)
        c.mambaChunkSize = 8
        c.mambaConvBias = convBias
        try c.validate()
        let model = DecoderModel(config: c)
        model.initialize(seed: 5)
        // Every 1-D tensor moved off its initial value, so that none is checked at a special case.
        var rng = SeededGenerator(seed: 9)
        for e in model.layout.entries where e.shape.count == 1 {
            let p = model.tensor(e.name)!
            for i in 0..<p.count { p[i] += Float(0.1 * rng.normal()) }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "topiary-nemotron-h-\(getpid())-\(convBias)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Checkpoint.save(model, to: dir)
        // What Topiary reads back is what it wrote.
        #expect(try ModelConfig.load(dir.appendingPathComponent("config.json")) == c)
        let tokens: [Int32] = (0..<30).map { Int32(($0 * 37 + 5) % 97) }
        let acts = Activations(config: c, batch: 1, sequence: tokens.count)
        try model.forward(tokens: tokens, acts)
        let ours = Array(acts.logits)
        let scriptFile = dir.appendingPathComponent("load.py")
        try Self.script.write(to: scriptFile, atomically: true, encoding: .utf8)
        let r = try Services.run(
            python, [scriptFile.path, dir.path, "[" + tokens.map(String.init).joined(separator: ",") + "]"])
        #expect(r.status == 0, "\(r.out)")
        let line = try #require(r.out.split(separator: "\n").last { $0.hasPrefix("{") }, "\(r.out)")
        let out = try #require(JSON.parse(Data(line.utf8)))
        #expect(out["class"]?.string == "NemotronHForCausalLM")
        #expect(
            out["layers"]?.array?.compactMap(\.string)
                == ["linear_attention", "mlp", "full_attention", "linear_attention", "mlp"])
        #expect(out["parameters"]?.int == c.parameterCount, "transformers counts \(out["parameters"]?.int ?? -1)")
        #expect(out["non_embedding"]?.int == c.nonEmbeddingParameterCount)
        #expect(c.activeParameterCount == c.parameterCount)
        let theirs = (out["logits"]?.array ?? []).flatMap { $0.array ?? [] }.compactMap { $0.double.map(Float.init) }
        #expect(theirs.count == ours.count)
        let scale = ours.map { abs($0) }.max() ?? 1
        let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? .infinity
        print(
            "nemotron_h checkpoint (conv bias \(convBias)): transformers vs Topiary, worst logit difference \(worst) "
                + "(largest logit \(scale))"
        )
        #expect(worst <= 1e-5, "worst logit difference \(worst)")
    }
}
