import Foundation
import Model
import Testing

/// Malformed, truncated and lying files get an error that names the file and the tensor or key.
@Suite struct SafeTensorsBadInputTests {
    /// A valid two-tensor file's bytes: header length, header JSON, data.
    func file(header: String, dataBytes: Int) -> Data {
        var h = Data(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var d = Data()
        var n = UInt64(h.count).littleEndian
        d.append(Data(bytes: &n, count: 8))
        d.append(h)
        d.append(Data(repeating: 0, count: dataBytes))
        return d
    }

    func error(_ data: Data) -> String? {
        do { _ = try SafeTensorsFile(data: data, path: "x.safetensors"); return nil } catch { return "\(error)" }
    }

    @Test func validFileOpens() throws {
        let d = file(header: #"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#, dataBytes: 32)
        let f = try SafeTensorsFile(data: d, path: "x")
        #expect(f.names == ["a", "b"])
        #expect(try f.floats("b") == [0, 0, 0, 0])
    }

    @Test func shorterThanLength() { #expect(error(Data([1, 2, 3]))?.contains("truncated") == true) }

    @Test func headerClaimsGigabytes() {
        var d = Data()
        var n = UInt64(5 << 30).littleEndian
        d.append(Data(bytes: &n, count: 8))
        d.append(Data(repeating: 0x20, count: 64))
        #expect(error(d)?.contains("header claims") == true)
    }

    @Test func headerLongerThanFile() {
        var d = Data()
        var n = UInt64(1000).littleEndian
        d.append(Data(bytes: &n, count: 8))
        d.append(Data("{}".utf8))
        #expect(error(d)?.contains("truncated") == true)
    }

    @Test func truncatedData() {
        let d = file(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, dataBytes: 10)
        let e = error(d)
        #expect(e?.contains("'w'") == true && e?.contains("outside") == true, "\(e ?? "no error")")
    }

    @Test func overlappingTensors() {
        let d = file(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, dataBytes: 16)
        let e = error(d)
        #expect(e?.contains("overlap") == true && e?.contains("'b'") == true, "\(e ?? "no error")")
    }

    @Test func shapeDisagreesWithOffsets() {
        let d = file(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, dataBytes: 16)
        #expect(error(d)?.contains("'a'") == true)
    }

    /// Issue 16 item 16: reversed offsets are called reversed (not a truncated file), and offsets
    /// too large for any file say so.
    @Test func reversedAndHugeOffsetsSayWhat() {
        let reversed = error(file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, dataBytes: 8))
        #expect(reversed?.contains("reversed") == true && reversed?.contains("truncated") == false, "\(reversed ?? "no error")")
        let huge = error(file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4611686018427387904]}}"#, dataBytes: 8))
        #expect(huge?.contains("beyond any file") == true, "\(huge ?? "no error")")
        let negative = error(file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}"#, dataBytes: 8))
        #expect(negative?.contains("negative") == true, "\(negative ?? "no error")")
    }

    @Test func unknownDtypeAndGarbageHeader() {
        #expect(error(file(header: #"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, dataBytes: 1))?.contains("unknown dtype") == true)
        #expect(error(file(header: "not json", dataBytes: 0))?.contains("not a JSON object") == true)
    }
}

@Suite struct CheckpointBadInputTests {
    func copyFixture(_ name: String) throws -> URL {
        let dir = temporaryDirectory(name)
        for f in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: fixtures.appendingPathComponent(name).appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        return dir
    }

    func loadError(_ dir: URL) -> String? {
        do { _ = try Checkpoint.load(dir); return nil } catch { return "\(error)" }
    }

    func editConfig(_ dir: URL, _ edit: (inout [String: JSON]) -> Void) throws {
        let url = dir.appendingPathComponent("config.json")
        var json = JSON.parse(try Data(contentsOf: url))!.object!
        edit(&json)
        try JSON.object(json).data().write(to: url)
    }

