import Foundation
import Model
import Proxy

/// The job file of Puzzle's one-block replacement scores computed by an external backend
/// (`docs/schema/block-scores-job.schema.json`): the teacher with one layer's attention and MLP
/// replaced by a variant's (its tensors in `variants.file`, named `BLOCK/<name in the layer>`),
/// every other layer kept, scored by the mean KL divergence of its next-token distribution from
/// the teacher's over the calibration windows, as
/// ``BlockLibrary/replacementScores(teacher:variants:importance:calibration:trained:batch:progress:)``
/// scores them.
struct BlockScoresJob: Codable, Equatable {
    var `protocol` = 1
    var kind = "block_scores"
    var device: String
    var dtype: String
    var teacher: String
    /// Calibration windows per forward pass.
    var batch: Int
    var calibration: ImportanceJob.File
    var variants: ImportanceJob.File
    var blocks: [Block]
    var heartbeatSeconds: Double

    enum CodingKeys: String, CodingKey {
        case `protocol`, kind, device, dtype, teacher, batch, calibration, variants, blocks
        case heartbeatSeconds = "heartbeat_seconds"
    }

    /// One variant of one layer: `groups` key/value groups (null: no attention), an MLP of
    /// width `mlp` (null: none); its tensors are those named `name/…` in the variants file.
    struct Block: Codable, Equatable {
        var layer: Int
        var name: String
        var groups: Int?
        var mlp: Int?

        enum CodingKeys: String, CodingKey { case layer, name, groups, mlp }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(layer, forKey: .layer)
            try c.encode(name, forKey: .name)
            try c.encode(groups, forKey: .groups) // null, not absent
            try c.encode(mlp, forKey: .mlp)
        }
    }

    static let example = BlockScoresJob(
        device: "cuda", dtype: "float32", teacher: "/data/teacher", batch: 8,
        calibration: .init(file: "/jobs/puzzle/calibration.safetensors"),
        variants: .init(file: "/jobs/puzzle/variants.safetensors"),
        blocks: [
            Block(layer: 0, name: "layers.0.kv1.mlp256", groups: 1, mlp: 256),
            Block(layer: 0, name: "layers.0.kv-.mlp512", groups: nil, mlp: 512),
            Block(layer: 1, name: "layers.1.kv2.mlp-", groups: 2, mlp: nil)
        ], heartbeatSeconds: 30)
}

extension ExternalBackend {
    /// Puzzle's one-block replacement scores of `variants` (per layer) computed by the backend:
    /// `scores[l][v]`, 0 for the teacher's own block, the backend's KL for every other, and for a
    /// layer with neither attention nor MLP too. The variant blocks are cut from the teacher's
    /// files (or taken from `trained`) into the job folder first.
    func blockScores(
        teacherPath: String, teacher: CheckpointWeights, variants: [[LayerVariant]], importance: ImportanceScores,
        calibration: CalibrationSet, trained: BlockWeights?, batch: Int = 8, jobDirectory: URL,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> [[Double]] {
        let t = teacher.config
        try Self.freshDirectory(jobDirectory)
        defer { try? FileManager.default.removeItem(at: jobDirectory) }
        let calibrationFile = jobDirectory.appendingPathComponent("calibration.safetensors")
        try SafeTensorsWriter.write(
            int32: [("tokens", [calibration.samples, calibration.sequence], calibration.tokens)], to: calibrationFile)
        let variantsFile = jobDirectory.appendingPathComponent("variants.safetensors")
        try BlockLibrary.writeVariants(
            teacher: teacher, variants: variants, importance: importance, trained: trained, to: variantsFile)
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        // Every variant but the teacher's own; a block of nothing has no tensors (its layer is skipped).
        let blocks = variants.enumerated().flatMap { l, vs in
            vs.filter { $0 != full }.map { v in
                BlockScoresJob.Block(layer: l, name: BlockWeights.name(l, v), groups: v.keyValueGroups, mlp: v.mlpWidth)
            }
        }
        let job = BlockScoresJob(
            device: spec.device, dtype: "float32",
            teacher: URL(fileURLWithPath: teacherPath).standardizedFileURL.path,
            batch: max(1, min(batch, calibration.samples)), calibration: .init(file: calibrationFile.path),
            variants: .init(file: variantsFile.path),
            blocks: blocks,
            heartbeatSeconds: heartbeatSeconds)
        let lines = try runJob(job, in: jobDirectory, students: blocks.count)
        var byName: [String: Double] = [:]
        for s in try events(BackendEvent.BlockScore.self, "block_score", in: lines) {
            guard s.kl.isFinite, s.kl >= -1e-6 else {
                throw SearchError.backend("backend \(spec.name): block \(s.name): KL \(s.kl) is not finite and ≥ 0")
            }
            byName[s.name] = max(0, s.kl)
        }
        let empty = LayerVariant(keyValueGroups: nil, mlpWidth: nil)
        var done = 0
        let total = variants.reduce(0) { $0 + $1.count }
        return try variants.enumerated().map { l, vs in
            try vs.map { v in
                defer {
                    done += 1
                    progress(done, total)
                }
                if v == full { return 0 }
                let name = BlockWeights.name(l, v)
                guard let kl = byName[name] else {
                    throw SearchError.backend(
                        "backend \(spec.name): no score of block \(name)" + (v == empty ? " (the layer skipped)" : ""))
                }
                return kl
            }
        }
    }
}
