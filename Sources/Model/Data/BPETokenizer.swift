import Foundation

/// A Hugging Face `tokenizer.json` with a BPE model and byte-level pre-tokenisation, encoding and
/// decoding exactly as the `tokenizers` library does.
///
/// Supported: `model.type` "BPE" (merges as "a b" strings or ["a", "b"] pairs, `ignore_merges`),
/// `pre_tokenizer` ByteLevel (with or without the GPT-2 regex and prefix space) or a Sequence of
/// Split (a regex, behaviour Isolated) then ByteLevel (Llama-3), `normalizer` null, added tokens
/// (matched literally before pre-tokenisation), decoder ByteLevel. Anything else is refused by
/// name at load time.
public struct BPETokenizer: Tokenizer, @unchecked Sendable {
    public let identifier: String
    public let vocabularySize: Int
    public let endOfText: Int
    /// Which token separates documents and why, for `data prepare` to say.
    public let endOfTextDescription: String
    /// The largest token id a tokenizer may use (16,777,215): far above any real vocabulary,
    /// and within u32 shards and the model's Int32 ids.
    public static let maxTokenID = (1 << 24) - 1
    let vocab: [String: Int]
    let idToToken: [Int: String]
    let ranks: [String: Int]
    let ignoreMerges: Bool
    let added: [(content: String, id: Int, special: Bool)]
    let addedByID: [Int: (content: String, special: Bool)]
    let splitRegex: Regex<AnyRegexOutput>?
    let addPrefixSpace: Bool
    let byteToChar: [Character]
    let charToByte: [Character: UInt8]

