import Foundation

/// A Hugging Face `tokenizer.json` with a BPE model, encoding and decoding exactly as the
/// `tokenizers` library does (tested against it on multilingual text).
///
/// Supported, as the released Llama-2/3, Mistral, Qwen2/2.5/3 and GPT-2 tokenizers use them:
/// `model.type` "BPE" (merges as "a b" strings or ["a", "b"] pairs, `ignore_merges`,
/// `byte_fallback` to `<0x..>` tokens, `unk_token` with `fuse_unk`); `normalizer` null, NFC,
/// Prepend, Replace (a literal string) or a Sequence of them; `pre_tokenizer` ByteLevel (with or
/// without the GPT-2 regex and prefix space), a Sequence of Split (a regex, behaviour Isolated)
/// then ByteLevel (Llama-3, Qwen), Metaspace (`prepend_scheme`, `split`) or null; added tokens
/// (matched literally before normalisation, leftmost-longest); decoder ByteLevel, Metaspace,
/// Replace, ByteFallback, Fuse, Strip or a Sequence of them. Anything else is refused by name at
/// load time. ``encode(_:)`` applies no post-processor (as `encode(text, add_special_tokens=False)`);
/// ``encodeDocument(_:)`` applies it (``PostProcessor``: the BOS of Llama 3's template), and
/// `data prepare` writes each document so, followed by the end-of-text token unless the template
/// already ended with it.
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
    let normalizers: [NormalizerStep]
    let preTokenization: PreTokenization
    let decoders: [DecoderStep]
    /// The `post_processor` (special tokens around a document).
    public let postProcessor: PostProcessor
    /// `byte_fallback`: a character missing from the vocabulary becomes its UTF-8 bytes' `<0x..>` tokens.
    let byteFallback: Bool
    /// `unk_token`'s id (characters with no token and no byte fallback), and whether runs of them fuse.
    let unknown: Int?
    let fuseUnknown: Bool
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
        if let cs = model["continuing_subword_prefix"]?.string, !cs.isEmpty {
            throw fail("model.continuing_subword_prefix", "not supported")
        }
        if let ew = model["end_of_word_suffix"]?.string, !ew.isEmpty {
            throw fail("model.end_of_word_suffix", "not supported")
        }
        if let d = model["dropout"]?.double, d > 0 {
            throw fail("model.dropout", "BPE dropout \(d) is not supported (tokenisation would be random)")
        }
        normalizers = try NormalizerStep.parse(json["normalizer"], fail: fail)
        decoders = try DecoderStep.parse(json["decoder"], fail: fail)
        postProcessor = try PostProcessor.parse(json["post_processor"], fail: fail)

        // Pre-tokenizer.
        func byteLevel(_ p: [String: JSON], split: Regex<AnyRegexOutput>?) throws -> PreTokenization {
            var regex = split
            if p["use_regex"]?.bool ?? true {
                guard regex == nil else { throw fail("pre_tokenizer", "two regex splits are not supported") }
                regex = try Regex(Self.gpt2Pattern).matchingSemantics(.unicodeScalar)
            }
            return .byteLevel(split: regex, addPrefixSpace: p["add_prefix_space"]?.bool ?? false)
        }
        let pre = json["pre_tokenizer"]
        switch pre?["type"]?.string {
        case nil where pre == nil || pre!.isNull:
            preTokenization = .none
        case "ByteLevel":
            preTokenization = try byteLevel(pre!.object!, split: nil)
        case "Metaspace":
            let (r, scheme) = try DecoderStep.metaspaceOptions(pre!, fail: fail, key: "pre_tokenizer")
            preTokenization = .metaspace(replacement: r, prepend: scheme, split: pre!["split"]?.bool ?? true)
        case "Sequence":
            let steps = pre!["pretokenizers"]?.array?.compactMap(\.object) ?? []
            guard steps.count == 2, steps[0]["type"]?.string == "Split", steps[1]["type"]?.string == "ByteLevel" else {
                throw fail("pre_tokenizer", "a Sequence is supported only as [Split, ByteLevel]")
            }
            let split = steps[0]
            guard let pattern = split["pattern"]?["Regex"]?.string else {
                throw fail("pre_tokenizer.pretokenizers[0].pattern", "only a Regex pattern is supported")
            }
            guard split["behavior"]?.string == "Isolated", split["invert"]?.bool != true else {
                throw fail("pre_tokenizer.pretokenizers[0].behavior", "only Isolated (not inverted) is supported")
            }
            let regex: Regex<AnyRegexOutput>
            do { regex = try Regex(pattern).matchingSemantics(.unicodeScalar) } catch {
                throw fail("pre_tokenizer.pretokenizers[0].pattern.Regex", "cannot compile: \(error)")
            }
            preTokenization = try byteLevel(steps[1], split: regex)
        default:
            throw fail(
                "pre_tokenizer.type",
                "'\(pre?["type"]?.string ?? "?")' is not supported (ByteLevel, Sequence [Split, ByteLevel], Metaspace, or null)"
            )
        }
        byteFallback = model["byte_fallback"]?.bool ?? false
        fuseUnknown = model["fuse_unk"]?.bool ?? false

        guard let vocabJSON = model["vocab"]?.object else { throw fail("model.vocab", "missing") }
        guard !vocabJSON.isEmpty else { throw fail("model.vocab", "empty: a tokenizer needs at least one token") }
        /// Ids are stored in u16/u32 shards and read as Int32 by the model: bound them well below.
        let maxID = Self.maxTokenID
        func checkedID(_ value: JSON?, _ key: String) throws -> Int {
            guard let id = value?.int else {
                throw fail(key, "id \(value.map { "\($0)" } ?? "missing") is not an integer")
            }
            guard id >= 0 else { throw fail(key, "id \(id) is negative") }
            guard id <= maxID else { throw fail(key, "id \(id) is beyond any vocabulary (at most \(maxID))") }
            return id
        }
        var vocab: [String: Int] = [:]
        for (token, id) in vocabJSON { vocab[token] = try checkedID(id, "model.vocab.\(token)") }
        var ranks: [String: Int] = [:]
        if let merges = model["merges"], merges.array == nil, merges != .null {
            throw fail("model.merges", "not an array")
        }
        for (i, m) in (model["merges"]?.array ?? []).enumerated() {
            let pair: [String]
            if let s = m.string {
                pair = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            } else {
                pair = m.array?.compactMap(\.string) ?? []
            }
            guard pair.count == 2 else { throw fail("model.merges[\(i)]", "not a pair") }
            if ranks[pair[0] + " " + pair[1]] == nil { ranks[pair[0] + " " + pair[1]] = i }
        }
        var added: [(String, Int, Bool)] = []
        if let list = json["added_tokens"], list.array == nil, list != .null {
            throw fail("added_tokens", "not an array")
        }
        for (i, t) in (json["added_tokens"]?.array ?? []).enumerated() {
            guard let content = t["content"]?.string, !content.isEmpty else {
                throw fail("added_tokens[\(i)].content", "missing or not a non-empty string")
            }
            let id = try checkedID(t["id"], "added_tokens[\(i)].id")
            for flag in ["single_word", "lstrip", "rstrip"] where t[flag]?.bool == true {
                throw fail("added_tokens[\(i)].\(flag)", "'\(content)': \(flag) is not supported")
            }
            if t["normalized"]?.bool == true, normalizers.contains(where: { $0 != .nfc }) {
                throw fail(
                    "added_tokens[\(i)].normalized",
                    "'\(content)' is matched after normalisation; only tokens matched on the raw text are supported with this normalizer"
                )
            }
            added.append((content, id, t["special"]?.bool ?? false))
            vocab[content] = id
        }
        if let name = model["unk_token"]?.string {
            guard let id = vocab[name] else { throw fail("model.unk_token", "'\(name)' is not in the vocabulary") }
            unknown = id
        } else {
            unknown = nil
        }
        self.vocab = vocab
        self.ranks = ranks
        self.ignoreMerges = model["ignore_merges"]?.bool ?? false
        self.added = added.sorted { $0.0.count > $1.0.count }
        addedByID = Dictionary(added.map { ($0.1, ($0.0, $0.2)) }, uniquingKeysWith: { a, _ in a })
        idToToken = Dictionary(vocab.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        vocabularySize = (vocab.values.max() ?? -1) + 1
        let eosNames = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"]
        let configured = Self.configuredEndOfText(beside: url)
        if let name = configured, let id = vocab[name] {
            endOfText = id
            endOfTextDescription = "'\(name)' (id \(id)), the eos_token of tokenizer_config.json"
        } else if let name = eosNames.first(where: { vocab[$0] != nil }) {
            endOfText = vocab[name]!
            endOfTextDescription = "'\(name)' (id \(endOfText))"
        } else if let special = added.first(where: { $0.2 }) {
            endOfText = special.1
            endOfTextDescription =
                "'\(special.0)' (id \(special.1)), the first special added token (none is named \(eosNames.joined(separator: ", ")))"
        } else {
            endOfText = 0
            endOfTextDescription =
                "id 0 ('\(vocab.first { $0.value == 0 }?.key ?? "?")'): the tokenizer has no end-of-text or special token"
        }
        byteToChar = Self.bytesToUnicode()
        charToByte = Dictionary(uniqueKeysWithValues: byteToChar.enumerated().map { ($1, UInt8($0)) })
        identifier = url.path
    }

    /// The `eos_token` of a `tokenizer_config.json` beside the tokenizer (a string or an object
    /// with `content`), if there is one.
    static func configuredEndOfText(beside url: URL) -> String? {
        let config = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: config), let json = JSON.parse(data) else { return nil }
        return json["eos_token"]?.string ?? json["eos_token"]?["content"]?.string
    }

    // MARK: encode

    /// `text` with the post-processor's special tokens (`add_special_tokens=True`).
    public func encodeDocument(_ text: String) -> [Int] { postProcessor.apply(encode(text)) }

    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for (i, segment) in splitAdded(text).enumerated() {
            switch segment {
            case let .added(id): ids.append(id)
            case let .text(s):
                // Metaspace's "first" scheme prepends only to the section that opens the text.
                forEachPiece(normalize(s), first: i == 0) { bpe($0, into: &ids) }
            }
        }
        return ids
    }

    enum Segment { case added(Int), text(String) }

    /// Splits out added tokens (longest first, leftmost), as the library does before normalising.
    func splitAdded(_ text: String) -> [Segment] {
        guard !added.isEmpty else { return [.text(text)] }
        var out: [Segment] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var best: (range: Range<Substring.Index>, id: Int)? = nil
            for a in added {
                if let r = rest.range(of: a.content), best == nil || r.lowerBound < best!.range.lowerBound {
                    best = (r, a.id)
                }
            }
            guard let b = best else { out.append(.text(String(rest))); break }
            if b.range.lowerBound > rest.startIndex { out.append(.text(String(rest[..<b.range.lowerBound]))) }
            out.append(.added(b.id))
            rest = rest[b.range.upperBound...]
        }
        return out
    }

    func normalize(_ s: String) -> String { normalizers.reduce(s) { $1.apply($0) } }

    /// Pre-tokenised pieces of a (normalised) section, mapped to byte-level characters where the
    /// pre-tokenizer is ByteLevel.
    func preTokenize(_ text: String, first: Bool = true) -> [String] {
        var pieces: [String] = []
        forEachPiece(text, first: first) { pieces.append($0) }
        return pieces
    }

    /// Calls `body` with each pre-tokenised piece in order, one match at a time: memory stays
    /// proportional to the longest piece, not to the text (a 50 MB single-line document once
    /// needed 4.9 GB when every match was collected first).
    func forEachPiece(_ text: String, first: Bool, _ body: (String) -> Void) {
        switch preTokenization {
        case .none:
            if !text.isEmpty { body(text) }
        case let .metaspace(r, scheme, split):
            guard !text.isEmpty else { return }
            var s = String(String.UnicodeScalarView(text.unicodeScalars.map { $0 == " " ? r : $0 }))
            if (scheme == .always || scheme == .first && first) && s.unicodeScalars.first != r {
                s = String(Character(r)) + s
            }
            guard split else { body(s); return }
            var piece = String.UnicodeScalarView()
            for c in s.unicodeScalars {
                if c == r && !piece.isEmpty { body(String(piece)); piece = String.UnicodeScalarView() }
                piece.append(c)
            }
            if !piece.isEmpty { body(String(piece)) }
        case let .byteLevel(splitRegex, addPrefixSpace):
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
    }

    /// Byte-pair merges of one piece, appended to `ids`: the piece's characters (or, missing from
    /// the vocabulary, their `<0x..>` byte tokens or the unknown token), then repeatedly the
    /// adjacent pair of lowest merge rank, leftmost first — the library's priority-queue
    /// algorithm, linear-logarithmic in the piece's length.
    func bpe(_ piece: String, into ids: inout [Int]) {
        if ignoreMerges, let id = vocab[piece] { ids.append(id); return }
        var symbols: [String] = []
        var lastWasUnknown = false
        for c in piece.unicodeScalars {
            let s = String(c)
            if vocab[s] != nil { symbols.append(s); lastWasUnknown = false; continue }
            if byteFallback {
                let bytes = s.utf8.map { String(format: "<0x%02X>", $0) }
                if bytes.allSatisfy({ vocab[$0] != nil }) { symbols += bytes; lastWasUnknown = false; continue }
            }
            guard let unknown else { continue }
            if !(fuseUnknown && lastWasUnknown) { symbols.append(idToToken[unknown] ?? "") }
            lastWasUnknown = true
        }
        var next = Array(1...max(1, symbols.count)).map { $0 < symbols.count ? $0 : -1 }
        var prev = (0..<symbols.count).map { $0 - 1 }
        var alive = [Bool](repeating: true, count: symbols.count)
        var queue = MergeQueue()
        func rank(_ i: Int) -> Int? { next[i] < 0 ? nil : ranks[symbols[i] + " " + symbols[next[i]]] }
        for i in 0..<symbols.count { if let r = rank(i) { queue.push(rank: r, pos: i) } }
        while let top = queue.pop() {
            // Stale entries: the left symbol was merged away, or its pair changed.
            guard alive[top.pos], rank(top.pos) == top.rank else { continue }
            let right = next[top.pos]
            symbols[top.pos] += symbols[right]
            alive[right] = false
            next[top.pos] = next[right]
            if next[right] >= 0 { prev[next[right]] = top.pos }
            if prev[top.pos] >= 0, let r = rank(prev[top.pos]) { queue.push(rank: r, pos: prev[top.pos]) }
            if let r = rank(top.pos) { queue.push(rank: r, pos: top.pos) }
        }
        for i in symbols.indices where alive[i] { if let id = vocab[symbols[i]] { ids.append(id) } }
    }

    // MARK: decode

    /// Ids back to text through the tokenizer's decoder; special added tokens are skipped (the
    /// library's default, `skip_special_tokens=True`); invalid UTF-8 becomes U+FFFD.
    /// - Throws: ``ModelError/invalidInput(_:)`` for an id outside the vocabulary.
    public func decode(_ ids: [Int]) throws -> String {
        var tokens: [String] = []
        for id in ids {
            if let a = addedByID[id] {
                if !a.special { tokens.append(a.content) }
                continue
            }
            guard let token = idToToken[id] else {
                throw ModelError.invalidInput("token id \(id) is not in the tokenizer's vocabulary")
            }
            tokens.append(token)
        }
        return decoders.reduce(tokens) { $1.apply($0, charToByte: charToByte) }.joined()
    }
}
