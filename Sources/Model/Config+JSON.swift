import Foundation

extension ModelConfig {
    /// Keys transformers writes that carry no arithmetic and that Topiary writes anew (or drops:
    /// a path, the transformers version, remote code, the default label maps).
    static let regeneratedKeys: Set<String> = [
        "architectures", "transformers_version", "torch_dtype", "dtype", "use_cache", "_name_or_path",
        "output_attentions", "output_hidden_states", "return_dict", "problem_type",
        "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "auto_map"
    ]

    /// `PretrainedConfig` keys (transformers 4 and 5) that carry no arithmetic of a decoder's
    /// forward pass: token ids, generation defaults, framework flags. Read, kept and written back
    /// as they were.
    static let pretrainedMetadataKeys: Set<String> = [
        "unk_token_id", "sep_token_id", "cls_token_id", "mask_token_id", "decoder_start_token_id",
        "tokenizer_class", "prefix", "task_specific_params", "finetuning_task", "max_length", "min_length",
        "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k",
        "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
        "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "torchscript",
        "use_bfloat16", "tf_legacy_loss", "is_decoder", "add_cross_attention", "tie_encoder_decoder",
        "cross_attention_hidden_size"
    ]

    /// Reads a `config.json`.
    /// - Throws: ``ModelError`` naming the file and key for unreadable JSON, an unknown
    ///   `model_type`, an unknown key, or an option the engine does not implement.
    public static func load(_ url: URL) throws -> ModelConfig {
        let object = try jsonObject(try FileIO.read(url, what: "config.json"), file: url.path)
        let config = try ConfigReader(json: object, file: url.path).modelConfig()
        if !config.passthrough.unknown.isEmpty { ConfigWarnings.once(file: url.path, config: config) }
        if let type = object["model_type"]?.string, type != config.family.rawValue {
            ConfigWarnings.once(
                file: url.path,
                line: "note: \(url.path) is a \(type) vision-language config: its language model is read "
                    + "(text_config, the model.language_model.* tensors), the vision tower left out; a model "
                    + "written from it is \(config.family.rawValue)\n")
        }
        return config
    }

    /// Decodes `config.json` bytes; see ``load(_:)``.
    public static func decode(_ data: Data, file: String = "config.json") throws -> ModelConfig {
        try ConfigReader(json: try jsonObject(data, file: file), file: file).modelConfig()
    }

    /// The top-level object of `config.json` bytes, or an error naming the file.
    static func jsonObject(_ data: Data, file: String) throws -> [String: JSON] {
        guard let json = JSON.parse(data)?.object else {
            throw ModelError.invalidConfig(file: file, key: "(root)", reason: "not a JSON object")
        }
        return json
    }

    /// The `config.json` object that transformers (v4 and v5) loads into the same model.
    public var json: JSON {
        var rope: [String: JSON] = ["rope_type": "default", "rope_theta": .float(ropeTheta)]
        var json: [String: JSON] = [
            "architectures": [.string(family.architecture)],
            "model_type": .string(family.rawValue),
            "vocab_size": JSON(vocabSize),
            "hidden_size": JSON(hiddenSize),
            family.definition.intermediateSizeKey: JSON(intermediateSize),
            "num_hidden_layers": JSON(numHiddenLayers),
            "num_attention_heads": JSON(numAttentionHeads),
            "num_key_value_heads": JSON(numKeyValueHeads),
            "max_position_embeddings": JSON(maxPositionEmbeddings),
            "initializer_range": .float(initializerRange),
            "tie_word_embeddings": .bool(tieWordEmbeddings),
            "attention_dropout": .float(0),
            "rope_theta": .float(ropeTheta),
            "use_cache": true,
            "dtype": "float32"
        ]
        json["head_dim"] = JSON(headDim)
        family.definition.writeKeys(self, into: &json, rope: &rope)
        for (key, value) in self.rope.json where self.rope.kind != .default { rope[key] = value }
        if family.definition.hasRotary {
            json["rope_parameters"] = .object(rope)
            // transformers 4 reads the scaling from rope_scaling (5 reads either; they agree).
            if self.rope.kind != .default { json["rope_scaling"] = .object(rope) }
        } else {
            json["rope_theta"] = nil
        }
        for (key, value) in passthrough.keys where json[key] == nil { json[key] = value }
        json["bos_token_id"] = bosTokenId.map { JSON($0) } ?? JSON.null
        json["pad_token_id"] = padTokenId.map { JSON($0) } ?? JSON.null
        json["eos_token_id"] =
            eosTokenIds.count == 1
            ? JSON(eosTokenIds[0])
            : (eosTokenIds.isEmpty ? JSON.null : JSON.array(eosTokenIds.map { JSON($0) }))
        return .object(json)
    }

