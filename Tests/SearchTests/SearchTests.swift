import Foundation
import GRDB
import Model
import Proxy
@testable import Search
import Testing

/// A tiny trained-from-random teacher and a small corpus on disk.
struct Fixture {
    let root: URL
    var teacher: URL { root.appendingPathComponent("teacher") }
    var corpus: URL { root.appendingPathComponent("corpus") }
    var db: String { root.appendingPathComponent("store.sqlite").path }
    let config: ModelConfig

    /// `mixture`: a JetMoE teacher (4 experts of 16, top 2, 2 kv heads) instead of a dense llama.
    /// `family`: a teacher of another family shaped like the llama one (qwen2 with a window of 4
    /// on layer 1, mistral with a window of 5, qwen3 with head_dim 6, qwen3_moe with 4 experts of
    /// 16, top 2); `storage`: the type its weights are saved in. `hybridMixture`: Nemotron-H with
    /// mixture layers in place of its MLP and last Mamba2 layers.
    init(
        _ name: String = #function, mixture: Bool = false, family: Family? = nil, storage: StorageType = .float32,
        hybridMixture: Bool = false
    ) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("topiary-search-\(getpid())-\(name.filter(\.isLetter))-\(UInt32.random(in: 0...UInt32.max))")
        let family = family ?? (mixture ? .jetmoe : .llama)
        switch family {
        case .jetmoe:
            config = ModelConfig(family: .jetmoe, vocabSize: 257, hiddenSize: 24, intermediateSize: 16, numHiddenLayers: 3,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1,
                                 numLocalExperts: 4, numExpertsPerTok: 2)
        case .mixtral:
            config = ModelConfig(family: .mixtral, vocabSize: 257, hiddenSize: 24, intermediateSize: 16, numHiddenLayers: 3,
                                 numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1,
                                 numLocalExperts: 4, numExpertsPerTok: 2)
        case .qwen3Moe:
            config = ModelConfig(family: .qwen3Moe, vocabSize: 257, hiddenSize: 24, intermediateSize: 32, numHiddenLayers: 3,
                                 numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1,
                                 numLocalExperts: 4, numExpertsPerTok: 2, moeIntermediateSize: 16, normTopKProb: true)
        case .nemotronH:
            // Mamba2, MLP, attention, Mamba2: 4 Mamba heads of 6 in 2 groups, state 8, chunks of 4.
            var c = ModelConfig(family: .nemotronH, vocabSize: 257, hiddenSize: 24, intermediateSize: 32, numHiddenLayers: 4,
                                numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1)
            c.hybridLayers = [.mamba, .mlp, .attention, .mamba]
            c.mamba = MambaShape(heads: 4, headDim: 6, groups: 2, stateSize: 8, convKernel: 4)
            c.mambaChunkSize = 4
            if hybridMixture {
                // Mamba2, MoE, attention, MoE: 4 squared-ReLU experts of 16 (top 2, sigmoid router,
                // gates renormalised and scaled by 1.5) and a shared expert of 16.
                c.hybridLayers = [.mamba, .moe, .attention, .moe]
                c.numLocalExperts = 4
                c.numExpertsPerTok = 2
                c.moeIntermediateSize = 16
                c.moeSharedExpertIntermediateSize = 16
                c.normTopKProb = true
                c.routedScalingFactor = 1.5
                c.routerAuxLossCoef = 0
            }
            config = c
        case .qwen35, .qwen35Moe:
            // DeltaNet, attention, DeltaNet: 2 key heads of 4 serving 4 value heads of 4, chunks of 4;
            // Qwen3.5-MoE: 4 experts of 16 (top 2) and a shared expert of 32 after each.
            let moe = family == .qwen35Moe
            var c = ModelConfig(family: family, vocabSize: 257, hiddenSize: 24, intermediateSize: 32, numHiddenLayers: 3,
                                numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, partialRotaryFactor: 0.5,
                                maxPositionEmbeddings: 64, initializerRange: 0.1, numLocalExperts: moe ? 4 : 0,
                                numExpertsPerTok: moe ? 2 : 0, moeIntermediateSize: moe ? 16 : nil, normTopKProb: moe ? true : nil)
            c.hybridLayers = [.deltaNet, .attention, .deltaNet]
            c.deltaNet = DeltaNetShape(keyHeads: 2, valueHeads: 4, keyDim: 4, valueDim: 4, convKernel: 4)
            c.deltaNetChunkSize = 4
            config = c
        default:
            config = ModelConfig(family: family, vocabSize: 257, hiddenSize: 24, intermediateSize: 32, numHiddenLayers: 3,
                                 numAttentionHeads: 6, numKeyValueHeads: 3, headDim: family == .qwen3 ? 6 : 4, maxPositionEmbeddings: 64,
                                 initializerRange: 0.1, slidingWindow: [.qwen2: 4, .mistral: 5][family],
                                 slidingLayers: family == .qwen2 ? [1] : nil)
        }
        let m = DecoderModel(config: config)
        m.initialize(seed: 1)
        try Checkpoint.save(m, to: teacher, type: storage)
        var rng = SeededGenerator(seed: 2)
        var docs: [Document] = []
        for lang in ["en", "ga"] {
            for i in 0..<12 {
                let words = (0..<12).map { _ in String((0..<4).map { _ in Character(Unicode.Scalar(UInt8(97 + rng.next() % 26))) }) }
                docs.append(Document(text: "\(lang) \(i) " + words.joined(separator: " "), language: lang))
            }
        }
        _ = try ShardWriter.write(documents: docs, tokenizer: ByteTokenizer(), to: corpus, validationFraction: 0.25)
    }

    func spec(_ extra: [String: JSON] = [:]) -> JSON {
        var s: [String: JSON] = [
            "study": "tiny", "teacher": .string(teacher.path), "data": .string(corpus.path),
            "space": ["num_hidden_layers": [2, 3], "hidden_size": [12, 18, 24], "intermediate_size": [16, 32]],
            "budget": ["min": 1, "max": JSON(config.parameterCount)],
            "importance": ["calibration_samples": 4, "sequence_length": 8],
            "proxy": ["steps": 6, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3],
            "strategy": ["name": "successive_halving", "min_steps": 2, "eta": 3],
        ]
        for (k, v) in extra { s[k] = v }
        return .object(s)
    }

    /// The top `n` of study "tiny" exported under `root/export`, with the fixture's cache and artifacts.
    func exportTop(_ store: StudyStore, _ n: Int) throws -> [URL] {
        try Exporter.export(
            store: store, study: "tiny", top: n, out: root.appendingPathComponent("export"),
            importanceCache: root.appendingPathComponent("importance"), artifacts: root.appendingPathComponent("results"),
            log: { _ in })
    }

    func parse(_ json: JSON) throws -> SearchSpec {
        try SearchSpec(json: json, file: "spec.json") { try ModelConfig.load(URL(fileURLWithPath: $0).appendingPathComponent("config.json")) }
    }

    /// Runs `spec` to its end in the fixture's store (trial artifacts under `results/`, importance
    /// under `importance/`, the log silenced); the store and the study's id.
    func run(_ spec: SearchSpec) throws -> (store: StudyStore, study: Int64) {
        let store = try StudyStore(path: db)
        let runner = try SearchRunner(spec: spec, store: store, results: root.appendingPathComponent("results"),
                                      importanceCache: root.appendingPathComponent("importance"))
        runner.log = { _ in }
        return (store, try runner.run(worker: "w", extend: false))
    }

    func cleanup() { try? FileManager.default.removeItem(at: root) }
}

