import ArgumentParser
import Foundation
import Model
import Search

struct BenchStore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract:
            "Trial claims per second of a store (SQLite file or PostgreSQL URL) with 1, 2, 4, 8 … concurrent workers.",
        discussion: """
            Each worker (a thread with its own connection, as a separate process would have) claims one trial at a time \
            and records it with a curve of --metrics values, as `topiary worker` does, until a synthetic study of --trials \
            trials is done; the study is deleted afterwards. No training: this is the store's own cost per trial.
            """)

    @Option(help: "Store: a SQLite file (created when missing) or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE.")
    var db: String
    @Option(parsing: .upToNextOption, help: "Worker counts to measure.") var workers: [Int] = [1, 2, 4, 8]
    @Option(parsing: .unconditional, help: "Trials per measurement.") var trials = 2000
    @Option(parsing: .unconditional, help: "Metric values recorded with each trial.") var metrics = 24
    @Flag(help: "One JSON object per line.") var json = false

    func validate() throws {
        try requireRange("--trials", trials, 1...1_000_000, "trials")
        try requireRange("--metrics", metrics, 0...10_000, "values")
        for w in workers { try requireRange("--workers", w, 1...512, "workers") }
    }

    func run() throws {
        if !json { print("platform: \(RuntimePlatform.current.summary)") }
        for w in workers {
            let r = try ClaimBenchmark.run(location: db, workers: w, trials: trials, metricsPerTrial: metrics)
            if json {
                printJSON([
                    "store": .string(r.dialect.rawValue), "workers": JSON(w), "trials": JSON(r.trials),
                    "metrics_per_trial": JSON(r.metricsPerTrial),
                    "seconds": JSON(r.seconds), "claims_per_second": JSON(r.claimsPerSecond),
                    "claim_ms_median": JSON(r.claimMedian), "claim_ms_p99": JSON(r.claim99),
                    "record_ms_median": JSON(r.recordMedian), "record_ms_p99": JSON(r.record99),
                    "per_worker": .array(r.perWorker.map { JSON($0) })
                ])
            } else {
                print(
                    String(
                        format:
                            "%@ %d worker(s): %d trials in %.2f s = %.0f claims/s; claim %.2f ms median (p99 "
                            + "%.2f), record %.2f ms (p99 %.2f); per worker %@",
                        r.dialect.rawValue, w, r.trials, r.seconds, r.claimsPerSecond, r.claimMedian, r.claim99,
                        r.recordMedian, r.record99,
                        r.perWorker.map(String.init).joined(separator: "/")))
            }
        }
    }
}
