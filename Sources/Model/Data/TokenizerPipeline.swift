import Foundation

// The stages of a Hugging Face `tokenizer.json` around its BPE model, as the `tokenizers`
// library runs them: normalizers on each text section (the text between added tokens), a
// pre-tokenizer cutting a section into pieces, and a decoder turning tokens back into text.
// Only the stages the released Llama-2/3, Mistral and Qwen tokenizers use are implemented; any
// other is refused by name when the file is read.

/// Replaces every occurrence of `pattern` by `content`, comparing Unicode scalars (the library
/// compares code points, not canonically equivalent characters).
func replacingScalars(_ s: String, _ pattern: String, with content: String) -> String {
    let p = Array(pattern.unicodeScalars)
    guard !p.isEmpty else { return s }
    let scalars = Array(s.unicodeScalars)
    var out = String.UnicodeScalarView()
    var i = 0
    while i < scalars.count {
        if scalars[i] == p[0], i + p.count <= scalars.count, Array(scalars[i..<(i + p.count)]) == p {
            out.append(contentsOf: content.unicodeScalars)
            i += p.count
        } else {
            out.append(scalars[i])
            i += 1
        }
    }
    return String(out)
}

/// One normalizer: NFC, `Prepend` (a prefix on non-empty text) or `Replace` (a literal string).
enum NormalizerStep: Equatable {
    case nfc
    case prepend(String)
    case replace(String, String)

    func apply(_ s: String) -> String {
        switch self {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case let .prepend(prefix): return s.isEmpty ? s : prefix + s
        case let .replace(pattern, content): return replacingScalars(s, pattern, with: content)
        }
    }

    /// Reads `normalizer` (null, one step or a Sequence of steps).
    static func parse(_ json: JSON?, fail: (String, String) -> ModelError, key: String = "normalizer") throws
        -> [NormalizerStep]
    {
        guard let json, !json.isNull else { return [] }
        switch json["type"]?.string {
        case "NFC": return [.nfc]
        case "Prepend":
            guard let p = json["prepend"]?.string else { throw fail(key + ".prepend", "missing") }
            return [.prepend(p)]
        case "Replace":
            guard let pattern = json["pattern"]?["String"]?.string else {
                throw fail(key + ".pattern", "only a String pattern is supported")
            }
            guard let content = json["content"]?.string else { throw fail(key + ".content", "missing") }
            return [.replace(pattern, content)]
        case "Sequence":
            return try (json["normalizers"]?.array ?? []).enumerated().flatMap {
                try parse($1, fail: fail, key: "\(key).normalizers[\($0)]")
            }
        case let type:
            throw fail(
                key + ".type", "'\(type ?? "?")' is not supported (NFC, Prepend, Replace, or a Sequence of them)")
        }
    }
}

/// When Metaspace puts its replacement character in front of a section.
enum PrependScheme: String {
    case first, always, never
}

/// How a section is cut into pieces before BPE.
enum PreTokenization {
    /// ByteLevel: an optional regex split (GPT-2's built in, or a Split step before it), then each
    /// piece's UTF-8 bytes mapped to printable characters.
    case byteLevel(split: Regex<AnyRegexOutput>?, addPrefixSpace: Bool)
    /// Metaspace: spaces become `replacement`, which is prepended by the scheme and, with
    /// `split`, starts every piece.
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme, split: Bool)
    /// No pre-tokenizer: a section is one piece.
    case none
}

