import Foundation
import FuzzSupport
import Model
import Testing

/// Seeded mutation fuzzing of every parser that reads user files: safetensors headers, config.json
/// of every family, tokenizer.json (load and encode/decode), JSON Lines corpora and prepared-shard
/// manifests. Each mutated input must give a result or a thrown error — a crash, trap or hang
/// fails the whole test run. Mutations: a JSON value replaced by another kind or an extreme
/// number, a key deleted or added, and bytes flipped, inserted, deleted or the file truncated.
/// TOPIARY_FUZZ_ITERATIONS sets the iterations per parser (CI: 300; the documented run: 20,000).
@Suite struct ParserFuzzTests {
    static var iterations: Int { Mutation.iterations }

    @Test func safetensorsHeaders() throws {
        let original = try Data(contentsOf: fixtures.appendingPathComponent("llama_gqa/model.safetensors"))
        let headerLength = Int(original.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = JSON.parse(original.subdata(in: 8..<(8 + headerLength)))!
        let body = original.subdata(in: (8 + headerLength)..<original.count)
        var rng = SeededGenerator(seed: 101)
        var accepted = 0
        for i in 0..<Self.iterations {
            var bytes: Data
            if i % 4 == 0 {
                bytes = Mutation.damage(original, &rng)
            } else {
                var h = Mutation.variant(header, &rng)
                while h.count % 8 != 0 { h.append(0x20) }
                var n = UInt64(h.count).littleEndian
                bytes = Data(bytes: &n, count: 8) + h + body
            }
            guard let file = try? SafeTensorsFile(data: bytes, path: "fuzz-\(i).safetensors") else { continue }
            accepted += 1
            for name in file.names { _ = try? file.floats(name) }
        }
        print("fuzz safetensors: \(Self.iterations) inputs, \(accepted) accepted, 0 crashes")
    }

    @Test(arguments: ["llama_gqa", "llama_tied", "nemotron_partial", "mixtral_moe", "jetmoe_moa"])
    func configs(_ fixture: String) throws {
        let json = JSON.parse(try Data(contentsOf: fixtures.appendingPathComponent("\(fixture)/config.json")))!
        var rng = SeededGenerator(seed: 202)
        var accepted = 0
        for _ in 0..<Self.iterations {
            guard let c = try? ModelConfig.decode(Mutation.variant(json, &rng)) else { continue }
            accepted += 1
            _ = (c.parameterCount, c.activeParameterCount, c.forwardFLOPsPerToken(sequence: 64), c.trainingMemory(batch: 2, sequence: 8), c.json.data())
        }
        print("fuzz config.json (\(fixture)): \(Self.iterations) inputs, \(accepted) accepted, 0 crashes")
    }

    @Test(arguments: ["gpt2-style.json", "llama3-style.json"])
    func tokenizers(_ name: String) throws {
        let url = fixtures.appendingPathComponent("tokenizers/\(name)")
        guard FileManager.default.fileExists(atPath: url.path) else { Issue.record("fixture \(name) missing"); return }
        let json = JSON.parse(try Data(contentsOf: url))!
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("tokenizer.json")
        var rng = SeededGenerator(seed: 303)
        var accepted = 0
        let texts = ["Dia dhuit! Привет, мир. 日本語", "  \n\t<|endoftext|> 🙂👍🏽 e\u{301}", "", String(repeating: "ab ", count: 50)]
        for _ in 0..<max(1, Self.iterations / 3) {
            try Mutation.variant(json, &rng).write(to: file)
            guard let tok = try? BPETokenizer(url: file) else { continue }
            accepted += 1
            for t in texts { let ids = tok.encode(t); _ = try? tok.decode(ids) }
            _ = try? tok.decode([0, 1, tok.vocabularySize - 1, tok.vocabularySize, -1])
        }
        print("fuzz tokenizer.json (\(name)): \(max(1, Self.iterations / 3)) inputs, \(accepted) accepted, 0 crashes")
    }

    @Test func jsonLinesAndManifests() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SeededGenerator(seed: 404)
        // JSON Lines corpora.
        let lines: [JSON] = [["text": "Dia dhuit", "lang": "ga"], ["text": "Hallo Welt", "lang": "de"], ["text": "hello"]]
        let jsonl = dir.appendingPathComponent("corpus.jsonl")
        for _ in 0..<Self.iterations {
            var text = Data()
            for l in lines { text += (rng.next() % 3 == 0 ? Mutation.variant(l, &rng) : l.data()) + Data("\n".utf8) }
            try text.write(to: jsonl)
            var skipped = SkipReport()
            _ = try? CorpusReader.read(jsonl, format: .jsonl, language: "und", skipped: &skipped)
        }
        // Prepared-shard manifests (the shards stay valid; the manifest lies).
        let corpus = dir.appendingPathComponent("corpus")
        var docs: [Document] = []
        for lang in ["en", "ga"] { for i in 0..<6 { docs.append(Document(text: "\(lang) document \(i) with some words", language: lang)) } }
        _ = try ShardWriter.write(documents: docs, tokenizer: ByteTokenizer(), to: corpus, validationFraction: 0.34)
        let manifestURL = corpus.appendingPathComponent("manifest.json")
        let manifest = JSON.parse(try Data(contentsOf: manifestURL))!
        var accepted = 0
        for _ in 0..<Self.iterations {
            try Mutation.variant(manifest, &rng).write(to: manifestURL)
            guard let shards = try? TokenShards(directory: corpus) else { continue }
            accepted += 1
            if let sampler = try? BatchSampler(shards: shards, batch: 2, sequence: 4, sampling: .temperature(0.3), seed: 1) {
                _ = sampler.batch(step: 0)
            }
        }
        print("fuzz JSON Lines and manifests: \(Self.iterations) inputs each, \(accepted) manifests accepted, 0 crashes")
    }