@Suite struct SpecTests {
    @Test func errorsNameThePathAndRule() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        func error(_ edit: (inout [String: JSON]) -> Void) -> String {
            var s = f.spec().object!
            edit(&s)
            do { _ = try f.parse(.object(s)); return "no error" } catch { return "\(error)" }
        }
        #expect(error { $0["budgit"] = 1 }.contains("did you mean 'budget'"))
        #expect(error { $0["space"] = ["hidden_size": [12, 30]] }.contains("space.hidden_size[1]"))
        #expect(error { $0["space"] = ["hidden_size": [10]] }.contains("not a multiple of num_attention_heads"))
        #expect(error { $0["budget"] = ["parameters": 10_000_000] }.contains("budget.parameters"))
        #expect(error { $0["strategy"] = ["name": "succesive_halving"] }.contains("did you mean 'successive_halving'"))
        #expect(error { $0["teacher"] = "/nonexistent" }.contains("teacher"))
        #expect(error { $0["proxy"] = ["steps": 0] }.contains("proxy.steps"))
    }

    @Test func enumerationKeepsBudgetAndExplainsEmpty() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["budget": ["min": 20000, "max": 30000]]))
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 12)
        for c in e.candidates {
            #expect((20000...30000).contains(c.parameters))
            #expect(c.parameters == ParameterLayout(config: c.config).count)
            #expect(c.config.hiddenSize <= 24 && c.config.numHiddenLayers <= 3)
        }
        let empty = Enumeration.of(try f.parse(f.spec(["budget": ["min": 1, "max": 100]])), teacher: f.config)
        #expect(empty.candidates.isEmpty && empty.explanation.contains("above the budget maximum"))
    }

    /// The pruned walk admits exactly what the exhaustive one does, on random small spaces and
    /// budgets (total, non-embedding; active for a mixture).
    @Test func prunedEnumerationEqualsExhaustive() throws {
        let dense = try Fixture(), moe = try Fixture(mixture: true)
        defer { dense.cleanup(); moe.cleanup() }
        var rng = SeededGenerator(seed: 77)
        var nonEmpty = 0
        func pick(_ options: [Int], _ n: Int) -> JSON { .array(Array(options.shuffled(using: &rng).prefix(n)).map { JSON($0) }) }
        for trial in 0..<40 {
            let f = trial % 2 == 0 ? dense : moe
            let jet = f.config.family == .jetmoe
            var space: [String: JSON] = ["num_hidden_layers": pick([1, 2, 3], 2), "hidden_size": pick([6, 8, 12, 16, 18, 24], 3),
                                         "num_key_value_heads": pick(jet ? [1, 2] : [1, 3], 2), "intermediate_size": pick([4, 8, 12, 16], 3)]
            if jet { space["num_local_experts"] = pick([2, 3, 4], 2); space["num_experts_per_tok"] = pick([1, 2], 2) }
            else { space["num_attention_heads"] = pick([2, 3, 6], 2) }
            let counts = f.config.family == .jetmoe ? ["total", "active"] : ["total", "non_embedding"]
            let count = counts[trial / 2 % 2]
            let top = count == "total" ? f.config.parameterCount : count == "active" ? f.config.activeParameterCount : f.config.nonEmbeddingParameterCount
            let lo = Int(rng.next() % UInt64(top * 3 / 4)), width = top / 20 + Int(rng.next() % UInt64(top / 2))
            let spec = try f.parse(f.spec(["space": .object(space), "budget": ["count": .string(count), "min": JSON(lo), "max": JSON(lo + width)]]))
            let pruned = Enumeration.of(spec, teacher: f.config).candidates.map(\.hash)
            let reference = Enumeration.exhaustive(spec, teacher: f.config).map(\.hash)
            #expect(pruned == reference, "space \(space), budget \(lo)…\(lo + width)")
            if !reference.isEmpty { nonEmpty += 1 }
        }
        #expect(nonEmpty >= 10, "the comparison is not vacuous: \(nonEmpty) of 40 spaces admit candidates")
    }

    /// A space of 10^9 combinations with a narrow budget: the walk visits the answer, not the
    /// space; more candidates than the limit is an error with the count and what to do.
    @Test func billionCombinationSpaceAnswersAndLimitsHold() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        // A wide teacher (config only: the spec reads no weights).
        var big = f.config
        big.numHiddenLayers = 1000; big.hiddenSize = 600; big.intermediateSize = 10000
        let bigTeacher = f.root.appendingPathComponent("big-teacher")
        try FileManager.default.createDirectory(at: bigTeacher, withIntermediateDirectories: true)
        try big.json.data().write(to: bigTeacher.appendingPathComponent("config.json"))
        let axis = { (lo: Int, hi: Int) -> JSON in ["min": JSON(lo), "max": JSON(hi)] }
        let space: [String: JSON] = ["num_hidden_layers": axis(1, 1000), "hidden_size": ["min": 6, "max": 600, "step": 6],
                                     "num_attention_heads": [6], "num_key_value_heads": [3], "intermediate_size": axis(1, 10000)]
        let spec = try f.parse(f.spec(["teacher": .string(bigTeacher.path), "space": .object(space), "budget": ["min": 20_000, "max": 20_050]]))
        let e = Enumeration.of(spec, teacher: big)
        #expect(e.combinations == 1000 * 100 * 10000)
        #expect(!e.candidates.isEmpty && !e.truncated)
        #expect(e.candidates.allSatisfy { (20_000...20_050).contains($0.parameters) })
        let wide = try f.parse(f.spec(["teacher": .string(bigTeacher.path), "space": .object(space), "budget": ["min": 1, "max": 10_000_000], "max_candidates": 1000]))
        let capped = Enumeration.of(wide, teacher: big)
        #expect(capped.truncated && capped.candidates.count == 1000)
        #expect(throws: SearchError.self) { try capped.requireWithinLimit(wide) }
    }

    @Test func largeSpaceEnumeratesEveryCombination() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["space": ["num_hidden_layers": [1, 2, 3], "hidden_size": ["min": 6, "max": 24, "step": 6],
                                                  "num_attention_heads": [3, 6], "num_key_value_heads": [1, 3], "intermediate_size": ["min": 1, "max": 32]]]))
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 3 * 4 * 2 * 2 * 32)
        #expect(!e.candidates.isEmpty)
        #expect(e.candidates.allSatisfy { $0.config.numAttentionHeads % $0.config.numKeyValueHeads == 0 && $0.config.hiddenSize % $0.config.numAttentionHeads == 0 })
    }
}

