import Foundation
import Model
import Testing

/// A small multilingual corpus written to a temporary directory.
func makeCorpus(_ name: String = #function, languages: [String: Int] = ["en": 40, "de": 20, "ga": 6]) throws -> (URL, TokenShards) {
    var docs: [Document] = []
    var rng = SeededGenerator(seed: 11)
    for (lang, n) in languages.sorted(by: { $0.key < $1.key }) {
        for i in 0..<n {
            let words = (0..<(10 + i % 5)).map { _ in String((0..<4).map { _ in Character(Unicode.Scalar(UInt8(97 + rng.next() % 26))) }) }
            docs.append(Document(text: "\(lang) document \(i): " + words.joined(separator: " "), language: lang))
        }
    }
    let dir = temporaryDirectory(name).appendingPathComponent("corpus")
    _ = try ShardWriter.write(documents: docs, tokenizer: ByteTokenizer(), to: dir, validationFraction: 0.2, seed: 1)
    return (dir, try TokenShards(directory: dir))
}

@Suite struct DataTests {
    @Test func fortuneEntriesSplitOnPercentLines() {
        let text = "first\nentry\n%\nsecond 100% sure\n%\n\n%\nthird\n"
        #expect(CorpusReader.fortuneEntries(text) == ["first\nentry", "second 100% sure", "third"])
    }

