import ArgumentParser
import Foundation
import Model
import Proxy

struct BenchProxy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract:
            "Cost per student of a distillation step with K students sharing one teacher pass, against a plain LM step.",
        discussion:
            "The plain step is timed both ways the trainer can parallelise (inside each product; the batch "
            + "split over workers) and the faster counts. The proxy step is timed with students on separate "
            + "workers (what searches run) and one by one."
    )

    @Option(help: "Teacher checkpoint directory.") var teacher: String
    @Option(help: "Student config.json (students start from random weights; cost does not depend on them).")
    var studentConfig: String
    @Option(parsing: .unconditional, help: "Students sharing the teacher.") var students = 4
    @Option(parsing: .unconditional, help: "Batch size.") var batch = 16
    @Option(parsing: .unconditional, help: "Sequence length.") var seq = 128
    @Option(parsing: .unconditional, help: "Timed steps (after one warm-up step).") var steps = 5
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try requireRange("--students", students, 1...64)
        try requireRange("--batch", batch, 1...1 << 16)
        try requireRange("--seq", seq, 2...1 << 20)
        try requireRange("--steps", steps, 1...1 << 20)
    }

    func run() throws {
        engine.apply()
        let t = try Checkpoint.load(try checkpointURL(teacher))
        let c = try ModelConfig.load(fileURL(studentConfig))
        var rng = SeededGenerator(seed: 5)
        let n = batch * seq
        let tokens = (0..<n).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
        let targets = DecoderModel.shiftedTargets(tokens, batch: batch, sequence: seq)
        func time(_ body: () throws -> Void) rethrows -> Double {
            try body()
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<steps { try body() }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
        }
        let plainModel = DecoderModel(config: c)
        plainModel.initialize(seed: 1)
        func plainStep(workers: Int?) throws -> Double {
            let trainer = Trainer(
                model: plainModel, batch: batch, sequence: seq, schedule: .constant(warmup: 0), peakLearningRate: 1e-4,
                totalSteps: 2 * steps + 2, dataParallelWorkers: workers)
            return try time { _ = try trainer.step(tokens: tokens, targets: targets) }
        }
        let plainSplit = try plainStep(workers: 1), plainBatch = try plainStep(workers: nil)
        let plain = min(plainSplit, plainBatch)
        let models = (0..<students).map { i -> (String, DecoderModel) in
            let m = DecoderModel(config: c); m.initialize(seed: UInt64(i + 10)); return ("s\(i)", m)
        }
        let distiller = try Distiller(
            teacher: t, students: models, batch: batch, sequence: seq, loss: DistillationLoss(),
            learningRate: 1e-4, schedule: .constant(warmup: 0), steps: 2 * steps + 2)
        distiller.studentsInParallel = false
        let sequential = try time { _ = try distiller.step(tokens: tokens, targets: targets) }
        distiller.studentsInParallel = true
        let proxy = try time { _ = try distiller.step(tokens: tokens, targets: targets) }
        let ratio = proxy / Double(students) / plain
        if json {
            printJSON(
                .object(
                    RuntimePlatform.current.json.merging([
                        "plain_step_seconds": JSON(plain), "plain_step_split_products_seconds": JSON(plainSplit),
                        "plain_step_data_parallel_seconds": JSON(plainBatch), "proxy_step_seconds": JSON(proxy),
                        "proxy_step_students_one_by_one_seconds": JSON(sequential), "students": JSON(students),
                        "per_student_ratio": JSON(ratio)
                    ]) { $1 }))
        } else {
            print(RuntimePlatform.current.summary)
            print(
                String(
                    format:
                        "plain LM step %.1f ms (work split inside products %.1f ms, batch split over workers %.1f ms)",
                    plain * 1000, plainSplit * 1000, plainBatch * 1000))
            print(
                String(
                    format:
                        "proxy step with %d students %.1f ms = %.1f ms per student (students one by one: %.1f "
                        + "ms); per-student ratio to the plain step %.3f",
                    students, proxy * 1000, proxy * 1000 / Double(students), sequential * 1000, ratio))
        }
    }
}
