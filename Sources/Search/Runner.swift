import Foundation
import Model
import Proxy

/// Runs a study: plans trials by strategy, executes them (several students per claim, sharing
/// the teacher), advances successive-halving rungs and evolutionary generations, and resumes
/// whatever a killed process left unfinished.
public final class SearchRunner {
    public let spec: SearchSpec
    public let store: StudyStore
    /// The artifacts root: trial checkpoints (weights + AdamW moments) live under it, and the
    /// store records their paths relative to it, so that workers on other machines that mount the
    /// same shared folder elsewhere find them.
    public let results: URL
    /// The teacher's files, memory-mapped: an external backend's students are cut from them a
    /// tensor at a time, in the teacher's dtype, so that a worker never holds the teacher in
    /// float32 unless the built-in engine needs it (``teacher``).
    public let teacherWeights: CheckpointWeights
    public let corpus: TokenShards
    public let enumeration: Enumeration
    public var studentsPerClaim = 4
    public var staleAfter = 60.0
    public var maxAttempts = 3
    public var log: (String) -> Void = {
        print($0); fflush(nil)
    }
    let importanceCache: URL
    var scores: ImportanceScores?
    var cleanedJobFolders = false
    /// The worker's resident backend (protocol 2), started at its first job, ended with the run.
    let residentBackend = ResidentBackend()
    var backendResident: ResidentBackend? {
        !spec.backend.isBuiltin && spec.backend.protocolVersion == 2 ? residentBackend : nil
    }
    var loadedTeacher: DecoderModel?
    var fingerprint: String?

    /// The teacher as a float32 model: loaded at once for the built-in engine and kept; for an
    /// external backend, loaded at the first use of this property and kept (``transientTeacher()``
    /// is what the runner itself uses).
    public var teacher: DecoderModel {
        get throws {
            if let loadedTeacher { return loadedTeacher }
            let t = try Checkpoint.load(teacherWeights.directory)
            loadedTeacher = t
            return t
        }
    }

    /// The float32 teacher for one computation here (importance by the built-in engine, the
    /// prefilter's losses): the kept one, else loaded for the caller and released after it.
    func transientTeacher() throws -> DecoderModel {
        try loadedTeacher ?? Checkpoint.load(teacherWeights.directory)
    }

    /// The teacher's fingerprint, streamed from its files once (equal to ``Fingerprint/of(_:)-(DecoderModel)``).
    public func teacherFingerprint() throws -> String {
        if let fingerprint { return fingerprint }
        let f = try loadedTeacher.map(Fingerprint.of) ?? Fingerprint.of(teacherWeights)
        fingerprint = f
        return f
    }

    /// Loads the teacher and corpus and enumerates the space, after checking the corpus and the
    /// memory of `studentsPerClaim` students against the spec. Nothing is written yet.
    public init(spec: SearchSpec, store: StudyStore, results: URL, importanceCache: URL, studentsPerClaim: Int = 4)
        throws
    {
        self.spec = spec
        self.store = store
        self.results = results
        self.importanceCache = importanceCache
        self.studentsPerClaim = studentsPerClaim
        corpus = try spec.openCorpus()
        let teacherConfig = try ModelConfig.load(
            URL(fileURLWithPath: spec.teacher, isDirectory: true).appendingPathComponent("config.json"))
        try spec.checkCorpus(corpus, teacher: teacherConfig)
        try spec.checkResources(teacher: teacherConfig, students: studentsPerClaim)
        // Trials that would not fit the GPU the spec names are refused before anything is loaded.
        if spec.backend.gpuMemory != nil {
            try TrialPlan.check(
                spec, teacher: teacherConfig, candidates: Enumeration.of(spec, teacher: teacherConfig).candidates,
                students: studentsPerClaim)
        }
        teacherWeights = try CheckpointWeights(URL(fileURLWithPath: spec.teacher, isDirectory: true))
        if spec.backend.isBuiltin { loadedTeacher = try Checkpoint.load(teacherWeights.directory) }
        enumeration = Enumeration.of(spec, teacher: teacherWeights.config)
        // The puzzle strategy's candidates come from its block library, not from the space.
        if case .puzzle = spec.strategy { return }
        guard !enumeration.candidates.isEmpty else { throw SearchError.emptySpace(enumeration.explanation) }
        try enumeration.requireWithinLimit(spec)
    }

    /// The strategy the spec names (Strategies/).
    var strategy: any SearchStrategy { spec.strategy.value }