@Suite struct StoreTests {
    @Test func staleTrialsAreRetriedThenFailed() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let store = try StudyStore(path: f.db)
        let spec = try f.parse(f.spec())
        let cands = Enumeration.of(spec, teacher: f.config).candidates
        let id = try store.openStudy(name: "s", spec: spec.json, teacherFingerprint: "fp", candidates: Array(cands.prefix(2)), extend: false)
        let ids = try store.candidateIDs(study: id)
        try store.addTrials(ids.values.map { ($0, 0, 5, nil) })
        let a = try store.claim(study: id, worker: "a", limit: 1, staleAfter: 60, maxAttempts: 2)
        let b = try store.claim(study: id, worker: "b", limit: 5, staleAfter: 60, maxAttempts: 2)
        #expect(a.count == 1 && b.count == 1 && a[0].id != b[0].id, "a claimed trial is never handed out twice")
        // Worker a dies: with staleAfter 0 its trial goes back to waiting, attempt 1.
        Thread.sleep(forTimeInterval: 0.01)
        let c = try store.claim(study: id, worker: "c", limit: 5, staleAfter: 0, maxAttempts: 3)
        #expect(Set(c.map(\.id)) == Set([a[0].id, b[0].id]) && c.allSatisfy { $0.attempt == 1 })
        // Completing under a worker that lost the trial does nothing.
        try store.complete(a[0].id, worker: "a", score: 1, checkpoint: "x", metrics: [])
        #expect(try store.trials(study: id).first { $0.id == a[0].id }!.state == "running")
        Thread.sleep(forTimeInterval: 0.01)
        _ = try store.claim(study: id, worker: "d", limit: 5, staleAfter: 0, maxAttempts: 2)
        let states = try store.trials(study: id).map(\.state)
        #expect(states == ["failed", "failed"], "\(states)")
        #expect(try store.trials(study: id).allSatisfy { $0.error?.contains("stopped") == true })
    }

    @Test func differentSpecIsRefusedAndNewerSchemaUntouched() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let store = try StudyStore(path: f.db)
        let spec = try f.parse(f.spec())
        try store.openStudy(name: "s", spec: spec.json, teacherFingerprint: "fp", candidates: [], extend: false)
        #expect(throws: SearchError.self) { try store.openStudy(name: "s", spec: ["other": 1], teacherFingerprint: "fp", candidates: [], extend: false) }
        // A migration this version does not know: refuse to open.
        let queue = try DatabaseQueue(path: f.db)
        try queue.write { try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')") }
        try queue.close()
        #expect(throws: SearchError.self) { _ = try StudyStore(path: f.db) }
        let studies = try DatabaseQueue(path: f.db).read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM study") }
        #expect(studies == 1)
    }
}

