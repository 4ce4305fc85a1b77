import ArgumentParser
import Foundation
import Model

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train from random initialisation on random tokens; print tokens/s, GFLOP/s and peak memory.")

    @Option(help: "A config.json (any supported family).") var config: String
    @Option(parsing: .unconditional, help: "Batch size.") var batch = 16
    @Option(parsing: .unconditional, help: "Sequence length.") var seq = 256
    @Option(parsing: .unconditional, help: "Timed steps (after one untimed warm-up step).") var steps = 10
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 0
    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Data-parallel workers to split the batch across (1: one model, work split inside each product; "
                + "default: all threads when the batch has at least that many rows).")
    ) var dataParallel: Int?
    @Option(help: "Element-wise kernel path: avx512, avx2 or scalar (default: the best this CPU has).") var kernels:
        String?
    @Flag(help: "Print {\"tokens_per_second\", \"gflops\", \"peak_rss_bytes\", \"cpu\", \"blas_core\", …} as JSON.")
    var json = false
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if batch < 1 || seq < 2 || steps < 1 {
            throw ValidationError("--batch ≥ 1, --seq ≥ 2 and --steps ≥ 1 are required")
        }
        if let kernels, !elementwiseKernelPaths.contains(kernels) {
            throw ValidationError(
                "--kernels: '\(kernels)' is not one of \(elementwiseKernelPaths.joined(separator: ", "))")
        }
    }

    func run() throws {
        engine.apply()
        if let kernels { useElementwiseKernels(kernels) }
        let c = try ModelConfig.load(fileURL(config))
        try MemoryBudget.checkTraining(c, batch: batch, sequence: seq, what: "training \(config)")
        let baseline = residentBytes()
        let model = DecoderModel(config: c)
        model.initialize(seed: seed)
        let trainer = Trainer(
            model: model, batch: batch, sequence: seq, schedule: .constant(warmup: 0),
            peakLearningRate: 1e-3, totalSteps: steps + 1, dataParallelWorkers: dataParallel)
        let workers = min(trainer.dataParallelWorkers, batch)
        var rng = SeededGenerator(seed: seed &+ 1)
        let n = batch * seq
        let tokens = (0..<n).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
        let targets = (0..<n).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
        _ = try trainer.step(tokens: tokens, targets: targets)
        let start = DispatchTime.now().uptimeNanoseconds
        var loss = 0.0
        for _ in 0..<steps { loss = try trainer.step(tokens: tokens, targets: targets).loss }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let tokensPerSecond = Double(n * steps) / seconds
        let gflops = tokensPerSecond * 3 * Double(c.forwardFLOPsPerToken(sequence: seq)) / 1e9
        let memory = c.trainingMemory(batch: batch, sequence: seq, dataParallelWorkers: workers)
        let peak = peakResidentBytes()
        if json {
            printJSON(
                .object(
                    RuntimePlatform.current.json.merging([
                        "tokens_per_second": JSON(tokensPerSecond), "gflops": JSON(gflops),
                        "peak_rss_bytes": JSON(peak),
                        "predicted_bytes": JSON(memory.state + memory.activations),
                        "baseline_rss_bytes": JSON(baseline), "seconds_per_step": JSON(seconds / Double(steps)),
                        "threads": JSON(Parallel.threads), "data_parallel_workers": JSON(workers),
                        "final_loss": JSON(loss)
                    ]) { $1 }))
        } else {
            print(RuntimePlatform.current.summary)
            print(
                String(
                    format:
                        "%.0f tokens/s, %.1f GFLOP/s, %.1f ms/step, peak RSS %@ = %@ runtime before the model "
                        + "+ %@ (predicted %@), %d threads, %d data-parallel workers, loss %.4f",
                    tokensPerSecond, gflops, seconds * 1000 / Double(steps), formatBytes(peak), formatBytes(baseline),
                    formatBytes(peak - baseline), formatBytes(memory.state + memory.activations), Parallel.threads,
                    workers, loss))
        }
    }
}