    var rungFidelities: [Int] { strategy.fidelities(proxySteps: spec.proxy.steps) }

    /// The candidates a strategy starts from.
    func initialCandidates() throws -> [Candidate] {
        if let puzzle = strategy as? Puzzle { return try puzzleCandidates(puzzle) }
        return strategy.initialCandidates(enumeration.candidates)
    }

    var puzzleChoices: [Candidate]?

    /// The puzzle strategy's candidates (``Puzzle``): the block library's replacement scores,
    /// computed once per teacher, calibration set and library (a file in the importance cache),
    /// then the solver's choices. Deterministic, so that every worker finds the same ones.
    func puzzleCandidates(_ puzzle: Puzzle) throws -> [Candidate] {
        if let puzzleChoices { return puzzleChoices }
        let t = teacherWeights.config
        let importance = try importance()
        let (key, calibration) = try Importance.key(
            teacherFingerprint: try teacherFingerprint(), corpus: corpus, settings: spec.importance)
        let library = puzzle.library(teacher: t)
        let trained = try puzzleBlockWeights(puzzle)
        var f = Fingerprint()
        f.add(key.digest)
        f.add(library.map(Puzzle.describe).joined(separator: ","))
        if let bld = puzzle.settings.localDistillation { f.add(bld.description) }
        let file = importanceCache.appendingPathComponent("puzzle-\(f.hex).json")
        var scores: [[Double]]
        let training = puzzle.settings.localDistillation?.description ?? "pruned"
        let names = library.map(Puzzle.describe)
        if let recorded = try store.blockScores(key, training: training, layers: t.numHiddenLayers, variants: names) {
            log("puzzle: reusing the block library's scores recorded in the store")
            scores = recorded
        } else if let data = try? Data(contentsOf: file),
            let cached = try? JSONDecoder().decode([[Double]].self, from: data),
            cached.count == t.numHiddenLayers, cached.allSatisfy({ $0.count == library.count })
        {
            log("puzzle: reusing the block library's scores (\(file.lastPathComponent))")
            scores = cached
        } else {
            log(
                "puzzle: scoring \(library.count) variants × \(t.numHiddenLayers) layers"
                    + (trained == nil ? " (as pruned)" : " (locally distilled)") + " by one-block replacement "
                    + "(KL to the teacher on \(calibration.samples) calibration windows of \(calibration.sequence) tokens)"
            )
            let start = Date()
            let progress: (Int, Int) -> Void = { [log] done, total in
                if done % max(1, total / 10) == 0 || done == total {
                    log(
                        String(
                            format: "puzzle: %d/%d variants scored (%.0f s)", done, total,
                            Date().timeIntervalSince(start)))
                }
            }
            let variants = Array(repeating: library, count: t.numHiddenLayers)
            if spec.backend.isBuiltin {
                scores = try BlockLibrary.replacementScores(
                    teacher: try transientTeacher(), variants: variants, importance: importance,
                    calibration: calibration, trained: trained, progress: progress)
            } else {
                // On the backend's device: the variant blocks cut from the teacher's files into the
                // job folder, the teacher loaded there once.
                log("puzzle: the block library scored by the \(spec.backend.name) backend")
                scores = try ExternalBackend(spec: spec.backend, log: log, resident: backendResident).blockScores(
                    teacherPath: spec.teacher, teacher: teacherWeights, variants: variants, importance: importance,
                    calibration: calibration, trained: trained,
                    jobDirectory: results.appendingPathComponent(spec.study).appendingPathComponent(
                        "jobs/puzzle-\(ProcessInfo.processInfo.hostName)-\(getpid())"), progress: progress)
            }
            try FileManager.default.createDirectory(at: importanceCache, withIntermediateDirectories: true)
            try AtomicFile.write(try JSONEncoder().encode(scores), to: file)
        }
        try store.recordBlockScores(key, training: training, variants: names, scores: scores)
        let candidates = try puzzle.candidates(spec: spec, teacher: t, scores: scores, log: log)
        puzzleChoices = candidates
        return candidates
    }

    var puzzleWeights: BlockWeights??

