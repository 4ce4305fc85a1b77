import Foundation

/// Every error the `Model` module throws. Each case carries what a user needs to find the
/// problem: the file, the JSON key, the tensor name or the training step.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    /// A `config.json` key has a value the engine cannot use.
    case invalidConfig(file: String, key: String, reason: String)
    /// A `config.json` asks for something the engine does not implement (rope scaling, biases …).
    case unsupportedConfig(file: String, key: String, reason: String)
    /// A safetensors file is malformed; `tensor` is nil when the header itself is wrong.
    case safetensors(file: String, tensor: String?, reason: String)
    /// A checkpoint does not match its config (missing, extra or mis-shaped tensors).
    case checkpoint(path: String, tensor: String, reason: String)
    /// Reading or writing a file failed.
    case io(path: String, reason: String)
    /// A training or evaluation step produced a NaN or infinite value.
    case nonFinite(step: Int, what: String)
    /// Anything else a caller passed in that cannot be used.
    case invalidInput(String)
    /// A mixture router produced NaN or infinite logits (names the layer and router tensor).
    case router(layer: Int, tensor: String, reason: String)
    /// Not enough memory for what was asked, found before allocating: what, bytes needed and
    /// available, and the settings that drive the size.
    case insufficientMemory(what: String, needed: Int, available: Int, drivers: String)

    public var description: String {
        switch self {
        case let .invalidConfig(file, key, reason): return "\(file): \(key): \(reason)"
        case let .unsupportedConfig(file, key, reason): return "\(file): \(key): unsupported: \(reason)"
        case let .safetensors(file, tensor, reason):
            if let tensor { return "\(file): tensor '\(tensor)': \(reason)" }
            return "\(file): \(reason)"
        case let .checkpoint(path, tensor, reason): return "\(path): tensor '\(tensor)': \(reason)"
        case let .io(path, reason): return "\(path): \(reason)"
        case let .nonFinite(step, what): return "step \(step): \(what) is not finite (NaN or infinity); stopped"
        case let .invalidInput(reason): return reason
        case let .router(layer, tensor, reason): return "layer \(layer): \(tensor): \(reason)"
        case let .insufficientMemory(what, needed, available, drivers):
            return
                "\(what) needs about \(formatBytes(needed)) but \(formatBytes(available)) is available "
                + "(\(drivers)); refusing before allocating"
        }
    }
}
