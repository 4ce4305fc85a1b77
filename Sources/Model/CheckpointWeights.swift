import Foundation

/// A checkpoint's weights left where they are: config.json read, the safetensors files
/// memory-mapped and their headers verified against the config (every tensor present with its
/// shape), and no tensor loaded. Tensors are read one at a time in their own dtype
/// (``withTensor(_:_:)``), each file's pages handed back after use, so that streaming through
/// a teacher holds about one tensor in memory, not the model (as ``Checkpoint/load(_:)`` does,
/// in float32).
public final class CheckpointWeights: @unchecked Sendable {
    public let directory: URL
    public let config: ModelConfig
    public let layout: ParameterLayout
    let files: [String: SafeTensorsFile]

    public init(_ directory: URL) throws {
        let configURL = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw ModelError.io(path: directory.path, reason: "no config.json here (not a checkpoint directory?)")
        }
        self.directory = directory
        config = try ModelConfig.load(configURL)
        files = try Checkpoint.openFiles(directory)
        try Checkpoint.verify(config, files: files, directory: directory)
        layout = ParameterLayout(config: config)
    }

    /// The dtype the checkpoint stores a tensor in.
    public func dtype(_ name: String) throws -> DType {
        guard let file = files[name] else {
            throw ModelError.checkpoint(path: directory.path, tensor: name, reason: "missing")
        }
        return try file.info(name).dtype
    }

    /// The floating-point type most of the weights are stored in (``Checkpoint/storageType(_:)``).
    public var storageType: StorageType {
        var counts: [DType: Int] = [:]
        for e in layout.entries { if let d = try? dtype(e.name) { counts[d, default: 0] += e.count } }
        return StorageType.majority(counts)
    }

    /// `body` with the tensor's stored bytes and header entry; the pages are released afterwards.
    public func withTensor<R>(_ name: String, _ body: (UnsafeRawBufferPointer, TensorInfo) throws -> R) throws -> R {
        guard let file = files[name] else {
            throw ModelError.checkpoint(path: directory.path, tensor: name, reason: "missing")
        }
        return try file.withBytes(name, release: true, body)
    }

    /// Every parameter as float32 bytes, in the layout's order (exactly the bytes of
    /// ``DecoderModel/parameters`` after ``Checkpoint/load(_:)``), handed to `body` in pieces of
    /// at most `chunk` values.
    public func streamFloat32(chunk: Int = 1 << 16, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        var buffer = [Float](repeating: 0, count: chunk)
        let zeroCentered = config.family.definition.hasZeroCenteredNorms
        for e in layout.entries {
            try withTensor(e.name) { raw, info in
                if zeroCentered, e.role?.isZeroCenteredNorm == true {
                    // Held as 1 + w once loaded (``FamilyDefinition/hasZeroCenteredNorms``); norms are small.
                    var values = [Float](repeating: 0, count: info.count)
                    let ok = values.withUnsafeMutableBufferPointer {
                        SafeTensorsFile.floats(raw.baseAddress!, info.dtype, info.count, into: $0.baseAddress!)
                    }
                    guard ok else {
                        throw ModelError.safetensors(
                            file: directory.path, tensor: e.name,
                            reason: "dtype \(info.dtype.rawValue) cannot be read as floating point (F32, F16, BF16 are)"
                        )
                    }
                    for i in values.indices { values[i] += 1 }
                    return values.withUnsafeBytes { body($0) }
                }
                if info.dtype == .F32 { return body(raw) }
                var i = 0
                while i < info.count {
                    let n = min(chunk, info.count - i)
                    let converted = buffer.withUnsafeMutableBufferPointer { out in
                        let ok = SafeTensorsFile.floats(
                            raw.baseAddress! + i * info.dtype.size, info.dtype, n, into: out.baseAddress!)
                        if ok { body(UnsafeRawBufferPointer(start: out.baseAddress, count: 4 * n)) }
                        return ok
                    }
                    guard converted else {
                        throw ModelError.safetensors(
                            file: directory.path, tensor: e.name,
                            reason: "dtype \(info.dtype.rawValue) cannot be read as floating point (F32, F16, BF16 are)"
                        )
                    }
                    i += n
                }
            }
        }
    }
}

/// One tensor of a checkpoint written a tensor at a time: its name, shape, and the dtype its
/// bytes are in.
public struct StreamedTensor: Sendable {
    public var name: String
    public var shape: [Int]
    public var dtype: DType
    public init(name: String, shape: [Int], dtype: DType) {
        self.name = name; self.shape = shape; self.dtype = dtype
    }
    public var bytes: Int { shape.reduce(1, *) * dtype.size }
}

extension Checkpoint {
    /// Writes `config.json` (its `dtype` saying `type`) and the tensors into `directory`, one
    /// `model.safetensors` or shards of at most `shardBytes` with an index, every file atomically.
    /// `body(i, write)` produces tensor i's bytes (in its dtype) and hands them to `write`, in
    /// order; only one tensor need exist at a time.
    public static func write(
        _ tensors: [StreamedTensor], config: ModelConfig, type: StorageType, to directory: URL,
        shardBytes: Int? = nil, metadata: [String: String] = [:],
        body: (Int, (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) throws {
        let total = tensors.reduce(0) { saturating($0, plus: $1.bytes) }
        try FileIO.requireFreeSpace(total, in: directory, for: "writing the checkpoint")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let fm = FileManager.default
        var shards: [[Int]] = [[]]
        if let shardBytes, total > shardBytes {
            var size = 0
            for (i, t) in tensors.enumerated() {
                if size > 0 && size + t.bytes > shardBytes { shards.append([]); size = 0 }
                shards[shards.count - 1].append(i)
                size += t.bytes
            }
        } else {
            shards = [Array(tensors.indices)]
        }
        func writeShard(_ members: [Int], to url: URL) throws {
            let entries = members.map {
                (tensors[$0].name, tensors[$0].dtype.rawValue, tensors[$0].shape, tensors[$0].bytes)
            }
            try SafeTensorsWriter.write(entries, metadata: metadata, to: url) { k, handle in
                let i = members[k]
                var written = 0
                try body(i) { bytes in
                    written += bytes.count
                    if bytes.count > 0 { try handle.write(contentsOf: Data(bytes)) }
                }
                precondition(
                    written == tensors[i].bytes, "tensor \(tensors[i].name): \(written) of \(tensors[i].bytes) bytes")
            }
        }
        if shards.count > 1 {
            var map: [String: JSON] = [:]
            for (s, members) in shards.enumerated() {
                let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards.count)
                try writeShard(members, to: directory.appendingPathComponent(name))
                for i in members { map[tensors[i].name] = .string(name) }
            }
            let index: JSON = ["metadata": ["total_size": JSON(total)], "weight_map": .object(map)]
            try AtomicFile.write(index.data(), to: directory.appendingPathComponent("model.safetensors.index.json"))
            try? fm.removeItem(at: directory.appendingPathComponent("model.safetensors"))
        } else {
            try writeShard(shards[0], to: directory.appendingPathComponent("model.safetensors"))
            try? fm.removeItem(at: directory.appendingPathComponent("model.safetensors.index.json"))
        }
        try config.write(to: directory, dtype: type)
    }
}