    /// GPT-2's pre-tokenisation pattern, as the ByteLevel pre-tokenizer uses it.
    public static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// GPT-2's reversible map from bytes to printable characters.
    static func bytesToUnicode() -> [Character] {
        var bs: [Int] = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) { bs.append(b); cs.append(256 + n); n += 1 }
        var table = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return table
    }

    /// - Throws: ``ModelError/invalidInput(_:)`` naming the unsupported model type,
    ///   normalizer, pre-tokenizer or decoder.
    public init(url: URL) throws {
        let file = url.path
        func fail(_ key: String, _ reason: String) -> ModelError { .invalidInput("\(file): \(key): \(reason)") }
        let data = try FileIO.read(url, what: "tokenizer file")
        guard let json = JSON.parse(data)?.object else { throw fail("(root)", "not a JSON object") }
        guard let model = json["model"]?.object else { throw fail("model", "missing") }
        let type = model["type"]?.string ?? "?"
        guard type == "BPE" else { throw fail("model.type", "'\(type)' is not supported (only BPE)") }
        if let n = json["normalizer"], !n.isNull { throw fail("normalizer", "\(n["type"]?.string ?? "?") is not supported (only null)") }
        if let d = json["decoder"], !d.isNull, d["type"]?.string != "ByteLevel" {
            throw fail("decoder.type", "'\(d["type"]?.string ?? "?")' is not supported (only ByteLevel)")
        }
        if let cs = model["continuing_subword_prefix"]?.string, !cs.isEmpty { throw fail("model.continuing_subword_prefix", "not supported") }
        if let ew = model["end_of_word_suffix"]?.string, !ew.isEmpty { throw fail("model.end_of_word_suffix", "not supported") }
        if model["byte_fallback"]?.bool == true { throw fail("model.byte_fallback", "not supported") }

        // Pre-tokenizer.
        var regex: Regex<AnyRegexOutput>? = nil
        var prefix = false
        func byteLevel(_ p: [String: JSON], _ key: String) throws {
            prefix = p["add_prefix_space"]?.bool ?? false
            if p["use_regex"]?.bool ?? true {
                guard regex == nil else { throw fail(key, "two regex splits are not supported") }
                regex = try Regex(Self.gpt2Pattern).matchingSemantics(.unicodeScalar)
            }
        }
        guard let pre = json["pre_tokenizer"]?.object else { throw fail("pre_tokenizer", "missing (a ByteLevel pre-tokenizer is required)") }
        switch pre["type"]?.string {
        case "ByteLevel":
            try byteLevel(pre, "pre_tokenizer")
        case "Sequence":
            let steps = pre["pretokenizers"]?.array?.compactMap(\.object) ?? []
            guard steps.count == 2, steps[0]["type"]?.string == "Split", steps[1]["type"]?.string == "ByteLevel" else {
                throw fail("pre_tokenizer", "a Sequence is supported only as [Split, ByteLevel]")
            }
            let split = steps[0]
            guard let pattern = split["pattern"]?["Regex"]?.string else { throw fail("pre_tokenizer.pretokenizers[0].pattern", "only a Regex pattern is supported") }
            guard split["behavior"]?.string == "Isolated", split["invert"]?.bool != true else {
                throw fail("pre_tokenizer.pretokenizers[0].behavior", "only Isolated (not inverted) is supported")
            }
            do { regex = try Regex(pattern).matchingSemantics(.unicodeScalar) } catch {
                throw fail("pre_tokenizer.pretokenizers[0].pattern.Regex", "cannot compile: \(error)")
            }
            try byteLevel(steps[1], "pre_tokenizer.pretokenizers[1]")
        default:
            throw fail("pre_tokenizer.type", "'\(pre["type"]?.string ?? "?")' is not supported (ByteLevel, or Sequence [Split, ByteLevel])")
        }
        splitRegex = regex
        addPrefixSpace = prefix

        guard let vocabJSON = model["vocab"]?.object else { throw fail("model.vocab", "missing") }
        guard !vocabJSON.isEmpty else { throw fail("model.vocab", "empty: a tokenizer needs at least one token") }
        /// Ids are stored in u16/u32 shards and read as Int32 by the model: bound them well below.
        let maxID = Self.maxTokenID
        func checkedID(_ value: JSON?, _ key: String) throws -> Int {
            guard let id = value?.int else { throw fail(key, "id \(value.map { "\($0)" } ?? "missing") is not an integer") }
            guard id >= 0 else { throw fail(key, "id \(id) is negative") }
            guard id <= maxID else { throw fail(key, "id \(id) is beyond any vocabulary (at most \(maxID))") }
            return id
        }
        var vocab: [String: Int] = [:]
        for (token, id) in vocabJSON { vocab[token] = try checkedID(id, "model.vocab.\(token)") }
        var ranks: [String: Int] = [:]
        if let merges = model["merges"], merges.array == nil, merges != .null { throw fail("model.merges", "not an array") }
        for (i, m) in (model["merges"]?.array ?? []).enumerated() {
            let pair: [String]
            if let s = m.string { pair = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init) }
            else { pair = m.array?.compactMap(\.string) ?? [] }
            guard pair.count == 2 else { throw fail("model.merges[\(i)]", "not a pair") }
            if ranks[pair[0] + " " + pair[1]] == nil { ranks[pair[0] + " " + pair[1]] = i }
        }
        var added: [(String, Int, Bool)] = []
        if let list = json["added_tokens"], list.array == nil, list != .null { throw fail("added_tokens", "not an array") }
        for (i, t) in (json["added_tokens"]?.array ?? []).enumerated() {
            guard let content = t["content"]?.string, !content.isEmpty else { throw fail("added_tokens[\(i)].content", "missing or not a non-empty string") }
            let id = try checkedID(t["id"], "added_tokens[\(i)].id")
            added.append((content, id, t["special"]?.bool ?? false))
            vocab[content] = id
        }
        self.vocab = vocab
        self.ranks = ranks
        self.ignoreMerges = model["ignore_merges"]?.bool ?? false
        self.added = added.sorted { $0.0.count > $1.0.count }
        addedByID = Dictionary(added.map { ($0.1, ($0.0, $0.2)) }, uniquingKeysWith: { a, _ in a })
        idToToken = Dictionary(vocab.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        vocabularySize = (vocab.values.max() ?? -1) + 1
        let eosNames = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"]
        if let name = eosNames.first(where: { vocab[$0] != nil }) {
            endOfText = vocab[name]!
            endOfTextDescription = "'\(name)' (id \(endOfText))"
        } else if let special = added.first(where: { $0.2 }) {
            endOfText = special.1
            endOfTextDescription = "'\(special.0)' (id \(special.1)), the first special added token (none is named \(eosNames.joined(separator: ", ")))"
        } else {
            endOfText = 0
            endOfTextDescription = "id 0 ('\(vocab.first { $0.value == 0 }?.key ?? "?")'): the tokenizer has no end-of-text or special token"
        }
        byteToChar = Self.bytesToUnicode()
        charToByte = Dictionary(uniqueKeysWithValues: byteToChar.enumerated().map { ($1, UInt8($0)) })
        identifier = url.path
    }

    // MARK: encode

    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for segment in splitAdded(text) {
            switch segment {
            case let .added(id): ids.append(id)
            case let .text(s): forEachPiece(s) { ids += bpe($0) }
            }
        }
        return ids
    }

    enum Segment { case added(Int), text(String) }

    /// Splits out added tokens (longest first, leftmost), as the library does before pre-tokenising.
    func splitAdded(_ text: String) -> [Segment] {
        guard !added.isEmpty else { return [.text(text)] }
        var out: [Segment] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var best: (range: Range<Substring.Index>, id: Int)? = nil
            for a in added {
                if let r = rest.range(of: a.content), best == nil || r.lowerBound < best!.range.lowerBound { best = (r, a.id) }
            }
            guard let b = best else { out.append(.text(String(rest))); break }
            if b.range.lowerBound > rest.startIndex { out.append(.text(String(rest[..<b.range.lowerBound]))) }
            out.append(.added(b.id))
            rest = rest[b.range.upperBound...]
        }
        return out
    }

    /// Pre-tokenised pieces, already mapped to byte-level characters.
    func preTokenize(_ text: String) -> [String] {
        var pieces: [String] = []
        forEachPiece(text) { pieces.append($0) }
        return pieces
    }

    /// Calls `body` with each pre-tokenised piece in order, mapped to byte-level characters, one
    /// match at a time: memory stays proportional to the longest piece, not to the text (a
    /// 50 MB single-line document once needed 4.9 GB when every match was collected first).
    func forEachPiece(_ text: String, _ body: (String) -> Void) {
        var s = text
        if addPrefixSpace, let first = s.unicodeScalars.first, !first.properties.isWhitespace { s = " " + s }
        if s.isEmpty { return }
        func emit(_ piece: Substring.UnicodeScalarView) {
            var mapped = ""
            for byte in String(String.UnicodeScalarView(piece)).utf8 { mapped.append(byteToChar[Int(byte)]) }
            body(mapped)
        }
        let scalars = s.unicodeScalars
        guard let regex = splitRegex else { emit(scalars[...]); return }
        var last = scalars.startIndex
        var searchFrom = s.startIndex
        while searchFrom < s.endIndex, let match = s[searchFrom...].firstMatch(of: regex) {
            if match.range.lowerBound > last { emit(scalars[last..<match.range.lowerBound]) }
            if !match.range.isEmpty { emit(scalars[match.range]) }
            last = match.range.upperBound
            // An empty match moves on by one scalar, as the library's iteration does.
            searchFrom = match.range.isEmpty ? scalars.index(after: match.range.upperBound) : match.range.upperBound
        }
        if last < scalars.endIndex { emit(scalars[last...]) }
    }

    /// Byte-pair merges of one piece: repeatedly merge the adjacent pair of lowest rank.
    func bpe(_ piece: String) -> [Int] {
        if ignoreMerges, let id = vocab[piece] { return [id] }
        var symbols = piece.map { String($0) }
        while symbols.count > 1 {
            var bestRank = Int.max, bestIndex = -1
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < bestRank { bestRank = r; bestIndex = i }
            }
            if bestIndex < 0 { break }
            let (a, b) = (symbols[bestIndex], symbols[bestIndex + 1])
            var merged: [String] = []
            merged.reserveCapacity(symbols.count)
            var i = 0
            while i < symbols.count {
                if i < symbols.count - 1 && symbols[i] == a && symbols[i + 1] == b { merged.append(a + b); i += 2 }
                else { merged.append(symbols[i]); i += 1 }
            }
            symbols = merged
        }
        return symbols.compactMap { vocab[$0] }
    }

    // MARK: decode

    /// Ids back to text; special added tokens are skipped (the library's default,
    /// `skip_special_tokens=True`); invalid UTF-8 becomes U+FFFD.
    /// - Throws: ``ModelError/invalidInput(_:)`` for an id outside the vocabulary.
    public func decode(_ ids: [Int]) throws -> String {
        var bytes: [UInt8] = []
        for id in ids {
            if let a = addedByID[id] {
                if a.special { continue }
                bytes += Array(a.content.utf8)
                continue
            }
            guard let token = idToToken[id] else { throw ModelError.invalidInput("token id \(id) is not in the tokenizer's vocabulary") }
            for ch in token {
                if let b = charToByte[ch] { bytes.append(b) } else { bytes += Array(String(ch).utf8) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
