import Model

/// Errors of the proxy stages, each naming the field or unit at fault.
public enum ProxyError: Error, CustomStringConvertible, Equatable {
    /// A target shape the teacher cannot be pruned to; `field` is the config key.
    case invalidTarget(field: String, reason: String)
    /// The calibration set cannot be drawn as asked.
    case calibration(String)
    /// A distillation run diverged: the step and what was not finite.
    case diverged(student: String, step: Int, what: String)
    case invalidOption(field: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidTarget(field, reason): return "target \(field): \(reason)"
        case let .calibration(reason): return "calibration: \(reason)"
        case let .diverged(student, step, what): return "\(student): diverged at step \(step): \(what) is not finite"
        case let .invalidOption(field, reason): return "\(field): \(reason)"
        }
    }
}

/// FNV-1a, 64-bit: a stable fingerprint of bytes (for caching importance scores).
public struct Fingerprint {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325
    public init() {}
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x100_0000_01B3 }
    }
    public mutating func add(_ string: String) { var s = string; s.withUTF8 { add(UnsafeRawBufferPointer($0)) } }
    public mutating func add<T>(_ array: [T]) { array.withUnsafeBytes { add($0) } }
    public var hex: String { String(format: "%016llx", value) }

    /// Fingerprint of a model: its config and every parameter.
    public static func of(_ model: DecoderModel) -> String {
        var f = Fingerprint()
        f.add(model.config.json.description)
        f.add(UnsafeRawBufferPointer(start: model.parameters.pointer, count: model.parameters.count * 4))
        return f.hex
    }

    /// The same fingerprint as ``of(_:)`` of the loaded model, streamed from the checkpoint's
    /// files a piece at a time (the model is never held in float32).
    public static func of(_ weights: CheckpointWeights) throws -> String {
        var f = Fingerprint()
        f.add(weights.config.json.description)
        try weights.streamFloat32 { f.add($0) }
        return f.hex
    }
}
