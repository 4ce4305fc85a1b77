import Foundation

/// Element types a safetensors header may name. The engine reads F32, F16 and BF16 (converted
/// to F32) and writes any of them (``StorageType``); the other types are known so that their
/// sizes can be checked.
public enum DType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL
    public var size: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Byte range inside the data section (after the 8-byte length and the header).
    public var begin: Int
    public var end: Int
    public var count: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped and validated.
///
/// Layout: an 8-byte little-endian header length n, n bytes of JSON header
/// (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`), then the data.
/// Opening checks, before any tensor is touched: the file holds the 8 length bytes, n fits in the
/// file and under ``maxHeaderBytes``, the header is a JSON object, every entry has a known dtype,
/// a non-negative shape and offsets inside the data section whose span equals
/// `count × dtype.size`, and no two tensors overlap. Every failure names the file and tensor.
public struct SafeTensorsFile: @unchecked Sendable {
    /// Headers larger than this are refused as lies (real headers are kilobytes to a few MB).
    public static let maxHeaderBytes = 100 << 20

    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    /// Names in file order (by offset).
    public var names: [String] { tensors.values.sorted { $0.begin < $1.begin }.map(\.name) }

    public init(url: URL) throws {
        let data: Data
        data = try FileIO.read(url, mapped: true, what: "safetensors file")
        try self.init(data: data, path: url.path)
    }