    /// Writes `config.json` into `directory` atomically, naming the weights' storage type.
    /// Passthrough keys (``passthrough``) are written as they were read.
    public func write(to directory: URL, dtype: StorageType = .float32) throws {
        var object = json.object!
        object["dtype"] = .string(dtype.rawValue)
        try AtomicFile.write(JSON.object(object).data(), to: directory.appendingPathComponent("config.json"))
        for (name, text) in family.definition.remoteCode.sorted(by: { $0.key < $1.key }) {
            try AtomicFile.write(Data(text.utf8), to: directory.appendingPathComponent(name))
        }
    }
}

/// Walks a decoded `config.json`, remembering which keys were read so that any key left over is
/// reported instead of ignored.
public struct ConfigReader {
    let json: [String: JSON]
    let file: String
    /// Where the keys sit in the file (`text_config.` for a vision-language config's language model).
    var keyPrefix = ""

    public func fail(_ key: String, _ reason: String) -> ModelError {
        .invalidConfig(file: file, key: keyPrefix + key, reason: reason)
    }
    public func unsupported(_ key: String, _ reason: String) -> ModelError {
        .unsupportedConfig(file: file, key: keyPrefix + key, reason: reason)
    }

    public func value(_ key: String, in dict: [String: JSON]? = nil) -> JSON? {
        guard let v = (dict ?? json)[key], !v.isNull else { return nil }
        return v
    }
    public func int(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard let n = v.int else { throw fail(key, v.notAnIntegerReason) }
        return n
    }
    func requiredInt(_ key: String) throws -> Int {
        guard let n = try int(key) else { throw fail(key, "missing") }
        return n
    }
    public func double(_ key: String, in dict: [String: JSON]? = nil, path: String? = nil) throws -> Double? {
        guard let v = value(key, in: dict) else { return nil }
        guard let n = v.double else { throw fail(path ?? key, "expected a number, got \(v)") }
        return n
    }
    public func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.bool else { throw fail(key, "expected true or false, got \(v)") }
        return b
    }

    func modelConfig() throws -> ModelConfig {
        guard let type = json["model_type"]?.string else { throw fail("model_type", "missing") }
        if let family = Family.allCases.first(where: { $0.definition.visionLanguageModelType == type }) {
            return try languageModel(of: family, type: type)
        }
        guard let family = Family(rawValue: type) else {
            throw unsupported(
                "model_type", "'\(type)'; supported: \(Family.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var used: Set<String> = ["model_type"]

        // Options that would change the arithmetic: refuse anything but their neutral value. A
        // family whose transformers config lacks the key ignores it (Mistral, Mixtral and JetMoE
        // have no attention_bias; only Llama and Nemotron have mlp_bias; Qwen2's attention always
        // has q/k/v biases, whatever attention_bias says).
        let definition = family.definition
        for (key, refused) in definition.biasKeys {
            used.insert(key)
            if refused, try bool(key) == true { throw unsupported(key, "biases on projections are not implemented") }
        }
        used.insert("attention_dropout")
        if let p = try double("attention_dropout"), p != 0 {
            throw unsupported("attention_dropout", "dropout \(p) is not implemented")
        }
        used.insert("pretraining_tp")
        if let tp = try int("pretraining_tp"), tp != 1 {
            throw unsupported("pretraining_tp", "\(tp); only 1 is implemented")
        }
        // A hybrid family's layer list gives the layer count (Nemotron-H ignores num_hidden_layers).
        let hybrid = try definition.readHybrid(self, used: &used)
        let layerCount = try hybrid.map(\.layers.count) ?? requiredInt("num_hidden_layers")
        let (window, slidingLayers) = try definition.readSlidingWindow(self, layers: layerCount, used: &used)
        let actKey = definition.activationKey, expectedAct = definition.activation
        used.insert(actKey)
        if let v = value(actKey), v.string != expectedAct {
            throw unsupported(actKey, "\(v); \(family.rawValue) is implemented with '\(expectedAct)'")
        }
        let mixture = try hybrid?.mixture ?? definition.readMixture(self, layers: layerCount, used: &used)

        // Rotary: transformers v5 writes `rope_parameters`, v4 `rope_theta` / `rope_scaling` /
        // `partial_rotary_factor` at the top level. As transformers 5 reads them: a non-null
        // `rope_scaling` wins over `rope_parameters`; the dict's rope_theta and
        // partial_rotary_factor over the top-level keys.
        var ropeTheta = definition.defaultRopeTheta
        var partial: Double? = nil
        var rope = RopeScaling.none
        for key in ["rope_theta", "partial_rotary_factor", "rope_scaling", "rope_parameters"] { used.insert(key) }
        if let t = try double("rope_theta") { ropeTheta = t }
        if let p = try double("partial_rotary_factor") { partial = p }
        if let key = ["rope_scaling", "rope_parameters"].first(where: { value($0) != nil }), let v = value(key) {
            guard let dict = v.object else { throw fail(key, "expected an object, got \(v)") }
            rope = try ropeScaling(dict, path: key, layers: layerCount, ignored: definition.ignoredRopeKeys)
            if let t = try double("rope_theta", in: dict, path: "\(key).rope_theta") { ropeTheta = t }
            if let p = try double("partial_rotary_factor", in: dict, path: "\(key).partial_rotary_factor") {
                partial = p
            }
        }
        if let p = partial, !(p > 0 && p <= 1) {
            throw fail(
                "partial_rotary_factor", "\(p) is outside (0, 1]: the share of each head's dimensions that rotate")
        }
        if !definition.allowsPartialRotary, let p = partial, p != 1 {
            throw unsupported(
                "partial_rotary_factor", "\(family.rawValue) applies rotary embeddings to every head dimension")
        }

        // Options that change the arithmetic in ways not implemented.
        for key in ["quantization_config", "pruned_heads"] { used.insert(key) }
        if let q = value("quantization_config") {
            let method = q.object?["quant_method"]?.string.map { " (\($0))" } ?? ""
            throw unsupported(
                "quantization_config",
                "quantized weights\(method) are not implemented; dequantize the checkpoint to float32, bfloat16 or float16 first"
            )
        }
        if let p = value("pruned_heads"), p != .object([:]) {
            throw unsupported(
                "pruned_heads",
                "heads pruned inside transformers (\(p)) are not implemented; save the pruned model with a config of its real shape"
            )
        }

        let epsKey = definition.epsKey
        let (heads, kvHeads, headDim) = try definition.readAttentionShape(
            self, expertsPerToken: mixture.perToken, used: &used)
        guard let heads else { throw fail("num_attention_heads", "missing") }
        for key in [
            "vocab_size", "hidden_size", definition.intermediateSizeKey, "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", epsKey, "tie_word_embeddings", "max_position_embeddings",
            "initializer_range", "bos_token_id", "pad_token_id", "eos_token_id"
        ] { used.insert(key) }
        var eos: [Int] = []
        if let v = value("eos_token_id") {
            if let list = v.array {
                eos = try list.map {
                    guard let n = $0.int else { throw fail("eos_token_id", "expected integers") }; return n
                }
            } else if let id = try int("eos_token_id") {
                eos = [id]
            }
        }
        var config = ModelConfig(
            family: family,
            vocabSize: try requiredInt("vocab_size"),
            hiddenSize: try requiredInt("hidden_size"),
            intermediateSize: try requiredInt(definition.intermediateSizeKey),
            numHiddenLayers: layerCount,
            numAttentionHeads: heads,
            numKeyValueHeads: kvHeads,
            headDim: headDim,
            normEps: try double(epsKey),
            ropeTheta: ropeTheta,
            partialRotaryFactor: partial,
            // transformers' Nemotron-H keeps its own LM head whatever tie_word_embeddings says.
            tieWordEmbeddings: try (bool("tie_word_embeddings") ?? definition.defaultTieWordEmbeddings)
                && definition.canTieEmbeddings,
            maxPositionEmbeddings: try int("max_position_embeddings") ?? definition.defaultMaxPositionEmbeddings,
            initializerRange: try double("initializer_range") ?? definition.defaultInitializerRange,
            bosTokenId: try int("bos_token_id"),
            eosTokenIds: eos,
            padTokenId: try int("pad_token_id"),
            numLocalExperts: mixture.experts, numExpertsPerTok: mixture.perToken, routerAuxLossCoef: mixture.auxCoef,
            outputRouterLogits: mixture.routerLogits, moeIntermediateSize: mixture.expertWidth,
            normTopKProb: mixture.normTopK,
            denseMLPLayers: mixture.denseLayers, slidingWindow: window, slidingLayers: slidingLayers, rope: rope)

        if let hybrid {
            config.hybridLayers = hybrid.layers
            config.mamba = hybrid.mamba
            config.mambaConvBias = hybrid.convBias
            config.mambaTimeStepMin = hybrid.timeStepMin
            config.mambaTimeStepLimit = hybrid.timeStepLimit
            config.mambaChunkSize = hybrid.chunkSize
            config.deltaNet = hybrid.deltaNet
        }
        config.moeSharedExpertIntermediateSize = mixture.sharedWidth
        config.moeLatentSize = mixture.latent
        config.routedScalingFactor = mixture.scaling
        config.routerGroups = mixture.groups
        config.routerTopKGroups = mixture.topKGroups
        // A heterogeneous family's layers; the config's key/value heads and MLP width become the
        // largest any layer has (what buffers are sized by).
        if let variants = try definition.readLayerVariants(
            self, heads: heads, hidden: config.hiddenSize, layers: layerCount, used: &used)
        {
            config.layerVariants = variants
            config.numKeyValueHeads = variants.compactMap(\.keyValueGroups).max() ?? config.numKeyValueHeads
            config.intermediateSize = variants.compactMap(\.mlpWidth).max() ?? config.intermediateSize
        }
        // Keys transformers does not define for this family change nothing there either: they are
        // kept, written back on export, and named in one warning (``ModelConfig/load(_:)``).
        var passthrough = ModelConfig.Passthrough()
        for key in json.keys.sorted() where !used.contains(key) && !ModelConfig.regeneratedKeys.contains(key) {
            passthrough.keys[key] = json[key]!
            if !ModelConfig.pretrainedMetadataKeys.contains(key), !definition.metadataKeys.contains(key) {
                passthrough.unknown.append(key)
            }
        }
        config.passthrough = passthrough
        try config.validate(file: file)
        return config
    }

    /// A vision-language config (Qwen3.5 as it ships, `qwen3_5` with a `text_config`): its
    /// language model, as transformers' AutoModelForCausalLM reads it — the text config alone
    /// (`tie_word_embeddings` its own, default false), the vision tower and its token ids left
    /// out. The checkpoint's `model.language_model.` tensors are read as the text model's
    /// (``Checkpoint``); a model written back is the text model.
    func languageModel(of family: Family, type: String) throws -> ModelConfig {
        guard let text = value("text_config")?.object else {
            throw fail(
                "text_config",
                "missing: a \(type) config holds its language model's keys (a \(family.rawValue) config) there")
        }
        if let inner = text["model_type"], inner.string != family.rawValue {
            throw fail("text_config.model_type", "\(inner); the language model of \(type) is \(family.rawValue)")
        }
        var keys = text
        keys["model_type"] = .string(family.rawValue)
        return try ConfigReader(json: keys, file: file, keyPrefix: keyPrefix + "text_config.").modelConfig()
    }

    /// Reads a `rope_parameters` / `rope_scaling` object: its `rope_type` (or v4 `type`) and the
    /// parameters that type reads. Another type, or a key the type does not read, is refused.
    func ropeScaling(
        _ dict: [String: JSON], path: String, layers: Int, ignored: Set<String> = []
    ) throws -> RopeScaling {
        let name = (dict["rope_type"] ?? dict["type"])?.string ?? "default"
        guard let kind = RopeScaling.Kind(rawValue: name) else {
            throw unsupported(
                "\(path).rope_type",
                "'\(name)' rope scaling is not implemented; implemented: "
                    + RopeScaling.Kind.allCases.map(\.rawValue).joined(separator: ", "))
        }
        let reads = RopeScaling.keys(of: kind)
        let allowed = Set(["rope_type", "type", "rope_theta", "partial_rotary_factor"] + reads).union(
            ignored)
        for key in dict.keys.sorted() where !allowed.contains(key) && !(dict[key]?.isNull ?? true) {
            throw unsupported(
                "\(path).\(key)",
                "not a parameter of rope_type '\(name)' (it reads: "
                    + (reads.isEmpty ? "none" : reads.joined(separator: ", ")) + ")")
        }
        func number(_ key: String) throws -> Double? { try double(key, in: dict, path: "\(path).\(key)") }
        var original: Int? = nil
        if let v = dict["original_max_position_embeddings"], !v.isNull {
            guard let n = v.int else { throw fail("\(path).original_max_position_embeddings", v.notAnIntegerReason) }
            original = n
        }
        var truncate: Bool? = nil
        if let v = dict["truncate"], !v.isNull {
            guard let b = v.bool else { throw fail("\(path).truncate", "expected true or false, got \(v)") }
            truncate = b
        }
        let scaling = RopeScaling(
            kind: kind, factor: try number("factor"), lowFreqFactor: try number("low_freq_factor"),
            highFreqFactor: try number("high_freq_factor"), originalMaxPositionEmbeddings: original,
            attentionFactor: try number("attention_factor"), betaFast: try number("beta_fast"),
            betaSlow: try number("beta_slow"), mscale: try number("mscale"),
            mscaleAllDim: try number("mscale_all_dim"), truncate: truncate)
        try scaling.validate(path: path, file: file)
        return scaling
    }
}

/// The one warning per config file that names the keys transformers does not define for the
/// family (kept and written back, changing nothing), on standard error.
enum ConfigWarnings {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var warned: Set<String> = []

    static func once(file: String, config: ModelConfig) {
        lock.lock()
        let first = warned.insert(file).inserted
        lock.unlock()
        guard first else { return }
        let keys = config.passthrough.unknown.joined(separator: ", ")
        let config = config.family.architecture.replacingOccurrences(of: "ForCausalLM", with: "") + "Config"
        let line =
            "warning: \(file): keys transformers' \(config) does not define, "
            + "kept as they are and written back on export (they change nothing): \(keys)\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// `line` on standard error, once per file and line.
    static func once(file: String, line: String) {
        lock.lock()
        let first = warned.insert(file + "\u{0}" + line).inserted
        lock.unlock()
        if first { FileHandle.standardError.write(Data(line.utf8)) }
    }
}
