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

    @Test func fixturesPresent() { #expect(Self.cases.count >= 30) }

    @Test(arguments: cases)
    func matchesHuggingFaceTokenizers(_ c: Case) throws {
        let tok = try BPETokenizer(url: fixtures.appendingPathComponent("tokenizers/\(c.tokenizer)"))
        #expect(tok.encode(c.text) == c.ids)
        #expect(try tok.decode(c.ids) == c.decoded)
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
                             ("normalizer", { (j: inout [String: JSON]) in j["normalizer"] = ["type": "NFC"] })] {
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
