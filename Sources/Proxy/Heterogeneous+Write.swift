import Foundation
import Model

extension HeterogeneousPruning {
    /// The teacher cut into `variants` as ``prune(teacher:variants:scores:trained:)`` cuts it, but
    /// from its files a tensor at a time (``CheckpointWeights``): memory holds one teacher tensor
    /// and the student tensor cut from it (in float32), and one layer's trained block, never the
    /// model. The checkpoint is written in `type` (default: the teacher's storage type).
    ///
    /// Equal, tensor for tensor and bit for bit, to pruning the float32-loaded teacher and saving
    /// the student in `type` (`HeterogeneousPruningTests.streamedWriteEqualsPruningInMemory`).
    /// - Throws: ``ProxyError/invalidTarget(field:reason:)`` for variants the teacher cannot take;
    ///   ``ModelError/checkpoint(path:tensor:reason:)`` for a value that is not finite (or does not
    ///   fit float16), naming the tensor; nothing is left in `directory` then.
    public static func write(
        teacher: CheckpointWeights, variants: [LayerVariant], scores: ImportanceScores, trained: BlockWeights? = nil,
        type: StorageType? = nil, to directory: URL, shardBytes: Int? = nil
    ) throws {
        let t = teacher.config
        try check(variants, teacher: t)
        let config = studentConfig(teacher: t, variants: variants)
        try config.validate(file: "block_configs")
        let type = type ?? teacher.storageType
        let layout = ParameterLayout(config: config)
        for e in layout.entries where teacher.layout.entries.first(where: { $0.name == e.name }) == nil {
            throw ProxyError.invalidTarget(field: e.name, reason: "the teacher has no tensor \(e.name)")
        }
        let tensors = layout.entries.map { StreamedTensor(name: $0.name, shape: $0.shape, dtype: type.dtype) }
        // The trained block of the layer being written (entries come layer by layer).
        var block: (layer: Int, model: DecoderModel?)?
        try Checkpoint.write(tensors, config: config, type: type, to: directory, shardBytes: shardBytes) { i, emit in
            let e = layout.entries[i]
            if let l = e.layer, let trained, block?.layer != l {
                block = (l, try trained.block(layer: l, variant: variants[l], teacher: t))
            }
            let values = try cut(
                e, variant: e.layer.map { variants[$0] }, teacher: teacher, neurons: e.layer.map { scores.neurons[$0] },
                trained: e.layer == nil ? nil : block?.model)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw ModelError.checkpoint(
                    path: directory.path, tensor: e.name,
                    reason: "holds a NaN or infinite value at index \(bad); refusing to write it")
            }
            if type == .float16, let big = values.first(where: { abs($0) > Float(Float16.greatestFiniteMagnitude) }) {
                throw ModelError.checkpoint(
                    path: directory.path, tensor: e.name,
                    reason: "value \(big) does not fit float16 (at most 65504); write float32 or bfloat16")
            }
            var data = Data()
            values.withUnsafeBufferPointer { type.append($0, to: &data) }
            try data.withUnsafeBytes { try emit($0) }
        }
    }

    /// Student tensor `e` (of a layer taking `variant`, or outside the layers when nil) in float32:
    /// the tensor of its role in `trained` (a locally distilled one-layer block) when given, else
    /// cut from the teacher's tensor of the same name as ``fill(_:role:from:teacher:variant:neurons:)``
    /// cuts it (copied whole outside the layers).
    static func cut(
        _ e: ParameterEntry, variant: LayerVariant?, teacher: CheckpointWeights, neurons: [Double]?,
        trained: DecoderModel?
    ) throws -> [Float] {
        var values = [Float](repeating: 0, count: e.count)
        try values.withUnsafeMutableBufferPointer { dst in
            if let m = trained, let role = e.role {
                guard let src = m.layout.entry(role, layer: 0).flatMap({ m.tensor($0.name) }) else {
                    throw ProxyError.invalidTarget(field: e.name, reason: "the trained block has no \(role) tensor")
                }
                _ = dst.update(fromContentsOf: src)
                return
            }
            let src = try teacherFloats(teacher, e.name)
            src.withUnsafeBufferPointer { src in
                if let variant, let neurons, let role = e.role {
                    fill(dst, role: role, from: src, teacher: teacher.config, variant: variant, neurons: neurons)
                } else {
                    _ = dst.update(fromContentsOf: src)
                }
            }
        }
        return values
    }

    /// One teacher tensor as float32, read from its file in its own dtype.
    static func teacherFloats(_ teacher: CheckpointWeights, _ name: String) throws -> [Float] {
        try teacher.withTensor(name) { raw, info in
            var out = [Float](repeating: 0, count: info.count)
            let ok = out.withUnsafeMutableBufferPointer {
                SafeTensorsFile.floats(raw.baseAddress!, info.dtype, info.count, into: $0.baseAddress!)
            }
            guard ok else {
                throw ModelError.safetensors(
                    file: teacher.directory.path, tensor: name,
                    reason: "dtype \(info.dtype.rawValue) cannot be read as floating point (F32, F16, BF16 are)")
            }
            return out
        }
    }
}

