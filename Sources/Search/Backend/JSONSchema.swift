import Foundation
import Model

/// A JSON Schema (draft 2020-12) generated from an `Encodable` type by encoding an example
/// value of it and recording what each key holds: objects with every key required and no other
/// allowed, arrays of their first element's schema, `null` allowed where the type is optional,
/// and free-form ``JSON`` values unconstrained. The example must fill every array and optional
/// so that their contents are seen.
enum JSONSchema {
    static func of<T: Encodable>(_ example: T, title: String) throws -> JSON {
        let recorder = SchemaRecorder()
        try example.encode(to: recorder)
        guard case var .object(schema) = recorder.node.json else { return recorder.node.json }
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = .string(title)
        return .object(schema)
    }
}

/// What the recorder saw encoded at one place.
private final class SchemaNode {
    enum Kind { case unknown, scalar(String), object, array, any }
    var kind = Kind.unknown
    var nullable = false
    var keys: [(String, SchemaNode)] = []
    var items: SchemaNode?

    var json: JSON {
        var s: [String: JSON]
        switch kind {
        case .unknown, .any: s = [:]
        case let .scalar(t): s = ["type": .string(t)]
        case .object:
            s = [
                "type": "object", "additionalProperties": false,
                "properties": .object(Dictionary(keys.map { ($0.0, $0.1.json) }, uniquingKeysWith: { a, _ in a })),
                "required": .array(keys.map { .string($0.0) })
            ]
        case .array:
            s = ["type": "array"]
            if let items { s["items"] = items.json }
        }
        if nullable, let t = s["type"] { s["type"] = [t, "null"] }
        return .object(s)
    }

    /// Records `value` into this node.
    func record<T: Encodable>(_ value: T) throws {
        if T.self is OptionalMarker.Type { nullable = true }
        switch value {
        case is JSON: kind = .any
        case is String: kind = .scalar("string")
        case is Bool: kind = .scalar("boolean")
        case is Int, is Int32, is Int64, is UInt64, is UInt32: kind = .scalar("integer")
        case is Double, is Float: kind = .scalar("number")
        default:
            let sub = SchemaRecorder(node: self)
            try value.encode(to: sub)
        }
    }
}

private protocol OptionalMarker {}
extension Optional: OptionalMarker {}

private struct SchemaRecorder: Encoder {
    var node = SchemaNode()
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]

    init(node: SchemaNode = SchemaNode()) { self.node = node }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.kind = .object
        return KeyedEncodingContainer(Keyed<Key>(node: node))
    }
    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.kind = .array
        return Unkeyed(node: node)
    }
    func singleValueContainer() -> any SingleValueEncodingContainer { Single(node: node) }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: SchemaNode
        var codingPath: [any CodingKey] = []
        func child(_ key: Key) -> SchemaNode {
            let n = SchemaNode()
            node.keys.append((key.stringValue, n))
            return n
        }
        mutating func encodeNil(forKey key: Key) throws { child(key).nullable = true }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { try child(key).record(value) }
        /// An optional that synthesized `Codable` leaves out when nil: null (absent) is allowed.
        mutating func maybe<T: Encodable>(_ value: T?, _ key: Key) throws {
            let n = child(key)
            n.nullable = true
            if let value { try n.record(value) }
        }
        mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws { try maybe(value, key) }
        mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws { try maybe(value, key) }
        mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { try maybe(value, key) }
        mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws { try maybe(value, key) }
        mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws { try maybe(value, key) }
        mutating func nestedContainer<N: CodingKey>(keyedBy: N.Type, forKey key: Key) -> KeyedEncodingContainer<N> {
            let n = child(key)
            n.kind = .object
            return KeyedEncodingContainer(Keyed<N>(node: n))
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let n = child(key)
            n.kind = .array
            return Unkeyed(node: n)
        }
        mutating func superEncoder() -> any Encoder { SchemaRecorder(node: node) }
        mutating func superEncoder(forKey key: Key) -> any Encoder { SchemaRecorder(node: child(key)) }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let node: SchemaNode
        var codingPath: [any CodingKey] = []
        var count = 0
        /// The first element's node (later elements are assumed alike).
        mutating func item() -> SchemaNode {
            count += 1
            if let i = node.items { return count == 1 ? i : SchemaNode() }
            let n = SchemaNode()
            node.items = n
            return n
        }
        mutating func encodeNil() throws { item().nullable = true }
        mutating func encode<T: Encodable>(_ value: T) throws { try item().record(value) }
        mutating func nestedContainer<N: CodingKey>(keyedBy: N.Type) -> KeyedEncodingContainer<N> {
            let n = item()
            n.kind = .object
            return KeyedEncodingContainer(Keyed<N>(node: n))
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let n = item()
            n.kind = .array
            return Unkeyed(node: n)
        }
        mutating func superEncoder() -> any Encoder { SchemaRecorder(node: item()) }
    }

    struct Single: SingleValueEncodingContainer {
        let node: SchemaNode
        var codingPath: [any CodingKey] = []
        mutating func encodeNil() throws { node.nullable = true }
        mutating func encode<T: Encodable>(_ value: T) throws { try node.record(value) }
    }
}