@Suite struct SearchRunTests {
    @Test func successiveHalvingScoresEveryCandidateOnceAndResumesAfterAKill() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]))
        let store = try StudyStore(path: f.db)
        let results = f.root.appendingPathComponent("results"), cache = f.root.appendingPathComponent("importance")
        let runner = try SearchRunner(spec: spec, store: store, results: results, importanceCache: cache)
        runner.log = { _ in }
        runner.staleAfter = 0.05
        let n = runner.enumeration.candidates.count
        #expect(n >= 3)
        // A worker claims two trials and is killed before finishing them.
        let study = try runner.prepare(extend: false)
        let orphaned = try store.claim(study: study, worker: "killed", limit: 2, staleAfter: 60, maxAttempts: 3)
        #expect(orphaned.count == 2)
        Thread.sleep(forTimeInterval: 0.1)
        // Rerunning finishes the study.
        _ = try runner.run(worker: "again", extend: false)
        let trials = try store.trials(study: study)
        let rung0 = trials.filter { $0.rung == 0 }
        #expect(rung0.count == n && Set(rung0.map(\.hash)).count == n, "every candidate exactly once at rung 0")
        #expect(rung0.allSatisfy { $0.state == "complete" || $0.state == "pruned" })
        #expect(rung0.filter { orphaned.map(\.id).contains($0.id) }.allSatisfy { $0.attempt == 1 })
        let last = trials.filter { $0.rung == trials.map(\.rung).max()! }
        #expect(last.allSatisfy { $0.fidelity == 6 && $0.state == "complete" && $0.parentTrialID != nil })
        #expect(try store.study(named: "tiny")!.state == "complete")
        let top = try store.top(study: study)
        #expect(top.first!.trial.rung == trials.map(\.rung).max()!)
        // Export writes loadable checkpoints and the NeMo keys.
        let out = f.root.appendingPathComponent("export")
        let dirs = try Exporter.export(store: store, study: "tiny", top: 1, out: out, importanceCache: cache, artifacts: f.root.appendingPathComponent("results"), log: { _ in })
        let m = try Checkpoint.load(dirs[0])
        #expect(m.config.parameterCount == top[0].trial.parameters)
        _ = try Checkpoint.load(dirs[0].appendingPathComponent("proxy"))
        let distill = JSON.parse(try Data(contentsOf: dirs[0].appendingPathComponent("distill.json")))!
        #expect(distill["nemo_modelopt"]?["num_query_groups"]?.int == m.config.numKeyValueHeads)
    }
}