    /// The block library's locally distilled weights when the puzzle strategy asks for them
    /// (`strategy.local_distillation`), trained once per teacher, calibration key, library and
    /// settings into a file in the importance cache — which every worker then reads — else nil.
    func puzzleBlockWeights(_ puzzle: Puzzle) throws -> BlockWeights? {
        if let puzzleWeights { return puzzleWeights }
        guard let bld = puzzle.settings.localDistillation else {
            puzzleWeights = .some(nil)
            return nil
        }
        let t = teacherWeights.config, importance = try importance()
        let (key, _) = try Importance.key(
            teacherFingerprint: try teacherFingerprint(), corpus: corpus, settings: spec.importance)
        let library = puzzle.library(teacher: t)
        let variants = Array(repeating: library, count: t.numHiddenLayers)
        let file = puzzle.blockWeightsFile(cache: importanceCache, importanceKey: key.digest, teacher: t)!
        if FileManager.default.fileExists(atPath: file.path) {
            do {
                let w = try BlockWeights.read(from: file, teacher: t, variants: variants)
                log("puzzle: reusing the locally distilled blocks (\(file.lastPathComponent))")
                puzzleWeights = .some(w)
                return w
            } catch {
                log("puzzle: \(file.lastPathComponent) is unreadable (\(error)); training the blocks again")
            }
        }
        let trainedCount = variants.joined().filter {
            $0 != library[0] && ($0.keyValueGroups != nil || $0.mlpWidth != nil)
        }.count
        log(
            "puzzle: local distillation of \(trainedCount) blocks (\(library.count - 1) variants × \(t.numHiddenLayers) "
                + "layers, less the no-ops): \(bld.steps) steps of \(bld.batchSize) × \(bld.sequence) tokens, "
                + "rate \(bld.learningRate), every block of a pass on the same teacher forward")
        let start = Date()
        let passes = bld.passes(layers: t.numHiddenLayers)
        let total = bld.steps * passes.count
        if passes.count > 1 {
            log("puzzle: \(passes.count) passes over the batches, \(bld.layersPerPass ?? 0) layers' blocks at a time")
        }
        let every = max(1, total / 10)
        var weights: BlockWeights, losses: [[Double?]]
        if spec.backend.isBuiltin {
            (weights, losses) = try LocalDistillation.train(
                teacher: try transientTeacher(), variants: variants, importance: importance, corpus: corpus,
                settings: bld
            ) { [log] step, l in
                guard step % every == 0 || step == 1 || step == total else { return }
                let elapsed = Date().timeIntervalSince(start)
                let tokens = Double(step * bld.batchSize * bld.sequence)
                log(
                    String(
                        format:
                            "puzzle: local distillation step %d/%d, mean block loss %.4f, %.0f teacher tok/s, ETA %@",
                        step, total, l.reduce(0, +) / Double(max(1, l.count)), tokens / max(elapsed, 1e-9),
                        ProgressReporter.duration(elapsed / Double(step) * Double(total - step))))
            }
        } else {
            // One job per pass, each with its layers' blocks (a resident backend keeps the teacher).
            log("puzzle: local distillation on the \(spec.backend.name) backend")
            weights = BlockWeights(teacher: t)
            losses = variants.map { $0.map { $0 == library[0] ? 0 : nil } }
            for (p, layers) in passes.enumerated() {
                let only = variants.enumerated().map { l, vs in layers.contains(l) ? vs : [] }
                let (w, lo) = try ExternalBackend(spec: spec.backend, log: log, resident: backendResident)
                    .localDistillation(
                        teacherPath: spec.teacher, teacher: teacherWeights, variants: only, importance: importance,
                        corpus: corpus, settings: bld,
                        jobDirectory: results.appendingPathComponent(spec.study).appendingPathComponent(
                            "jobs/puzzle-bld-\(ProcessInfo.processInfo.hostName)-\(getpid())"))
                for l in layers {
                    weights.blocks[l] = w.blocks[l]
                    losses[l] = lo[l]
                }
                if passes.count > 1 {
                    log(
                        String(
                            format: "puzzle: local distillation pass %d/%d (layers %d–%d) done (%.0f s)", p + 1,
                            passes.count, layers.lowerBound, layers.upperBound - 1, Date().timeIntervalSince(start)))
                }
            }
        }
        let final = losses.joined().compactMap { $0 }.filter { $0 > 0 }
        log(
            String(
                format: "puzzle: %d blocks distilled in %.0f s; normalised MSE at the end: mean %.4f, worst %.4f",
                final.count, Date().timeIntervalSince(start), final.reduce(0, +) / Double(max(1, final.count)),
                final.max() ?? 0))
        try FileManager.default.createDirectory(at: importanceCache, withIntermediateDirectories: true)
        try weights.write(to: file)
        puzzleWeights = .some(weights)
        return weights
    }

