import Foundation
import Model
import Testing

/// Encode and decode against the `tokenizers` library's own output.
@Suite struct TokenizerTests {
    struct Case: Sendable, CustomStringConvertible {
        var tokenizer: String, text: String, ids: [Int], decoded: String
        var description: String { "\(tokenizer): \(text.debugDescription)" }
    }

    static let cases: [Case] = {
        let url = fixtures.appendingPathComponent("tokenizers/cases.jsonl")
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let j = JSON.parse(Data(line.utf8)) else { return nil }
            return Case(tokenizer: j["tokenizer"]!.string!, text: j["text"]!.string!,
                        ids: j["ids"]!.array!.compactMap(\.int), decoded: j["decoded"]!.string!)
        }
    }()

    @Test func fixturesPresent() {
        #expect(Self.cases.count >= 250)
        #expect(Set(Self.cases.map(\.tokenizer)) == ["gpt2-style.json", "llama3-style.json", "qwen2-style.json", "llama2-style.json", "metaspace-style.json"])
    }

    /// Each fixture tokenizer, loaded once.
    static let tokenizers: [String: BPETokenizer] = Dictionary(uniqueKeysWithValues: Set(cases.map(\.tokenizer)).map {
        ($0, try! BPETokenizer(url: fixtures.appendingPathComponent("tokenizers/\($0)")))
    })

    /// Every kind (ByteLevel with the GPT-2, Llama-3 and Qwen2 splits, NFC; SentencePiece-style
    /// with byte fallback, the legacy Prepend/Replace normalizer and the Metaspace layout) on
    /// tricky texts and a sample of the fortunes corpus in a dozen languages.
    @Test(arguments: cases)
    func matchesHuggingFaceTokenizers(_ c: Case) throws {
        let tok = try #require(Self.tokenizers[c.tokenizer])
        #expect(tok.encode(c.text) == c.ids)
        #expect(try tok.decode(c.ids) == c.decoded)
    }

    /// The document separator: the eos_token of a tokenizer_config.json beside the tokenizer when
    /// there is one (Qwen's chat models end documents with <|im_end|>), else the first of the
    /// usual end-of-text names; `data prepare` prints which.
    @Test func documentSeparatorIsTheTokenizersOwn() throws {
        let llama2 = try #require(Self.tokenizers["llama2-style.json"])
        #expect(llama2.endOfText == 2 && llama2.endOfTextDescription.hasPrefix("'</s>' (id 2)"), "\(llama2.endOfTextDescription)")
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("tokenizer.json")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizers/qwen2-style.json"), to: url)
        #expect(try BPETokenizer(url: url).endOfTextDescription.hasPrefix("'<|endoftext|>' (id 0)"))
        try Data(#"{"eos_token": {"content": "<|im_end|>", "special": true}}"#.utf8).write(to: dir.appendingPathComponent("tokenizer_config.json"))
        let qwen = try BPETokenizer(url: url)
        #expect(qwen.endOfText == 2 && qwen.endOfTextDescription == "'<|im_end|>' (id 2), the eos_token of tokenizer_config.json", "\(qwen.endOfTextDescription)")
    }

    @Test func byteTokenizerRoundTrips() throws {
        let t = ByteTokenizer()
        for s in ["", "héllo", "他说 👍🏽\n", "e\u{301}"] {
            #expect(try t.decode(t.encode(s)) == s)
            #expect(t.encode(s).count == s.utf8.count)
        }
        #expect(try t.decode([104, 105, 256]) == "hi<|endoftext|>")
        #expect(throws: ModelError.self) { _ = try t.decode([300]) }
    }

    @Test func unsupportedTokenizerNamesWhat() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("tokenizer.json")
        let base = JSON.parse(try Data(contentsOf: fixtures.appendingPathComponent("tokenizers/gpt2-style.json")))!.object!
        for (path, edit) in [("model.type", { (j: inout [String: JSON]) in var m = j["model"]!.object!; m["type"] = "WordPiece"; j["model"] = .object(m) }),
                             ("pre_tokenizer.type", { (j: inout [String: JSON]) in j["pre_tokenizer"] = ["type": "Whitespace"] }),
                             ("normalizer.type", { (j: inout [String: JSON]) in j["normalizer"] = ["type": "Lowercase"] })] {
            var j = base
            edit(&j)
            try JSON.object(j).data().write(to: url)
            #expect(throws: ModelError.self) { _ = try BPETokenizer(url: url) }
            do { _ = try BPETokenizer(url: url) } catch { #expect("\(error)".contains(path), "\(error)") }
        }
    }

    /// Issue 16 items 4 and 17: ids a shard cannot hold, or that no vocabulary has, are refused at
    /// load, naming the key; so are malformed merges and added tokens, and an empty vocabulary.
    @Test func impossibleIdsAndMalformedListsAreRefusedAtLoad() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("tokenizer.json")
        let base = JSON.parse(try Data(contentsOf: fixtures.appendingPathComponent("tokenizers/gpt2-style.json")))!.object!
        func model(_ j: inout [String: JSON], _ edit: (inout [String: JSON]) -> Void) { var m = j["model"]!.object!; edit(&m); j["model"] = .object(m) }
        func vocabEntry(_ token: String, _ id: JSON) -> (inout [String: JSON]) -> Void {
            { j in model(&j) { m in var v = m["vocab"]!.object!; v[token] = id; m["vocab"] = .object(v) } }
        }
        let cases: [(String, (inout [String: JSON]) -> Void)] = [
            ("model.vocab.huge", vocabEntry("huge", JSON(1 << 40))),
            ("model.vocab.minus", vocabEntry("minus", -1)),
            ("model.vocab.half", vocabEntry("half", 2.5)),
            ("model.vocab", { j in model(&j) { $0["vocab"] = [:] } }),
            ("model.merges", { j in model(&j) { $0["merges"] = "x" } }),
            ("added_tokens[0].id", { j in j["added_tokens"] = [["content": "<x>", "id": "seven"]] }),
            ("added_tokens[0].id", { j in j["added_tokens"] = [["content": "<x>", "id": -3]] }),
            ("added_tokens[0].id", { j in j["added_tokens"] = [["content": "<x>", "id": JSON(1 << 30)]] }),
            ("added_tokens[0].content", { j in j["added_tokens"] = [["id": 5]] }),
            ("added_tokens", { j in j["added_tokens"] = "none" }),
        ]
        for (path, edit) in cases {
            var j = base
            edit(&j)
            try JSON.object(j).data().write(to: url)
            do {
                _ = try BPETokenizer(url: url)
                Issue.record("\(path): accepted")
            } catch { #expect("\(error)".contains(path), "\(error)") }
        }
        // A tokenizer without an end-of-text token says what separates documents.
        var plain = base
        plain["added_tokens"] = []
        model(&plain) { m in var v = m["vocab"]!.object!; for name in ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"] { v[name] = nil }; m["vocab"] = .object(v) }
        try JSON.object(plain).data().write(to: url)
        let tok = try BPETokenizer(url: url)
        #expect(tok.endOfTextDescription.contains("no end-of-text"), "\(tok.endOfTextDescription)")
    }
}

/// Post-processors (`add_special_tokens=True`) against the `tokenizers` library, and how
/// `data prepare` joins documents with them.
@Suite struct PostProcessorTests {
    static let cases: [JSON] = {
        let url = fixtures.appendingPathComponent("tokenizers/special-cases.jsonl")
        return ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { JSON.parse(Data($0.utf8)) }
    }()

    /// Llama 3's TemplateProcessing (BOS before the text) and a Sequence of ByteLevel and
    /// RobertaProcessing (`<s> A </s>`) give the library's ids; without special tokens, none.
    @Test func specialTokensAsTheLibraryAddsThem() throws {
        #expect(Self.cases.count == 14)
        var tokenizers: [String: BPETokenizer] = [:]
        for c in Self.cases {
            let name = try #require(c["tokenizer"]?.string)
            let tok = try tokenizers[name] ?? BPETokenizer(url: fixtures.appendingPathComponent("tokenizers/\(name)"))
            tokenizers[name] = tok
            let text = try #require(c["text"]?.string)
            #expect(tok.encodeDocument(text) == c["ids"]?.array?.compactMap(\.int), "\(name): \(text)")
            #expect(tok.encode(text) == c["ids_plain"]?.array?.compactMap(\.int), "\(name): \(text)")
        }
        #expect(tokenizers["llama3-bos.json"]?.postProcessor == PostProcessor(prefix: [700]))
        #expect(tokenizers["roberta-style.json"]?.postProcessor == PostProcessor(prefix: [700], suffix: [701]))
    }

    /// Shards hold each document as the model was trained on it: Llama 3's BOS, the text, then
    /// the end-of-text token (never twice when the template already ends with it).
    @Test func documentsAreJoinedWithTheTemplate() throws {
        let tok = try BPETokenizer(url: fixtures.appendingPathComponent("tokenizers/llama3-bos.json"))
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let docs = (0..<40).map { Document(text: "document \($0) says hello", language: "en") }
        _ = try ShardWriter.write(documents: docs, tokenizer: tok, to: dir.appendingPathComponent("shards"), validationFraction: 0.1)
        let shards = try TokenShards(directory: dir.appendingPathComponent("shards"))
        let stats = try #require(shards.stats["train"]?["en"])
        let tokens = shards.tokens("train", start: stats.tokenStart, count: stats.tokens).map(Int.init)
        let bos = 700, eot = tok.endOfText
        #expect(tokens.first == bos && tokens.last == eot)
        #expect(tokens.filter { $0 == bos }.count == stats.documents && tokens.filter { $0 == eot }.count == stats.documents)
        // Every end of text is followed by the next document's BOS.
        for i in tokens.indices.dropLast() where tokens[i] == eot { #expect(tokens[i + 1] == bos) }
    }
}

/// Repo ids resolved in the local Hugging Face cache layout, never over the network.
@Suite struct HubCacheTests {
    @Test func repoIDsResolveThroughRefsMain() throws {
        let hub = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: hub) }
        let repo = hub.appendingPathComponent("models--Org--Tiny-Model")
        let snapshot = repo.appendingPathComponent("snapshots/0123abcd")
        try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: repo.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try "0123abcd\n".write(to: repo.appendingPathComponent("refs/main"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("llama_tied/config.json"),
                                         to: snapshot.appendingPathComponent("config.json"))
        for env in [["HF_HUB_CACHE": hub.path], ["HF_HOME": hub.deletingLastPathComponent().path]] {
            var env = env
            if env["HF_HOME"] != nil {
                // HF_HOME/hub is the cache: link it.
                let home = temporaryDirectory("hf-home")
                defer { try? FileManager.default.removeItem(at: home) }
                try FileManager.default.createSymbolicLink(at: home.appendingPathComponent("hub"), withDestinationURL: hub)
                env = ["HF_HOME": home.path]
                #expect(try HubCache.resolve("Org/Tiny-Model", environment: env).path == home.appendingPathComponent("hub/models--Org--Tiny-Model/snapshots/0123abcd").path)
            } else {
                #expect(try HubCache.resolve("Org/Tiny-Model", environment: env).resolvingSymlinksInPath().path == snapshot.resolvingSymlinksInPath().path)
                #expect(try HubCache.resolve("Org/Tiny-Model@0123abcd", environment: env).resolvingSymlinksInPath().path == snapshot.resolvingSymlinksInPath().path)
            }
        }
        // Not cached: the error names the folder it looked in.
        do {
            _ = try HubCache.resolve("Org/Missing", environment: ["HF_HUB_CACHE": hub.path])
            Issue.record("a missing repo resolved")
        } catch {
            #expect("\(error)".contains(hub.appendingPathComponent("models--Org--Missing").path), "\(error)")
        }
        #expect(!HubCache.isRepoID("a/b/c") && !HubCache.isRepoID("../x") && !HubCache.isRepoID("/abs/path") && HubCache.isRepoID("Qwen/Qwen3-8B"))
        // A folder of that name wins over the cache.
        #expect(try HubCache.resolve(fixtures.appendingPathComponent("llama_tied").path, environment: [:]).lastPathComponent == "llama_tied")
    }
}