@Suite struct NoiseTests {
    /// Issue 14, item 1: with `objective.replicates` the last rung's survivors are rerun from their
    /// pruned init with other data-order seeds; each finalist's score is then the mean with a
    /// Student-t interval, the others keep a bootstrap interval over the validation windows;
    /// ties with the leader are marked, and everything reaches `results top --format json` and
    /// `distill.json`.
    @Test func replicatesGiveIntervalsAndTies() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["objective": ["languages": "mean", "replicates": ["seeds": 3]]]))
        #expect(spec.replicates == Replicates(seeds: 3))
        let store = try StudyStore(path: f.db)
        let cache = f.root.appendingPathComponent("importance")
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"), importanceCache: cache)
        runner.log = { _ in }
        let study = try runner.run(worker: "w", extend: false)
        let trials = try store.trials(study: study)
        let lastRung = trials.map(\.rung).max()!
        let survivors = trials.filter { $0.rung == lastRung && $0.replicate == 0 }
        let replicas = trials.filter { $0.replicate > 0 }
        #expect(replicas.count == survivors.count * 2 && replicas.allSatisfy { $0.state == "complete" && $0.rung == lastRung && $0.parentTrialID == nil })
        // Another seed, another data order: the replicate scores differ from the search's own.
        for t in survivors {
            let others = replicas.filter { $0.candidateID == t.candidateID }.compactMap(\.score)
            #expect(others.count == 2 && others.allSatisfy { $0 != t.score })
        }
        let top = try store.top(study: study)
        let finalists = top.filter { $0.trial.rung == lastRung }
        #expect(finalists.allSatisfy { $0.replicateScores.count == 3 && $0.interval?.method == "t" && $0.interval?.samples == 3 })
        for r in finalists {
            #expect(abs(r.value - r.replicateScores.reduce(0, +) / 3) < 1e-12)
            #expect(r.interval!.low <= r.value && r.value <= r.interval!.high)
        }
        #expect(top.filter { $0.trial.rung < lastRung }.allSatisfy { $0.interval?.method == "bootstrap" && $0.replicateScores.count == 1 })
        #expect(top.allSatisfy { $0.tiedWithBest == ($0.trial.rung == lastRung && $0.rank > 1 && $0.interval!.overlaps(top[0].interval!)) })
        #expect(zip(finalists, finalists.dropFirst()).allSatisfy { $0.value <= $1.value }, "ranked by the mean")
        // The CLI and the export carry the same numbers.
        let json = try topiary(["results", "top", "tiny", "--db", f.db, "--format", "json"])
        #expect(json.status == 0, "\(json.err)")
        let rows = JSON.parse(Data(json.out.utf8))!.array!
        #expect(rows.count == top.count)
        for (row, r) in zip(rows, top) {
            #expect(row["interval"]?.array?.compactMap(\.double) == [r.interval!.low, r.interval!.high])
            #expect(row["replicates"]?.int == r.replicateScores.count && row["tied_with_best"]?.bool == r.tiedWithBest)
        }
        let table = try topiary(["results", "top", "tiny", "--db", f.db, "--format", "table"])
        #expect(table.out.contains(String(format: "%.4f ± %.4f (n=3)", top[0].value, top[0].interval!.halfWidth)), "\(table.out)")
        let dirs = try Exporter.export(store: store, study: "tiny", top: 1, out: f.root.appendingPathComponent("export"), importanceCache: cache, artifacts: f.root.appendingPathComponent("results"), log: { _ in })
        let distill = JSON.parse(try Data(contentsOf: dirs[0].appendingPathComponent("distill.json")))!
        #expect(distill["replicates"]?.int == 3 && distill["interval"]?.array?.count == 2 && distill["score"]?.double == top[0].value)
        // The windows the bootstrap resamples reproduce the evaluation they came from.
        let e = try Evaluation.validationLoss(model: runner.teacher, shards: runner.corpus, batch: 2, sequence: 8, maxTokensPerLanguage: 32)
        let again = EvaluationResult(windows: e.windows)
        #expect(e.windows.values.allSatisfy { $0.count == 4 })
        for (lang, v) in e.perLanguage { #expect(abs(again.perLanguage[lang]! - v) < 1e-12) }
        #expect(abs(again.overall - e.overall) < 1e-12 && abs(again.languageMean - e.languageMean) < 1e-12)
    }

    /// `topiary ranking` reports τ over the pairs separated by more than the noise beside the
    /// all-pairs τ: by default pairs whose bootstrap intervals do not overlap; with a given noise,
    /// pairs further apart than it (0 keeps every pair, so both τ agree).
    @Test func rankingReportsTauOverSeparatedPairs() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let teacher = try Checkpoint.load(f.teacher)
        let corpus = try TokenShards(directory: f.corpus)
        let settings = ImportanceSettings()
        let scores = try Importance.compute(teacher: teacher, corpus: corpus,
                                            calibration: CalibrationSet(corpus: corpus, samples: 4, sequence: 8, seed: 0), settings: settings)
        let candidates: [(String, ModelConfig)] = try [["hidden_size": 12], ["hidden_size": 18], ["num_hidden_layers": 2], ["intermediate_size": 16]]
            .enumerated().map { ("c\($0)", try Pruning.targetConfig(teacher: teacher.config, target: $1)) }
        var recipe = DistillationRecipe(steps: 4)
        recipe.batch = 2; recipe.sequence = 8; recipe.evalTokens = 32; recipe.learningRate = 1e-3
        let r = try RankingStudy.run(teacher: teacher, corpus: corpus, candidates: candidates, scores: scores, options: PruneOptions(),
                                     recipe: recipe, checkpoints: [2, 4])
        #expect(r.intervals.count == 4 && r.intervals.allSatisfy { $0?.method == "bootstrap" })
        var expected = 0
        // Separated: the paired interval of the final difference excludes 0.
        let finals = r.finalEvaluations
        for i in 0..<4 {
            for j in (i + 1)..<4 {
                let d = try #require(Noise.pairedDifference([finals[i]!], [finals[j]!], seed: Noise.seed(r.candidates[i], r.candidates[j]), score: { $0.languageMean }))
                if d.low > 0 || d.high < 0 { expected += 1 }
            }
        }
        #expect(r.separatedPairs == expected && r.tauSeparated.count == r.tau.count)
        #expect(r.markdown.contains("pairs separated by more than the noise") && r.noiseDescription.contains("paired bootstrap"))
        // Issue 24, item 4: the shortest length at which τ over the separated pairs reaches 0.9.
        #expect(r.markdown.contains("Recommended proxy length"))
        #expect(RankingStudy.Result.shortest(checkpoints: [0, 25, 50, 100, 400], tau: [0.5, 0.8, 0.9, 1, 1], threshold: 0.9) == 50)
        #expect(RankingStudy.Result.shortest(checkpoints: [0, 25, 400], tau: [0.95, 0.8, 1], threshold: 0.9) == 0)
        #expect(RankingStudy.Result.shortest(checkpoints: [25, 50, 400], tau: [0.5, nil, 1], threshold: 0.9) == nil, "the reference itself does not count")
        let all = try RankingStudy.run(teacher: teacher, corpus: corpus, candidates: candidates, scores: scores, options: PruneOptions(),
                                       recipe: recipe, checkpoints: [2, 4], noise: 0)
        #expect(all.separatedPairs == 6 && all.tauSeparated == all.tau, "\(all.tauSeparated) vs \(all.tau)")
    }

    /// Issue 24, item 3: `topiary ranking` evaluates every `curve_every` steps (after the warmup,
    /// up to the last checkpoint but one) and, at each checkpoint, predicts the last one's scores
    /// from the points so far; τ of those predictions is reported beside the raw scores' τ.
    @Test func rankingPredictsTheLastCheckpointFromEachShorterOne() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let teacher = try Checkpoint.load(f.teacher)
        let corpus = try TokenShards(directory: f.corpus)
        let scores = try Importance.compute(teacher: teacher, corpus: corpus,
                                            calibration: CalibrationSet(corpus: corpus, samples: 4, sequence: 8, seed: 0), settings: ImportanceSettings())
        let candidates: [(String, ModelConfig)] = try [["hidden_size": 12], ["hidden_size": 18], ["num_hidden_layers": 2], ["intermediate_size": 16]]
            .enumerated().map { ("c\($0)", try Pruning.targetConfig(teacher: teacher.config, target: $1)) }
        var recipe = DistillationRecipe(steps: 16)
        recipe.batch = 2; recipe.sequence = 8; recipe.evalTokens = 32; recipe.learningRate = 3e-3; recipe.warmup = 1
        let r = try RankingStudy.run(teacher: teacher, corpus: corpus, candidates: candidates, scores: scores, options: PruneOptions(),
                                     recipe: recipe, checkpoints: [2, 4, 8, 16], curveEvery: 1)
        #expect(r.curves.allSatisfy { $0.map(\.step) == [2, 3, 4, 5, 6, 7, 8, 16] }, "\(r.curves.map { $0.map(\.step) })")
        // Column 1 (2 steps) has one point after the warmup: no prediction; 4 and 8 steps have 3 and 7.
        #expect(r.predicted.allSatisfy { $0[0] == nil && $0[1] == nil && $0[2] != nil && $0[3] != nil && $0[4] == nil })
        let upTo4 = r.curves.map { $0.filter { $0.step <= 4 } }
        let expected = LearningCurve.predict(upTo4, at: 16, seed: 4)
        #expect(r.predicted.map { $0[2] } == expected)
        #expect(r.tauPredicted[2] == RankStatistics.kendallTau(expected.map { $0!.value }, r.losses.map { $0.last! }))
        #expect(r.markdown.contains("τ of the learning-curve prediction of the 16-step score") && r.markdown.contains("Learning curve fitted at 4 steps"))
        #expect(r.recommendedPredictedSteps() == RankingStudy.Result.shortest(checkpoints: r.checkpoints, tau: r.tauPredictedSeparated, threshold: 0.9))
        #expect(r.recommendation.contains("With the learning-curve prediction") == (r.recommendedPredictedSteps() != nil))
        #expect(try RankingSpec(json: ["name": "x", "teacher": "t", "data": "d", "candidates": ["a": [:], "b": [:]], "steps": [1], "curve_every": 5],
                                file: "r.json").curveEvery == 5)
        #expect { _ = try RankingSpec(json: ["name": "x", "teacher": "t", "data": "d", "candidates": ["a": [:], "b": [:]], "steps": [1], "curve_every": -1],
                                      file: "r.json") } throws: { "\($0)".contains("curve_every") }
    }

    /// A SQLite store as a Topiary that stopped at `migration` left it: study 'old' (id 1) with
    /// candidate 'abc' (id 1) and its rung-0 trial (id 1, score 1.5), then `statements`.
    static func olderStore(_ path: String, upTo migration: String, _ statements: [String] = []) throws {
        let q = try DatabaseQueue(path: path)
        try StudyStore.migrator.migrate(q, upTo: migration)
        try q.write { db in
            try db.execute(sql: "INSERT INTO study (name, spec, teacher_fingerprint, created_at, state) VALUES ('old', '{}', 'f', '2026-11-01 00:00:00', 'complete')")
            try db.execute(sql: "INSERT INTO candidate (studyId, hash, architecture, parameters, non_embedding_parameters, active_parameters, flops_per_token) VALUES (1, 'abc', '{}', 10, 5, 10, 20)")
            try db.execute(sql: "INSERT INTO trial (candidateId, rung, fidelity, state, score) VALUES (1, 0, 4, 'complete', 1.5)")
            for sql in statements { try db.execute(sql: sql) }
        }
        try q.close()
    }

    /// A store written before replicates (schema v2) is upgraded in place: every trial keeps its
    /// id, state, score and metrics, as replicate 0.
    @Test func storeBeforeReplicatesIsUpgraded() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("topiary-migrate-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("old.sqlite").path
        try Self.olderStore(path, upTo: "v2-importance", [
            "INSERT INTO trial (candidateId, rung, fidelity, parent_trial_id, state, score) VALUES (1, 1, 8, 1, 'complete', 1.25)",
            "INSERT INTO metric (trialId, step, name, value) VALUES (2, 8, 'val_loss', 1.25)",
        ])
        let store = try StudyStore(path: path, access: .write)
        let trials = try store.trials(study: 1)
        #expect(trials.map(\.id) == [1, 2] && trials.map(\.score) == [1.5, 1.25] && trials.allSatisfy { $0.replicate == 0 })
        #expect(trials[1].parentTrialID == 1)
        #expect(try store.metrics(trial: 2).map(\.value) == [1.25])
        // Replicates of the same rung now fit beside the original.
        try store.addTrials([(1, 1, 8, nil)], replicate: 1)
        #expect(try store.trials(study: 1).count == 3)
        #expect(try store.top(study: 1).first?.value == 1.25)
    }
}