    public init(data: Data, path: String) throws {
        self.path = path
        self.data = data
        let fileSize = data.count
        func fail(_ tensor: String?, _ reason: String) -> ModelError {
            .safetensors(file: path, tensor: tensor, reason: reason)
        }
        guard fileSize >= 8 else {
            throw fail(nil, "truncated: \(fileSize) bytes, shorter than the 8-byte header length")
        }
        let headerLength = data.withUnsafeBytes { raw in
            UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw fail(
                nil,
                "header claims \(headerLength) bytes, more than the \(Self.maxHeaderBytes >> 20) MiB limit (corrupt or not safetensors)"
            )
        }
        guard headerLength <= UInt64(fileSize - 8) else {
            throw fail(nil, "truncated: header claims \(headerLength) bytes but only \(fileSize - 8) follow the length")
        }
        let n = Int(headerLength)
        dataStart = 8 + n
        let dataSize = fileSize - dataStart
        guard let header = JSON.parse(data.subdata(in: 8..<(8 + n)))?.object else {
            throw fail(nil, "header is not a JSON object")
        }
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, entry) in header {
            if name == "__metadata__" {
                guard let dict = entry.object else { throw fail(nil, "__metadata__ is not an object") }
                for (k, v) in dict { metadata[k] = v.string ?? v.description }
                continue
            }
            guard let dict = entry.object else { throw fail(name, "header entry is not an object") }
            guard let dtypeName = dict["dtype"]?.string else { throw fail(name, "missing dtype") }
            guard let dtype = DType(rawValue: dtypeName) else { throw fail(name, "unknown dtype '\(dtypeName)'") }
            guard let shapeJSON = dict["shape"]?.array else { throw fail(name, "missing shape") }
            var shape: [Int] = []
            for dim in shapeJSON {
                guard let d = dim.int, d >= 0 else {
                    throw fail(name, "shape \(dict["shape"]!) has a dimension that is not a non-negative integer")
                }
                shape.append(d)
            }
            guard let offsets = dict["data_offsets"]?.array, offsets.count == 2 else {
                throw fail(
                    name, "data_offsets must be [begin, end], got \(dict["data_offsets"].map { "\($0)" } ?? "nothing")")
            }
            for o in offsets where o.int == nil {
                throw fail(
                    name,
                    "data_offsets \(dict["data_offsets"]!): "
                        + (o.double.map {
                            abs($0) >= 9e15 && $0 == $0.rounded()
                                ? "an offset of \(o) is beyond any file (offsets up to 9×10^15)" : o.notAnIntegerReason
                        } ?? o.notAnIntegerReason))
            }
            let begin = offsets[0].int!, end = offsets[1].int!
            guard begin >= 0, end >= 0 else { throw fail(name, "data_offsets [\(begin), \(end)] are negative") }
            guard begin <= end else {
                throw fail(name, "data_offsets [\(begin), \(end)] are reversed: begin is after end")
            }
            guard end <= dataSize else {
                throw fail(
                    name,
                    "data_offsets [\(begin), \(end)] fall outside the \(dataSize)-byte data section (truncated file?)")
            }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d); return (p, acc.1 || o)
            }
            guard !overflow, count.multipliedReportingOverflow(by: dtype.size).overflow == false,
                count * dtype.size == end - begin
            else {
                throw fail(
                    name,
                    "shape \(shape) of \(dtype.rawValue) needs "
                        + "\(overflow ? "too many" : String(count * dtype.size)) bytes but data_offsets span \(end - begin)"
                )
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
        }
        let ordered = tensors.values.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.begin < a.end {
            throw fail(b.name, "data_offsets [\(b.begin), \(b.end)] overlap tensor '\(a.name)' [\(a.begin), \(a.end)]")
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The same file with its tensors renamed by `rename` (nil: left out), reading the same bytes.
    public func renamed(_ rename: (String) -> String?) -> SafeTensorsFile {
        var tensors: [String: TensorInfo] = [:]
        for (name, info) in self.tensors {
            guard let new = rename(name) else { continue }
            var info = info
            info.name = new
            tensors[new] = info
        }
        return SafeTensorsFile(path: path, tensors: tensors, metadata: metadata, data: data, dataStart: dataStart)
    }

    private init(path: String, tensors: [String: TensorInfo], metadata: [String: String], data: Data, dataStart: Int) {
        self.path = path
        self.tensors = tensors
        self.metadata = metadata
        self.data = data
        self.dataStart = dataStart
    }

    /// The tensor's info, or an error naming it.
    public func info(_ name: String) throws -> TensorInfo {
        guard let info = tensors[name] else {
            throw ModelError.safetensors(file: path, tensor: name, reason: "not in file")
        }
        return info
    }

    /// Copies a tensor into `destination` as F32, converting F16 and BF16.
    /// - Precondition: `destination` has room for `info.count` floats.
    public func read(_ name: String, into destination: UnsafeMutablePointer<Float>) throws {
        let info = try info(name)
        let count = info.count
        let converted = data.withUnsafeBytes { raw in
            Self.floats(raw.baseAddress!.advanced(by: dataStart + info.begin), info.dtype, count, into: destination)
        }
        if !converted {
            throw ModelError.safetensors(
                file: path, tensor: name,
                reason: "dtype \(info.dtype.rawValue) cannot be read as floating point (F32, F16, BF16 are)")
        }
    }

    /// The tensor's bytes as stored (its own dtype, little-endian), for `body` only. With
    /// `release`, the pages of the file that held them are handed back to the kernel afterwards
    /// (`MADV_DONTNEED` on the mapping), so that streaming through a large checkpoint keeps about
    /// one tensor resident rather than the whole file.
    public func withBytes<R>(
        _ name: String, release: Bool = false, _ body: (UnsafeRawBufferPointer, TensorInfo) throws -> R
    ) throws -> R {
        let info = try info(name)
        return try data.withUnsafeBytes { raw in
            let start = raw.baseAddress!.advanced(by: dataStart + info.begin)
            defer { if release { Self.release(start, count: info.end - info.begin) } }
            return try body(UnsafeRawBufferPointer(start: start, count: info.end - info.begin), info)
        }
    }

    /// Drops the whole pages inside [start, start + count) from this process's resident set
    /// (they are read again from the file if touched).
    static func release(_ start: UnsafeRawPointer, count: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let from = (Int(bitPattern: start) + page - 1) / page * page
        let to = (Int(bitPattern: start) + count) / page * page
        guard to > from, let p = UnsafeMutableRawPointer(bitPattern: from) else { return }
        _ = madvise(p, to - from, Int32(MADV_DONTNEED))
    }

    /// Converts `count` values stored as `dtype` at `base` to F32 into `destination`; false (and
    /// nothing written) for a dtype that is not F32, F16 or BF16.
    @discardableResult
    public static func floats(
        _ base: UnsafeRawPointer, _ dtype: DType, _ count: Int, into destination: UnsafeMutablePointer<Float>
    ) -> Bool {
        switch dtype {
        case .F32:
            memcpy(destination, base, count * 4)
        case .F16:
            for i in 0..<count {
                let bits = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                destination[i] = Float(Float16(bitPattern: bits))
            }
        case .BF16:
            for i in 0..<count {
                let bits = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                destination[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        default:
            return false
        }
        return true
    }

    /// A tensor as a new F32 array.
    public func floats(_ name: String) throws -> [Float] {
        let count = try info(name).count
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try read(name, into: buffer.baseAddress!)
            initialized = count
        }
    }

    /// An I64 or I32 tensor as integers.
    public func integers(_ name: String) throws -> [Int] {
        let info = try info(name)
        return try data.withUnsafeBytes { raw in
            let base = raw.baseAddress!.advanced(by: dataStart + info.begin)
            switch info.dtype {
            case .I64:
                return (0..<info.count).map {
                    Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)))
                }
            case .I32:
                return (0..<info.count).map {
                    Int(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)))
                }
            default:
                throw ModelError.safetensors(
                    file: path, tensor: name, reason: "dtype \(info.dtype.rawValue) is not an integer type")
            }
        }
    }
}

