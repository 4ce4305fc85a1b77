import Foundation

/// A decoded JSON value that keeps the distinctions strict readers need: booleans are not
/// numbers, `null` is not missing, integers are numbers without a fraction.
public enum JSON: Sendable, Equatable, Codable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    /// A number always written with a fraction (`0.0`, not `0`): transformers 5 validates float
    /// config fields strictly. Never produced by decoding.
    case float(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSON].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSON].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .number(n):
            if n == n.rounded(), abs(n) < 9e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case let .float(n): try c.encode(n)
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }

    /// Parses bytes; nil when they are not JSON.
    public static func parse(_ data: Data) -> JSON? { try? JSONDecoder().decode(JSON.self, from: data) }

    /// Pretty-printed (two-space indent), key-sorted bytes. Integral numbers are written without
    /// a fraction, ``float(_:)`` values always with one; non-finite numbers as `null`.
    public func data(pretty: Bool = true) -> Data {
        var out = ""
        write(to: &out, pretty: pretty, indent: 0)
        return Data(out.utf8)
    }

    private func write(to out: inout String, pretty: Bool, indent: Int) {
        func number(_ n: Double, fraction: Bool) -> String {
            guard n.isFinite else { return "null" }
            if n == n.rounded(), abs(n) < 9e15 { return "\(Int64(n))" + (fraction ? ".0" : "") }
            return "\(n)"
        }
        let pad = pretty ? String(repeating: "  ", count: indent + 1) : "",
            end = pretty ? String(repeating: "  ", count: indent) : ""
        let newline = pretty ? "\n" : ""
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .number(n): out += number(n, fraction: false)
        case let .float(n): out += number(n, fraction: true)
        case let .string(s): out += JSON.quoted(s)
        case let .array(a):
            if a.isEmpty { out += "[]"; return }
            out += "[" + newline
            for (i, v) in a.enumerated() {
                out += pad
                v.write(to: &out, pretty: pretty, indent: indent + 1)
                out += (i < a.count - 1 ? "," : "") + newline
            }
            out += end + "]"
        case let .object(o):
            if o.isEmpty { out += "{}"; return }
            out += "{" + newline
            let keys = o.keys.sorted()
            for (i, k) in keys.enumerated() {
                out += pad + JSON.quoted(k) + (pretty ? ": " : ":")
                o[k]!.write(to: &out, pretty: pretty, indent: indent + 1)
                out += (i < keys.count - 1 ? "," : "") + newline
            }
            out += end + "}"
        }
    }

    /// A JSON string literal.
    static func quoted(_ s: String) -> String {
        var r = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            case "\r": r += "\\r"
            case "\t": r += "\\t"
            case _ where u.value < 0x20: r += String(format: "\\u%04x", u.value)
            default: r.unicodeScalars.append(u)
            }
        }
        return r + "\""
    }

    /// Compact, key-sorted text as Foundation's JSONEncoder writes it (integral numbers, ``float(_:)``
    /// ones included, without a fraction). Fingerprints hash this text, so it must not change
    /// between versions: teachers' fingerprints recorded in stores and caches depend on it.
    public var description: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public var isNull: Bool { if case .null = self { return true }; return false }
    public var object: [String: JSON]? { if case let .object(o) = self { return o }; return nil }
    public var array: [JSON]? { if case let .array(a) = self { return a }; return nil }
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var double: Double? {
        switch self {
        case let .number(n), let .float(n): return n;
        default: return nil
        }
    }
    /// The value as an integer when it is a number without a fraction.
    public var int: Int? {
        if case let .number(n) = self, n == n.rounded(), abs(n) < 9e15 { return Int(n) }
        return nil
    }

    /// Why ``int`` is nil, in words: not a number, not whole, or out of range.
    public var notAnIntegerReason: String {
        guard case let .number(n) = self else { return "expected an integer, got \(self)" }
        if n != n.rounded() { return "expected an integer, got \(self), which is not a whole number" }
        return "\(self) is out of range (integers up to 9×10^15 in absolute value)"
    }
    public subscript(key: String) -> JSON? { object?[key] }

    /// Equality of values: `float(x)` equals `number(x)` (they differ only in how they are written).
    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x == y
        case (.number, _), (.float, _): return a.double != nil && a.double == b.double
        default: return false
        }
    }
}

extension JSON: ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) {
        self = .object(Dictionary(uniqueKeysWithValues: elements))
    }
    public init(nilLiteral: ()) { self = .null }
    public init(_ value: Int) { self = .number(Double(value)) }
    public init(_ value: Double) { self = .number(value) }
}
