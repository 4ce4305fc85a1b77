import Foundation

/// Hugging Face checkpoint directories: `config.json` plus `model.safetensors`, or shards listed
/// in `model.safetensors.index.json`.
public enum Checkpoint {
    /// Loads a model, verifying that every tensor the config implies is present with its exact
    /// shape and that nothing else is left over. With tied embeddings `lm_head.weight` may be
    /// present only if it equals the embedding.
    /// - Throws: ``ModelError`` naming the directory and tensor.
    public static func load(_ directory: URL) throws -> DecoderModel {
        let configURL = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw ModelError.io(path: directory.path, reason: "no config.json here (not a checkpoint directory?)")
        }
        let config = try ModelConfig.load(configURL)
        let files = try openFiles(directory)
        // Everything is checked against the headers before the model's memory is allocated.
        try verify(config, files: files, directory: directory)
        try MemoryBudget.check(
            saturating(config.parameterCount, times: 8), for: "loading \(directory.path) (weights and gradients)",
            drivers: MemoryBudget.drivers(config))
        let model = DecoderModel(config: config)
        try readWeights(into: model, files: files, directory: directory)
        return model
    }

    /// The checkpoint's headers against what config.json implies, reading no tensor data: every
    /// tensor's presence and shape, and the total size (closed form). A config with more layers
    /// than the files have tensors cannot match, and its layout is not built (a mistyped
    /// `num_hidden_layers` of 2^31 is refused at once, by the total).
    static func verify(_ config: ModelConfig, files byTensor: [String: SafeTensorsFile], directory: URL) throws {
        if config.numHiddenLayers <= byTensor.count { try verifyShapes(config, files: byTensor, directory: directory) }
        var held = 0
        for (name, file) in byTensor {
            if let info = file.tensors[name] {
                held = saturating(held, plus: info.shape.reduce(1) { saturating($0, times: $1) })
            }
        }
        guard config.parameterCount <= held else {
            throw ModelError.checkpoint(
                path: directory.path, tensor: "(all)",
                reason: "config.json implies \(config.parameterCount) parameters but the weights hold \(held): "
                    + "the config does not describe these weights (\(MemoryBudget.drivers(config)))")
        }
        if config.numHiddenLayers > byTensor.count { try verifyShapes(config, files: byTensor, directory: directory) }
    }

    static func verifyShapes(_ config: ModelConfig, files byTensor: [String: SafeTensorsFile], directory: URL) throws {
        for e in ParameterLayout(config: config).entries {
            guard let file = byTensor[e.name] else {
                throw ModelError.checkpoint(
                    path: directory.path, tensor: e.name,
                    reason: "missing (the config implies it with shape \(e.shape))")
            }
            let info = try file.info(e.name)
            guard info.shape == e.shape else {
                throw ModelError.checkpoint(
                    path: file.path, tensor: e.name,
                    reason: "shape \(info.shape) does not match config.json, which implies \(e.shape)")
            }
        }
    }

    /// Checks a checkpoint directory without loading it: config.json, the headers, and every
    /// tensor's shape against the config (what `model info` reports). Returns the config.
    @discardableResult
    public static func verify(_ directory: URL) throws -> ModelConfig {
        let config = try ModelConfig.load(directory.appendingPathComponent("config.json"))
        try verify(config, files: try openFiles(directory), directory: directory)
        return config
    }

    /// The safetensors files of a checkpoint and which file holds which tensor.
    static func openFiles(_ directory: URL) throws -> [String: SafeTensorsFile] {
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        var byTensor: [String: SafeTensorsFile] = [:]
        if FileManager.default.fileExists(atPath: single.path) {
            let file = try SafeTensorsFile(url: single)
            for name in file.tensors.keys { byTensor[name] = file }
        } else if FileManager.default.fileExists(atPath: index.path) {
            guard let data = try? Data(contentsOf: index), let map = JSON.parse(data)?["weight_map"]?.object else {
                throw ModelError.io(path: index.path, reason: "not a safetensors index (no weight_map object)")
            }
            var files: [String: SafeTensorsFile] = [:]
            for (name, fileJSON) in map {
                guard let fileName = fileJSON.string, !fileName.contains("/") else {
                    throw ModelError.io(path: index.path, reason: "weight_map entry for '\(name)' is not a file name")
                }
                if files[fileName] == nil {
                    files[fileName] = try SafeTensorsFile(url: directory.appendingPathComponent(fileName))
                }
                guard files[fileName]!.tensors[name] != nil else {
                    throw ModelError.checkpoint(
                        path: directory.appendingPathComponent(fileName).path, tensor: name,
                        reason: "listed in model.safetensors.index.json but not in the shard")
                }
                byTensor[name] = files[fileName]
            }
            for (fileName, file) in files {
                for name in file.tensors.keys where map[name] == nil {
                    throw ModelError.checkpoint(
                        path: directory.appendingPathComponent(fileName).path, tensor: name,
                        reason: "in the shard but not listed in model.safetensors.index.json")
                }
            }
        } else {
            throw ModelError.io(path: directory.path, reason: "no model.safetensors or model.safetensors.index.json")
        }
        return languageModelTensors(byTensor)
    }

    /// A vision-language checkpoint's language model (Qwen3.5 as it ships): `model.language_model.X`
    /// read as `model.X`, and the vision tower (`model.visual.*`) and multi-token-prediction head
    /// (`mtp.*`) left out, as transformers' AutoModelForCausalLM does. Other checkpoints as they are.
    static func languageModelTensors(_ byTensor: [String: SafeTensorsFile]) -> [String: SafeTensorsFile] {
        let prefix = "model.language_model."
        guard byTensor.keys.contains(where: { $0.hasPrefix(prefix) }) else { return byTensor }
        func rename(_ name: String) -> String? {
            if name.hasPrefix(prefix) { return "model." + name.dropFirst(prefix.count) }
            return name.hasPrefix("model.visual.") || name.hasPrefix("mtp.") ? nil : name
        }
        var renamed: [String: SafeTensorsFile] = [:], out: [String: SafeTensorsFile] = [:]
        for (name, file) in byTensor {
            guard let new = rename(name) else { continue }
            if renamed[file.path] == nil { renamed[file.path] = file.renamed(rename) }
            out[new] = renamed[file.path]
        }
        return out
    }

    /// Reads the weights of `directory` into `model`'s parameters.
    public static func loadWeights(into model: DecoderModel, from directory: URL) throws {
        let files = try openFiles(directory)
        try verify(model.config, files: files, directory: directory)
        try readWeights(into: model, files: files, directory: directory)
    }

    /// Reads verified tensors into `model`; refuses leftovers, a tied head that differs, NaN.
    static func readWeights(into model: DecoderModel, files byTensor: [String: SafeTensorsFile], directory: URL) throws
    {
        var remaining = Set(byTensor.keys)
        for e in model.layout.entries {
            try byTensor[e.name]!.read(e.name, into: model.parameters.pointer + e.offset)
            remaining.remove(e.name)
        }
        model.shiftZeroCenteredNorms(by: 1)
        let lmHead = ParameterLayout.lmHeadName, embedding = model.config.family.definition.embeddingName
        if model.config.tieWordEmbeddings, remaining.contains(lmHead), let file = byTensor[lmHead] {
            let head = try file.floats(lmHead)
            let embed = Array(model.tensor(embedding)!)
            guard head == embed else {
                throw ModelError.checkpoint(
                    path: file.path, tensor: lmHead,
                    reason: "config.json ties word embeddings but \(lmHead) differs from \(embedding)")
            }
            remaining.remove(lmHead)
        }
        if let extra = remaining.sorted().first {
            throw ModelError.checkpoint(
                path: byTensor[extra]!.path, tensor: extra,
                reason:
                    "unexpected: config.json (\(model.config.family.rawValue)) has no such "
                    + "tensor\(remaining.count > 1 ? " (and \(remaining.count - 1) more)" : "")"
            )
        }
        for e in model.layout.entries {
            let p = model.parameters.pointer + e.offset
            for i in 0..<e.count where !p[i].isFinite {
                throw ModelError.checkpoint(
                    path: directory.path, tensor: e.name, reason: "holds a NaN or infinite value at index \(i)")
            }
        }
    }

    /// The floating-point type a checkpoint's weights are stored in: the type most of its
    /// parameters have (float32 for a checkpoint in several types, or none Topiary writes).
    public static func storageType(_ directory: URL) throws -> StorageType {
        var counts: [DType: Int] = [:]
        for (name, file) in try openFiles(directory) {
            let info = try file.info(name)
            counts[info.dtype, default: 0] += info.count
        }
        return StorageType.majority(counts)
    }

    /// Writes `config.json` and the weights (one `model.safetensors`, or shards of at most
    /// `shardBytes` with an index) into `directory`, every file atomically, as `type` (config.json's
    /// `dtype` says which). Refuses weights that hold NaN or infinity, or that overflow `type`.
    public static func save(
        _ model: DecoderModel, to directory: URL, type: StorageType = .float32, shardBytes: Int? = nil,
        metadata: [String: String] = [:]
    ) throws {
        for e in model.layout.entries {
            let p = model.parameters.pointer + e.offset
            for i in 0..<e.count where !p[i].isFinite {
                throw ModelError.checkpoint(
                    path: directory.path, tensor: e.name, reason: "holds a NaN or infinite value; refusing to write it")
            }
            if type == .float16,
                let i = (0..<e.count).first(where: { abs(p[$0]) > Float(Float16.greatestFiniteMagnitude) })
            {
                throw ModelError.checkpoint(
                    path: directory.path, tensor: e.name,
                    reason: "value \(p[i]) does not fit float16 (at most 65504); write float32 or bfloat16")
            }
        }
        let tensors = model.layout.entries.map { StreamedTensor(name: $0.name, shape: $0.shape, dtype: type.dtype) }
        let zeroCentered = model.config.family.definition.hasZeroCenteredNorms
        try write(tensors, config: model.config, type: type, to: directory, shardBytes: shardBytes, metadata: metadata)
        {
            i, emit in
            let e = model.layout.entries[i]
            var data = Data()
            let values = UnsafeBufferPointer(start: model.parameters.pointer + e.offset, count: e.count)
            if zeroCentered, e.role?.isZeroCenteredNorm == true {
                // Held as 1 + w (``FamilyDefinition/hasZeroCenteredNorms``); the file holds w.
                let w = values.map { $0 - 1 }
                w.withUnsafeBufferPointer { type.append($0, to: &data) }
            } else {
                type.append(values, to: &data)
            }
            try data.withUnsafeBytes { try emit($0) }
        }
    }
}
