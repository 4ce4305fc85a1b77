import Foundation
import Model
import Testing

/// Logits, loss and every gradient against transformers, on checkpoints transformers saved.
@Suite struct ConformanceTests {
    @Test(arguments: ["llama_gqa", "llama_tied", "nemotron_partial", "llama_long", "mixtral_moe", "jetmoe_moa",
                      "qwen2_sliding", "qwen2_tied", "qwen3_qknorm", "mistral_sliding", "qwen3_moe_dense_layer", "qwen3_moe_norm_topk",
                      "llama_rope_linear", "llama_rope_dynamic", "llama_rope_llama3", "qwen2_yarn", "mistral_yarn_mscale",
                      "nemotron_h_hybrid", "nemotron_h_untied", "nemotron_h_moe", "nemotron_h_latent",
                      "qwen3_5_hybrid", "qwen3_5_tied", "qwen3_5_vl", "qwen3_5_moe_vl", "qwen3_5_moe_hybrid", "qwen3_5_moe_tied"])
    func matchesTransformers(_ name: String) throws {
        let dir = fixtures.appendingPathComponent(name)
        let model = try Checkpoint.load(dir)
        let ids = try JSONDecoder().decode([String: [[Int]]].self,
                                           from: Data(contentsOf: dir.appendingPathComponent("input_ids.json")))["input_ids"]!
        let report = try LogitsReport(model: model, inputIDs: ids, gradients: true)
        let expected = try SafeTensorsFile(url: dir.appendingPathComponent("expected.safetensors"))
        #expect(try expected.info("logits").shape == [report.batch, report.sequence, report.vocabulary])
        let logitError = relativeError(report.logits, try expected.floats("logits"))
        #expect(logitError < 1e-4, "logits relative error \(logitError)")
        let hfLoss = try expected.floats("loss")[0]
        #expect(abs(report.loss - hfLoss) / hfLoss < 1e-5, "loss \(report.loss) vs transformers \(hfLoss)")
        if expected.tensors["aux_loss"] != nil {
            let hfAux = try expected.floats("aux_loss")[0]
            #expect(report.auxLoss != nil && abs(report.auxLoss! - hfAux) / hfAux < 1e-5, "load-balancing loss \(String(describing: report.auxLoss)) vs transformers \(hfAux)")
        } else {
            #expect(report.auxLoss == nil)
        }
        let gradNames = Set(expected.tensors.keys.filter { $0.hasPrefix("grad:") })
        #expect(gradNames == Set(report.gradients.map { "grad:" + $0.name }))
        for g in report.gradients {
            let error = relativeError(g.values, try expected.floats("grad:" + g.name))
            #expect(error < 1e-3, "gradient of \(g.name): relative error \(error)")
        }
    }

    /// The rope fixtures test the scaling: the same weights without it give other logits (so a
    /// scaling read but not applied would fail the conformance test above).
    @Test(arguments: ["llama_rope_linear", "llama_rope_dynamic", "llama_rope_llama3", "qwen2_yarn", "mistral_yarn_mscale"])
    func ropeScalingMatters(_ name: String) throws {
        let dir = fixtures.appendingPathComponent(name)
        let model = try Checkpoint.load(dir)
        #expect(model.config.rope.kind != .default)
        var plain = model.config
        plain.rope = .none
        let unscaled = DecoderModel(config: plain)
        unscaled.parameters.pointer.update(from: model.parameters.pointer, count: model.parameters.count)
        let ids = try JSONDecoder().decode([String: [[Int]]].self,
                                           from: Data(contentsOf: dir.appendingPathComponent("input_ids.json")))["input_ids"]!
        let expected = try SafeTensorsFile(url: dir.appendingPathComponent("expected.safetensors")).floats("logits")
        let error = relativeError(try LogitsReport(model: unscaled, inputIDs: ids, gradients: false).logits, expected)
        #expect(error > 1e-3, "without its rope scaling \(name) is within \(error) of transformers: the fixture does not test it")
    }

    /// The Nemotron-H mixture fixtures test the sigmoid router's choice: without the correction
    /// bias, or with one group of experts instead of two, the logits move well past the tolerance
    /// (so a bias or grouping read but not applied would fail the conformance test above).
    @Test func nemotronHRouterChoiceMatters() throws {
        for (name, change) in [("nemotron_h_moe", "bias"), ("nemotron_h_moe", "groups"), ("nemotron_h_latent", "bias")] {
            let dir = fixtures.appendingPathComponent(name)
            let model = try Checkpoint.load(dir)
            var config = model.config
            if change == "groups" { config.routerGroups = 1 }
            let changed = DecoderModel(config: config)
            changed.parameters.pointer.update(from: model.parameters.pointer, count: model.parameters.count)
            if change == "bias" {
                for e in changed.layout.entries where e.role == .routerCorrectionBias {
                    (changed.parameters.pointer + e.offset).update(repeating: 0, count: e.count)
                }
            }
            let ids = try JSONDecoder().decode([String: [[Int]]].self,
                                               from: Data(contentsOf: dir.appendingPathComponent("input_ids.json")))["input_ids"]!
            let expected = try SafeTensorsFile(url: dir.appendingPathComponent("expected.safetensors")).floats("logits")
            let error = relativeError(try LogitsReport(model: changed, inputIDs: ids, gradients: false).logits, expected)
            #expect(error > 1e-3, "\(name) without its router's \(change) is within \(error) of transformers")
        }
    }