/// The floating-point type a checkpoint is written in (F32 weights are rounded to the nearest
/// representable value, ties to even, as `torch.Tensor.to` does).
public enum StorageType: String, Sendable, CaseIterable, Codable {
    case float32, bfloat16, float16

    public var dtype: DType {
        switch self {
        case .float32: return .F32
        case .bfloat16: return .BF16
        case .float16: return .F16
        }
    }

    /// The type most of `counts` (values per dtype) are stored in: float32 when that is none
    /// Topiary writes (ties go to the dtype named first alphabetically).
    static func majority(_ counts: [DType: Int]) -> StorageType {
        let most = counts.max { $0.value != $1.value ? $0.value < $1.value : $0.key.rawValue > $1.key.rawValue }
        return most.flatMap { StorageType($0.key) } ?? .float32
    }

    /// The storage type of safetensors dtype `d`, if it is a floating-point one Topiary writes.
    public init?(_ d: DType) {
        switch d {
        case .F32: self = .float32
        case .BF16: self = .bfloat16
        case .F16: self = .float16
        default: return nil
        }
    }

    /// `x` rounded to bfloat16 (round to nearest, ties to even; finite inputs).
    public static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    /// Copies element `i` of `src` (stored as `from`) to element `j` of `dst` (as `to`): the same
    /// bits when the types agree, else converted through float32 (rounded to nearest, ties to
    /// even). False, with nothing promised of `dst`, when the value is NaN or infinite in `to`.
    @inline(__always)
    public static func copy(
        _ src: UnsafeRawBufferPointer, _ from: DType, _ i: Int, into dst: UnsafeMutableRawBufferPointer, _ to: DType,
        _ j: Int
    ) -> Bool {
        if from == to {
            switch from {
            case .BF16, .F16:
                let bits = src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                dst.storeBytes(of: bits, toByteOffset: 2 * j, as: UInt16.self)
                let exponent: UInt16 = from == .BF16 ? 0x7F80 : 0x7C00
                return UInt16(littleEndian: bits) & exponent != exponent
            default:
                let bits = src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                dst.storeBytes(of: bits, toByteOffset: 4 * j, as: UInt32.self)
                return Float(bitPattern: UInt32(littleEndian: bits)).isFinite
            }
        }
        let x: Float
        switch from {
        case .BF16:
            x = Float(
                bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                    << 16)
        case .F16:
            x = Float(
                Float16(bitPattern: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
        default: x = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
        }
        switch to {
        case .BF16:
            let bits = bfloat16Bits(x)
            dst.storeBytes(of: bits.littleEndian, toByteOffset: 2 * j, as: UInt16.self)
            return x.isFinite && bits & 0x7F80 != 0x7F80
        case .F16:
            dst.storeBytes(of: Float16(x).bitPattern.littleEndian, toByteOffset: 2 * j, as: UInt16.self)
            return x.isFinite && abs(x) <= Float(Float16.greatestFiniteMagnitude)
        default:
            dst.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: 4 * j, as: UInt32.self)
            return x.isFinite
        }
    }

    /// Appends `values` in this type, little-endian.
    public func append(_ values: UnsafeBufferPointer<Float>, to data: inout Data) {
        switch self {
        case .float32:
            data.append(Data(buffer: values))
        case .bfloat16:
            var out = [UInt16](repeating: 0, count: values.count)
            for i in 0..<values.count { out[i] = Self.bfloat16Bits(values[i]).littleEndian }
            out.withUnsafeBytes { data.append(contentsOf: $0) }
        case .float16:
            var out = [UInt16](repeating: 0, count: values.count)
            for i in 0..<values.count { out[i] = Float16(values[i]).bitPattern.littleEndian }
            out.withUnsafeBytes { data.append(contentsOf: $0) }
        }
    }
}

/// A tensor to be written: a name, a shape and `shape.product` floats.
public struct TensorSlice {
    public var name: String
    public var shape: [Int]
    public var values: UnsafeBufferPointer<Float>
    public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
        self.name = name; self.shape = shape; self.values = values
    }
}

