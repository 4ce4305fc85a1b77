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
}