    /// Both spellings of a rope scaling (transformers 4's rope_scaling + rope_theta, 5's
    /// rope_parameters) read alike, and the config Topiary writes reads back equal.
    @Test func ropeSpellingsAgreeAndRoundTrip() throws {
        let v4 = try ModelConfig.load(fixtures.appendingPathComponent("llama_rope_linear/config.json"))
        #expect(v4.rope == RopeScaling(kind: .linear, factor: 4) && v4.ropeTheta == 500)
        var object = v4.json.object!
        #expect(object["rope_parameters"]?["rope_type"]?.string == "linear" && object["rope_scaling"]?["factor"]?.double == 4)
        object.removeValue(forKey: "rope_scaling")
        object.removeValue(forKey: "rope_theta")
        let v5 = try ModelConfig.decode(JSON.object(object).data())
        #expect(v5 == v4)
        for name in ["llama_rope_llama3", "qwen2_yarn", "mistral_yarn_mscale", "llama_rope_dynamic"] {
            let c = try ModelConfig.load(fixtures.appendingPathComponent("\(name)/config.json"))
            #expect(try ModelConfig.decode(c.json.data()) == c, "\(name) does not round-trip")
        }
        let yarn = try ModelConfig.load(fixtures.appendingPathComponent("mistral_yarn_mscale/config.json")).rope
        #expect(yarn == RopeScaling(kind: .yarn, factor: 2, originalMaxPositionEmbeddings: 32, betaFast: 8, betaSlow: 2,
                                    mscale: 1, mscaleAllDim: 0.5, truncate: false))
    }

    @Test(arguments: ["f16", "bf16"])
    func readsShardedHalfPrecision(_ tag: String) throws {
        let dir = fixtures.appendingPathComponent("llama_gqa_sharded_" + tag)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors.index.json").path))
        let model = try Checkpoint.load(dir)
        let reference = try SafeTensorsFile(url: dir.appendingPathComponent("reference_f32.safetensors"))
        for e in model.layout.entries {
            #expect(Array(model.tensor(e.name)!) == (try reference.floats(e.name)), "\(e.name) differs after \(tag) conversion")
        }
    }

    /// Writing half precision rounds as torch does: llama_gqa's float32 weights written as
    /// bfloat16 and float16 equal the copies transformers saved with `dtype=torch.bfloat16/float16`,
    /// bit for bit; the storage type is read back from the headers and named in config.json.
    @Test(arguments: [StorageType.bfloat16, .float16])
    func writesHalfPrecisionAsTorchRounds(_ type: StorageType) throws {
        let model = try Checkpoint.load(fixtures.appendingPathComponent("llama_gqa"))
        let out = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        try Checkpoint.save(model, to: out, type: type)
        #expect(try Checkpoint.storageType(out) == type)
        #expect(JSON.parse(try Data(contentsOf: out.appendingPathComponent("config.json")))?["dtype"]?.string == type.rawValue)
        let torch = try SafeTensorsFile(url: fixtures.appendingPathComponent("llama_gqa_sharded_\(type == .bfloat16 ? "bf16" : "f16")/reference_f32.safetensors"))
        let ours = try Checkpoint.load(out)
        for e in ours.layout.entries {
            #expect(Array(ours.tensor(e.name)!) == (try torch.floats(e.name)), "\(e.name) rounds differently from torch")
        }
        #expect(try Checkpoint.storageType(fixtures.appendingPathComponent("llama_gqa_sharded_bf16")) == .bfloat16)
        #expect(try Checkpoint.storageType(fixtures.appendingPathComponent("llama_gqa")) == .float32)
    }

    @Test func savedCheckpointRoundTrips() throws {
        let model = try Checkpoint.load(fixtures.appendingPathComponent("nemotron_partial"))
        for shard in [nil, 4096] as [Int?] {
            let out = temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: out) }
            try Checkpoint.save(model, to: out, shardBytes: shard)
            let again = try Checkpoint.load(out)
            #expect(again.config == model.config)
            #expect(again.parameters.array == model.parameters.array)
            let files = try FileManager.default.contentsOfDirectory(atPath: out.path)
            #expect(files.contains("model.safetensors.index.json") == (shard != nil))
            #expect(!files.contains { $0.contains(".tmp") })
        }
    }
}
