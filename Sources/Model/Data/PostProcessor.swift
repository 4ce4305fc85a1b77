import Foundation

/// The `post_processor` of a `tokenizer.json`, as the `tokenizers` library applies it to one
/// sequence (`encode(text, add_special_tokens=True)`):
/// - `TemplateProcessing`: the `single` template, a list of `{"SpecialToken": {"id": NAME}}` and
///   `{"Sequence": {"id": "A"}}` items; NAME is looked up in `special_tokens` (its `ids`, in order).
///   Llama 3 writes `[<|begin_of_text|>, A]`; SmolLM2 and Qwen2 write `[A]`.
/// - `BertProcessing` (`[cls] A [sep]`) and `RobertaProcessing` (`<s> A </s>`).
/// - `ByteLevel`: changes offsets only, never ids.
/// - `Sequence` of the above, applied in order; `null`: none.
/// Pair templates are not used (Topiary encodes single documents).
public struct PostProcessor: Sendable, Equatable {
    /// Ids before and after the sequence.
    public var prefix: [Int] = []
    public var suffix: [Int] = []

    public init(prefix: [Int] = [], suffix: [Int] = []) { self.prefix = prefix; self.suffix = suffix }

    /// Wraps the ids of one sequence.
    public func apply(_ ids: [Int]) -> [Int] { prefix.isEmpty && suffix.isEmpty ? ids : prefix + ids + suffix }

    /// Parses `json` (the `post_processor` value).
    /// - Throws: through `fail(key, reason)` for an unknown type or a malformed template.
    static func parse(_ json: JSON?, fail: (String, String) -> ModelError, key: String = "post_processor") throws
        -> PostProcessor
    {
        guard let json, !json.isNull else { return PostProcessor() }
        guard let type = json["type"]?.string else { throw fail(key, "expected an object with a type") }
        func id(_ v: JSON?, _ k: String) throws -> Int {
            // Bert/Roberta write [token, id].
            guard let pair = v?.array, pair.count == 2, let n = pair[1].int, n >= 0 else {
                throw fail("\(key).\(k)", "expected [token, id]")
            }
            return n
        }
        switch type {
        case "ByteLevel":
            return PostProcessor()
        case "BertProcessing":
            return PostProcessor(prefix: [try id(json["cls"], "cls")], suffix: [try id(json["sep"], "sep")])
        case "RobertaProcessing":
            return PostProcessor(prefix: [try id(json["cls"], "cls")], suffix: [try id(json["sep"], "sep")])
        case "Sequence":
            var out = PostProcessor()
            for (i, step) in (json["processors"]?.array ?? []).enumerated() {
                let p = try parse(step, fail: fail, key: "\(key).processors[\(i)]")
                out = PostProcessor(prefix: p.prefix + out.prefix, suffix: out.suffix + p.suffix)
            }
            return out
        case "TemplateProcessing":
            guard let single = json["single"]?.array else { throw fail("\(key).single", "missing or not a list") }
            let specials = json["special_tokens"]?.object ?? [:]
            var out = PostProcessor()
            var seenSequence = false
            for (i, item) in single.enumerated() {
                if item["Sequence"] != nil {
                    guard !seenSequence else {
                        throw fail("\(key).single[\(i)]", "a second sequence in a single template")
                    }
                    seenSequence = true
                } else if let name = item["SpecialToken"]?["id"]?.string {
                    guard let ids = specials[name]?["ids"]?.array?.compactMap(\.int), !ids.isEmpty else {
                        throw fail("\(key).special_tokens", "'\(name)' is used by the template but has no ids")
                    }
                    if seenSequence { out.suffix += ids } else { out.prefix += ids }
                } else {
                    throw fail("\(key).single[\(i)]", "expected a Sequence or a SpecialToken, got \(item)")
                }
            }
            guard seenSequence else { throw fail("\(key).single", "the template has no sequence (A)") }
            return out
        default:
            throw fail(
                "\(key).type",
                "'\(type)' is not supported (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence)"
            )
        }
    }
}