@Suite struct MixtureSearchTests {
    @Test func expertAxesAndActiveBudgets() throws {
        let f = try Fixture(mixture: true)
        defer { f.cleanup() }
        let total = f.config.parameterCount, active = f.config.activeParameterCount
        let spec = try f.parse(f.spec([
            "space": ["num_local_experts": [2, 3, 4], "num_experts_per_tok": [1, 2], "intermediate_size": [8, 16]],
            "budget": ["count": "active", "max": JSON(active * 9 / 10), "total": ["max": JSON(total * 8 / 10)]],
        ]))
        let e = Enumeration.of(spec, teacher: f.config)
        // Brute force over the same space.
        var expected = Set<String>()
        for E in [2, 3, 4] { for k in [1, 2] where k <= E { for F in [8, 16] {
            var c = f.config
            c.numLocalExperts = E; c.numExpertsPerTok = k; c.intermediateSize = F; c.numAttentionHeads = c.numKeyValueHeads * k
            if c.activeParameterCount <= active * 9 / 10 && c.parameterCount <= total * 8 / 10 { expected.insert("\(E)/\(k)/\(F)") }
        } } }
        #expect(!expected.isEmpty)
        #expect(Set(e.candidates.map { "\($0.config.numLocalExperts)/\($0.config.numExpertsPerTok)/\($0.config.intermediateSize)" }) == expected)
        #expect(e.candidates.allSatisfy { $0.activeParameters == $0.config.activeParameterCount && $0.activeParameters <= $0.parameters })
        #expect(e.candidates.allSatisfy { $0.config.numAttentionHeads == 2 * $0.config.numExpertsPerTok })
        #expect(e.explanation.contains("outside budget.total"), "\(e.explanation)")
    }

