import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 27: the puzzle strategy end to end on a tiny teacher whose MLP width the nemotron-nas
/// format can write (512): the block library is scored, the solver's choices fit the memory
/// budget and differ pairwise, the homogeneous baseline joins them, successive halving judges
/// them, and the winner exports as a nemotron-nas checkpoint.
@Suite(.serialized) struct PuzzleTests {
    /// The fixture's corpus with a llama teacher of 3 layers, hidden 16, 4 heads over 2 groups, MLP 512.
    static func fixture() throws -> (Fixture, URL) {
        let f = try Fixture()
        let c = ModelConfig(family: .llama, vocabSize: 257, hiddenSize: 16, intermediateSize: 512, numHiddenLayers: 3,
                            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1)
        let m = DecoderModel(config: c)
        m.initialize(seed: 3)
        let teacher = f.root.appendingPathComponent("wide-teacher")
        try Checkpoint.save(m, to: teacher)
        return (f, teacher)
    }

    static func spec(_ f: Fixture, teacher: URL, memory: Int, solutions: Int = 3, hamming: Int = 2,
                     localDistillation: JSON? = nil, backend: JSON? = nil) throws -> SearchSpec {
        var strategy: [String: JSON] = ["name": "puzzle", "solutions": JSON(solutions), "min_hamming": JSON(hamming),
                                        "num_key_value_heads": [2, 1], "intermediate_size": [512, 256], "min_steps": 2, "eta": 3]
        if let localDistillation { strategy["local_distillation"] = localDistillation }
        var json = f.spec(["strategy": .object(strategy),
                           "space": [:],
                           "budget": ["max": 1_000_000, "workload": ["batch": 4, "context": 64, "dtype": "bfloat16"],
                                      "memory": JSON(memory)]])
        json = .object(json.object!.merging(["teacher": .string(teacher.path)]) { $1 })
        if let backend { json = .object(json.object!.merging(["backend": backend]) { $1 }) }
        return try f.parse(json)
    }

    /// The fixture's teacher with a puzzle spec's runner: its importance scores, the float32
    /// teacher, the library and every layer's variants.
    struct Library {
        let spec: SearchSpec, runner: SearchRunner, importance: ImportanceScores, model: DecoderModel
        let library: [LayerVariant], variants: [[LayerVariant]]

        init(_ f: Fixture, teacher: URL) throws {
            spec = try PuzzleTests.spec(f, teacher: teacher, memory: 1 << 40)
            runner = try SearchRunner(spec: spec, store: try StudyStore(path: f.db), results: f.root.appendingPathComponent("results"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
            runner.log = { _ in }
            (importance, model) = (try runner.importance(), try runner.transientTeacher())
            library = try #require(spec.strategy.value as? Puzzle).library(teacher: model.config)
            variants = Array(repeating: library, count: model.config.numHiddenLayers)
        }
    }

    /// The block library scored on the torch backend (the variant blocks cut from the teacher's
    /// files into the job, swapped into transformers' model one at a time) equals the built-in
    /// engine's one-block replacement scores — as pruned and locally distilled, from a Llama
    /// teacher and from the same teacher written as nemotron-nas (its own modeling file).
    @Test func theTorchBackendScoresTheBlockLibraryAsTheBuiltinEngine() throws {
        guard let python = BackendTests.python("theTorchBackendScoresTheBlockLibraryAsTheBuiltinEngine") else { return }
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let setUp = try Library(f, teacher: teacher)
        let (runner, importance, model, library, variants) = (setUp.runner, setUp.importance, setUp.model, setUp.library, setUp.variants)
        let t = model.config
        let (_, calibration) = try Importance.key(teacherFingerprint: try runner.teacherFingerprint(), corpus: runner.corpus,
                                                   settings: setUp.spec.importance)
        #expect(library.count == 9)
        let trained = try LocalDistillation.train(
            teacher: model, variants: variants, importance: importance, corpus: runner.corpus,
            settings: LocalDistillationSettings(steps: 3, batchSize: 4, sequence: 16, learningRate: 3e-3, seed: 5)).weights
        // The teacher again as nemotron-nas, every layer whole.
        let nas = f.root.appendingPathComponent("nas-teacher")
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        try Checkpoint.save(try HeterogeneousPruning.prune(teacher: model, variants: Array(repeating: full, count: 3),
                                                           scores: importance), to: nas)
        var torch = BackendSpec()
        torch.kind = .torch(python: python, script: nil)
        let backend = ExternalBackend(spec: torch, log: { _ in })
        var worst = 0.0
        for (folder, blocks) in [(teacher, nil), (teacher, trained), (nas, nil)] as [(URL, BlockWeights?)] {
            let builtin = try BlockLibrary.replacementScores(teacher: model, variants: variants, importance: importance,
                                                             calibration: calibration, trained: blocks)
            let scored = try backend.blockScores(
                teacherPath: folder.path, teacher: try CheckpointWeights(folder), variants: variants, importance: importance,
                calibration: calibration, trained: blocks, jobDirectory: f.root.appendingPathComponent("job"))
            for l in 0..<t.numHiddenLayers {
                #expect(scored[l][0] == 0)
                for v in 1..<library.count {
                    let (a, b) = (scored[l][v], builtin[l][v])
                    let label = "\(folder.lastPathComponent) \(blocks == nil ? "pruned" : "trained") layer \(l)"
                    #expect(b > 0 && abs(a - b) <= 1e-4 * b + 1e-7,
                            "\(label) \(Puzzle.describe(library[v])): torch \(a) vs built-in \(b)")
                    worst = max(worst, abs(a - b) / b)
                }
            }
        }
        print(String(format: "block library, torch vs built-in: 3 × %d variants × 3 layers, worst relative difference %.2e",
                     library.count - 1, worst))
    }

