import Foundation
import Model
import Proxy

/// Writes a study's winners for full distillation.
public enum Exporter {
    /// Per winner, `out/<rank>-<hash>/`: the pruned initialisation (`config.json`,
    /// `model.safetensors`), the proxy-trained weights (`proxy/`), and `distill.json` (teacher, data,
    /// losses, temperature, schedule, token budget, the scores it won with, and the NeMo / ModelOpt
    /// pruning keys). Each folder is written under a temporary name and renamed.
    public static func export(store: StudyStore, study name: String, top k: Int, out: URL, importanceCache: URL,
                              log: (String) -> Void = { print($0) }) throws -> [URL] {
        guard let study = try store.study(named: name) else { throw SearchError.store("no study '\(name)'") }
        let spec = try SearchSpec(json: study.spec, file: "store:\(name)") { try ModelConfig.load(URL(fileURLWithPath: $0, isDirectory: true).appendingPathComponent("config.json")) }
        let teacher = try Checkpoint.load(URL(fileURLWithPath: spec.teacher, isDirectory: true))
        guard Fingerprint.of(teacher) == study.teacherFingerprint else {
            throw SearchError.store("the teacher at \(spec.teacher) is not the one study '\(name)' ran with (fingerprint differs)")
        }
        let corpus = try TokenShards(directory: URL(fileURLWithPath: spec.data, isDirectory: true))
        let scores = try store.importance(teacher: teacher, corpus: corpus, settings: spec.importance, cache: importanceCache, log: log)
        let winners = try store.top(study: study.id, limit: k)
        guard !winners.isEmpty else { throw SearchError.store("study '\(name)' has no completed trial to export") }
        let fm = FileManager.default
        var written: [URL] = []
        for w in winners {
            let o = w.trial.architecture.object ?? [:]
            let target = try Pruning.targetConfig(teacher: teacher.config, target: o)
            let pruned = try Pruning.prune(teacher: teacher, to: target, scores: scores, options: spec.prune)
            let dir = out.appendingPathComponent("\(w.rank)-\(w.trial.hash)")
            let tmp = out.appendingPathComponent(".\(w.rank)-\(w.trial.hash).tmp-\(getpid())")
            try? fm.removeItem(at: tmp)
            try Checkpoint.save(pruned, to: tmp)
            if let ck = w.trial.checkpoint {
                let proxy = tmp.appendingPathComponent("proxy")
                try fm.createDirectory(at: proxy, withIntermediateDirectories: true)
                for f in ["config.json", "model.safetensors"] {
                    try fm.copyItem(at: URL(fileURLWithPath: ck).appendingPathComponent(f), to: proxy.appendingPathComponent(f))
                }
            }
            var nemo: [String: JSON] = ["hidden_size": JSON(target.hiddenSize), "ffn_hidden_size": JSON(target.intermediateSize),
                                        "num_attention_heads": JSON(target.numAttentionHeads), "num_query_groups": JSON(target.numKeyValueHeads),
                                        "num_layers": JSON(target.numHiddenLayers)]
            if target.family.isMixture {
                nemo["num_moe_experts"] = JSON(target.numLocalExperts)
                nemo["moe_router_topk"] = JSON(target.numExpertsPerTok)
                nemo["moe_ffn_hidden_size"] = JSON(target.intermediateSize)
            }
            let proxyTokens = w.trial.fidelity * spec.proxy.batch * spec.proxy.sequence
            let r = spec.proxy
            let distill: JSON = [
                "study": .string(name), "candidate": .string(w.trial.hash), "rank": JSON(w.rank),
                "teacher": .string(spec.teacher), "teacher_fingerprint": .string(study.teacherFingerprint),
                "data": .string(spec.data), "language_sampling_alpha": JSON(r.alpha),
                "architecture": w.trial.architecture,
                "parameters": ["total": JSON(target.parameterCount), "non_embedding": JSON(target.nonEmbeddingParameterCount), "active": JSON(target.activeParameterCount)],
                "losses": ["logits_kl": JSON(r.loss.kl), "lm": JSON(r.loss.lm), "hidden": 0, "kl_direction": .string(r.loss.direction.rawValue)],
                "temperature": JSON(r.loss.temperature),
                "schedule": ["name": .string(r.schedule), "peak_learning_rate": JSON(r.learningRate), "warmup_steps": JSON(r.warmup),
                             "min_ratio": JSON(r.minRatio), "batch_size": JSON(r.batch), "sequence_length": JSON(r.sequence)],
                "token_budget": ["proxy_tokens": JSON(proxyTokens),
                                 "suggested_full_distillation_tokens": JSON(proxyTokens * 100),
                                 "note": "Minitron distils for ~100× the proxy's tokens; scale to your compute"],
                "proxy_scores": .object(w.metrics.mapValues { JSON($0) }),
                "proxy_steps": JSON(w.trial.fidelity),
                "objective": .string(spec.objective.rawValue), "score": w.trial.score.map { JSON($0) } ?? .null,
                "nemo_modelopt": .object(nemo),
            ]
            try AtomicFile.write(distill.data(), to: tmp.appendingPathComponent("distill.json"))
            try? fm.removeItem(at: dir)
            try fm.moveItem(at: tmp, to: dir)
            log("wrote \(dir.path)")
            written.append(dir)
        }
        return written
    }
}
