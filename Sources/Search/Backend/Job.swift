import Foundation
import Model
import Proxy

/// The job file an external backend reads for a claim of trials (docs/backends.md). The JSON
/// Schema generated from this type is committed as `docs/schema/distill-job.schema.json`; the
/// torch backend checks every job against it, and both sides' tests read the same example job
/// (`docs/schema/distill-job.example.json`), so a renamed key fails both.
struct DistillJob: Codable, Equatable {
    var `protocol` = 1
    var kind = "distill"
    var device: String
    var dtype: String
    /// The teacher's Hugging Face folder.
    var teacher: String
    var students: [Student]
    var batches: Batches
    var validation: Validation
    /// Steps after which the students are evaluated (the last is the end).
    var evaluateAt: [Int]
    var checkpointEvery = 0
    var heartbeatSeconds: Double
    /// How the backend holds the trial in memory.
    var execution = TrialExecution()
    var recipe: Recipe
    /// Free-form labels (study, candidates) the backend echoes in its logs.
    var run: JSON

    enum CodingKeys: String, CodingKey {
        case `protocol`, kind, device, dtype, teacher, students, batches, validation
        case evaluateAt = "evaluate_at", checkpointEvery = "checkpoint_every", heartbeatSeconds = "heartbeat_seconds"
        case execution, recipe, run
    }

    struct Student: Codable, Equatable {
        var name: String
        /// The pruned init (a Hugging Face folder).
        var `init`: String
        /// The checkpoint to resume from (null: start from the init).
        var resume: String?
        /// Where its checkpoints go.
        var out: String

        enum CodingKeys: String, CodingKey { case name, `init`, resume, out }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(`init`, forKey: .`init`)
            try c.encode(resume, forKey: .resume) // null, not absent
            try c.encode(out, forKey: .out)
        }
    }

    /// `tokens` and `targets` (steps, B, T) for steps `from`+1 … `to`.
    struct Batches: Codable, Equatable {
        var file: String
        var from: Int
        var to: Int
    }

    struct Validation: Codable, Equatable {
        var file: String
        var languages: [String]
        /// Per language: whether val_kl counts it.
        var withKL: [Bool]
        enum CodingKeys: String, CodingKey { case file, languages, withKL = "with_kl" }
    }

    struct Recipe: Codable, Equatable {
        var totalSteps: Int
        var learningRate: Double
        var schedule: Schedule
        var loss: Loss
        var adamw: AdamWSettings
        enum CodingKeys: String, CodingKey {
            case totalSteps = "total_steps", learningRate = "learning_rate", schedule, loss, adamw
        }
    }

    struct Schedule: Codable, Equatable {
        var name: String
        var warmup: Int
        var minRatio: Double
        var decayFraction: Double
        enum CodingKeys: String, CodingKey {
            case name, warmup, minRatio = "min_ratio", decayFraction = "decay_fraction"
        }
    }

    struct Loss: Codable, Equatable {
        var kl: Double
        var lm: Double
        var temperature: Double
        var direction: String
    }

    struct AdamWSettings: Codable, Equatable {
        var beta1: Double
        var beta2: Double
        var epsilon: Double
        var weightDecay: Double
        var gradientClip: Double
        enum CodingKeys: String, CodingKey {
            case beta1, beta2, epsilon, weightDecay = "weight_decay", gradientClip = "gradient_clip"
        }
    }

    /// The recipe's part of a job: the built-in engine's own constants (DistillationRun builds its
    /// AdamW and schedule from the same defaults).
    static func recipe(_ r: DistillationRecipe) -> Recipe {
        let adamw = AdamW.Settings()
        return Recipe(
            totalSteps: r.steps, learningRate: r.learningRate,
            schedule: Schedule(
                name: r.schedule, warmup: r.warmup, minRatio: r.minRatio,
                decayFraction: LearningRateSchedule.defaultDecayFraction),
            loss: Loss(
                kl: r.loss.kl, lm: r.loss.lm, temperature: r.loss.temperature, direction: r.loss.direction.rawValue),
            adamw: AdamWSettings(
                beta1: adamw.beta1, beta2: adamw.beta2, epsilon: adamw.epsilon,
                weightDecay: r.weightDecay, gradientClip: r.gradientClip))
    }
}

/// The job file of a teacher's importance scores computed by an external backend
/// (`docs/schema/importance-job.schema.json`).
struct ImportanceJob: Codable, Equatable {
    var `protocol` = 1
    var kind = "importance"
    var device: String
    var dtype: String
    var teacher: String
    var batch: Int
    var calibration: File
    var validation: File
    var aggregation: Aggregation
    var heartbeatSeconds: Double

    enum CodingKeys: String, CodingKey {
        case `protocol`, kind, device, dtype, teacher, batch, calibration, validation, aggregation
        case heartbeatSeconds = "heartbeat_seconds"
    }