    /// Every candidate a trial may name: the space's, and the heterogeneous ones the study
    /// recorded (the puzzle strategy's), rebuilt from their stored layers — so that a worker on
    /// another machine runs what the study chose without scoring the block library again.
    func candidatesByHash() throws -> [String: Candidate] {
        var all = enumeration.candidates
        if strategy is Puzzle, let study = try store.study(named: spec.study) {
            for row in try store.candidates(study: study.id) {
                guard let variants = Candidate.layerVariants(row.architecture) else { continue }
                let c = Candidate(
                    config: HeterogeneousPruning.studentConfig(teacher: teacherWeights.config, variants: variants),
                    sequence: spec.proxy.sequence)
                guard c.hash == row.hash else {
                    throw SearchError.store("candidate \(row.hash): its stored layers give candidate \(c.hash)")
                }
                all.append(c)
            }
        }
        return Dictionary(all.map { ($0.hash, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The teacher cut into candidate `c`: by the plan of its shape, or into its layer variants.
    func pruned(_ c: Candidate, teacher: DecoderModel, scores s: ImportanceScores) throws -> DecoderModel {
        if let variants = c.config.layerVariants {
            let trained = try (strategy as? Puzzle).flatMap { try puzzleBlockWeights($0) }
            return try HeterogeneousPruning.prune(teacher: teacher, variants: variants, scores: s, trained: trained)
        }
        return try Pruning.prune(teacher: teacher, to: c.config, scores: s, options: spec.prune)
    }

    /// Creates the study (or finds it) and its first trials. Returns the study id.
    @discardableResult
    public func prepare(extend: Bool) throws -> Int64 {
        var candidates = try initialCandidates()
        if let keep = spec.prefilter, keep < candidates.count {
            log(
                "prefilter: keeping the best \(keep) of \(candidates.count) by loss after pruning alone "
                    + "(Minitron found this ranking unreliable; use with care)"
            )
            let s = try importance()
            let teacher = try transientTeacher()
            let losses = try candidates.map { c -> Double in
                let m = try pruned(c, teacher: teacher, scores: s)
                return spec.objective.value(
                    try Evaluation.validationLoss(
                        model: m, shards: corpus, batch: spec.proxy.batch, sequence: spec.proxy.sequence,
                        maxTokensPerLanguage: spec.proxy.evalTokens))
            }
            candidates = zip(candidates, losses).sorted { $0.1 < $1.1 }.prefix(keep).map(\.0)
        }
        let id = try store.openStudy(
            name: spec.study, spec: spec.json, teacherFingerprint: teacherFingerprint(),
            candidates: strategy.recordedCandidates(initial: candidates, space: enumeration.candidates),
            extend: extend)
        let ids = try store.candidateIDs(study: id)
        if try store.trials(study: id).isEmpty {
            try store.addTrials(candidates.map { (ids[$0.hash]!, 0, rungFidelities[0], nil) })
        }
        return id
    }

    func importance() throws -> ImportanceScores {
        if let scores { return scores }
        // An external backend computes them on its device; the key (teacher, calibration set,
        // settings) is the same, so the store and cache hold one set whichever engine made it.
        // (Not yet for mixtures: their expert scores come from the built-in engine.)
        let config = teacherWeights.config
        if !spec.backend.isBuiltin && config.isMixture {
            log(
                "importance: a mixture-of-experts teacher — computed by the built-in engine (the "
                    + "\(spec.backend.name) backend does not score experts yet)"
            )
        }
        let external: ((CalibrationSet) throws -> ImportanceScores)? =
            spec.backend.isBuiltin || config.isMixture
            ? nil
            : { [self] calibration in
                log("importance: computed by the \(spec.backend.name) backend")
                return try ExternalBackend(spec: spec.backend, log: log, resident: backendResident).importance(
                    teacherPath: spec.teacher, teacher: config, teacherFingerprint: teacherFingerprint(),
                    corpus: corpus,
                    calibration: calibration,
                    settings: spec.importance,
                    jobDirectory: results.appendingPathComponent(spec.study).appendingPathComponent(
                        "jobs/importance-\(ProcessInfo.processInfo.hostName)-\(getpid())"))
            }
        let s = try store.importance(
            teacherFingerprint: teacherFingerprint(), loadTeacher: transientTeacher, corpus: corpus,
            settings: spec.importance, cache: importanceCache, log: log, compute: external)
        scores = s
        return s
    }

    /// Where a trial's student checkpoint lives (under the artifacts root; the store records the
    /// path relative to it).
    func checkpointURL(_ t: StudyStore.TrialRow) -> URL {
        results.appendingPathComponent(spec.study).appendingPathComponent("trials").appendingPathComponent(t.hash)
            .appendingPathComponent("rung-\(t.rung)" + (t.replicate > 0 ? "-replicate-\(t.replicate)" : ""))
    }

    /// Removes the job folders (`results/STUDY/jobs/*-HOST-PID`) that processes of this host left
    /// when they were killed (a pid no longer running): pruned inits and batches, gigabytes at
    /// real scale. Folders of other hosts, and of live processes, are left alone.
    func removeStaleJobFolders() {
        guard !cleanedJobFolders else { return }
        cleanedJobFolders = true
        let jobs = results.appendingPathComponent(spec.study).appendingPathComponent("jobs")
        let host = ProcessInfo.processInfo.hostName
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: jobs.path) else { return }
        var removed = 0
        for name in names {
            guard let dash = name.lastIndex(of: "-"), let pid = pid_t(name[name.index(after: dash)...]),
                name[..<dash].hasSuffix("-" + host), pid != getpid(), !Interruption.isAlive(pid)
            else { continue }
            if (try? FileManager.default.removeItem(at: jobs.appendingPathComponent(name))) != nil { removed += 1 }
        }
        if removed > 0 { log("removed \(removed) job folder(s) that killed processes of \(host) left in \(jobs.path)") }
    }

    /// Where an external backend's job files go while it runs (removed afterwards).
    func jobDirectory(_ trials: [StudyStore.TrialRow]) -> URL {
        results.appendingPathComponent(spec.study).appendingPathComponent("jobs")
            .appendingPathComponent(
                "trial-\(trials[0].id)-attempt-\(trials[0].attempt)-\(ProcessInfo.processInfo.hostName)-\(getpid())")
    }

    /// The checkpoint `folder/latest` names, checked: present, inside `folder` (no `..`, no
    /// absolute path, no link out), complete, and saved at `step`.
    /// - Throws: ``SearchError/backend(_:)`` saying what is wrong.
    static func verifiedCheckpoint(in folder: URL, step: Int) throws -> URL {
        let latest: URL?
        do { latest = try TrainingCheckpoint.latest(in: folder) } catch {
            throw SearchError.backend("checkpoint: \(error)")
        }
        guard let latest else {
            throw SearchError.backend(
                "checkpoint: \(folder.path) has no 'latest' (the backend reported a checkpoint it did not write)")
        }
        let base = folder.resolvingSymlinksInPath().standardizedFileURL.path
        let resolved = latest.resolvingSymlinksInPath().standardizedFileURL.path
        guard resolved.hasPrefix(base + "/"), !resolved.dropFirst(base.count + 1).contains("/") else {
            throw SearchError.backend("checkpoint: \(folder.path)/latest names \(resolved), outside the trial's folder")
        }
        if let problem = Artifacts.problem(checkpoint: latest) {
            throw SearchError.backend("checkpoint \(latest.path) \(problem)")
        }
        let saved = try checkpointStep(latest)
        guard saved == step else {
            throw SearchError.backend("checkpoint \(latest.path) is at step \(saved), not the trial's \(step)")
        }
        return latest
    }

    /// The step a training checkpoint was saved at (its state.json).
    static func checkpointStep(_ url: URL) throws -> Int {
        guard let step = TrainingCheckpoint.step(of: url) else {
            throw SearchError.store("\(url.path): no readable state.json with a step")
        }
        return step
    }

    /// After the last rung: adds the replicate trials of the finalists (once); returns whether it
    /// added any.
    func addReplicates(study: Int64, trials: [StudyStore.TrialRow]) throws -> Bool {
        guard let r = spec.replicates, !trials.contains(where: { $0.replicate > 0 }) else { return false }
        let rung = trials.map(\.rung).max() ?? 0
        let finalists = trials.filter { $0.rung == rung && $0.replicate == 0 && $0.state == .complete }
            .sorted { ($0.score ?? .infinity, $0.id) < ($1.score ?? .infinity, $1.id) }
        let top = r.top ?? strategy.defaultFinalists(finalists.count)
        let chosen = finalists.prefix(top)
        guard !chosen.isEmpty else { return false }
        for replicate in 1..<r.seeds {
            try store.addTrials(chosen.map { ($0.candidateID, rung, $0.fidelity, nil) }, replicate: replicate)
        }
        log(
            "replicates: \(chosen.count) finalist(s) rerun with \(r.seeds - 1) other data-order seed(s) at \(chosen.first!.fidelity) steps"
        )
        return true
    }

    /// Claims and runs trials until none is waiting. Returns how many ran. On SIGINT or SIGTERM
    /// (``Interruption``) the claimed trials go back to waiting without an attempt counted, and
    /// ``Interruption/Interrupted`` is thrown.
    @discardableResult
    public func work(study: Int64, worker: String) throws -> Int {
        var ran = 0
        removeStaleJobFolders()
        while true {
            try Interruption.check()
            let claimed = try store.claim(
                study: study, worker: worker, limit: studentsPerClaim, staleAfter: staleAfter, maxAttempts: maxAttempts)
            if claimed.isEmpty { return ran }
            // Heartbeat from the claim to the last trial recorded (importance, pruning and every
            // group of the claim included), several times within --stale-after: one beat every
            // 5 s against `--stale-after 1` let another worker take back trials still running.
            let ids = claimed.map(\.id)
            let beat = Self.heartbeatInterval(staleAfter: staleAfter)
            let timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
            timer.schedule(deadline: .now() + beat, repeating: beat)
            let store = self.store
            timer.setEventHandler { try? store.heartbeat(ids, worker: worker) }
            timer.resume()
            defer { timer.cancel() }
            do { try run(claimed, worker: worker) } catch let interrupted as Interruption.Interrupted {
                // Asked to stop: not the trials' fault, so no attempt is counted.
                do {
                    let back = try store.unclaim(claimed.map(\.id), worker: worker)
                    log("\(worker): \(interrupted); \(back) trial(s) back to waiting (no attempt counted)")
                } catch {
                    log(
                        "\(worker): \(interrupted); the store did not take the trials back (\(error)): "
                            + "they are taken back when their heartbeat goes stale")
                }
                throw interrupted
            } catch {
                // Nothing stays `running` behind an error: the trials go back to waiting with the
                // error recorded and an attempt counted (failed once attempts run out), so that a
                // rerun after the cause is fixed retries them, and deleting the study is not refused.
                try? store.release(claimed.map(\.id), worker: worker, error: "\(error)", maxAttempts: maxAttempts)
                throw error
            }
            ran += claimed.count
        }
    }

    /// Runs a claim: checks that every continued trial's parent checkpoint is there and readable;
    /// a trial whose checkpoint is missing or broken is given back with an error naming it and
    /// the path on its first attempt (another worker's file system may still show it), and on a
    /// retry is retrained from its pruned init to its fidelity instead — never lost.
    func run(_ trials: [StudyStore.TrialRow], worker: String) throws {
        let all = try store.trials(study: try store.study(named: spec.study)!.id)
        var resumed: [(StudyStore.TrialRow, URL?)] = [], scratch: [(StudyStore.TrialRow, URL?)] = []
        for t in trials {
            guard let parent = t.parentTrialID, let p = all.first(where: { $0.id == parent }), let ck = p.checkpoint
            else {
                resumed.append((t, nil))
                continue
            }
            let url = Artifacts.resolve(ck, root: results)
            if let problem = Artifacts.problem(checkpoint: url) {
                let message =
                    "artifact: trial \(t.hash) rung \(t.rung): checkpoint \(url.path) of its parent trial \(parent) \(problem)"
                if t.attempt == 0 {
                    log("\(message); giving the trial back (a retry retrains it from its pruned init)")
                    try store.release([t.id], worker: worker, error: message, maxAttempts: maxAttempts)
                } else {
                    log("\(message); retraining it from its pruned init to \(t.fidelity) steps")
                    scratch.append((t, nil))
                }
                continue
            }
            resumed.append((t, url))
        }
        // Students resumed together must start at the same step: the retrained ones run apart.
        for group in [resumed, scratch] where !group.isEmpty { try runBatch(group, worker: worker) }
    }

    /// Seconds between a worker's heartbeats: a quarter of `staleAfter` (so one late beat is not
    /// a stale trial), at most 5 s.
    static func heartbeatInterval(staleAfter: Double) -> Double { max(0.05, min(5, staleAfter / 4)) }

    func runBatch(_ batch: [(StudyStore.TrialRow, URL?)], worker: String) throws {
        let trials = batch.map(\.0)
        let s = try importance()
        let byHash = try candidatesByHash()
        var resume: [Int: URL] = [:]
        let candidates = try batch.enumerated().map { (i, b) in
            guard let c = byHash[b.0.hash] else {
                throw SearchError.store("candidate \(b.0.hash) is not in the spec's space any more")
            }
            if let url = b.1 { resume[i] = url }
            return c
        }
        log(
            "\(worker): running \(trials.count) trial(s) at rung \(trials[0].rung) to \(trials[0].fidelity) "
                + "steps: \(trials.map(\.hash).joined(separator: ", "))"
        )
        var recipe = spec.proxy
        recipe.evalEvery = Int.max / 2
        // Replicate r reruns the candidate from its pruned init with data-order seed + r.
        recipe.seed = spec.proxy.seed &+ UInt64(trials[0].replicate)
        let start = Date()
        var outcomes: [Int: Result<BackendTrialResult, SearchError>] = [:]
        let startStep = try resume.values.first.map { try Self.checkpointStep($0) } ?? 0
        let evaluateAt = spec.evaluationSteps(from: startStep, to: trials[0].fidelity)
        if spec.backend.isBuiltin {
            let teacher = try self.teacher
            let students = try candidates.map { ($0.hash, try pruned($0, teacher: teacher, scores: s)) }
            var trainLoss: [Int: [(Int, Double)]] = [:]
            let (outcome, distiller) = try DistillationRun.run(
                teacher: teacher, students: students, corpus: corpus, recipe: recipe,
                endStep: trials[0].fidelity, resume: resume, evaluateAt: Set(evaluateAt),
                progressLabel: "trial"
            ) { step, losses in
                if step % 10 == 0 { for (i, l) in losses { trainLoss[i, default: []].append((step, l)) } }
            }
            for (i, t) in trials.enumerated() {
                if let failure = outcome.failures[i] { outcomes[i] = .failure(.backend("\(failure)")); continue }
                guard let point = outcome.curves[i].last else { continue }
                let model = distiller.students[i].trainer
                try TrainingCheckpoint.save(
                    model: model.model, optimizer: model.optimizer,
                    run: ["study": .string(spec.study), "candidate": .string(t.hash)],
                    in: checkpointURL(t))
                outcomes[i] = .success(
                    BackendTrialResult(
                        trainLoss: trainLoss[i, default: []], point: point, curve: Array(outcome.curves[i].dropLast())))
            }
        } else {
            // The same pruned inits (cut from the teacher's files in its dtype), batches, recipe and
            // evaluation windows, run by the external backend (docs/backends.md); its failures end
            // these trials, not the study.
            let job = jobDirectory(trials)
            let inits = try candidates.map { c in
                if let variants = c.config.layerVariants {
                    let trained = try (strategy as? Puzzle).flatMap { try puzzleBlockWeights($0) }
                    return StudentInit.heterogeneous(variants, teacher: teacherWeights, scores: s, trained: trained)
                }
                return StudentInit.pruned(
                    try Pruning.plan(teacher: teacherWeights.config, target: c.config, scores: s, options: spec.prune),
                    teacher: teacherWeights, target: c.config)
            }
            outcomes = try ExternalBackend(spec: spec.backend, log: log, resident: backendResident).distill(
                teacherPath: spec.teacher,
                students: candidates.enumerated().map { (i, c) in
                    (c.hash, inits[i], resume[i], checkpointURL(trials[i]))
                },
                corpus: corpus, recipe: recipe, startStep: startStep, endStep: trials[0].fidelity,
                evaluateAt: evaluateAt, jobDirectory: job,
                batchCache: results.appendingPathComponent(spec.study).appendingPathComponent("batches"),
                run: ["study": .string(spec.study), "candidates": .array(trials.map { .string($0.hash) })])
        }
        let seconds = Date().timeIntervalSince(start) / Double(trials.count)
        for (i, t) in trials.enumerated() {
            guard let r = outcomes[i] else { continue }
            let point: CurvePoint, trainLoss: [(Int, Double)], curve: [CurvePoint]
            switch r {
            case let .failure(failure):
                try store.fail(t.id, worker: worker, error: "\(failure)")
                log("trial \(t.hash) rung \(t.rung) FAILED: \(failure)")
                continue
            case let .success(ok): (point, trainLoss, curve) = (ok.point, ok.trainLoss, ok.curve)
            }
            let url = checkpointURL(t)
            // What a backend wrote is untrusted: the checkpoint must be named by `latest`, lie inside
            // the trial's folder, be whole, and be at the trial's step; anything else fails the
            // trial, never the process.
            let ckpt: String
            do {
                ckpt = Artifacts.relative(try Self.verifiedCheckpoint(in: url, step: t.fidelity), root: results)
            } catch {
                try store.fail(t.id, worker: worker, error: "\(error)")
                log("trial \(t.hash) rung \(t.rung) FAILED: \(error)")
                continue
            }
            var metrics: [(step: Int, name: String, value: Double)] = trainLoss.map {
                ($0.0, Metric.trainLoss.rawValue, $0.1)
            }
            // The curve points inside the trial's steps, then its end: what its learning curve is fitted to.
            for p in curve + [point] {
                metrics.append((p.step, Metric.valLoss.rawValue, p.validation.overall))
                metrics.append((p.step, Metric.valLossMean.rawValue, p.validation.languageMean))
                metrics.append((p.step, Metric.valLossWorst.rawValue, p.validation.worst))
                for (lang, v) in p.validation.perLanguage { metrics.append((p.step, Metric.language(lang), v)) }
            }
            metrics.append((point.step, Metric.valKL.rawValue, point.validationKL))
            metrics.append((point.step, Metric.seconds.rawValue, seconds))
            let score = spec.objective.value(point.validation)
            // The score's 95% interval over the validation windows (free: no retraining).
            if let ci = Noise.bootstrapInterval(point.validation, seed: UInt64(t.id), score: spec.objective.value) {
                metrics.append((point.step, Metric.scoreLow.rawValue, ci.low))
                metrics.append((point.step, Metric.scoreHigh.rawValue, ci.high))
            }
            guard
                try store.complete(
                    t.id, worker: worker, score: score, checkpoint: ckpt, metrics: metrics,
                    windows: point.validation.windows)
            else {
                log(
                    "trial \(t.hash) rung \(t.rung): not recorded — another worker took it back after a missed heartbeat"
                )
                continue
            }
            log(
                String(
                    format: "trial %@ rung %d (%d steps)%@: score %.4f", t.hash, t.rung, t.fidelity,
                    t.replicate > 0 ? " replicate \(t.replicate)" as NSString : "" as NSString, score))
        }
    }

    /// How many candidates a successive-halving cut promotes (``SuccessiveHalving/promotedCount(count:cut:slack:tied:)``).
    static func promotedCount(count: Int, cut: Int, slack: Int, tied: (Int) -> Bool) -> Int {
        SuccessiveHalving.promotedCount(count: count, cut: cut, slack: slack, tied: tied)
    }

    /// Moves the study forward when a rung or generation is finished; returns true when the study is done.
    public func advance(study: Int64) throws -> Bool {
        let trials = try store.trials(study: study)
        if trials.contains(where: { $0.state == .waiting || $0.state == .running }) { return false }
        let rung = trials.map(\.rung).max() ?? 0
        let current = trials.filter { $0.rung == rung && $0.state == .complete && $0.replicate == 0 }
        let finished = FinishedRung(
            study: study, trials: trials, rung: rung, current: current, spec: spec, store: store,
            enumeration: enumeration, log: log)
        if try strategy.advance(finished) { return false }
        if try addReplicates(study: study, trials: trials) { return false }
        try store.setStudyState(study, "complete")
        return true
    }

    /// prepare → (work → advance)* until done.
    public func run(worker: String, extend: Bool) throws -> Int64 {
        defer { residentBackend.close() }
        let study = try prepare(extend: extend)
        var announced: [String] = []
        while true {
            try work(study: study, worker: worker)
            if try advance(study: study) { return study }
            // Another worker may still hold running trials: wait for them (or for them to go
            // stale), and say so once per situation rather than wait in silence.
            let trials = try store.trials(study: study)
            if !trials.contains(where: { $0.state == .waiting }) && trials.contains(where: { $0.state == .running }) {
                let running = try store.runningTrials(study: study)
                let workers = Dictionary(grouping: running, by: \.worker)
                let names = workers.keys.sorted()
                if names != announced {
                    log(
                        "waiting for \(running.count) running trial(s) held by "
                            + names.map { w in
                                "\(w) (last heartbeat \(Int(workers[w]!.map(\.secondsSinceHeartbeat).min() ?? 0)) s ago)"
                            }.joined(separator: ", ")
                            + "; a trial without a heartbeat for \(Int(staleAfter)) s is taken back and rerun")
                    announced = names
                }
                try Interruption.sleep(2)
            }
        }
    }
}