    @Test func jsonLinesAndInvalidUTF8() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let jsonl = dir.appendingPathComponent("c.jsonl")
        var data = Data(#"{"text": "hello", "lang": "en"}"#.utf8)
        data.append(contentsOf: Array("\n".utf8))
        data.append(contentsOf: Array(#"{"text": "hallo"}"#.utf8))
        data.append(contentsOf: Array("\n".utf8))
        data.append(contentsOf: [0x7B, 0xFF, 0xFE, 0x7D, 0x0A])
        try data.write(to: jsonl)
        var skipped = SkipReport()
        let docs = try CorpusReader.read(jsonl, format: .jsonl, language: "de", skipped: &skipped)
        #expect(docs.map(\.language) == ["en", "de"])
        #expect(skipped.invalidUTF8Documents == 1)
        let bad = dir.appendingPathComponent("bad.txt")
        try Data([0x66, 0xC3, 0x28]).write(to: bad)
        #expect(try CorpusReader.read(bad, format: .fortune, language: "x", skipped: &skipped).isEmpty)
        #expect(skipped.invalidUTF8Files == [bad.path])
        try Data("{\"nope\": 1}\n".utf8).write(to: jsonl)
        #expect(throws: ModelError.self) { _ = try CorpusReader.read(jsonl, format: .jsonl, language: "x", skipped: &skipped) }
    }

    @Test func shardsSplitByWholeDocumentsPerLanguage() throws {
        let (dir, shards) = try makeCorpus()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        #expect(shards.languages == ["de", "en", "ga"])
        for lang in shards.languages {
            let train = shards.stats["train"]![lang]!, val = shards.stats["validation"]![lang]!
            #expect(val.documents >= 1 && train.documents >= 1)
            // Every document ends with end-of-text: the token ranges hold whole documents.
            #expect(shards.tokens("validation", start: val.tokenEnd - 1, count: 1) == [256])
            #expect(shards.tokens("train", start: train.tokenEnd - 1, count: 1) == [256])
            let text = try ByteTokenizer().decode(shards.tokens("validation", start: val.tokenStart, count: val.tokens).map(Int.init))
            #expect(text.hasPrefix("\(lang) document "))
            #expect(text.components(separatedBy: "<|endoftext|>").count == val.documents + 1)
        }
        let trainDocs: Int = shards.stats["train"]!.values.map(\.documents).reduce(0, +)
        let validationDocs: Int = shards.stats["validation"]!.values.map(\.documents).reduce(0, +)
        #expect(trainDocs + validationDocs == 66)
    }

    @Test func badCorporaAreRefused() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: ModelError.self) { _ = try ShardWriter.write(documents: [], tokenizer: ByteTokenizer(), to: dir.appendingPathComponent("a")) }
        let oneIrish = [Document(text: "a", language: "en"), Document(text: "b", language: "en"), Document(text: "dia", language: "ga")]
        do {
            _ = try ShardWriter.write(documents: oneIrish, tokenizer: ByteTokenizer(), to: dir.appendingPathComponent("b"))
            Issue.record("a language with one document must be refused")
        } catch { #expect("\(error)".contains("'ga'")) }
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("b").path))
        // A truncated shard is detected on open.
        let (cdir, _) = try makeCorpus()
        defer { try? FileManager.default.removeItem(at: cdir.deletingLastPathComponent()) }
        let shard = cdir.appendingPathComponent("train.tokens")
        try Data(try Data(contentsOf: shard).prefix(100)).write(to: shard)
        #expect(throws: ModelError.self) { _ = try TokenShards(directory: cdir) }
    }

    @Test func samplingProbabilities() {
        let tokens = [900, 90, 10]
        let natural = LanguageSampling.temperature(1).probabilities(tokens: tokens)
        #expect(zip(natural, [0.9, 0.09, 0.01]).allSatisfy { abs($0 - $1) < 1e-12 })
        let uniform = LanguageSampling.temperature(0).probabilities(tokens: tokens)
        #expect(uniform.allSatisfy { abs($0 - 1.0 / 3) < 1e-12 })
        let t03 = LanguageSampling.temperature(0.3).probabilities(tokens: tokens)
        #expect(t03[0] < natural[0] && t03[2] > natural[2] && abs(t03.reduce(0, +) - 1) < 1e-12)
        // UniMax: budget 300 → 100 each would need 10 epochs of the smallest; cap 2 epochs → 20, rest shared.
        let unimax = LanguageSampling.unimax(budgetTokens: 300, maxEpochs: 2).probabilities(tokens: tokens)
        #expect(abs(unimax[2] - 20.0 / 300) < 1e-12)
        #expect(abs(unimax[1] - 140.0 / 300) < 1e-12 && abs(unimax[0] - 140.0 / 300) < 1e-12)
    }

    @Test func samplerIsDeterministicAndFollowsWeights() throws {
        let (dir, shards) = try makeCorpus()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let s = try BatchSampler(shards: shards, batch: 64, sequence: 8, sampling: .temperature(0), seed: 3)
        let a = s.batch(step: 5), b = s.batch(step: 5), c = s.batch(step: 6)
        #expect(a.tokens == b.tokens && a.tokens != c.tokens)
        for i in 0..<(64 * 8 - 1) where i % 8 != 7 { #expect(a.targets[i] == a.tokens[i + 1]) }
        var counts = [0, 0, 0]
        for step in 0..<50 { for l in s.batch(step: step).languages { counts[l] += 1 } }
        // Uniform over three languages: each near a third of 3200 rows.
        #expect(counts.allSatisfy { abs(Double($0) / 3200 - 1.0 / 3) < 0.05 }, "\(counts)")
        let irish = try BatchSampler(shards: shards, batch: 4, sequence: 8, sampling: .temperature(1), seed: 0, only: "ga")
        #expect(Set(irish.batch(step: 0).languages) == [0] && irish.languages == ["ga"])
        #expect(throws: ModelError.self) { _ = try BatchSampler(shards: shards, batch: 1, sequence: 100_000, sampling: .temperature(1), seed: 0) }
    }

    @Test func evaluationReportsEveryLanguage() throws {
        let (dir, shards) = try makeCorpus()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let model = DecoderModel(config: tinyConfig(.llama, vocab: 257))
        model.initialize(seed: 0)
        let e = try Evaluation.validationLoss(model: model, shards: shards, batch: 2, sequence: 16, maxTokensPerLanguage: 64)
        #expect(Set(e.perLanguage.keys) == ["de", "en", "ga"])
        #expect(e.perLanguage.values.allSatisfy { $0.isFinite && $0 > 0 })
        #expect(e.worst >= e.languageMean)
        let unigram = Evaluation.unigramLoss(shards: shards, maxTokensPerLanguage: 64)
        #expect(unigram.values.allSatisfy { $0 > 0 && $0 < log(257) })
    }
}

