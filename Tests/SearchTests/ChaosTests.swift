import Foundation
import GRDB
import Model
import Search
import Testing

/// A study run by `topiary search run --workers 2` while the coordinator or a worker is killed
/// with SIGKILL at random moments, resumed after each kill, then finished: every candidate is
/// scored exactly once per rung, nothing is left running, and every score equals an uninterrupted
/// run's (the schedule and batches are deterministic). TOPIARY_CHAOS_KILLS sets the number of
/// kills (CI: 4; the documented run: 24).
@Suite struct ChaosTests {
    @Test func killedStudiesEndAsIfNeverKilled() throws {
        let kills = Int(ProcessInfo.processInfo.environment["TOPIARY_CHAOS_KILLS"] ?? "") ?? 4
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.writeSpec(f.spec(["budget": ["min": 10_000, "max": JSON(f.config.parameterCount)],
                                           "proxy": ["steps": 1000, "batch_size": 8, "sequence_length": 32, "eval_tokens": 16, "learning_rate": 1e-3]]))
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary")
        func arguments(_ db: String, _ name: String) -> [String] {
            [spec, "--db", db, "--results", f.root.appendingPathComponent("results-\(name)").path,
             "--importance-cache", f.root.appendingPathComponent("importance-\(name)").path, "--stale-after", "1", "--threads", "1", "--students-per-claim", "2"]
        }
        // The reference: uninterrupted.
        let reference = f.root.appendingPathComponent("reference.sqlite").path
        let start = Date()
        #expect(try topiary(["search", "run"] + arguments(reference, "reference")).status == 0)
        let span = Date().timeIntervalSince(start)
        // The chaos run: start, kill the coordinator or one of its workers, start again …
        let chaos = f.root.appendingPathComponent("chaos.sqlite").path
        var rng = SeededGenerator(seed: 4242)
        var killed = 0, finishedEarly = 0
        while killed < kills {
            let p = Process()
            p.executableURL = binary
            p.arguments = ["search", "run"] + arguments(chaos, "chaos") + ["--workers", "2"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: 0.3 * span * Double(rng.next() % 1000) / 1000)
            let children = Self.children(of: p.processIdentifier)
            let victim = rng.next() % 2 == 0 || children.isEmpty ? p.processIdentifier : children[Int(rng.next() % UInt64(children.count))]
            guard p.isRunning else { p.waitUntilExit(); finishedEarly += 1; if finishedEarly > kills { break }; continue }
            if kill(victim, SIGKILL) == 0 { killed += 1 }
            if victim != p.processIdentifier { kill(p.processIdentifier, SIGKILL) }   // the run is restarted whole
            p.waitUntilExit()
            for c in children { kill(c, SIGKILL) }
        }
        Thread.sleep(forTimeInterval: 1.2)       // let the killed trials' heartbeats go stale
        let before = try DatabaseQueue(path: chaos).read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM trial WHERE state IN ('complete', 'pruned')") ?? 0 }
        let resumed = try topiary(["search", "run"] + arguments(chaos, "chaos"))
        #expect(resumed.status == 0, "\(resumed.err)")
        print(String(format: "chaos: %d kills, %d runs finished before their kill (an uninterrupted run takes %.1f s); %d trials were scored between kills", killed, finishedEarly, span, before))
        // Invariants, in SQL.
        func rows(_ path: String) throws -> [String: Double] {
            try DatabaseQueue(path: path).read { db in
                let running = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM trial WHERE state IN ('running', 'waiting')") ?? -1
                #expect(running == 0, "\(path): \(running) trials running or waiting")
                let duplicates = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM (SELECT candidate_id, rung FROM trial GROUP BY candidate_id, rung HAVING COUNT(*) > 1)") ?? -1
                #expect(duplicates == 0)
                #expect(try String.fetchOne(db, sql: "SELECT state FROM study") == "complete")
                var scores: [String: Double] = [:]
                for r in try Row.fetchAll(db, sql: "SELECT candidate.hash, trial.rung, trial.score FROM trial JOIN candidate ON candidate.id = trial.candidate_id WHERE trial.score IS NOT NULL") {
                    scores["\(r["hash"] as String)@\(r["rung"] as Int)"] = r["score"]
                }
                return scores
            }
        }
        let expected = try rows(reference), got = try rows(chaos)
        #expect(!expected.isEmpty && expected.keys.sorted() == got.keys.sorted(), "the same trials scored at the same rungs")
        for (key, score) in expected { #expect(got[key] == score, "\(key): \(got[key] ?? .nan) vs \(score) uninterrupted") }
        let candidates = try DatabaseQueue(path: chaos).read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM candidate") ?? 0 }
        #expect(expected.keys.filter { $0.hasSuffix("@0") }.count == candidates, "every candidate scored at rung 0")
    }

    /// Direct children of a process (from /proc).
    static func children(of pid: Int32) -> [Int32] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0) }
    }
}
