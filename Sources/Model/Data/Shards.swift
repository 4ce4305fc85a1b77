import Foundation

/// Per-language counts of one split.
public struct LanguageStats: Sendable, Equatable {
    public var documents = 0
    public var bytes = 0
    public var tokens = 0
    /// Token range of this language inside the split (documents are grouped by language).
    public var tokenStart = 0
    public var tokenEnd = 0
    public init() {}
}

/// A prepared corpus on disk: token shards, a document index and language tags, split into
/// train and validation by whole documents.
///
/// Files: `manifest.json`, and per split `SPLIT.tokens` (little-endian u16, or u32 when the
/// vocabulary exceeds 65,536) and `SPLIT.docs` (per document: u64 first token, u32 token count,
/// u32 language index). Documents are grouped by language, so each language is one contiguous
/// token range; every document is followed by the tokenizer's end-of-text id.
public final class TokenShards: @unchecked Sendable {
    public static let splits = ["train", "validation"]
    public let directory: URL
    public let manifest: JSON
    public let languages: [String]
    public let tokenizerName: String
    public let vocabularySize: Int
    public let endOfText: Int
    let wide: Bool
    private var tokenData: [String: Data] = [:]
    public private(set) var stats: [String: [String: LanguageStats]] = [:]

    /// Opens a prepared corpus (memory-mapped).
    /// - Throws: ``ModelError/io(path:reason:)`` naming the file that is missing or inconsistent.
    public init(directory: URL) throws {
        self.directory = directory
        let manifestURL = directory.appendingPathComponent("manifest.json")
        let data: Data
        do { data = try FileIO.read(manifestURL, what: "corpus manifest") } catch {
            throw ModelError.io(
                path: manifestURL.path,
                reason:
                    "not a prepared corpus (run `topiary data prepare` first): "
                    + "\((error as? ModelError).map { if case let .io(_, r) = $0 { return r } else { return "\($0)" } } ?? "\(error)")"
            )
        }
        guard let manifest = JSON.parse(data), manifest["format"]?.string == "topiary-shards-1" else {
            throw ModelError.io(
                path: manifestURL.path, reason: "not a prepared corpus (run `topiary data prepare` first)")
        }
        self.manifest = manifest
        languages = manifest["languages"]?.array?.compactMap(\.string) ?? []
        tokenizerName = manifest["tokenizer"]?.string ?? "byte"
        vocabularySize = manifest["vocab_size"]?.int ?? 0
        endOfText = manifest["end_of_text"]?.int ?? 0
        wide = manifest["dtype"]?.string == "u32"
        for split in Self.splits {
            let url = directory.appendingPathComponent("\(split).tokens")
            let tokens = try FileIO.read(url, mapped: true, what: "token shard")
            var perLanguage: [String: LanguageStats] = [:]
            for (lang, s) in manifest["splits"]?[split]?["languages"]?.object ?? [:] {
                var st = LanguageStats()
                st.documents = s["documents"]?.int ?? 0
                st.bytes = s["bytes"]?.int ?? 0
                st.tokens = s["tokens"]?.int ?? 0
                st.tokenStart = s["token_start"]?.int ?? 0
                st.tokenEnd = s["token_end"]?.int ?? 0
                // Each language is one token range: the sampler and evaluation index with it.
                guard languages.contains(lang), st.tokenStart >= 0, st.tokenStart <= st.tokenEnd,
                    st.tokens == st.tokenEnd - st.tokenStart, st.documents >= 0, st.bytes >= 0
                else {
                    throw ModelError.io(
                        path: manifestURL.path,
                        reason: "splits.\(split).languages.\(lang): an inconsistent entry "
                            + "(token_start \(st.tokenStart), token_end \(st.tokenEnd), tokens "
                            + "\(st.tokens)\(languages.contains(lang) ? "" : ", not in languages")); the "
                            + "corpus is damaged — prepare it again"
                    )
                }
                perLanguage[lang] = st
            }
            let sorted = perLanguage.values.sorted { $0.tokenStart < $1.tokenStart }
            for (a, b) in zip(sorted, sorted.dropFirst()) where a.tokenEnd > b.tokenStart {
                throw ModelError.io(
                    path: manifestURL.path,
                    reason: "splits.\(split): language token ranges overlap; the corpus is damaged — prepare it again")
            }
            let expected = perLanguage.values.map(\.tokenEnd).max() ?? 0
            guard tokens.count == expected * (wide ? 4 : 2) else {
                throw ModelError.io(
                    path: url.path,
                    reason: "holds \(tokens.count) bytes but manifest.json describes \(expected) tokens (truncated?)")
            }
            tokenData[split] = tokens
            stats[split] = perLanguage
        }
    }