    /// Blockwise local distillation on the torch backend (the pruned blocks cut from the teacher's
    /// files, the built-in engine's batches, schedule and AdamW) trains every block as the built-in
    /// engine does: each block's loss over the last steps and its trained tensors agree.
    @Test func theTorchBackendDistilsTheBlocksLocallyAsTheBuiltinEngine() throws {
        guard let python = BackendTests.python("theTorchBackendDistilsTheBlocksLocallyAsTheBuiltinEngine") else { return }
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let setUp = try Library(f, teacher: teacher)
        let (runner, importance, model, library, variants) = (setUp.runner, setUp.importance, setUp.model, setUp.library, setUp.variants)
        let t = model.config
        let settings = LocalDistillationSettings(steps: 10, batchSize: 4, sequence: 16, learningRate: 3e-3, seed: 5)
        let (builtin, builtinLosses) = try LocalDistillation.train(
            teacher: model, variants: variants, importance: importance, corpus: runner.corpus, settings: settings)
        var torch = BackendSpec()
        torch.kind = .torch(python: python, script: nil)
        let (trained, losses) = try ExternalBackend(spec: torch, log: { _ in }).localDistillation(
            teacherPath: teacher.path, teacher: try CheckpointWeights(teacher), variants: variants, importance: importance,
            corpus: runner.corpus, settings: settings, jobDirectory: f.root.appendingPathComponent("job"))
        var worstLoss = 0.0, worstWeights = 0.0, blocks = 0
        for l in 0..<t.numHiddenLayers {
            for (j, v) in library.enumerated() {
                #expect((losses[l][j] == nil) == (builtinLosses[l][j] == nil), "layer \(l) \(Puzzle.describe(v))")
                guard let a = losses[l][j], let b = builtinLosses[l][j], b > 0 else { continue }
                #expect(abs(a - b) <= 1e-3 * b, "layer \(l) \(Puzzle.describe(v)): loss torch \(a) vs built-in \(b)")
                worstLoss = max(worstLoss, abs(a - b) / b)
                let x = try #require(trained.blocks[l]?[v]), y = try #require(builtin.blocks[l]?[v])
                let diff = zip(x, y).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
                let norm = y.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                #expect(x.count == y.count && diff <= 1e-3 * norm, "layer \(l) \(Puzzle.describe(v)): weights differ by \(diff / norm)")
                worstWeights = max(worstWeights, diff / norm)
                blocks += 1
            }
        }
        #expect(blocks == 7 * t.numHiddenLayers)
        print(String(format: "local distillation, torch vs built-in: %d blocks × 10 steps, worst relative loss difference %.2e, "
                     + "weights %.2e", blocks, worstLoss, worstWeights))
    }