public enum SafeTensorsWriter {
    /// Writes tensors to `url` atomically (temporary name, then rename), in the given order, as
    /// `type` (F32 by default), with `{"format": "pt"}` metadata as transformers expects.
    public static func write(
        _ tensors: [TensorSlice], type: StorageType = .float32, metadata: [String: String] = [:], to url: URL
    ) throws {
        for t in tensors {
            precondition(t.values.count == t.shape.reduce(1, *), "tensor \(t.name): values do not match shape")
        }
        try write(
            tensors.map { ($0.name, type.dtype.rawValue, $0.shape, $0.values.count * type.dtype.size) },
            metadata: metadata, to: url
        ) { i, handle in
            guard tensors[i].values.count > 0 else { return }
            var data = Data()
            type.append(tensors[i].values, to: &data)
            try handle.write(contentsOf: data)
        }
    }

    /// Writes int32 tensors (the token batches and validation windows of a backend's job).
    public static func write(int32 tensors: [(name: String, shape: [Int], values: [Int32])], to url: URL) throws {
        for t in tensors {
            precondition(t.values.count == t.shape.reduce(1, *), "tensor \(t.name): values do not match shape")
        }
        try write(tensors.map { ($0.name, "I32", $0.shape, 4 * $0.values.count) }, metadata: [:], to: url) {
            i, handle in
            try tensors[i].values.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
        }
    }

    /// The layout every file shares: an 8-byte little-endian header length, the JSON header
    /// (padded with spaces to 8 bytes), then each tensor's bytes in order, written by `body`.
    public static func write(
        _ entries: [(name: String, dtype: String, shape: [Int], bytes: Int)], metadata: [String: String], to url: URL,
        body: (Int, FileHandle) throws -> Void
    ) throws {
        var header: [String: JSON] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = [
                "dtype": .string(e.dtype), "shape": .array(e.shape.map { JSON($0) }),
                "data_offsets": [JSON(offset), JSON(offset + e.bytes)]
            ]
            offset += e.bytes
        }
        var meta = metadata
        if meta["format"] == nil { meta["format"] = "pt" }
        header["__metadata__"] = .object(meta.mapValues { .string($0) })
        var headerBytes = JSON.object(header).data(pretty: false)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        try AtomicFile.write(to: url) { handle in
            var length = UInt64(headerBytes.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &length, count: 8))
            try handle.write(contentsOf: headerBytes)
            for i in entries.indices { try body(i, handle) }
        }
    }
}