    @Test func configShapeDoesNotMatchWeights() throws {
        let dir = try copyFixture("llama_gqa")
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0["intermediate_size"] = 48 }
        let e = loadError(dir)
        #expect(e?.contains("mlp.gate_proj.weight") == true && e?.contains("shape") == true, "\(e ?? "no error")")
    }

    @Test func missingAndExtraTensors() throws {
        let dir = try copyFixture("llama_gqa")
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0["num_hidden_layers"] = 3 }
        #expect(loadError(dir)?.contains("model.layers.2.") == true)
        try editConfig(dir) { $0["num_hidden_layers"] = 1 }
        let e = loadError(dir)
        #expect(e?.contains("unexpected") == true && e?.contains("model.layers.1.") == true, "\(e ?? "no error")")
    }

    @Test func tiedHeadMustEqualEmbedding() throws {
        let dir = try copyFixture("llama_gqa")
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0["tie_word_embeddings"] = true }
        #expect(loadError(dir)?.contains("lm_head.weight") == true)
    }

    @Test(arguments: [
        ("model_type", JSON.string("gpt2"), "model_type"),
        ("rope_scaling", JSON.object(["rope_type": "longrope", "factor": 2.0]), "rope_scaling.rope_type"),
        ("rope_scaling", JSON.object(["rope_type": "linear"]), "rope_scaling.factor"),
        ("rope_scaling", JSON.object(["rope_type": "linear", "factor": 2.0, "beta_fast": 4.0]), "rope_scaling.beta_fast"),
        ("rope_parameters", JSON.object(["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0]), "rope_parameters.high_freq_factor"),
        ("rope_parameters", JSON.object(["rope_type": "yarn", "factor": -2.0]), "rope_parameters.factor"),
        ("quantization_config", JSON.object(["quant_method": "gptq", "bits": 4]), "quantization_config"),
        ("pruned_heads", JSON.object(["0": [1]]), "pruned_heads"),
        ("attention_bias", JSON.bool(true), "attention_bias"),
        ("hidden_act", JSON.string("gelu"), "hidden_act"),
        ("num_key_value_heads", JSON.number(3), "num_key_value_heads"),
    ])
    func unsupportedConfigNamesKey(_ key: String, _ value: JSON, _ expected: String) throws {
        let dir = try copyFixture("llama_gqa")
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0[key] = value }
        let e = loadError(dir)
        #expect(e?.contains(expected) == true, "\(e ?? "no error")")
    }

    /// Mixture configs and the families' own keys (windows, layer types, dense MLP layers): each
    /// impossible combination names its key.
    @Test(arguments: [
        ("mixtral_moe", "num_experts_per_tok", JSON.number(5), "num_experts_per_tok"),
        ("mixtral_moe", "num_local_experts", JSON.number(0), "num_local_experts"),
        ("mixtral_moe", "router_jitter_noise", JSON.number(0.1), "router_jitter_noise"),
        ("jetmoe_moa", "num_attention_heads", JSON.number(6), "num_attention_heads"),
        ("jetmoe_moa", "num_experts_per_tok", JSON.number(7), "num_experts_per_tok"),
        ("jetmoe_moa", "activation_function", JSON.string("gelu"), "activation_function"),
        ("qwen3_moe_dense_layer", "mlp_only_layers", JSON.array([7]), "mlp_only_layers"),
        ("qwen3_moe_dense_layer", "mlp_only_layers", JSON.string("1"), "mlp_only_layers"),
        ("qwen3_moe_dense_layer", "decoder_sparse_step", JSON.number(0), "decoder_sparse_step"),
        ("qwen3_moe_dense_layer", "moe_intermediate_size", JSON.number(-4), "moe_intermediate_size"),
        ("qwen3_moe_dense_layer", "num_experts", JSON.number(4), "num_experts"),            // beside num_local_experts
        ("qwen2_sliding", "layer_types", JSON.array(["full_attention"]), "layer_types"),
        ("qwen2_sliding", "layer_types", JSON.array(["full_attention", "chunked_attention"]), "layer_types"),
        ("qwen2_sliding", "sliding_window", JSON.number(0), "sliding_window"),
        ("mistral_sliding", "sliding_window", JSON.number(-3), "sliding_window"),
        ("qwen3_qknorm", "attention_bias", JSON.bool(true), "attention_bias"),
    ])
    func mixtureConfigErrorsNameTheKey(_ fixture: String, _ key: String, _ value: JSON, _ expected: String) throws {
        let dir = try copyFixture(fixture)
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0[key] = value }
        let e = loadError(dir)
        #expect(e?.contains(expected) == true, "\(e ?? "no error")")
    }

    /// Keys transformers' config class does not define for the family are ignored by
    /// transformers too: they load, are named in the config's passthrough (one warning at load),
    /// and are written back as they were.
    @Test(arguments: [
        ("llama_gqa", "mystery_option", JSON.number(1)),
        ("llama_gqa", "sliding_window", JSON.number(128)),           // not a LlamaConfig key
        ("llama_gqa", "transformers.js_config", JSON.object(["kv_cache_dtype": ["fp16": "float16"]])),
        ("mistral_sliding", "use_sliding_window", JSON.bool(true)),  // not a MistralConfig key
        ("qwen3_moe_dense_layer", "layer_types", JSON.array(["full_attention"])),
        ("mixtral_moe", "attention_bias", JSON.bool(true)),          // Mixtral's attention has no biases
    ])
    func keysTransformersIgnoresAreKeptAndWrittenBack(_ fixture: String, _ key: String, _ value: JSON) throws {
        let dir = try copyFixture(fixture)
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0[key] = value; $0["unk_token_id"] = 0 }
        let model = try Checkpoint.load(dir)
        #expect(model.config.passthrough.unknown == [key])
        #expect(model.config.passthrough.keys[key] == value && model.config.passthrough.keys["unk_token_id"] == JSON(0))
        let written = model.config.json
        #expect(written[key] == value && written["unk_token_id"] == JSON(0))
        #expect(try ModelConfig.decode(written.data()) == model.config)
    }

    @Test func configWithMoreExpertsThanTheCheckpoint() throws {
        let dir = try copyFixture("mixtral_moe")
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0["num_local_experts"] = 5 }
        let e = loadError(dir)
        #expect(e?.contains("block_sparse_moe.gate.weight") == true && e?.contains("[5, 32]") == true, "\(e ?? "no error")")
    }

    @Test(arguments: ["mixtral_moe", "jetmoe_moa"])
    func nanRouterIsAnErrorNamingTheRouter(_ fixture: String) throws {
        let model = try Checkpoint.load(fixtures.appendingPathComponent(fixture))
        let name = fixture == "mixtral_moe" ? "model.layers.1.block_sparse_moe.gate.weight" : "model.layers.1.mlp.router.layer.weight"
        model.tensor(name)![3] = .nan
        let acts = Activations(config: model.config, batch: 1, sequence: 4)
        do {
            try model.forward(tokens: [1, 2, 3, 4], acts)
            Issue.record("a NaN router weight went unnoticed")
        } catch {
            #expect("\(error)".contains(name) && "\(error)".contains("layer 1"), "\(error)")
        }
    }

    @Test func hiddenNotMultipleOfHeadsIsRefused() throws {
        var c = tinyConfig(.llama)
        c.hiddenSize = 18
        #expect(throws: ModelError.self) { try c.validate() }
    }

    @Test func nanWeightsAreNeverWritten() throws {
        let model = try Checkpoint.load(fixtures.appendingPathComponent("llama_tied"))
        model.parameters[5] = .nan
        let out = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        #expect(throws: ModelError.self) { try Checkpoint.save(model, to: out) }
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
    }

    @Test func unwritableOutputIsAnError() throws {
        let model = try Checkpoint.load(fixtures.appendingPathComponent("llama_tied"))
        #expect(throws: (any Error).self) { try Checkpoint.save(model, to: URL(fileURLWithPath: "/proc/topiary-cannot-write")) }
    }

    @Test func outOfVocabularyTokenIsAnError() throws {
        let model = try Checkpoint.load(fixtures.appendingPathComponent("llama_tied"))
        #expect(throws: ModelError.self) { _ = try LogitsReport(model: model, inputIDs: [[1, 2, 61]], gradients: false) }
        #expect(throws: ModelError.self) { _ = try LogitsReport(model: model, inputIDs: [[1, 2], [3]], gradients: false) }
    }
}

@Suite struct JSONWriterTests {
    @Test func floatsKeepAFractionAndValuesRoundTrip() throws {
        let v: JSON = ["a": .float(0), "b": 3, "c": .float(1e-5), "d": "quote \" slash / tab \t é", "e": [true, nil, 2.5], "f": [:]]
        let text = String(decoding: v.data(), as: UTF8.self)
        #expect(text.contains("\"a\": 0.0") && text.contains("\"b\": 3,") && text.contains("\"c\": 1e-05"), "\(text)")
        #expect(JSON.parse(v.data()) == v && JSON.parse(v.data(pretty: false)) == v)
        // transformers 5 refuses an int where its config declares a float: every float field is written as one.
        let config = String(decoding: tinyConfig(.mixtral).json.data(), as: UTF8.self)
        #expect(config.contains("\"router_jitter_noise\": 0.0") && config.contains("\"attention_dropout\": 0.0"), "\(config)")
    }
}