    /// Number of tokens in a split.
    public func tokenCount(_ split: String) -> Int { (tokenData[split]?.count ?? 0) / (wide ? 4 : 2) }

    /// Copies `count` tokens of `split` starting at `start` into `out`.
    public func tokens(_ split: String, start: Int, count: Int, into out: UnsafeMutablePointer<Int32>) {
        tokenData[split]!.withUnsafeBytes { raw in
            if wide {
                let p = raw.baseAddress!.assumingMemoryBound(to: UInt32.self) + start
                for i in 0..<count { out[i] = Int32(UInt32(littleEndian: p[i])) }
            } else {
                let p = raw.baseAddress!.assumingMemoryBound(to: UInt16.self) + start
                for i in 0..<count { out[i] = Int32(UInt16(littleEndian: p[i])) }
            }
        }
    }

    public func tokens(_ split: String, start: Int, count: Int) -> [Int32] {
        [Int32](unsafeUninitializedCapacity: count) { buf, n in
            tokens(split, start: start, count: count, into: buf.baseAddress!)
            n = count
        }
    }
}

/// Writes a prepared corpus.
public enum ShardWriter {
    /// Tokenises `documents`, splits them by document into train and validation (a seeded
    /// `validationFraction` of each language, at least one document), and writes the corpus to
    /// `directory` through a temporary directory renamed into place.
    /// - Throws: ``ModelError/invalidInput(_:)`` for an empty corpus or a language with too few
    ///   documents for a validation split; ``ModelError/io(path:reason:)`` when writing fails or
    ///   `directory` exists and `overwrite` is false.
    public static func write(
        documents: [Document], tokenizer: any Tokenizer, to directory: URL,
        validationFraction: Double = 0.05, seed: UInt64 = 0, overwrite: Bool = false,
        skipped: SkipReport = SkipReport(), progress: ((Int, Int) -> Void)? = nil
    ) throws -> JSON {
        guard !documents.isEmpty else { throw ModelError.invalidInput("the corpus is empty: no documents were read") }
        let fm = FileManager.default
        if fm.fileExists(atPath: directory.path) && !overwrite {
            throw ModelError.io(path: directory.path, reason: "already exists (pass --force to replace it)")
        }
        var byLanguage: [String: [Document]] = [:]
        for d in documents { byLanguage[d.language, default: []].append(d) }
        let languages = byLanguage.keys.sorted()
        var splitDocs: [String: [(Document, Int)]] = ["train": [], "validation": []]
        for (li, lang) in languages.enumerated() {
            var docs = byLanguage[lang]!
            guard docs.count >= 2 else {
                throw ModelError.invalidInput(
                    "language '\(lang)' has \(docs.count) document; at least 2 are needed so that it has validation documents"
                )
            }
            var rng = SeededGenerator(seed: seed &+ UInt64(li) &* 7919)
            docs.shuffle(using: &rng)
            let nValidation = min(docs.count - 1, max(1, Int((Double(docs.count) * validationFraction).rounded())))
            splitDocs["validation"]! += docs[0..<nValidation].map { ($0, li) }
            splitDocs["train"]! += docs[nValidation...].map { ($0, li) }
        }
        let wide = tokenizer.vocabularySize > 65536
        // At most one token per byte with a byte-level tokenizer, plus the end-of-text ids and the index.
        try FileIO.requireFreeSpace(
            documents.reduce(0) { $0 + ($1.text.utf8.count + 1) * (wide ? 4 : 2) + 16 },
            in: directory.deletingLastPathComponent(),
            for: "writing the token shards")
        let limit = tokenizer.vocabularySize
        guard limit > 0, limit <= (wide ? Int(UInt32.max) : 65536), (0..<limit).contains(tokenizer.endOfText) else {
            throw ModelError.invalidInput(
                "tokenizer \(tokenizer.identifier): vocabulary size \(limit) with end-of-text id "
                    + "\(tokenizer.endOfText) does not fit token shards"
            )
        }
        let temporary = directory.deletingLastPathComponent().appendingPathComponent(
            ".\(directory.lastPathComponent).tmp-\(getpid())")
        try? fm.removeItem(at: temporary)
        do { try fm.createDirectory(at: temporary, withIntermediateDirectories: true) } catch {
            throw ModelError.io(path: temporary.path, reason: "cannot create: \(FileIO.describe(error))")
        }
        var splitsJSON: [String: JSON] = [:]
        var done = 0
        let total = documents.count
        for split in TokenShards.splits {
            var tokens = Data()
            var index = Data()
            var stats: [String: LanguageStats] = [:]
            var position = 0
            for (doc, li) in splitDocs[split]! {
                var ids = tokenizer.encodeDocument(doc.text)
                if let bad = ids.first(where: { !(0..<limit).contains($0) }) {
                    try? fm.removeItem(at: temporary)
                    throw ModelError.invalidInput(
                        "tokenizer \(tokenizer.identifier) produced id \(bad), outside its vocabulary "
                            + "0..<\(limit), for a \(doc.language) document; nothing was written"
                    )
                }
                if ids.last != tokenizer.endOfText { ids.append(tokenizer.endOfText) }
                var st =
                    stats[languages[li]]
                    ?? {
                        var s = LanguageStats(); s.tokenStart = position; return s
                    }()
                st.documents += 1
                st.bytes += doc.text.utf8.count
                st.tokens += ids.count
                var start = UInt64(position).littleEndian, count = UInt32(ids.count).littleEndian,
                    lang = UInt32(li).littleEndian
                index.append(Data(bytes: &start, count: 8)); index.append(Data(bytes: &count, count: 4));
                index.append(Data(bytes: &lang, count: 4))
                if wide {
                    var words = ids.map { UInt32($0).littleEndian }
                    tokens.append(Data(bytes: &words, count: words.count * 4))
                } else {
                    var words = ids.map { UInt16($0).littleEndian }
                    tokens.append(Data(bytes: &words, count: words.count * 2))
                }
                position += ids.count
                st.tokenEnd = position
                stats[languages[li]] = st
                done += 1
                if done % 2000 == 0 { progress?(done, total) }
            }
            try AtomicFile.write(tokens, to: temporary.appendingPathComponent("\(split).tokens"))
            try AtomicFile.write(index, to: temporary.appendingPathComponent("\(split).docs"))
            var langJSON: [String: JSON] = [:]
            for (lang, s) in stats {
                langJSON[lang] = [
                    "documents": JSON(s.documents), "bytes": JSON(s.bytes), "tokens": JSON(s.tokens),
                    "token_start": JSON(s.tokenStart), "token_end": JSON(s.tokenEnd)
                ]
            }
            splitsJSON[split] = [
                "documents": JSON(splitDocs[split]!.count), "tokens": JSON(position), "languages": .object(langJSON)
            ]
        }
        let manifest: JSON = [
            "format": "topiary-shards-1", "tokenizer": .string(tokenizer.identifier),
            "vocab_size": JSON(tokenizer.vocabularySize), "end_of_text": JSON(tokenizer.endOfText),
            "dtype": wide ? "u32" : "u16", "languages": .array(languages.map { .string($0) }),
            "validation_fraction": JSON(validationFraction), "seed": JSON(Int(seed)),
            "splits": .object(splitsJSON),
            "skipped": [
                "invalid_utf8_files": .array(skipped.invalidUTF8Files.map { .string($0) }),
                "invalid_utf8_documents": JSON(skipped.invalidUTF8Documents),
                "offensive_files": .array(skipped.offensiveFiles.map { .string($0) }),
                "replaced_by_utf8_twin": .array(skipped.replacedByUTF8Twin.map { .string($0) }),
                "empty_documents": JSON(skipped.emptyDocuments)
            ]
        ]
        try AtomicFile.write(manifest.data(), to: temporary.appendingPathComponent("manifest.json"))
        if fm.fileExists(atPath: directory.path) {
            let old = directory.deletingLastPathComponent().appendingPathComponent(
                ".\(directory.lastPathComponent).old-\(getpid())")
            try fm.moveItem(at: directory, to: old)
            try fm.moveItem(at: temporary, to: directory)
            try? fm.removeItem(at: old)
        } else {
            try fm.moveItem(at: temporary, to: directory)
        }
        return manifest
    }
}
