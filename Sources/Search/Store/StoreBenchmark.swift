import Foundation

/// How fast a store hands out trials: workers (threads, each with its own connection, as separate
/// processes would have) claim one trial at a time and record it with a curve, as `topiary
/// worker` does, until a synthetic study of `trials` trials is done. Measures the store alone (no
/// training), so it says how many workers one store carries before claims dominate.
public struct ClaimBenchmark: Sendable {
    public var store: String, dialect: SQLDialect, workers: Int, trials: Int, metricsPerTrial: Int
    public var seconds: Double
    public var claimsPerSecond: Double { Double(trials) / seconds }
    /// Milliseconds per claim transaction and per record transaction (median, 99th percentile).
    public var claimMedian: Double, claim99: Double, recordMedian: Double, record99: Double
    /// Trials each worker completed (they must add up to `trials`).
    public var perWorker: [Int]

    public static func run(location: String, workers: Int, trials: Int, metricsPerTrial: Int = 24) throws
        -> ClaimBenchmark
    {
        let setup = try StudyStore(path: location, access: .create)
        let name = "bench-claims-\(getpid())-\(workers)-\(UInt32.random(in: 0...UInt32.max))"
        let study: Int64 = try setup.write { db in
            let id: Int64 = try db.scalar(
                "INSERT INTO study (name, spec, teacher_fingerprint, created_at, state) VALUES (?, '{}', "
                    + "'bench', ?, 'running') RETURNING id",
                [name, Date()])!
            for i in 0..<trials {
                let c: Int64 = try db.scalar(
                    """
                    INSERT INTO candidate (study_id, hash, architecture, parameters, non_embedding_parameters,\
                     active_parameters, flops_per_token)
                    VALUES (?, ?, '{}', 1000, 900, 1000, 2000) RETURNING id
                    """, [id, String(format: "bench%07d", i)])!
                try db.execute(
                    "INSERT INTO trial (candidate_id, rung, fidelity, state) VALUES (?, 0, 1, 'waiting')", [c])
            }
            return id
        }
        setup.refreshStatistics()
        defer { try? setup.deleteStudy(named: name, evenIfRunning: true); setup.close() }
        let stores = try (0..<workers).map { _ in try StudyStore(path: location, access: .write) }
        defer { for s in stores { s.close() } }
        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var claimTimes: [Double] = [], recordTimes: [Double] = [], perWorker: [Int]
            var failure: Error?
            init(_ workers: Int) { perWorker = [Int](repeating: 0, count: workers) }
        }
        let tally = Tally(workers)
        let metrics = (0..<metricsPerTrial).map {
            (step: $0, name: StudyStore.Metric.trainLoss.rawValue, value: Double($0))
        }
        let start = Date()
        let group = DispatchGroup()
        for w in 0..<workers {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var claims: [Double] = [], records: [Double] = [], done = 0
                do {
                    while true {
                        let t0 = Date()
                        let claimed = try stores[w].claim(
                            study: study, worker: "bench-\(w)", limit: 1, staleAfter: 3600, maxAttempts: 3)
                        claims.append(Date().timeIntervalSince(t0) * 1000)
                        guard let t = claimed.first else { break }
                        let t1 = Date()
                        if try stores[w].complete(
                            t.id, worker: "bench-\(w)", score: 1, checkpoint: "x", metrics: metrics)
                        {
                            done += 1
                        }
                        records.append(Date().timeIntervalSince(t1) * 1000)
                    }
                } catch {
                    tally.lock.lock(); tally.failure = error; tally.lock.unlock()
                }
                tally.lock.lock()
                tally.claimTimes += claims
                tally.recordTimes += records
                tally.perWorker[w] = done
                tally.lock.unlock()
            }
        }
        group.wait()
        let seconds = Date().timeIntervalSince(start)
        if let failure = tally.failure { throw failure }
        let (claimTimes, recordTimes, perWorker) = (tally.claimTimes, tally.recordTimes, tally.perWorker)
        let complete: Int = try setup.read { db in
            try db.scalar(
                "SELECT COUNT(*) FROM trial JOIN candidate ON candidate.id = trial.candidate_id WHERE "
                    + "candidate.study_id = ? AND trial.state = 'complete'",
                [study]) ?? 0
        }
        guard complete == trials, perWorker.reduce(0, +) == trials else {
            throw SearchError.store(
                "claim benchmark: \(complete) of \(trials) trials complete, workers recorded \(perWorker.reduce(0, +))")
        }
        func percentile(_ xs: [Double], _ p: Double) -> Double {
            let s = xs.sorted()
            return s.isEmpty ? .nan : s[min(s.count - 1, Int(Double(s.count - 1) * p))]
        }
        return ClaimBenchmark(
            store: setup.location, dialect: setup.dialect, workers: workers, trials: trials,
            metricsPerTrial: metricsPerTrial,
            seconds: seconds, claimMedian: percentile(claimTimes, 0.5), claim99: percentile(claimTimes, 0.99),
            recordMedian: percentile(recordTimes, 0.5), record99: percentile(recordTimes, 0.99), perWorker: perWorker)
    }
}
