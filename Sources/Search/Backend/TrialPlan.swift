import Foundation
import Model
import Proxy

/// What one claim of a study needs on the torch backend, predicted before any work
/// (`topiary plan`; docs/backends.md): the teacher, each student's weights, gradients and AdamW
/// moments, and the activations of one student's forward and backward at the recipe's
/// micro-batch, with and without activation checkpointing; then the GPUs a trial needs and
/// its speed at an assumed model-FLOPs utilisation.
///
/// The counts follow what the backend holds (backends/torch/topiary_backend.py with
/// transformers' decoder layers), as measured with autograd's saved-tensor hooks and the
/// resident set on this machine: `autocast` students keep float32 weights and gradients,
/// `bf16` students bfloat16 ones; the moments are float32 either way; every student's
/// gradients stay allocated (zeroed, not freed), but only one student's activations exist at a
/// time. Per token, a layer keeps for its backward pass `6C + 3·H·D + 2·G·D + H` values for its
/// attention block (each RMSNorm's input, normalised value and output; the rotated queries, the
/// attention output and its copy into o_proj; the rotated keys and the values; the log-sum-exp)
/// plus `4F` for a dense MLP (gate, up, their activation and product) or `2E + 4·k·F` for a
/// mixture (the router's logits and probabilities; k experts per token); eager attention adds
/// `H·T` (its probabilities) and `2·(H·D − G·D)` (keys and values repeated to H heads). With
/// checkpointing a layer keeps its input (C). The final norm keeps 3C. The peak comes as the
/// backward pass begins: the loss then holds `9V` float32 values per token — the teacher's
/// logits and log-probabilities, the student's logits, three values the KL and cross-entropy
/// keep, and three gradients being formed. The evaluation holds the student's and the teacher's
/// float32 logits for a chunk of windows (the micro-batch, else 16 rows); the peak is the model
/// state plus the larger of the two.
public struct TrialPlan: Sendable, Equatable {
    public var teacher: Int
    /// Per student.
    public var studentWeights: Int
    public var gradients: Int
    public var optimizer: Int
    /// One student's activations and loss, without and with activation checkpointing.
    public var activations: Int
    public var activationsCheckpointed: Int
    /// The evaluation's logits: the student's and the teacher's for a chunk of windows (the
    /// micro-batch, else 16 rows), in float32.
    public var evaluation: Int
    public var students: Int
    /// Tokens of one micro-batch.
    public var tokens: Int

    /// Model state that FSDP shards: the teacher and every student's weights, gradients and moments.
    public var shardable: Int { teacher + students * (studentWeights + gradients + optimizer) }

    /// Peak bytes on one device with `gpus` sharding the model state, with or without checkpointing:
    /// the model state and the larger of a training step's activations and the evaluation's logits.
    public func peak(gpus: Int = 1, checkpointed: Bool) -> Int {
        (shardable + gpus - 1) / gpus + max(checkpointed ? activationsCheckpointed : activations, evaluation)
    }

    /// The fewest GPUs (1…`maxGPUs`) whose `usable` bytes each hold the trial, or nil.
    public func gpusNeeded(memory usable: Int, checkpointed: Bool, maxGPUs: Int = 512) -> Int? {
        (1...maxGPUs).first { peak(gpus: $0, checkpointed: checkpointed) <= usable }
    }

    public init(
        teacher t: ModelConfig, student s: ModelConfig, execution e: TrialExecution, dtype: String, batch: Int,
        sequence T: Int, students: Int
    ) {
        teacher = t.parameterCount * (e.teacherDtype == "bfloat16" ? 2 : 4)
        let w = e.student == "bf16" ? 2 : 4
        studentWeights = s.parameterCount * w
        gradients = s.parameterCount * w
        optimizer = s.parameterCount * 8
        self.students = students
        let rows = e.microBatch > 0 ? min(e.microBatch, batch) : batch
        tokens = rows * T
        // Layer activations in the compute dtype; the loss in float32.
        let a = dtype == "bfloat16" || e.student == "bf16" ? 2 : 4
        let C = s.hiddenSize
        func layer(_ b: Block) -> Int {
            var n = 0
            if case let .attention(H, G, D, _, _) = b.mixer {
                n += 6 * C + 3 * H * D + 2 * G * D + H
                if e.attention == "eager" { n += H * T + 2 * (H * D - G * D) }
            }
            if case let .mamba(m) = b.mixer { n += 2 * C + 2 * m.projectionWidth + 2 * m.convWidth + 3 * m.innerWidth }
            switch b.channelMixer {
            case .none: break
            case let .dense(F): n += 4 * F
            case let .experts(E, k, F, S): n += 2 * E + 4 * k * F + (S > 0 ? 4 * S + C + 1 : 0)
            }
            return n
        }
        let layers = s.blocks.map(layer).reduce(0, +)
        let loss = 9 * s.vocabSize * 4
        activations = tokens * (a * (layers + 3 * C) + loss)
        activationsCheckpointed = tokens * (a * (s.numHiddenLayers * C + 3 * C) + loss)
        evaluation = (e.microBatch > 0 ? e.microBatch : 16) * T * s.vocabSize * 4 * 2
    }