    /// The crashes the fuzzers found, each as a fixed case.
    @Test func crashesFoundByFuzzingStayFixed() throws {
        // partial_rotary_factor −1e300 trapped converting to Int.
        var c = JSON.parse(try Data(contentsOf: fixtures.appendingPathComponent("nemotron_partial/config.json")))!.object!
        c["partial_rotary_factor"] = -1e300
        if case var .object(rope)? = c["rope_parameters"] { rope["partial_rotary_factor"] = -1e300; c["rope_parameters"] = .object(rope) }
        do { _ = try ModelConfig.decode(JSON.object(c).data()); Issue.record("accepted") } catch { #expect("\(error)".contains("partial_rotary_factor")) }
        // 2^40 experts: counting built index arrays of that size.
        var m = JSON.parse(try Data(contentsOf: fixtures.appendingPathComponent("mixtral_moe/config.json")))!.object!
        m["num_local_experts"] = JSON(1 << 40)
        do { _ = try ModelConfig.decode(JSON.object(m).data()); Issue.record("accepted") } catch { #expect("\(error)".contains("num_local_experts")) }
        // A manifest whose language range runs backwards crashed the sampler.
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus")
        let docs = (0..<6).map { Document(text: "document \($0) with words", language: "en") }
        _ = try ShardWriter.write(documents: docs, tokenizer: ByteTokenizer(), to: corpus, validationFraction: 0.34)
        let url = corpus.appendingPathComponent("manifest.json")
        var manifest = JSON.parse(try Data(contentsOf: url))!.object!
        var splits = manifest["splits"]!.object!, train = splits["train"]!.object!, langs = train["languages"]!.object!, en = langs["en"]!.object!
        (en["token_start"], en["token_end"]) = (en["token_end"]!, en["token_start"]!)
        langs["en"] = .object(en); train["languages"] = .object(langs); splits["train"] = .object(train); manifest["splits"] = .object(splits)
        try JSON.object(manifest).data().write(to: url)
        do { _ = try TokenShards(directory: corpus); Issue.record("accepted") } catch { #expect("\(error)".contains("splits.train.languages.en")) }
    }
}
