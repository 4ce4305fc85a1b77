import Foundation
import Model

extension SearchSpec {
    /// Sizes bounded against the teacher and against this machine's memory, before a study
    /// allocates anything: sequence lengths within the teacher's `max_position_embeddings`, and
    /// the memory of a distillation step (`students` students sharing the teacher's pass) and of
    /// the importance pass within what is available. `spec check`, `search run`, `worker` and
    /// `batch` call it.
    /// - Throws: ``SearchError/spec(file:path:reason:)`` naming the setting, the bytes and the limit.
    public func checkResources(teacher t: ModelConfig, students: Int = 4) throws {
        func fail(_ path: String, _ reason: String) -> SearchError { .spec(file: file, path: path, reason: reason) }
        for (path, length) in [
            ("proxy.sequence_length", proxy.sequence), ("importance.sequence_length", importance.sequence)
        ]
        where length > t.maxPositionEmbeddings {
            throw fail(
                path, "\(length) is longer than the teacher's max_position_embeddings \(t.maxPositionEmbeddings)")
        }
        // Orders of magnitude first, in floating point, so that the exact counts cannot overflow:
        // activations grow with B·T·(V + L·(H·T + C)).
        func magnitude(batch: Int, sequence: Int) -> Double {
            Double(batch) * Double(sequence)
                * (Double(t.vocabSize) + Double(t.numHiddenLayers)
                    * (Double(t.numAttentionHeads) * Double(sequence) + 16 * Double(t.hiddenSize) + 3
                        * Double(t.intermediateSize * max(1, t.numExpertsPerTok))))
                * 4
        }
        let petabyte = 0x1p50
        let calibrationBatch = min(16, importance.samples)
        for (path, bytes) in [
            ("proxy.batch_size", magnitude(batch: proxy.batch, sequence: proxy.sequence) * Double(students + 1)),
            (
                "importance.calibration_samples",
                magnitude(batch: calibrationBatch, sequence: importance.sequence)
                    + Double(importance.samples) * Double(importance.sequence) * 8
            )
        ] where !(bytes < petabyte) {
            throw fail(
                path,
                String(format: "needs about %.3g bytes of memory — more than any machine has", bytes)
                    + " (proxy.batch_size \(proxy.batch) × proxy.sequence_length \(proxy.sequence); "
                    + "importance.calibration_samples \(importance.samples) × sequence_length \(importance.sequence))"
            )
        }
        // A distillation step: the teacher (weights, gradients, activations) and each student
        // training at (B, T): parameters, gradients and AdamW moments (16 bytes each, at most the
        // budget's maximum when it counts all parameters) and activations no larger than the teacher's.
        // On an external backend the step is the backend's (`topiary plan`, ``TrialPlan``); this
        // host cuts each student from the teacher's files a tensor at a time, and holds the
        // teacher in float32 only for what the built-in engine computes here: a mixture's
        // importance and the prefilter's losses (one pruned student at a time).
        let activations = saturating(Activations.floatCount(config: t, B: proxy.batch, T: proxy.sequence), times: 4)
        let teacherBytes = saturating(saturating(t.parameterCount, times: 8), plus: activations)
        let studentParameters = budget.count == .total ? min(budget.maximum, t.parameterCount) : t.parameterCount
        let hostHoldsTeacher = t.isMixture || prefilter != nil
        let step =
            backend.isBuiltin
            ? saturating(
                teacherBytes,
                plus: saturating(
                    saturating(saturating(studentParameters, times: 16), plus: activations), times: students))
            : hostHoldsTeacher
                ? saturating(saturating(t.parameterCount, times: 4), plus: saturating(studentParameters, times: 4))
                : 0
        do {
            try MemoryBudget.check(
                step, for: backend.isBuiltin ? "a distillation step" : "the float32 teacher this host computes with",
                drivers:
                    "teacher \(t.parameterCount) parameters; proxy.batch_size \(proxy.batch) × "
                    + "proxy.sequence_length \(proxy.sequence); \(students) students per claim of at most \(studentParameters) parameters"
            )
        } catch { throw fail("proxy.batch_size", "\(error)") }
        // The importance pass: the teacher's activations for a batch of calibration windows, the
        // windows themselves and one score per unit and sample (here only when the built-in
        // engine computes it: an external backend scores a dense teacher on its own device).
        guard backend.isBuiltin || t.isMixture else { return }
        let units =
            t.numHiddenLayers
            * (t.intermediateSize * max(1, t.numLocalExperts) + t.numAttentionHeads + t.hiddenSize + 2)
        let calibration = saturating(
            saturating(Activations.floatCount(config: t, B: calibrationBatch, T: importance.sequence), times: 4),
            plus: saturating(importance.samples, times: 8 * importance.sequence + 4 * units))
        do {
            try MemoryBudget.check(
                saturating(calibration, plus: saturating(t.parameterCount, times: 8)), for: "the importance pass",
                drivers:
                    "importance.calibration_samples \(importance.samples) × sequence_length \(importance.sequence)")
        } catch { throw fail("importance.calibration_samples", "\(error)") }
    }
}

extension SearchSpec {
    /// The prepared corpus against the spec and the teacher: the teacher's vocabulary covers the
    /// corpus tokenizer's ids, and `importance.language` is one of the corpus's languages.
    public func checkCorpus(_ corpus: TokenShards, teacher t: ModelConfig) throws {
        guard t.vocabSize >= corpus.vocabularySize else {
            throw SearchError.spec(
                file: file, path: "data",
                reason:
                    "the corpus tokenizer has \(corpus.vocabularySize) ids but the teacher's vocab_size is \(t.vocabSize)"
            )
        }
        if let language = importance.language, !corpus.languages.contains(language) {
            throw SearchError.spec(
                file: file, path: "importance.language",
                reason:
                    "'\(language)' is not a language of the corpus \(data) (\(corpus.languages.joined(separator: ", ")))"
            )
        }
    }

    /// Opens the spec's prepared corpus, with an error naming the spec's `data` when it is missing.
    public func openCorpus() throws -> TokenShards {
        do { return try TokenShards(directory: URL(fileURLWithPath: data, isDirectory: true)) } catch {
            throw SearchError.spec(file: file, path: "data", reason: "\(error)")
        }
    }
}