    /// FLOPs per token of a claim's step: the teacher's forward, each student's forward and backward.
    public static func flopsPerToken(teacher: ModelConfig, student: ModelConfig, students: Int, sequence: Int) -> Int {
        teacher.forwardFLOPsPerToken(sequence: sequence) + students * 3
            * student.forwardFLOPsPerToken(sequence: sequence)
    }
}

extension TrialPlan {
    /// Byte counts as people write them: "80GiB", "80 GB", "81920MiB", or a plain number of bytes.
    public static func parseBytes(_ text: String) -> Int? {
        let t = text.replacingOccurrences(of: " ", with: "")
        let units: [(String, Double)] = [
            ("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024),
            ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)
        ]
        for (unit, scale) in units where t.hasSuffix(unit) {
            guard let v = Double(t.dropLast(unit.count)), v > 0, v * scale < 1e18 else { return nil }
            return Int(v * scale)
        }
        guard let v = Int(t), v > 0 else { return nil }
        return v
    }

    public static func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
}

extension TrialPlan {
    /// The share of a GPU's memory a trial may plan to use; the rest is the CUDA context and
    /// the caching allocator's fragmentation.
    public static let usableFraction = 0.9

    /// The bytes of a GPU of `memory` bytes that a trial may plan to use.
    public static func usable(_ memory: Int) -> Int { Int(Double(memory) * usableFraction) }

    /// A claim of `students` students of `spec` on the torch backend.
    public static func of(_ spec: SearchSpec, teacher: ModelConfig, student: ModelConfig, students: Int) -> TrialPlan {
        TrialPlan(
            teacher: teacher, student: student, execution: spec.backend.execution, dtype: spec.backend.dtype,
            batch: spec.proxy.batch, sequence: spec.proxy.sequence, students: students)
    }

    /// Refuses a spec naming `backend.gpu_memory` whose trials would not fit their
    /// `gpus_per_trial` GPUs, naming the first candidate that does not and its numbers.
    public static func check(_ spec: SearchSpec, teacher: ModelConfig, candidates: [Candidate], students: Int) throws {
        guard let memory = spec.backend.gpuMemory, !spec.backend.isBuiltin else { return }
        let usable = Self.usable(memory)
        let checkpointed = spec.backend.execution.activationCheckpointing
        let gpus = spec.backend.gpusPerTrial
        for c in candidates {
            let plan = of(spec, teacher: teacher, student: c.config, students: students)
            let peak = plan.peak(gpus: gpus, checkpointed: checkpointed)
            guard peak > usable else { continue }
            throw SearchError.spec(
                file: spec.file, path: "backend.gpu_memory",
                reason:
                    "candidate \(c.hash) (\(c.parameters) parameters) needs \(gib(peak)) per GPU on \(gpus) GPU(s) with "
                    + "\(students) student(s) per claim — teacher \(gib(plan.teacher)), students "
                    + "\(gib(students * (plan.studentWeights + plan.gradients + plan.optimizer))), activations "
                    + "\(gib(checkpointed ? plan.activationsCheckpointed : plan.activations)) at \(plan.tokens) tokens — "
                    + "more than \(gib(usable)) (90% of \(gib(memory))); `topiary plan` shows every candidate "
                    + "(micro_batch, activation_checkpointing, student bf16 and fewer students per claim shrink it)")
        }
    }
}