    struct File: Codable, Equatable { var file: String }
    struct Aggregation: Codable, Equatable {
        var sequence: String
        var batch: String
    }
}

extension ExternalBackend {
    /// Writes a job atomically as `job.json` in `directory`.
    static func write<J: Encodable>(_ job: J, in directory: URL) throws -> URL {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let url = directory.appendingPathComponent("job.json")
        try AtomicFile.write(try encoder.encode(job), to: url)
        return url
    }

    /// Writes `job` into `directory`, runs it and returns the backend's lines. A backend that
    /// fails, or says `error`, is an error carrying its message.
    func runJob<J: Encodable>(
        _ job: J, in directory: URL, students: Int = 1, steps: (first: Int, last: Int, tokens: Int)? = nil
    ) throws -> [[String: JSON]] {
        switch try runProcess(jobFile: try Self.write(job, in: directory), students: students, steps: steps) {
        case let .failed(message): throw SearchError.backend(message)
        case let .lines(lines):
            if let e = lines.first(where: { $0["event"]?.string == "error" }) {
                throw SearchError.backend(
                    "backend \(spec.name): " + (e["message"]?.string ?? "an error without a message"))
            }
            return lines
        }
    }

    /// Every `event` line of `lines` as its type `T`; the first that does not decode is an error
    /// naming the field it gets wrong.
    func events<T: Decodable>(_ type: T.Type, _ event: String, in lines: [[String: JSON]]) throws -> [T] {
        try lines.filter { $0["event"]?.string == event }.map { line in
            switch BackendEvent.decode(type, line) {
            case let .success(decoded): return decoded
            case let .failure(problem):
                throw SearchError.backend("backend \(spec.name): a malformed \(event) line (\(problem))")
            }
        }
    }
}

extension DistillJob {
    /// A job with every array and optional filled: the schema's source, and the example both
    /// sides' tests read (`docs/schema/distill-job.example.json`).
    static let example = DistillJob(
        device: "cpu", dtype: "float32", teacher: "/data/teacher",
        students: [
            Student(
                name: "a69362a2bb2e", init: "/jobs/trial-7/init-0",
                resume: "/results/trials/a69362a2bb2e/rung-0/step-20",
                out: "/results/trials/a69362a2bb2e/rung-1"),
            Student(
                name: "8967fa44cc6c", init: "/jobs/trial-7/init-1", resume: nil,
                out: "/results/trials/8967fa44cc6c/rung-1")
        ],
        batches: Batches(file: "/jobs/trial-7/batches.safetensors", from: 20, to: 60),
        validation: Validation(
            file: "/jobs/trial-7/validation.safetensors", languages: ["en", "ga"], withKL: [true, false]),
        evaluateAt: [40, 60], heartbeatSeconds: 30,
        recipe: Recipe(
            totalSteps: 180, learningRate: 0.0003,
            schedule: Schedule(name: "wsd", warmup: 10, minRatio: 0.1, decayFraction: 0.2),
            loss: Loss(kl: 1, lm: 0, temperature: 1, direction: "forward"),
            adamw: AdamWSettings(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1, gradientClip: 1)),
        run: ["study": "quickstart", "candidates": ["a69362a2bb2e", "8967fa44cc6c"]])
}

extension ImportanceJob {
    static let example = ImportanceJob(
        device: "cpu", dtype: "float32", teacher: "/data/teacher", batch: 16,
        calibration: File(file: "/jobs/importance/calibration.safetensors"),
        validation: File(file: "/jobs/importance/validation.safetensors"),
        aggregation: Aggregation(sequence: "mean", batch: "l2"), heartbeatSeconds: 30)
}

/// Memory and numerics of a trial on the torch backend (the spec's `backend` keys of the same
/// names; docs/backends.md).
public struct TrialExecution: Codable, Equatable, Sendable {
    /// `sdpa` (PyTorch's scaled dot-product attention) or `eager` (transformers' reference).
    public var attention = "sdpa"
    /// The dtype the teacher is held in (inference mode, no gradients).
    public var teacherDtype = "float32"
    /// `autocast`: float32 master weights and optimizer state, the forward in `dtype`;
    /// `bf16`: bfloat16 weights and gradients, float32 AdamW moments.
    public var student = "autocast"
    /// Rows per micro-batch, gradients accumulated over the recipe's batch (0: the whole batch).
    public var microBatch = 0
    /// Recompute each layer's activations in the backward pass instead of keeping them.
    public var activationCheckpointing = false

    public init() {}

    enum CodingKeys: String, CodingKey {
        case attention, teacherDtype = "teacher_dtype", student, microBatch = "micro_batch"
        case activationCheckpointing = "activation_checkpointing"
    }
}
