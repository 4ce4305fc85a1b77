import Foundation
import Model
import Proxy

/// The job file of Puzzle's blockwise local distillation run by an external backend
/// (`docs/schema/local-distillation-job.schema.json`), as
/// ``LocalDistillation/train(teacher:variants:importance:corpus:settings:progress:)`` runs it:
/// every block of `blocks`, initialised from its tensors in `variants.file` (named
/// `BLOCK/<name in the layer>`), takes one AdamW step per batch of `batches.file` on the
/// normalised MSE of its contribution to the residual stream against the teacher's layer, from
/// the teacher layer's input; the trained tensors go to `out`, named as in `variants.file`.
struct LocalDistillationJob: Codable, Equatable {
    var `protocol` = 1
    var kind = "local_distillation"
    var device: String
    var dtype: String
    var teacher: String
    var variants: ImportanceJob.File
    /// `tokens` (steps, B, T): step k's batch at k − 1.
    var batches: ImportanceJob.File
    var blocks: [BlockScoresJob.Block]
    var learningRate: Double
    var schedule: DistillJob.Schedule
    var adamw: DistillJob.AdamWSettings
    var out: String
    var heartbeatSeconds: Double

    enum CodingKeys: String, CodingKey {
        case `protocol`, kind, device, dtype, teacher, variants, batches, blocks
        case learningRate = "learning_rate", schedule, adamw, out, heartbeatSeconds = "heartbeat_seconds"
    }

    static let example = LocalDistillationJob(
        device: "cuda", dtype: "float32", teacher: "/data/teacher",
        variants: .init(file: "/jobs/puzzle-bld/variants.safetensors"),
        batches: .init(file: "/jobs/puzzle-bld/batches.safetensors"),
        blocks: [
            .init(layer: 0, name: "layers.0.kv1.mlp256", groups: 1, mlp: 256),
            .init(layer: 1, name: "layers.1.kv-.mlp512", groups: nil, mlp: 512)
        ], learningRate: 0.001,
        schedule: .init(name: "cosine", warmup: 6, minRatio: 0.1, decayFraction: 0.2),
        adamw: .init(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0, gradientClip: 1),
        out: "/jobs/puzzle-bld/trained.safetensors", heartbeatSeconds: 30)
}

extension ExternalBackend {
    /// Blockwise local distillation of every variant of `variants` (but the teacher's own block and
    /// blocks with nothing in them) on the backend: the pruned blocks cut from the teacher's files
    /// and the batches written into the job folder, the trained blocks read back.
    /// `progress(step, mean block loss)` as the backend's steps arrive.
    func localDistillation(
        teacherPath: String, teacher: CheckpointWeights, variants: [[LayerVariant]], importance: ImportanceScores,
        corpus: TokenShards, settings s: LocalDistillationSettings, jobDirectory: URL
    ) throws -> (weights: BlockWeights, losses: [[Double?]]) {
        let t = teacher.config
        try Self.freshDirectory(jobDirectory)
        defer { try? FileManager.default.removeItem(at: jobDirectory) }
        let variantsFile = jobDirectory.appendingPathComponent("variants.safetensors")
        let blocks = try BlockLibrary.writeVariants(
            teacher: teacher, variants: variants, importance: importance, to: variantsFile)
        let sampler = try LocalDistillation.sampler(corpus: corpus, settings: s)
        var tokens: [Int32] = []
        tokens.reserveCapacity(s.steps * s.batchSize * s.sequence)
        for k in 0..<s.steps {
            let batch = sampler.batch(step: k).tokens
            if let bad = batch.first(where: { $0 < 0 || Int($0) >= t.vocabSize }) {
                throw SearchError.backend(
                    "local distillation: token id \(bad) of the corpus is outside the teacher's vocabulary 0..<\(t.vocabSize)"
                )
            }
            tokens += batch
        }
        let batchesFile = jobDirectory.appendingPathComponent("batches.safetensors")
        try SafeTensorsWriter.write(int32: [("tokens", [s.steps, s.batchSize, s.sequence], tokens)], to: batchesFile)
        let opt = LocalDistillation.optimizer
        guard case let .cosine(warmup, minRatio) = LocalDistillation.schedule(steps: s.steps) else {
            preconditionFailure("local distillation's schedule is cosine")
        }
        let out = jobDirectory.appendingPathComponent("trained.safetensors")
        let job = LocalDistillationJob(
            device: spec.device, dtype: "float32", teacher: URL(fileURLWithPath: teacherPath).standardizedFileURL.path,
            variants: .init(file: variantsFile.path), batches: .init(file: batchesFile.path),
            blocks: blocks.map {
                .init(layer: $0.layer, name: $0.name, groups: $0.variant.keyValueGroups, mlp: $0.variant.mlpWidth)
            },
            learningRate: s.learningRate,
            schedule: .init(
                name: "cosine", warmup: warmup, minRatio: minRatio,
                decayFraction: LearningRateSchedule.defaultDecayFraction),
            adamw: .init(
                beta1: opt.beta1, beta2: opt.beta2, epsilon: opt.epsilon, weightDecay: opt.weightDecay,
                gradientClip: opt.gradientClip ?? .greatestFiniteMagnitude),
            out: out.path, heartbeatSeconds: heartbeatSeconds)
        let lines = try runJob(
            job, in: jobDirectory, students: blocks.count, steps: (0, s.steps, s.batchSize * s.sequence))
        // Each block's mean loss over the last tenth of the steps, as the built-in engine reports it.
        let tailStart = s.steps - max(1, s.steps / 10)
        var tails: [String: [Double]] = [:]
        for step in try events(BackendEvent.Step.self, "step", in: lines) {
            guard step.trainLoss.isFinite else {
                throw SearchError.backend("backend \(spec.name): block \(step.student) diverged at step \(step.step)")
            }
            if step.step > tailStart { tails[step.student, default: []].append(step.trainLoss) }
        }
        let weights: BlockWeights
        do {
            weights = try BlockWeights.readBlocks(from: out, teacher: t, blocks: blocks.map { ($0.layer, $0.variant) })
        } catch {
            throw SearchError.backend("backend \(spec.name): its trained blocks: \(error)")
        }
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        var losses: [[Double?]] = variants.map { $0.map { $0 == full ? 0 : nil } }
        for b in blocks {
            guard let tail = tails[b.name], !tail.isEmpty else {
                throw SearchError.backend("backend \(spec.name): no steps of block \(b.name)")
            }
            for (j, v) in variants[b.layer].enumerated() where v == b.variant {
                losses[b.layer][j] = tail.reduce(0, +) / Double(tail.count)
            }
        }
        return (weights, losses)
    }
}
