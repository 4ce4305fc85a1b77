import Foundation
import Model
import Proxy

/// Writes a study's winners for full distillation.
public enum Exporter {
    /// Per winner, `out/<rank>-<hash>/`: the pruned initialisation (`config.json`,
    /// `model.safetensors`), the proxy-trained weights (`proxy/`), and `distill.json` (teacher, data,
    /// losses, temperature, schedule, token budget, the scores it won with, and the NeMo / ModelOpt
    /// pruning keys).
    ///
    /// `out` may hold other files: only `<rank>-<hash>` folders are Topiary's. Every folder is
    /// written under a temporary name first; then the previous export's folders (stale ranks
    /// included) are removed and the new ones renamed in, so one rank never has two folders. A
    /// `<rank>-<hash>` folder holding files Topiary does not write is refused unless `force`.
    /// Temporaries left by a killed export are removed. An unfinished study exports its ranking
    /// so far, with a warning, and `distill.json` records the study's state.
    ///
    /// The pruned checkpoints are cut from the teacher's files a tensor at a time
    /// (``Pruning/write(_:teacher:target:type:to:shardBytes:)``), in `type` if given, else each
    /// tensor in the teacher's own dtype, bit for bit (a bfloat16 teacher gives bfloat16 students);
    /// the proxy-trained weights stay float32.
    public static func export(
        store: StudyStore, study name: String, top k: Int, out: URL, importanceCache: URL, artifacts: URL? = nil,
        force: Bool = false,
        type: StorageType? = nil,
        log: (String) -> Void = { print($0) }, warn: (String) -> Void = { print("warning: \($0)") }
    ) throws -> [URL] {
        guard k >= 1 else { throw SearchError.store("--top must be at least 1 (got \(k))") }
        guard let study = try store.study(named: name) else { throw SearchError.store("no study '\(name)'") }
        let spec = try SearchSpec(json: study.spec, file: "store:\(name)") {
            try ModelConfig.load(URL(fileURLWithPath: $0, isDirectory: true).appendingPathComponent("config.json"))
        }
        // The teacher stays in its files (memory-mapped, streamed): only importance scores found
        // neither in the store nor in the cache load it, in float32, and release it before pruning.
        let teacherURL = URL(fileURLWithPath: spec.teacher, isDirectory: true)
        let teacher = try CheckpointWeights(teacherURL)
        guard try Fingerprint.of(teacher) == study.teacherFingerprint else {
            throw SearchError.store(
                "the teacher at \(spec.teacher) is not the one study '\(name)' ran with (fingerprint differs)")
        }
        let corpus = try TokenShards(directory: URL(fileURLWithPath: spec.data, isDirectory: true))
        let scores = try store.importance(
            teacherFingerprint: study.teacherFingerprint, loadTeacher: { try Checkpoint.load(teacherURL) },
            corpus: corpus, settings: spec.importance, cache: importanceCache, log: log)
        let winners = try store.top(study: study.id, limit: k)
        guard !winners.isEmpty else { throw SearchError.store("study '\(name)' has no completed trial to export") }
        try OutputDirectory.check(
            out, option: "--out",
            inputs: [
                ("teacher", URL(fileURLWithPath: spec.teacher, isDirectory: true)),
                ("data", URL(fileURLWithPath: spec.data, isDirectory: true))
            ], force: true)
        let summary = try store.summary(study)
        let predictions = try store.predictions(study: study)
        if study.state != "complete" {
            warn(
                "study '\(name)' is not finished (\(summary.waiting) trials waiting, \(summary.running) "
                    + "running): exporting its ranking so far; distill.json records study_state \"\(study.state)\""
            )
        }
        let fm = FileManager.default
        try fm.createDirectory(at: out, withIntermediateDirectories: true)
        let previous = try previousExport(in: out, force: force)
        var staged: [(tmp: URL, dir: URL)] = []
        defer { for s in staged { try? fm.removeItem(at: s.tmp) } }
        // A heterogeneous winner (the puzzle strategy) is cut from the teacher's files too
        // (``HeterogeneousPruning/write(teacher:variants:scores:trained:type:to:shardBytes:)``),
        // its locally distilled blocks (if any) read once.
        var blockWeights: BlockWeights??
        for w in winners {
            let dir = out.appendingPathComponent("\(w.rank)-\(w.trial.hash)")
            let tmp = out.appendingPathComponent(".\(w.rank)-\(w.trial.hash).tmp-\(getpid())")
            try? fm.removeItem(at: tmp)
            staged.append((tmp, dir))
            let target: ModelConfig
            if let variants = Candidate.layerVariants(w.trial.architecture) {
                let trained =
                    try blockWeights
                    ?? puzzleBlockWeights(
                        spec: spec, teacher: teacher.config, study: study, corpus: corpus, cache: importanceCache)
                blockWeights = .some(trained)
                try HeterogeneousPruning.write(
                    teacher: teacher, variants: variants, scores: scores, trained: trained, type: type, to: tmp)
                target = HeterogeneousPruning.studentConfig(teacher: teacher.config, variants: variants)
            } else {
                target = try Pruning.targetConfig(teacher: teacher.config, target: w.trial.architecture.object ?? [:])
                let plan = try Pruning.plan(
                    teacher: teacher.config, target: target, scores: scores, options: spec.prune)
                try Pruning.write(plan, teacher: teacher, target: target, type: type, to: tmp)
            }
            if let ck = w.trial.checkpoint {
                let proxy = tmp.appendingPathComponent("proxy")
                try fm.createDirectory(at: proxy, withIntermediateDirectories: true)
                let remoteCode = target.family.definition.remoteCode.keys.sorted()
                for f in ["config.json", "model.safetensors"] + remoteCode {
                    let source = Artifacts.resolve(
                        ck, root: artifacts ?? URL(fileURLWithPath: spec.artifacts ?? "results", isDirectory: true))
                    do {
                        try fm.copyItem(at: source.appendingPathComponent(f), to: proxy.appendingPathComponent(f))
                    } catch {
                        throw SearchError.store(
                            "trial \(w.trial.id) (\(w.trial.hash)): cannot copy its proxy weights from "
                                + "\(source.appendingPathComponent(f).path): \(FileIO.describe(error)); pass "
                                + "--artifacts with the folder its trials were written under"
                        )
                    }
                }
            }
            var nemo: [String: JSON] = [
                "hidden_size": JSON(target.hiddenSize), "ffn_hidden_size": JSON(target.intermediateSize),
                "num_attention_heads": JSON(target.numAttentionHeads),
                "num_query_groups": JSON(target.numKeyValueHeads),
                "num_layers": JSON(target.numHiddenLayers), "kv_channels": JSON(target.headDim)
            ]
            if target.isMixture {
                nemo["num_moe_experts"] = JSON(target.numLocalExperts)
                nemo["moe_router_topk"] = JSON(target.numExpertsPerTok)
                nemo["moe_ffn_hidden_size"] = JSON(target.expertWidth)
                if target.sharedExpertWidth > 0 {
                    nemo["moe_shared_expert_intermediate_size"] = JSON(target.sharedExpertWidth)
                }
            }
            let recipe = DistillFile(spec.proxy, proxySteps: w.trial.fidelity, fullSteps: spec.predictionSteps)
            var distill: [String: JSON] = [
                "study": .string(name), "candidate": .string(w.trial.hash), "rank": JSON(w.rank),
                "teacher": .string(spec.teacher), "teacher_fingerprint": .string(study.teacherFingerprint),
                "data": .string(spec.data),
                "architecture": w.trial.architecture,
                "parameters": [
                    "total": JSON(target.parameterCount), "non_embedding": JSON(target.nonEmbeddingParameterCount),
                    "active": JSON(target.activeParameterCount)
                ],
                "predicted_full_distillation_score": predictions.longRun[w.trial.hash].map { p -> JSON in
                    [
                        "steps": JSON(predictions.steps), "score": JSON(p.prediction.value),
                        "interval": p.prediction.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null,
                        "curve_points": JSON(p.points),
                        "method": .string(
                            "L(t) = a + b·t^-c fitted to the proxy's validation points (one exponent shared "
                                + "by the study's candidates), 95% residual bootstrap")
                    ]
                } ?? .null,
                "proxy_scores": .object(w.metrics.mapValues { JSON($0) }),
                "proxy_steps": JSON(w.trial.fidelity),
                "objective": .string(spec.objective.rawValue), "score": w.value.isFinite ? JSON(w.value) : .null,
                "interval": w.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null,
                "interval_method": w.interval.map {
                    .string(
                        $0.method == "t"
                            ? "student-t over replicate seeds, 95%" : "bootstrap over validation windows, 95%")
                } ?? .null,
                "replicates": JSON(w.replicateScores.count),
                "replicate_scores": .array(w.replicateScores.map { JSON($0) }),
                "tied_with_best": .bool(w.tiedWithBest),
                "difference_to_best": w.difference.map { JSON($0) } ?? .null,
                "difference_interval": w.differenceInterval.map { [JSON($0.low), JSON($0.high)] } ?? .null,
                "difference_method": w.differenceInterval.map { .string($0.method + ", 95%") } ?? .null,
                "tie_method": w.tieMethod.map {
                    .string(
                        $0 == "paired"
                            ? "the paired interval of the difference contains 0"
                            : "the two intervals overlap (no per-window losses recorded)")
                } ?? .null,
                "nemo_modelopt": .object(nemo),
                "study_state": .string(study.state),
                "study_trials": [
                    "complete": JSON(summary.complete), "pruned": JSON(summary.pruned), "failed": JSON(summary.failed),
                    "waiting": JSON(summary.waiting), "running": JSON(summary.running)
                ]
            ]
            distill.merge(recipe.json) { own, _ in own }
            try AtomicFile.write(JSON.object(distill).data(), to: tmp.appendingPathComponent("distill.json"))
        }
        // Everything is written: swap the previous export's folders for the new ones.
        for old in previous { try fm.removeItem(at: old) }
        var written: [URL] = []
        for s in staged {
            if rename(s.tmp.path, s.dir.path) != 0 {
                throw SearchError.store(
                    "\(s.dir.path): cannot rename the export into place: \(String(cString: strerror(errno)))")
            }
            log("wrote \(s.dir.path)")
            written.append(s.dir)
        }
        staged = []
        return written
    }