    /// The same puzzle study (locally distilled blocks) on the torch backend and on the built-in
    /// engine, the torch study starting from the built-in one's importance scores: torch distils
    /// and scores the block library itself and finds the same candidates; every trial's
    /// inits are streamed from the teacher's files with the trained blocks in place, transformers
    /// runs them through the nemotron-nas modeling file, and every trial's score is within 1e-3
    /// relative of the built-in engine's; the torch study's winner exports.
    @Test func aPuzzleStudyOnTheTorchBackendScoresAsTheBuiltinEngine() throws {
        guard let python = BackendTests.python("aPuzzleStudyOnTheTorchBackendScoresAsTheBuiltinEngine") else { return }
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let t = try ModelConfig.load(teacher.appendingPathComponent("config.json"))
        let cap = t.inferenceCost(Workload(batch: 4, context: 64, weights: .bfloat16)).memoryBytes * 2 / 3
        // Two passes over the batches (layers 0–1, then 2): the same blocks as one pass.
        let bld: JSON = ["steps": 4, "batch_size": 4, "sequence_length": 16, "layers_per_pass": 2]
        var lines: [String] = []
        func run(_ backend: JSON?, _ name: String) throws -> (StudyStore, [StudyStore.CandidateRow], [StudyStore.TrialRow]) {
            let store = try StudyStore(path: f.root.appendingPathComponent("\(name).sqlite").path)
            let spec = try Self.spec(f, teacher: teacher, memory: cap, solutions: 2, localDistillation: bld, backend: backend)
            let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results-\(name)"),
                                          importanceCache: f.root.appendingPathComponent("importance-\(name)"))
            runner.log = { lines.append($0) }
            let id = try runner.run(worker: name, extend: false)
            let trials = try store.trials(study: id)
            #expect(trials.allSatisfy { $0.state == "complete" || $0.state == "pruned" }, "\(name): \(trials.map { $0.error ?? "" })")
            return (store, try store.candidates(study: id), trials)
        }
        let (_, builtinCandidates, builtinTrials) = try run(nil, "builtin")
        // The torch study finds the built-in study's importance scores, and distils and scores
        // the block library itself.
        let fm = FileManager.default, cache = f.root.appendingPathComponent("importance-torch")
        try fm.createDirectory(at: cache, withIntermediateDirectories: true)
        for name in try fm.contentsOfDirectory(atPath: f.root.appendingPathComponent("importance-builtin").path)
        where !name.hasPrefix("puzzle-") {
            try fm.copyItem(at: f.root.appendingPathComponent("importance-builtin").appendingPathComponent(name),
                            to: cache.appendingPathComponent(name))
        }
        lines = []
        let (torchStore, torchCandidates, torchTrials) = try run(["name": "torch", "python": .string(python), "device": "cpu"], "torch")
        #expect(lines.contains { $0.contains("the block library scored by the torch backend") }, "\(lines)")
        #expect(lines.contains { $0.contains("local distillation on the torch backend") }, "\(lines)")
        #expect(lines.contains { $0.contains("local distillation pass 2/2 (layers 2–2) done") }, "\(lines)")
        #expect(torchCandidates.map(\.hash) == builtinCandidates.map(\.hash))
        #expect(torchCandidates.allSatisfy { Candidate.layerVariants($0.architecture) != nil })
        let builtinScores = Dictionary(uniqueKeysWithValues: builtinTrials.compactMap { t in t.score.map { ("\(t.hash)/\(t.rung)", $0) } })
        var compared = 0, worst = 0.0
        for trial in torchTrials {
            guard let value = trial.score, let other = builtinScores["\(trial.hash)/\(trial.rung)"] else { continue }
            #expect(BackendTests.relative(value, other) <= 1e-3, "\(trial.hash) rung \(trial.rung): torch \(value) vs built-in \(other)")
            compared += 1
            worst = max(worst, BackendTests.relative(value, other))
        }
        #expect(compared >= torchCandidates.count, "\(compared) trials compared")
        print(String(format: "puzzle study, torch vs built-in: %d candidates, %d trials compared, worst relative score difference %.2e",
                     torchCandidates.count, compared, worst))
        let out = f.root.appendingPathComponent("export")
        let dirs = try Exporter.export(store: torchStore, study: "tiny", top: 1, out: out, importanceCache: cache,
                                       artifacts: f.root.appendingPathComponent("results-torch"), log: { _ in }, warn: { _ in })
        #expect(try Checkpoint.load(dirs[0]).config.layerVariants != nil)
        #expect(try Checkpoint.load(dirs[0].appendingPathComponent("proxy")).config.layerVariants != nil)
    }