    @Test func mixtureSpecErrorsNameThePath() throws {
        let dense = try Fixture()
        defer { dense.cleanup() }
        func error(_ f: Fixture, _ extra: [String: JSON]) -> String {
            do { _ = try f.parse(f.spec(extra)); return "no error" } catch { return "\(error)" }
        }
        #expect(error(dense, ["space": ["num_local_experts": [2]]]).contains("space.num_local_experts"))
        let moe = try Fixture(mixture: true)
        defer { moe.cleanup() }
        #expect(error(moe, ["space": ["num_attention_heads": [2]]]).contains("space.num_attention_heads"))
        #expect(error(moe, ["space": ["num_local_experts": [8]]]).contains("larger than the teacher"))
        #expect(error(moe, ["space": ["num_local_experts": [3]], "budget": ["count": "active", "max": 1000, "active": ["max": 5]]]).contains("budget.active"))
        // qwen3_moe names its expert axes as its config does.
        let qwen = try Fixture(family: .qwen3Moe)
        defer { qwen.cleanup() }
        #expect(error(qwen, ["space": ["intermediate_size": [8]]]).contains("space.intermediate_size: not an axis of a qwen3_moe teacher; its axes are num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, moe_intermediate_size, num_experts, num_experts_per_tok"))
        #expect(error(qwen, ["space": ["num_experts": [5]]]).contains("space.num_experts[0]: 5 is larger than the teacher's 4"))
        #expect(error(qwen, ["space": ["moe_intermediate_size": [32]]]).contains("space.moe_intermediate_size[0]"))
        #expect(error(dense, ["space": ["moe_intermediate_size": [8]]]).contains("space.moe_intermediate_size"))
    }