    /// What a file in a `<rank>-<hash>` folder may be called for Topiary to have written it.
    /// A puzzle study's locally distilled blocks (`strategy.local_distillation`), which its
    /// heterogeneous winners start from, read from the importance cache the search wrote them
    /// to; nil when the study scored its blocks as pruned.
    static func puzzleBlockWeights(
        spec: SearchSpec, teacher t: ModelConfig, study: StudyStore.StudyRow, corpus: TokenShards, cache: URL
    ) throws -> BlockWeights? {
        guard let puzzle = spec.strategy.value as? Puzzle else { return nil }
        let (key, _) = try Importance.key(
            teacherFingerprint: study.teacherFingerprint, corpus: corpus, settings: spec.importance)
        guard let file = puzzle.blockWeightsFile(cache: cache, importanceKey: key.digest, teacher: t) else {
            return nil
        }
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw SearchError.store(
                "study '\(study.name)' distilled its blocks locally, and \(file.path) is not there: pass "
                    + "--importance-cache with the folder its search used")
        }
        return try BlockWeights.read(
            from: file, teacher: t, variants: Array(repeating: puzzle.library(teacher: t), count: t.numHiddenLayers))
    }

    static func isExportFile(_ relative: String) -> Bool {
        let name = (relative as NSString).lastPathComponent
        let folder = (relative as NSString).deletingLastPathComponent
        guard folder.isEmpty || folder == "proxy" else { return false }
        if name == "proxy" && folder.isEmpty { return true }
        return [
            "config.json", "model.safetensors", "model.safetensors.index.json", "distill.json",
            "configuration_decilm.py",
            "modeling_decilm.py"
        ].contains(name)
            || (name.hasPrefix("model-") && name.hasSuffix(".safetensors"))
    }

    /// The `<rank>-<hash>` folders of an earlier export in `out`, after removing temporaries a
    /// killed export left. Throws when one holds files Topiary does not write, unless `force`.
    static func previousExport(in out: URL, force: Bool) throws -> [URL] {
        let fm = FileManager.default
        let entries = (try? fm.contentsOfDirectory(atPath: out.path)) ?? []
        OutputDirectory.removeAbandonedTemporaries(in: out, prefix: ".")
        var folders: [URL] = []
        for name in entries.sorted() {
            let parts = name.split(separator: "-", maxSplits: 1)
            guard parts.count == 2, Int(parts[0]) != nil, parts[1].count == 12, parts[1].allSatisfy(\.isHexDigit) else {
                continue
            }
            let folder = out.appendingPathComponent(name)
            let foreign = (fm.enumerator(atPath: folder.path)?.allObjects as? [String] ?? []).filter {
                !isExportFile($0)
            }
            if !foreign.isEmpty && !force {
                throw SearchError.store(
                    "\(folder.path) holds files an export does not write "
                        + "(\(foreign.prefix(3).joined(separator: ", "))\(foreign.count > 3 ? ", …" : "")); "
                        + "move them, export to another --out, or pass --force to replace the folder")
            }
            folders.append(folder)
        }
        return folders
    }
}