@Suite struct TeacherTrainingTests {
    @Test func resumedRunEndsWhereAnUninterruptedOneDoes() throws {
        let (dir, shards) = try makeCorpus()
        let root = dir.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        let config = tinyConfig(.llama, vocab: 257)
        var recipe = TrainingRecipe(steps: 8)
        recipe.batch = 2; recipe.sequence = 16; recipe.warmup = 2; recipe.evalEvery = 4; recipe.evalTokens = 32; recipe.checkpointEvery = 3
        let straight = root.appendingPathComponent("straight"), resumed = root.appendingPathComponent("resumed")
        let a = try LanguageModelTraining.run(config: config, corpus: shards, recipe: recipe, output: straight, log: { _ in })
        #expect(a.finished && a.resumedFrom == nil)
        // "Killed" after step 5: the last checkpoint is step 3, so steps 4–5 are redone.
        let partial = try LanguageModelTraining.run(config: config, corpus: shards, recipe: recipe, output: resumed, stopAfter: 5, log: { _ in })
        #expect(!partial.finished)
        let b = try LanguageModelTraining.run(config: config, corpus: shards, recipe: recipe, output: resumed, log: { _ in })
        #expect(b.resumedFrom == 3)
        let wa = try Checkpoint.load(straight), wb = try Checkpoint.load(resumed)
        #expect(wa.parameters.array == wb.parameters.array)
        #expect(a.evaluation == b.evaluation)
        // A different recipe refuses the existing checkpoints.
        var other = recipe
        other.learningRate = 1
        #expect(throws: ModelError.self) { _ = try LanguageModelTraining.run(config: config, corpus: shards, recipe: other, output: resumed, log: { _ in }) }
    }

    @Test func vocabularySmallerThanTokenizerIsRefused() throws {
        let (dir, shards) = try makeCorpus()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        do {
            _ = try LanguageModelTraining.run(config: tinyConfig(.llama, vocab: 100), corpus: shards, recipe: TrainingRecipe(steps: 1),
                                              output: dir.deletingLastPathComponent().appendingPathComponent("x"), log: { _ in })
            Issue.record("expected an error")
        } catch { #expect("\(error)".contains("vocab_size")) }
    }
}

@Suite struct SamplerIndependenceTests {
    /// Consecutive batches share no windows (a seeding bug once made step k+1 replay step k shifted by one draw).
    @Test func consecutiveBatchesDoNotOverlap() throws {
        let (dir, shards) = try makeCorpus(languages: ["en": 200, "de": 200])
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let T = 16
        let s = try BatchSampler(shards: shards, batch: 16, sequence: T, sampling: .temperature(1), seed: 0)
        for step in 0..<20 {
            let a = s.batch(step: step).tokens, b = s.batch(step: step + 1).tokens
            let rowsA = Set((0..<16).map { Array(a[($0 * T)..<($0 * T + T)]) })
            let shared = (0..<16).filter { rowsA.contains(Array(b[($0 * T)..<($0 * T + T)])) }.count
            #expect(shared <= 2, "step \(step): \(shared) of 16 windows repeat in the next batch")
        }
    }
}

@Suite struct FortuneSelectionTests {
    /// Debian's layouts: `.u8` names that are symlinks (fortunes), legacy files with a real UTF-8
    /// twin, empty `.u8` placeholders beside UTF-8 originals (fortunes-pl), `off/` directories.
    @Test func selectionFollowsDebianLayouts() {
        let files: [String: (regular: Bool, size: Int)] = [
            "/f/art": (true, 100), "/f/art.u8": (false, 3), "/f/art.dat": (true, 10),
            "/f/ru/legacy": (true, 50), "/f/ru/legacy.u8": (true, 60),
            "/f/pl/bajki": (true, 70), "/f/pl/bajki.u8": (true, 0),
            "/f/es/off/racistas.fortunes": (true, 80), "/f/es/vida.fortunes": (true, 90),
        ]
        var skipped = SkipReport()
        let chosen = CorpusReader.selectFortuneFiles(Array(files.keys), skipped: &skipped,
                                                     isRegularFile: { files[$0]?.regular ?? false }, size: { files[$0]?.size ?? 0 })
        #expect(chosen == ["/f/art", "/f/es/vida.fortunes", "/f/pl/bajki", "/f/ru/legacy.u8"])
        #expect(skipped.offensiveFiles == ["/f/es/off/racistas.fortunes"])
        #expect(skipped.replacedByUTF8Twin == ["/f/ru/legacy"])
    }
}
