import Foundation
import Model
import Testing

/// Issue 27, item 4: a heterogeneous checkpoint in the nemotron-nas format loads in transformers
/// (`trust_remote_code`, through the modeling file Topiary writes beside the weights) with the
/// same parameter count and logits equal to Topiary's within 1e-5. Needs the torch venv
/// (TOPIARY_TEST_PYTHON), like the torch backend's tests.
struct HeterogeneousExportTests {
    /// Six layers that differ: groups 2/1/none, MLP widths 512/256/none; rope scaled (llama3) so
    /// that the modeling file's rotary is checked beyond the default.
    static func config(tied: Bool) -> ModelConfig {
        var c = ModelConfig(
            family: .nemotronNAS, vocabSize: 97, hiddenSize: 32, intermediateSize: 512, numHiddenLayers: 6,
            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, normEps: 1e-5, ropeTheta: 500,
            tieWordEmbeddings: tied, maxPositionEmbeddings: 64, initializerRange: 0.2,
            rope: RopeScaling(kind: .llama3, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16))
        c.layerVariants = [
            LayerVariant(keyValueGroups: 2, mlpWidth: 512), LayerVariant(keyValueGroups: nil, mlpWidth: 256),
            LayerVariant(keyValueGroups: 1, mlpWidth: nil), LayerVariant(keyValueGroups: nil, mlpWidth: nil),
            LayerVariant(keyValueGroups: 2, mlpWidth: 256), LayerVariant(keyValueGroups: 1, mlpWidth: 512)
        ]
        return c
    }

    static let script = #"""
        import json, sys, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, dtype=torch.float32)
        tokens = torch.tensor([json.loads(sys.argv[2])])
        with torch.no_grad():
            logits = model(input_ids=tokens).logits[0]
        print(json.dumps({"parameters": model.num_parameters(), "class": type(model).__name__,
                          "logits": logits.tolist()}))
        """#

    @Test(arguments: [false, true])
    func transformersLoadsTheExportWithEqualLogits(tied: Bool) throws {
        guard let python = BackendTests.python("transformersLoadsTheExportWithEqualLogits") else { return }
        let c = Self.config(tied: tied)
        let model = DecoderModel(config: c)
        model.initialize(seed: 11)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("topiary-nas-\(getpid())-\(tied)")
        defer { if ProcessInfo.processInfo.environment["KEEP"] == nil { try? FileManager.default.removeItem(at: dir) } }
        try Checkpoint.save(model, to: dir)
        for file in ["configuration_decilm.py", "modeling_decilm.py"] {
            #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent(file).path), "\(file) beside the weights")
        }
        let tokens: [Int32] = (0..<24).map { Int32(($0 * 37 + 5) % 97) }
        let acts = Activations(config: c, batch: 1, sequence: tokens.count)
        try model.forward(tokens: tokens, acts)
        let ours = Array(acts.logits)
        let scriptFile = dir.appendingPathComponent("load.py")
        try Self.script.write(to: scriptFile, atomically: true, encoding: .utf8)
        let r = try Services.run(python, [scriptFile.path, dir.path, "[" + tokens.map(String.init).joined(separator: ",") + "]"])
        #expect(r.status == 0, "\(r.out)")
        let line = try #require(r.out.split(separator: "\n").last { $0.hasPrefix("{") }, "\(r.out)")
        let out = try #require(JSON.parse(Data(line.utf8)))
        #expect(out["class"]?.string == "DeciLMForCausalLM")
        #expect(out["parameters"]?.int == c.parameterCount, "transformers counts \(out["parameters"]?.int ?? -1)")
        let theirs = (out["logits"]?.array ?? []).flatMap { $0.array ?? [] }.compactMap { $0.double.map(Float.init) }
        #expect(theirs.count == ours.count)
        let scale = ours.map { abs($0) }.max() ?? 1
        let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? .infinity
        print("nemotron-nas export (tied \(tied)): transformers vs Topiary, worst logit difference \(worst) (largest logit \(scale))")
        #expect(worst <= 1e-5, "worst logit difference \(worst)")
    }
}
