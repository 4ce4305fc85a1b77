import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 22, items 5 and 6, through the real binary: Ctrl-C and SIGTERM stop a study cleanly, and
/// a backend is bounded in what it may say and in what it leaves behind.
@Suite struct SignalTests {
    /// A backend (Python's standard library only) that starts a child holding its stdout, records
    /// both pids in `PIDS/<pid>`, and then beats forever (`slow`), also ignoring SIGTERM
    /// (`stubborn`).
    static let slowBackend = #"""
        import json, os, signal, subprocess, sys, time
        mode, pids = sys.argv[1], sys.argv[2]
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "600"])
        open(os.path.join(pids, str(os.getpid())), "w").write(f"{os.getpid()} {child.pid}")
        print(json.dumps({"event": "start", "protocol": 1, "backend": "slow"}), flush=True)
        while True:
            print(json.dumps({"event": "heartbeat"}), flush=True)
            time.sleep(0.2)
        """#

    /// Whether a process still runs (a zombie, dead but not yet reaped, counts as gone).
    static func running(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }

    struct Study {
        let f: Fixture
        let spec: String, results: URL, cache: URL, pids: URL
        var jobs: URL { results.appendingPathComponent("tiny/jobs") }

        /// The fixture's study on the slow backend in `mode`, the built-in engine's importance
        /// scores cached first (so that the backend is asked only for trials).
        init(_ f: Fixture, mode: String) throws {
            self.f = f
            results = f.root.appendingPathComponent("results")
            cache = f.root.appendingPathComponent("importance")
            pids = f.root.appendingPathComponent("pids")
            try FileManager.default.createDirectory(at: pids, withIntermediateDirectories: true)
            let script = f.root.appendingPathComponent("slow.py")
            try SignalTests.slowBackend.write(to: script, atomically: true, encoding: .utf8)
            let json = f.spec(["backend": ["command": ["/usr/bin/env", "python3", .string(script.path), .string(mode), .string(pids.path)],
                                           "heartbeat_timeout": 60],
                               "proxy": ["steps": 6, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3]])
            spec = try f.writeSpec(json)
            let parsed = try f.parse(json)
            _ = try Importance.cached(teacher: try Checkpoint.load(f.teacher), corpus: try TokenShards(directory: f.corpus),
                                      settings: parsed.importance, cache: cache)
        }

        /// `topiary search run` started, not waited for.
        func start(workers: Int) throws -> (Process, Pipe) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary")
            p.arguments = ["search", "run", spec, "--db", f.db, "--results", results.path, "--importance-cache", cache.path,
                           "--workers", String(workers), "--students-per-claim", "1", "--threads", "1"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            return (p, out)
        }

        /// The pids the backends recorded, once `count` of them have started.
        func backendPids(_ count: Int, while p: Process) throws -> [pid_t] {
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline && p.isRunning {
                let files = (try? FileManager.default.contentsOfDirectory(atPath: pids.path)) ?? []
                let all = files.compactMap { try? String(contentsOf: pids.appendingPathComponent($0), encoding: .utf8) }
                    .flatMap { $0.split(separator: " ").compactMap { pid_t($0) } }
                if all.count >= 2 * count { return all }
                Thread.sleep(forTimeInterval: 0.05)
            }
            Issue.record("\(count) backend(s) did not start")
            return []
        }

        func trials() throws -> [StudyStore.TrialRow] {
            let store = try StudyStore(path: f.db, access: .read)
            return try store.trials(study: try #require(try store.study(named: "tiny")).id)
        }
    }

    /// Waits for `p` to exit, up to `seconds`; returns the seconds it took.
    static func exit(_ p: Process, within seconds: Double) -> Double {
        let start = Date()
        while p.isRunning && Date().timeIntervalSince(start) < seconds { Thread.sleep(forTimeInterval: 0.02) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        return Date().timeIntervalSince(start)
    }

    /// Item 5: SIGINT (Ctrl-C) or SIGTERM to `search run --workers 2` while both processes' backends
    /// train: the helper and both backends (and what the backends started) are stopped, the claimed
    /// trials are waiting again with no attempt counted, the job folders are gone, and the exit
    /// status is 130 or 143. A job folder a killed process of this host left is removed by the next
    /// run; three interruptions in a row leave the study as it was (they used to fail every trial).
    @Test(arguments: [SIGINT, SIGTERM])
    func interruptedStudiesGiveTheirTrialsBack(signal: Int32) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let study = try Study(f, mode: "slow")
        // What a process killed with SIGKILL left: a job folder named for a pid that is gone.
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let stale = study.jobs.appendingPathComponent("trial-1-attempt-0-\(ProcessInfo.processInfo.hostName)-\(dead.processIdentifier)")
        try FileManager.default.createDirectory(at: stale, withIntermediateDirectories: true)
        try Data(count: 1024).write(to: stale.appendingPathComponent("batches.safetensors"))
        for round in 1...3 {
            try FileManager.default.removeItem(at: study.pids)
            try FileManager.default.createDirectory(at: study.pids, withIntermediateDirectories: true)
            let (p, out) = try study.start(workers: 2)
            let pids = try study.backendPids(2, while: p)
            #expect(!FileManager.default.fileExists(atPath: stale.path), "the stale job folder is removed")
            #expect(try study.trials().filter { $0.state == "running" }.count == 2)
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: study.jobs.path)) ?? []).count == 2, "a job folder per backend")
            kill(p.processIdentifier, signal)
            let took = Self.exit(p, within: 60)
            let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(p.terminationReason == .exit && p.terminationStatus == 128 + signal, "round \(round): status \(p.terminationStatus) after \(took) s\n\(said)")
            #expect(said.contains("\(Interruption.name(signal)): stopping cleanly") && said.contains("rerun the same command to resume"), "\(said)")
            for pid in pids { #expect(!Self.running(pid), "backend process \(pid) stopped") }
            let trials = try study.trials()
            #expect(!trials.isEmpty && trials.allSatisfy { $0.state == "waiting" && $0.attempt == 0 },
                    "round \(round): \(trials.map { "\($0.state)/\($0.attempt)" })")
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: study.jobs.path)) ?? []).isEmpty, "job folders removed")
        }
    }

    /// Item 5: a second Ctrl-C quits at once, even while the backend ignores SIGTERM (the first
    /// signal would wait for it); the backend's group is killed on the way out.
    @Test func aSecondInterruptQuitsAtOnce() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let study = try Study(f, mode: "stubborn")
        let (p, out) = try study.start(workers: 1)
        let pids = try study.backendPids(1, while: p)
        kill(p.processIdentifier, SIGINT)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(p.isRunning, "the first SIGINT waits for the backend to stop")
        kill(p.processIdentifier, SIGINT)
        let took = Self.exit(p, within: 30)
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(took < 2, "quit \(took) s after the second SIGINT")
        #expect(p.terminationStatus == 130, "\(said)")
        #expect(said.contains("SIGINT again: quitting at once"), "\(said)")
        Thread.sleep(forTimeInterval: 0.2)
        for pid in pids { #expect(!Self.running(pid), "backend process \(pid) killed") }
    }
}