    @Test func jetMoESearchRunsAndExports() throws {
        let f = try Fixture(mixture: true)
        defer { f.cleanup() }
        let spec = try f.parse(f.spec([
            "space": ["num_local_experts": [3, 4], "num_experts_per_tok": [1, 2]],
            "budget": ["count": "active", "max": JSON(f.config.activeParameterCount)],
            "strategy": ["name": "grid"], "proxy": ["steps": 3, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3],
        ]))
        let store = try StudyStore(path: f.db)
        let cache = f.root.appendingPathComponent("importance")
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"), importanceCache: cache)
        runner.log = { _ in }
        #expect(runner.enumeration.candidates.count == 4)
        let study = try runner.run(worker: "w", extend: false)
        let top = try store.top(study: study)
        #expect(top.count == 4 && top.allSatisfy { $0.trial.state == "complete" })
        let scores = try Importance.cached(teacher: runner.teacher, corpus: TokenShards(directory: f.corpus), settings: spec.importance, cache: cache).0
        // The store recorded the scores the study pruned with: with the file cache gone they come
        // from the store, identical, without being recomputed.
        try FileManager.default.removeItem(at: cache)
        var lines: [String] = []
        let fromStore = try store.importance(teacher: runner.teacher, corpus: TokenShards(directory: f.corpus), settings: spec.importance,
                                             cache: cache, log: { lines.append($0) })
        #expect(fromStore == scores && lines.count == 1 && lines[0].contains("recorded in the store"), "\(lines)")
        #expect(scores.mlpExperts?.frequency.count == 3 && scores.attentionExperts != nil)
        // Routing frequencies sum to k per layer.
        for l in 0..<3 { #expect(abs(scores.mlpExperts!.frequency[l].reduce(0, +) - 2) < 1e-9) }
        let dirs = try Exporter.export(store: store, study: "tiny", top: 1, out: f.root.appendingPathComponent("export"), importanceCache: cache, artifacts: f.root.appendingPathComponent("results"), log: { _ in })
        let m = try Checkpoint.load(dirs[0])
        #expect(m.config.activeParameterCount == top[0].trial.activeParameters)
        let distill = JSON.parse(try Data(contentsOf: dirs[0].appendingPathComponent("distill.json")))!
        #expect(distill["parameters"]?["active"]?.int == m.config.activeParameterCount)
        #expect(distill["nemo_modelopt"]?["num_moe_experts"]?.int == m.config.numLocalExperts)
        // Deleting the study removes its candidates, trials and metrics, and nothing else.
        #expect(try store.deleteStudy(named: "tiny") == 4)
        #expect(try store.study(named: "tiny") == nil && (try store.trials(study: study)).isEmpty)
        #expect(throws: SearchError.self) { try store.deleteStudy(named: "tiny") }
    }

    /// Issue 12: a search over each new family's axes runs and exports; the exports keep the
    /// teacher's storage type (a bfloat16 qwen3_moe teacher gives bfloat16 students), the sliding
    /// layers and the family's own keys.
    @Test(arguments: [Family.qwen2, .qwen3, .mistral, .qwen3Moe])
    func newFamiliesSearchAndExport(_ family: Family) throws {
        let f = try Fixture(family: family, storage: family == .qwen3Moe ? .bfloat16 : .float32)
        defer { f.cleanup() }
        let space: JSON = family == .qwen3Moe
            ? ["num_experts": [3, 4], "moe_intermediate_size": [8, 16], "num_hidden_layers": [2, 3]]
            : ["num_hidden_layers": [2, 3], "num_attention_heads": [3, 6], "intermediate_size": [16, 32]]
        let spec = try f.parse(f.spec([
            "space": space, "budget": ["count": family == .qwen3Moe ? "active" : "total", "max": JSON(f.config.parameterCount)],
            "strategy": ["name": "grid"], "proxy": ["steps": 2, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3],
        ]))
        let store = try StudyStore(path: f.db)
        let cache = f.root.appendingPathComponent("importance")
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"), importanceCache: cache)
        runner.log = { _ in }
        #expect(runner.enumeration.candidates.count == 8)
        let study = try runner.run(worker: "w", extend: false)
        let top = try store.top(study: study)
        #expect(top.count == 8 && top.allSatisfy { $0.trial.state == "complete" && $0.trial.score?.isFinite == true })
        let dirs = try Exporter.export(store: store, study: "tiny", top: 2, out: f.root.appendingPathComponent("export"), importanceCache: cache, artifacts: f.root.appendingPathComponent("results"), log: { _ in })
        for (rank, dir) in dirs.enumerated() {
            let m = try Checkpoint.load(dir)
            #expect(m.config.family == family && m.config.parameterCount == top[rank].trial.parameters)
            #expect(try Checkpoint.storageType(dir) == (family == .qwen3Moe ? .bfloat16 : .float32))
            let written = JSON.parse(try Data(contentsOf: dir.appendingPathComponent("config.json")))!
            #expect(written["dtype"]?.string == (family == .qwen3Moe ? "bfloat16" : "float32"))
            if family == .qwen2 {
                // Layer 1 of the teacher slides; where it is kept it stays sliding (the mapping is
                // checked exactly in PruningTests), and config.json lists every layer's type.
                #expect(m.config.slidingLayers.count <= 1 && (m.config.slidingLayers.isEmpty || m.config.slidingWindow == 4))
                #expect(written["layer_types"]?.array?.count == m.config.numHiddenLayers)
            }
            let distill = JSON.parse(try Data(contentsOf: dir.appendingPathComponent("distill.json")))!
            if family == .qwen3Moe {
                #expect(distill["nemo_modelopt"]?["moe_ffn_hidden_size"]?.int == m.config.moeIntermediateSize)
                #expect(distill["parameters"]?["active"]?.int == m.config.activeParameterCount)
            }
        }
    }

    @Test func deletingAStudyWithRunningTrialsIsRefused() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: try f.parse(f.spec()), store: store, results: f.root.appendingPathComponent("results"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
        let study = try runner.prepare(extend: false)
        _ = try store.claim(study: study, worker: "w", limit: 1, staleAfter: 60, maxAttempts: 3)
        #expect(throws: SearchError.self) { try store.deleteStudy(named: "tiny") }
        #expect(try store.study(named: "tiny") != nil)
        #expect(try store.deleteStudy(named: "tiny", evenIfRunning: true) > 0)
    }
}
