import Foundation

/// Turns text into token ids and back.
public protocol Tokenizer: Sendable {
    /// Ids run over 0..<vocabularySize.
    var vocabularySize: Int { get }
    /// The id placed after every document when packing shards.
    var endOfText: Int { get }
    /// What `data prepare` records so that readers can rebuild the same tokenizer.
    var identifier: String { get }
    func encode(_ text: String) -> [Int]
    /// One document as the model was trained on it: ``encode(_:)`` with the tokenizer's
    /// post-processor (`add_special_tokens=True`; a BOS for Llama 3).
    func encodeDocument(_ text: String) -> [Int]
    func decode(_ ids: [Int]) throws -> String
    /// Which token separates documents, in words (`data prepare` prints it).
    var endOfTextDescription: String { get }
}

extension Tokenizer {
    public var endOfTextDescription: String { "id \(endOfText)" }
    public func encodeDocument(_ text: String) -> [Int] { encode(text) }
}

/// The built-in byte-level tokenizer: ids 0–255 are the UTF-8 bytes, then named special tokens
/// (`<|endoftext|>` = 256). It treats every language and script alike and needs no training.
public struct ByteTokenizer: Tokenizer {
    public static let specials = ["<|endoftext|>"]
    public init() {}
    public var vocabularySize: Int { 256 + Self.specials.count }
    public var endOfText: Int { 256 }
    public var identifier: String { "byte" }
    public func encode(_ text: String) -> [Int] { text.utf8.map { Int($0) } }

    /// Bytes back to text; special tokens are written by name; invalid UTF-8 becomes U+FFFD
    /// (as the `tokenizers` library's byte-level decoder does).
    /// - Throws: ``ModelError/invalidInput(_:)`` for an id outside the vocabulary.
    public func decode(_ ids: [Int]) throws -> String {
        var out = ""
        var bytes: [UInt8] = []
        for id in ids {
            if (0..<256).contains(id) { bytes.append(UInt8(id)); continue }
            guard id >= 256, id < vocabularySize else {
                throw ModelError.invalidInput("token id \(id) is outside the byte tokenizer's 0..<\(vocabularySize)")
            }
            out += String(decoding: bytes, as: UTF8.self)
            bytes.removeAll()
            out += Self.specials[id - 256]
        }
        return out + String(decoding: bytes, as: UTF8.self)
    }
}

/// Loads a tokenizer by name: `byte` for the built-in one, or a path to a Hugging Face
/// `tokenizer.json`.
public func loadTokenizer(_ name: String) throws -> any Tokenizer {
    if name == "byte" { return ByteTokenizer() }
    return try BPETokenizer(url: URL(fileURLWithPath: name))
}