extension BlockLibrary {
    /// Every variant block of the library other than the teacher's own (and other than a block
    /// with nothing in it), as an external backend replaces it for one-block scoring: one float32
    /// safetensors file, tensor `layers.L.kvG.mlpF/<name in the layer>` (``BlockWeights``'s block
    /// names; `self_attn.k_proj.weight`, `input_layernorm.weight`, …), each cut from the teacher's
    /// files a tensor at a time as ``HeterogeneousPruning/write(teacher:variants:scores:trained:type:to:shardBytes:)``
    /// cuts it, or the locally distilled block where `trained` has it.
    /// - Returns: the blocks written, in order: layer, variant, and that variant's block name.
    @discardableResult
    public static func writeVariants(
        teacher: CheckpointWeights, variants: [[LayerVariant]], importance: ImportanceScores,
        trained: BlockWeights? = nil, to url: URL
    ) throws -> [(layer: Int, variant: LayerVariant, name: String)] {
        let t = teacher.config, L = t.numHiddenLayers
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        guard variants.count == L else {
            throw ProxyError.invalidTarget(
                field: "block_configs", reason: "variants for \(variants.count) of \(L) layers")
        }
        var blocks: [(layer: Int, variant: LayerVariant, name: String)] = []
        var entries: [(layer: Int, variant: LayerVariant, entry: ParameterEntry, name: String)] = []
        for (l, layerVariants) in variants.enumerated() {
            for v in layerVariants where v != full && (v.keyValueGroups != nil || v.mlpWidth != nil) {
                var choice = Array(repeating: full, count: L)
                choice[l] = v
                try HeterogeneousPruning.check(choice, teacher: t)
                let name = BlockWeights.name(l, v)
                blocks.append((l, v, name))
                let prefix = "model.layers.\(l)."
                for e in ParameterLayout(config: HeterogeneousPruning.studentConfig(teacher: t, variants: choice))
                    .entries
                where e.layer == l {
                    let inLayer = e.name.hasPrefix(prefix) ? String(e.name.dropFirst(prefix.count)) : e.name
                    entries.append((l, v, e, "\(name)/\(inLayer)"))
                }
            }
        }
        var block: (layer: Int, variant: LayerVariant, model: DecoderModel?)?
        try SafeTensorsWriter.write(
            entries.map { ($0.name, DType.F32.rawValue, $0.entry.shape, 4 * $0.entry.count) }, metadata: [:], to: url
        ) { i, handle in
            let (l, v, e, _) = entries[i]
            if block?.layer != l || block?.variant != v {
                block = (l, v, try trained?.block(layer: l, variant: v, teacher: t))
            }
            let values = try HeterogeneousPruning.cut(
                e, variant: v, teacher: teacher, neurons: importance.neurons[l], trained: block?.model)
            try values.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
        }
        return blocks
    }
}