/// One decoder step over the list of token strings.
enum DecoderStep: Equatable {
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme)
    case replace(String, String)
    case byteFallback
    case fuse
    case strip(Unicode.Scalar, start: Int, stop: Int)

    static func parse(_ json: JSON?, fail: (String, String) -> ModelError, key: String = "decoder") throws
        -> [DecoderStep]
    {
        guard let json, !json.isNull else { return [] }
        switch json["type"]?.string {
        case "ByteLevel": return [.byteLevel]
        case "Metaspace":
            let (r, scheme) = try metaspaceOptions(json, fail: fail, key: key)
            return [.metaspace(replacement: r, prepend: scheme)]
        case "Replace":
            guard let pattern = json["pattern"]?["String"]?.string else {
                throw fail(key + ".pattern", "only a String pattern is supported")
            }
            guard let content = json["content"]?.string else { throw fail(key + ".content", "missing") }
            return [.replace(pattern, content)]
        case "ByteFallback": return [.byteFallback]
        case "Fuse": return [.fuse]
        case "Strip":
            guard let c = json["content"]?.string?.unicodeScalars, c.count == 1 else {
                throw fail(key + ".content", "expected one character")
            }
            return [.strip(c.first!, start: json["start"]?.int ?? 0, stop: json["stop"]?.int ?? 0)]
        case "Sequence":
            return try (json["decoders"]?.array ?? []).enumerated().flatMap {
                try parse($1, fail: fail, key: "\(key).decoders[\($0)]")
            }
        case let type:
            throw fail(
                key + ".type",
                "'\(type ?? "?")' is not supported (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, or a Sequence of them)"
            )
        }
    }

    /// A Metaspace's replacement character and prepend scheme (`prepend_scheme`, or the older
    /// `add_prefix_space`).
    static func metaspaceOptions(_ json: JSON, fail: (String, String) -> ModelError, key: String) throws -> (
        Unicode.Scalar, PrependScheme
    ) {
        guard let r = json["replacement"]?.string?.unicodeScalars, r.count == 1 else {
            throw fail(key + ".replacement", "expected one character")
        }
        var scheme = PrependScheme.always
        if let s = json["prepend_scheme"]?.string {
            guard let p = PrependScheme(rawValue: s) else {
                throw fail(key + ".prepend_scheme", "'\(s)' is not first, always or never")
            }
            scheme = p
        } else if json["add_prefix_space"]?.bool == false {
            scheme = .never
        }
        return (r.first!, scheme)
    }

    /// Runs the step over the tokens, as the library's decoder of the same name.
    func apply(_ tokens: [String], charToByte: [Character: UInt8]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for t in tokens {
                let mapped = t.map { charToByte[$0] }
                if mapped.allSatisfy({ $0 != nil }) { bytes += mapped.map { $0! } } else { bytes += Array(t.utf8) }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case let .metaspace(r, scheme):
            return tokens.enumerated().map { i, t in
                var out = String.UnicodeScalarView()
                for c in t.unicodeScalars {
                    if c == r { if !(i == 0 && scheme != .never) { out.append(" ") } } else { out.append(c) }
                }
                return String(out)
            }
        case let .replace(pattern, content):
            return tokens.map { replacingScalars($0, pattern, with: content) }
        case .byteFallback:
            var out: [String] = [], pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) {
                    out.append(s)
                } else {
                    out.append(String(repeating: "\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for t in tokens {
                if let b = Self.fallbackByte(t) { pending.append(b) } else { flush(); out.append(t) }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case let .strip(c, start, stop):
            return tokens.map { t in
                var s = Array(t.unicodeScalars)
                var n = 0
                while n < start, let f = s.first, f == c { s.removeFirst(); n += 1 }
                n = 0
                while n < stop, let l = s.last, l == c { s.removeLast(); n += 1 }
                var v = String.UnicodeScalarView()
                v.append(contentsOf: s)
                return String(v)
            }
        }
    }

    /// The byte of a byte-fallback token `<0xAB>`, or nil.
    static func fallbackByte(_ token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
            u[5] == UInt8(ascii: ">")
        else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }
}

/// A binary min-heap of BPE merge candidates ordered by (rank, position), as the library's queue.
struct MergeQueue {
    private var items: [(rank: Int, pos: Int)] = []
    var isEmpty: Bool { items.isEmpty }
    private func less(_ a: Int, _ b: Int) -> Bool {
        items[a].rank != items[b].rank ? items[a].rank < items[b].rank : items[a].pos < items[b].pos
    }
    mutating func push(rank: Int, pos: Int) {
        items.append((rank, pos))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }
    mutating func pop() -> (rank: Int, pos: Int)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && less(l, m) { m = l }
            if r < items.count && less(r, m) { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}