    @Test func aPuzzleStudyRunsAndItsWinnerExports() throws {
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let t = try ModelConfig.load(teacher.appendingPathComponent("config.json"))
        let w = Workload(batch: 4, context: 64, weights: .bfloat16)
        // About two thirds of the teacher's memory at the workload.
        let cap = t.inferenceCost(w).memoryBytes * 2 / 3
        let spec = try Self.spec(f, teacher: teacher, memory: cap)
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
        var lines: [String] = []
        runner.log = { lines.append($0) }
        let id = try runner.run(worker: "w", extend: false)
        #expect(try store.study(named: "tiny")?.state == "complete")
        let candidates = try store.candidates(study: id)
        let variants = candidates.compactMap { Candidate.layerVariants($0.architecture) }
        #expect(variants.count == candidates.count && (2...4).contains(candidates.count), "\(candidates.map(\.architecture))")
        for v in variants {
            let c = HeterogeneousPruning.studentConfig(teacher: t, variants: v)
            #expect(c.inferenceCost(w).memoryBytes <= cap, "\(v) exceeds the memory budget")
        }
        // The solver's solutions differ pairwise in at least 2 layers; the baseline's layers are all alike.
        let solverLines = lines.filter { $0.hasPrefix("puzzle: solution") }
        #expect(!solverLines.isEmpty, "\(lines)")
        let solutions = Array(variants.prefix(solverLines.count))
        for i in solutions.indices { for j in solutions.indices where j > i {
            #expect(zip(solutions[i], solutions[j]).filter { $0 != $1 }.count >= 2, "\(solutions[i]) vs \(solutions[j])")
        } }
        if lines.contains(where: { $0.hasPrefix("puzzle: homogeneous baseline") }) {
            #expect(Set(variants.last!).count == 1)
        }
        let trials = try store.trials(study: id)
        #expect(trials.allSatisfy { $0.state == "complete" || $0.state == "pruned" }, "\(trials.map { $0.error ?? "" })")
        // The Pareto front against memory at the workload: each row's memory is the candidate's,
        // and no candidate beats a front member on both memory and score.
        let front = try topiary(["results", "pareto", "tiny", "--cost", "memory", "--db", f.db, "--format", "json"])
        #expect(front.status == 0, "\(front.err)")
        let rows = try #require(JSON.parse(Data(front.out.utf8))?.array)
        let byHash = Dictionary(uniqueKeysWithValues: zip(candidates.map(\.hash), variants))
        let ranked = try store.top(study: id)
        func memory(_ hash: String) -> Int {
            HeterogeneousPruning.studentConfig(teacher: t, variants: byHash[hash]!).inferenceCost(w).memoryBytes
        }
        #expect(!rows.isEmpty)
        for r in rows {
            let hash = try #require(r["candidate"]?.string)
            #expect(r["memory"]?.int == memory(hash))
            let mine = try #require(ranked.first { $0.trial.hash == hash })
            #expect(!ranked.contains { $0.trial.rung == mine.trial.rung && memory($0.trial.hash) < memory(hash) && $0.value < mine.value })
        }
        // The report draws a front against each serving cost at the workload, a point per scored candidate.
        let html = try StudyReport(store: store, study: "tiny").indexHTML()
        let scored = Set(ranked.filter { $0.value.isFinite }.map(\.trial.hash)).count
        for id in ["pareto-memory", "pareto-kv_cache", "pareto-decode_flops"] {
            let after = html.components(separatedBy: "<svg id=\"\(id)\"").dropFirst().first
            let svg = try #require(after?.components(separatedBy: "</svg>").first, "no \(id) plot")
            #expect(svg.components(separatedBy: "data-candidate=").count - 1 == scored, "\(id)")
        }
        #expect(!html.contains("pareto-throughput"), "no throughput floor, no throughput plot")
        // The block library's scores are in the store, per layer and variant, equal to the cache
        // file's; a second runner with an empty importance cache reuses them and finds the same
        // candidates; a copy of the store carries them.
        let puzzle = try #require(runner.strategy as? Puzzle)
        let names = puzzle.library(teacher: t).map(Puzzle.describe)
        let (key, _) = try Importance.key(teacherFingerprint: try runner.teacherFingerprint(), corpus: runner.corpus,
                                          settings: spec.importance)
        let recorded = try #require(try store.blockScores(key, training: "pruned", layers: 3, variants: names))
        let cacheFiles = try FileManager.default.contentsOfDirectory(atPath: f.root.appendingPathComponent("importance").path)
        let file = try #require(cacheFiles.first { $0.hasPrefix("puzzle-") && $0.hasSuffix(".json") })
        let cached = try JSONDecoder().decode([[Double]].self, from: Data(contentsOf: f.root.appendingPathComponent("importance/\(file)")))
        #expect(recorded == cached && recorded.count == 3 && recorded[0].count == names.count)
        #expect(try store.blockScores(key, training: "bld:other", layers: 3, variants: names) == nil)
        #expect(try store.blockScores(key, training: "pruned", layers: 4, variants: names) == nil)
        let again = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"),
                                     importanceCache: f.root.appendingPathComponent("empty-cache"))
        var againLines: [String] = []
        again.log = { againLines.append($0) }
        #expect(try again.initialCandidates().map(\.hash) == (try runner.initialCandidates()).map(\.hash))
        #expect(againLines.contains { $0.contains("reusing the block library's scores recorded in the store") }, "\(againLines)")
        let copy = try StudyStore(path: f.root.appendingPathComponent("copy.sqlite").path)
        try store.copy(to: copy)
        #expect(try copy.blockScores(key, training: "pruned", layers: 3, variants: names) == recorded)
        copy.close()
        if let server = Services.postgres("aPuzzleStudyRunsAndItsWinnerExports (block scores on PostgreSQL)") {
            let pg = try StudyStore(path: try Services.freshDatabase(server, "block_scores"))
            defer { pg.close() }
            try store.copy(to: pg)
            #expect(try pg.blockScores(key, training: "pruned", layers: 3, variants: names) == recorded)
            try pg.recordBlockScores(key, training: "bld:test", variants: names, scores: recorded.map { $0.map { $0 + 1 } })
            try pg.recordBlockScores(key, training: "bld:test", variants: names, scores: recorded)
            #expect(try pg.blockScores(key, training: "bld:test", layers: 3, variants: names) == recorded.map { $0.map { $0 + 1 } },
                    "the first record is kept")
        }
        // The winner exports as nemotron-nas, with its modeling file.
        let out = f.root.appendingPathComponent("export")
        let dirs = try Exporter.export(store: store, study: "tiny", top: 1, out: out,
                                       importanceCache: f.root.appendingPathComponent("importance"),
                                       artifacts: f.root.appendingPathComponent("results"), log: { _ in }, warn: { _ in })
        let exported = try Checkpoint.load(dirs[0])
        #expect(exported.config.family == .nemotronNAS && exported.config.layerVariants != nil)
        let winner = try #require(try store.top(study: id, limit: 1).first)
        #expect(Candidate.layerVariants(winner.trial.architecture) == exported.config.layerVariants)
        // Reports name it by its layers: how many keep attention (and their groups) and an MLP.
        let v = exported.config.layerVariants!
        let text = StudyReport.architectureText(winner.trial.architecture)
        #expect(text.hasPrefix("L3 C16 H4 het: attn \(v.filter { $0.keyValueGroups != nil }.count)"), "\(text)")
        #expect(text.contains("mlp \(v.filter { $0.mlpWidth != nil }.count)"), "\(text)")
        #expect(FileManager.default.fileExists(atPath: dirs[0].appendingPathComponent("modeling_decilm.py").path))
        #expect(FileManager.default.fileExists(atPath: dirs[0].appendingPathComponent("proxy/modeling_decilm.py").path))
    }

    /// A worker elsewhere (its own importance cache) runs a puzzle study's trials from the
    /// candidates the store recorded, without scoring the block library again.
    @Test func aWorkerRunsTheRecordedCandidates() throws {
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let t = try ModelConfig.load(teacher.appendingPathComponent("config.json"))
        let cap = t.inferenceCost(Workload(batch: 4, context: 64, weights: .bfloat16)).memoryBytes * 2 / 3
        let spec = try Self.spec(f, teacher: teacher, memory: cap, solutions: 2)
        let store = try StudyStore(path: f.db)
        let results = f.root.appendingPathComponent("results")
        let first = try SearchRunner(spec: spec, store: store, results: results, importanceCache: f.root.appendingPathComponent("a"))
        first.log = { _ in }
        let id = try first.prepare(extend: false)
        let worker = try SearchRunner(spec: spec, store: store, results: results, importanceCache: f.root.appendingPathComponent("b"))
        var lines: [String] = []
        worker.log = { lines.append($0) }
        while true {
            let ran = try worker.work(study: id, worker: "elsewhere")
            if try worker.advance(study: id) { break }
            #expect(ran > 0, "the worker found nothing to run")
            if ran == 0 { break }
        }
        #expect(try store.study(named: "tiny")?.state == "complete")
        #expect(!lines.contains { $0.contains("puzzle: scoring") }, "\(lines)")
        #expect(try store.trials(study: id).allSatisfy { $0.state == "complete" || $0.state == "pruned" })
    }

    /// `strategy.local_distillation`: the blocks are distilled once into the importance cache
    /// (a second runner reuses the file), the candidates' inits carry the trained blocks, and
    /// the library is scored with them.
    @Test func locallyDistilledBlocksInitialiseTheCandidates() throws {
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let t = try ModelConfig.load(teacher.appendingPathComponent("config.json"))
        let cap = t.inferenceCost(Workload(batch: 4, context: 64, weights: .bfloat16)).memoryBytes * 2 / 3
        let bld: JSON = ["steps": 6, "batch_size": 4, "sequence_length": 16, "learning_rate": 3e-3]
        let spec = try Self.spec(f, teacher: teacher, memory: cap, solutions: 2, localDistillation: bld)
        guard case let .puzzle(settings) = spec.strategy else { Issue.record("not a puzzle spec"); return }
        #expect(settings.localDistillation == LocalDistillationSettings(steps: 6, batchSize: 4, sequence: 16, learningRate: 3e-3,
                                                                        seed: spec.proxy.seed + 1))
        let store = try StudyStore(path: f.db)
        let cache = f.root.appendingPathComponent("importance"), results = f.root.appendingPathComponent("results")
        let runner = try SearchRunner(spec: spec, store: store, results: results, importanceCache: cache)
        var lines: [String] = []
        runner.log = { lines.append($0) }
        let candidates = try runner.initialCandidates()
        #expect(lines.contains { $0.contains("local distillation step 6/6") }, "\(lines)")
        #expect(lines.contains { $0.contains("blocks distilled in") } && lines.contains { $0.contains("(locally distilled) by one-block") })
        let files = try FileManager.default.contentsOfDirectory(atPath: cache.path).filter { $0.hasPrefix("puzzle-bld-") }
        #expect(files.count == 1, "\(files)")
        let puzzle = try #require(runner.strategy as? Puzzle)
        let library = puzzle.library(teacher: t)
        let weights = try BlockWeights.read(from: cache.appendingPathComponent(files[0]), teacher: t,
                                            variants: Array(repeating: library, count: 3))
        // A candidate's init: every layer not the teacher's own block holds its trained weights.
        let c = try #require(candidates.first { $0.config.layerVariants!.contains { $0 != library[0] && $0.mlpWidth != nil } })
        let teacherModel = try runner.transientTeacher(), importance = try runner.importance()
        let student = try runner.pruned(c, teacher: teacherModel, scores: importance)
        let plain = try HeterogeneousPruning.prune(teacher: teacherModel, variants: c.config.layerVariants!, scores: importance)
        var differs = false
        for (l, v) in c.config.layerVariants!.enumerated() where v != library[0] && (v.mlpWidth != nil || v.keyValueGroups != nil) {
            let block = try #require(try weights.block(layer: l, variant: v))
            for e in block.layout.entries where e.layer == 0 {
                let name = e.name.replacingOccurrences(of: "layers.0.", with: "layers.\(l).")
                #expect(Array(student.tensor(name)!) == Array(block.tensor(e.name)!), "\(name)")
                if Array(student.tensor(name)!) != Array(plain.tensor(name)!) { differs = true }
            }
        }
        #expect(differs, "training changed nothing")
        // A second runner reuses the file and finds the same candidates.
        let again = try SearchRunner(spec: spec, store: store, results: results, importanceCache: cache)
        var againLines: [String] = []
        again.log = { againLines.append($0) }
        #expect(try again.initialCandidates().map(\.hash) == candidates.map(\.hash))
        #expect(againLines.contains { $0.contains("reusing the locally distilled blocks") }, "\(againLines)")
        #expect(!againLines.contains { $0.contains("local distillation step") })
        // The scores differ from the pruned library's (another cache file).
        let plainRunner = try SearchRunner(spec: try Self.spec(f, teacher: teacher, memory: cap, solutions: 2), store: store,
                                           results: results, importanceCache: cache)
        var plainLines: [String] = []
        plainRunner.log = { plainLines.append($0) }
        _ = try plainRunner.initialCandidates()
        #expect(plainLines.contains { $0.contains("(as pruned) by one-block") }, "\(plainLines)")
        // The study runs; its winner's exported init is made of the trained blocks, and an export
        // without the importance cache that holds them says which folder to pass.
        _ = try runner.run(worker: "w", extend: false)
        let winner = try #require(try store.top(study: try store.study(named: "tiny")!.id, limit: 1).first)
        let out = f.root.appendingPathComponent("export")
        let dirs = try Exporter.export(store: store, study: "tiny", top: 1, out: out, importanceCache: cache, artifacts: results,
                                       log: { _ in }, warn: { _ in })
        let exported = try Checkpoint.load(dirs[0])
        let winning = try #require(Candidate.layerVariants(winner.trial.architecture))
        for (l, v) in winning.enumerated() where v != library[0] && (v.mlpWidth != nil || v.keyValueGroups != nil) {
            let block = try #require(try weights.block(layer: l, variant: v))
            for e in block.layout.entries where e.layer == 0 {
                let name = e.name.replacingOccurrences(of: "layers.0.", with: "layers.\(l).")
                #expect(Array(exported.tensor(name)!) == Array(block.tensor(e.name)!), "exported \(name)")
            }
        }
        #expect {
            _ = try Exporter.export(store: store, study: "tiny", top: 1, out: f.root.appendingPathComponent("export2"),
                                    importanceCache: f.root.appendingPathComponent("elsewhere"), artifacts: results,
                                    log: { _ in }, warn: { _ in })
        } throws: { "\($0)".contains("--importance-cache") && "\($0)".contains("puzzle-bld-") }
    }

    /// budget.min holds for every solution and the baseline, even when the scores favour the
    /// smallest variants; a minimum no choice reaches is an error naming budget.min.
    @Test func theBudgetsMinimumHolds() throws {
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        let t = try ModelConfig.load(teacher.appendingPathComponent("config.json"))
        func spec(min: Int) throws -> SearchSpec {
            var json = f.spec(["strategy": ["name": "puzzle", "solutions": 3, "min_hamming": 1, "num_key_value_heads": [2, 1],
                                            "intermediate_size": [512, 256]],
                               "space": [:], "budget": ["min": JSON(min), "max": JSON(t.parameterCount)]])
            json = .object(json.object!.merging(["teacher": .string(teacher.path)]) { $1 })
            return try f.parse(json)
        }
        let minimum = t.parameterCount * 3 / 4
        let s = try spec(min: minimum)
        let puzzle = try #require(s.strategy.value as? Puzzle)
        let library = puzzle.library(teacher: t)
        // Scores that reward removing things: without the minimum the solver would empty every layer.
        let scores = (0..<t.numHiddenLayers).map { _ in
            library.map { v in Double((v.keyValueGroups ?? 0) * 1000 + (v.mlpWidth ?? 0)) }
        }
        let candidates = try puzzle.candidates(spec: s, teacher: t, scores: scores) { _ in }
        #expect(!candidates.isEmpty)
        for c in candidates { #expect(c.config.parameterCount >= minimum, "\(c.config.layerVariants ?? []): \(c.config.parameterCount)") }
        let free = try puzzle.candidates(spec: try spec(min: 1), teacher: t, scores: scores) { _ in }
        #expect(free.contains { $0.config.parameterCount < minimum }, "the minimum binds")
        #expect { _ = try puzzle.candidates(spec: try spec(min: t.parameterCount + 1), teacher: t, scores: scores) { _ in } } throws: {
            "\($0)".contains("budget.min") || "\($0)".contains("min")
        }
    }

    @Test func badPuzzleSpecsNameTheirKey() throws {
        let (f, teacher) = try Self.fixture()
        defer { f.cleanup() }
        func fails(_ strategy: JSON, _ path: String) {
            let extra: [String: JSON] = ["strategy": strategy, "space": [:], "teacher": .string(teacher.path)]
            #expect { _ = try f.parse(f.spec(extra)) } throws: { error in
                guard case let SearchError.spec(_, p, _) = error else { return false }
                return p == path
            }
        }
        fails(["name": "puzzle", "intermediate_size": [300]], "strategy.intermediate_size[0]")
        fails(["name": "puzzle", "intermediate_size": [768]], "strategy.intermediate_size[0]")
        fails(["name": "puzzle", "num_key_value_heads": [3]], "strategy.num_key_value_heads[0]")
        fails(["name": "puzzle", "no_op": "yes"], "strategy.no_op")
        fails(["name": "puzzle", "solution": 3], "strategy.solution")
        fails(["name": "puzzle", "local_distillation": "yes"], "strategy.local_distillation")
        fails(["name": "puzzle", "local_distillation": ["step": 3]], "strategy.local_distillation.step")
        fails(["name": "puzzle", "local_distillation": ["steps": 0]], "strategy.local_distillation.steps")
        fails(["name": "puzzle", "local_distillation": ["sequence_length": 4096]], "strategy.local_distillation.sequence_length")
        fails(["name": "puzzle", "local_distillation": ["learning_rate": -1]], "strategy.local_distillation.learning_rate")
        fails(["name": "puzzle", "local_distillation": ["layers_per_pass": 0]], "strategy.local_distillation.layers_per_pass")
        // Variants the nemotron-nas format cannot write are refused by name.
        fails(["name": "puzzle", "num_attention_heads": [2]], "strategy.num_attention_heads")
        fails(["name": "puzzle", "num_experts": [2]], "strategy.num_experts")
        fails(["name": "puzzle", "mamba_num_heads": [2]], "strategy.mamba_num_heads")
        // A mixture teacher: its experts cannot vary per layer in the format.
        let m = try Fixture(family: .mixtral)
        defer { m.cleanup() }
        #expect { _ = try m.parse(m.spec(["strategy": ["name": "puzzle"], "space": [:]])) } throws: {
            "\($0)".contains("mixtral") && "\($0)".contains("per-layer experts")
        }
        // The fixture's own teacher (MLP 32) cannot be written as nemotron-nas.
        #expect { _ = try f.parse(f.spec(["strategy": ["name": "puzzle"], "space": [:]])) } throws: {
            "\($0)".contains("intermediate_size")
        }
    }
}
