import ArgumentParser
import Foundation
import Model
import Search

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict each candidate's GPU memory, GPUs per trial and GPU-hours on the torch backend.",
        discussion:
            "Reads the spec and the teacher's config.json (no weights, no corpus). Memory per trial: the teacher, each "
            + "student's weights, gradients and AdamW moments, and one student's activations at the micro-batch, "
            + "with and without activation checkpointing (docs/backends.md says how each is counted). GPUs: the "
            + "fewest whose 90% each hold the trial with the model state sharded (FSDP). Speed: at an assumed "
            + "model-FLOPs utilisation of the GPUs' peak."
    )

    @Argument(help: "Search spec (JSON).") var spec: String
    @Option(help: "One GPU's memory, as 80GiB or bytes (default: the spec's backend.gpu_memory, else 80GiB).")
    var gpuMemory: String?
    @Option(parsing: .unconditional, help: "Most GPUs one trial may use.") var gpus = 8
    @Option(parsing: .unconditional, help: "Students distilled together in one claim (as search run's option).")
    var studentsPerClaim = 4
    @Option(parsing: .unconditional, help: "Assumed model-FLOPs utilisation.") var mfu = 0.4
    @Option(parsing: .unconditional, help: "One GPU's peak dense FLOP/s in TFLOP/s (H100 SXM bf16: 989).")
    var peakTflops = 989.0
    @Option(parsing: .unconditional, help: "List at most K candidates.") var limit = 20
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try requireRange("--gpus", gpus, 1...4096)
        try requireRange("--students-per-claim", studentsPerClaim, 1...64, "students distilled together")
        guard mfu > 0 && mfu <= 1 else { throw ValidationError("--mfu must be in (0, 1]") }
        guard peakTflops > 0 else { throw ValidationError("--peak-tflops must be positive") }
        if let g = gpuMemory, TrialPlan.parseBytes(g) == nil {
            throw ValidationError("--gpu-memory takes a size such as 80GiB, 141GB or a number of bytes")
        }
        try requireRange("--limit", limit, 0...Int.max)
    }

    func run() throws {
        var teacher: ModelConfig?
        let s = try SearchSpec(json: try readSpecJSON(spec), file: spec) {
            teacher = try SearchSpec.teacherConfig($0)
            return teacher!
        }
        let e = Enumeration.of(s, teacher: teacher!)
        guard !e.candidates.isEmpty else { throw SearchError.emptySpace(e.explanation) }
        let memory = gpuMemory.flatMap(TrialPlan.parseBytes) ?? s.backend.gpuMemory ?? 80 << 30
        let usable = TrialPlan.usable(memory)
        let perGPU = peakTflops * 1e12 * mfu
        let microTokens = TrialPlan.of(s, teacher: teacher!, student: e.candidates[0].config, students: 1).tokens
        var rows: [JSON] = []
        var lines: [String] = []
        for c in e.candidates.prefix(limit) {
            let p = TrialPlan.of(s, teacher: teacher!, student: c.config, students: studentsPerClaim)
            let plain = p.gpusNeeded(memory: usable, checkpointed: false, maxGPUs: gpus)
            let ckpt = p.gpusNeeded(memory: usable, checkpointed: true, maxGPUs: gpus)
            let n = plain ?? ckpt ?? gpus
            let flops = Double(
                TrialPlan.flopsPerToken(
                    teacher: teacher!, student: c.config, students: studentsPerClaim, sequence: s.proxy.sequence))
            let tokensPerSecond = perGPU * Double(n) / flops
            let tokens = Double(s.proxy.steps * s.proxy.batch * s.proxy.sequence)
            let gpuHours = tokens / tokensPerSecond * Double(n) / 3600
            rows.append([
                "candidate": .string(c.hash), "parameters": JSON(c.parameters), "teacher_bytes": JSON(p.teacher),
                "student_weights_bytes": JSON(p.studentWeights), "gradient_bytes": JSON(p.gradients),
                "optimizer_bytes": JSON(p.optimizer), "activation_bytes": JSON(p.activations),
                "activation_bytes_checkpointed": JSON(p.activationsCheckpointed),
                "peak_bytes_one_gpu": JSON(p.peak(checkpointed: false)),
                "peak_bytes_one_gpu_checkpointed": JSON(p.peak(checkpointed: true)),
                "gpus": plain.map { JSON($0) } ?? .null, "gpus_checkpointed": ckpt.map { JSON($0) } ?? .null,
                "tokens_per_second": JSON(tokensPerSecond), "gpu_hours_per_trial": JSON(gpuHours)
            ])
            func g(_ b: Int) -> String { String(format: "%.1f", Double(b) / Double(1 << 30)) }
            lines.append(
                [
                    c.hash, String(c.parameters), g(p.teacher), g(studentsPerClaim * (p.studentWeights + p.gradients)),
                    g(studentsPerClaim * p.optimizer), g(p.activations), g(p.activationsCheckpointed),
                    g(p.peak(checkpointed: false)), g(p.peak(checkpointed: true)),
                    plain.map(String.init) ?? ">\(gpus)", ckpt.map(String.init) ?? ">\(gpus)",
                    String(format: "%.0f", tokensPerSecond), String(format: "%.2f", gpuHours)
                ].joined(separator: "\t"))
        }
        if json {
            printJSON([
                "gpu_memory_bytes": JSON(memory), "usable_bytes": JSON(usable), "mfu": JSON(mfu),
                "peak_tflops": JSON(peakTflops), "students_per_claim": JSON(studentsPerClaim),
                "micro_batch_tokens": JSON(microTokens),
                "candidates": .array(rows)
            ])
            return
        }
        print(
            "study \(s.study): teacher \(teacher!.parameterCount) parameters; \(e.candidates.count) candidates; "
                + "\(studentsPerClaim) student(s) per claim; micro-batch \(microTokens) tokens; "
                + "attention \(s.backend.execution.attention), teacher \(s.backend.execution.teacherDtype), "
                + "student \(s.backend.execution.student)"
        )
        print(
            "GPU: \(TrialPlan.gib(memory)) (\(TrialPlan.gib(usable)) usable), \(String(format: "%.0f", peakTflops)) "
                + "TFLOP/s at \(String(format: "%.0f", mfu * 100))% MFU; sizes in GiB; GPUs: fewest that hold a trial "
                + "(model state sharded), without / with activation checkpointing; speed and GPU-hours with the "
                + "GPUs it needs, for one trial of \(s.proxy.steps) steps"
        )
        print(
            [
                "candidate", "params", "teacher", "students w+g", "moments", "act", "act ckpt", "peak/1 GPU",
                "ckpt/1 GPU", "GPUs", "ckpt", "tokens/s", "GPU-h"
            ].joined(separator: "\t"))
        for l in lines { print(l) }
        if e.candidates.count > limit { print("… \(e.candidates.count - limit) more (--limit)") }
    }
}
