import Foundation
import GRDB
import Model
import Search
import Testing

// Issue 16 items 6 and 10–14, issue 15: failures, options and the store (see CLITests.swift for the helper).

extension HostileInputTests {
    /// Item 6: what made trials stick in `running` — a spec `spec check` passed but the run
    /// refused, or an error after trials were claimed — is caught early, or leaves no trial
    /// running: the error is kept, the trial retried by a rerun, the study deletable, and
    /// `batch` goes on and summarises. Item 10: numeric options get range errors.
    @Test func failuresLeaveNothingRunningAndBatchGoesOn() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        // Caught by spec check now: unknown calibration language, missing corpus, a 5000-character name.
        for (edit, path) in [(["importance": ["calibration_samples": 4, "sequence_length": 8, "language": "xx"]] as [String: JSON], "importance.language"),
                             (["data": "/nonexistent/corpus"], "data"), (["study": JSON.string(String(repeating: "s", count: 5000))], "study")] {
            let r = try topiary(["spec", "check", try f.writeSpec(f.spec(edit), name: "bad.json")])
            #expect(r.status != 0 && r.err.contains(path), "\(path): \(r.err)")
        }
        // An error after trials were claimed (here: the results folder is a file, so the
        // checkpoint cannot be written): no trial stays running.
        let spec = try f.parse(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]))
        let store = try StudyStore(path: f.db)
        let blocked = f.root.appendingPathComponent("results-is-a-file")
        try Data("x".utf8).write(to: blocked)
        let runner = try SearchRunner(spec: spec, store: store, results: blocked, importanceCache: f.root.appendingPathComponent("importance"))
        runner.log = { _ in }
        #expect(throws: (any Error).self) { _ = try runner.run(worker: "w", extend: false) }
        let study = try store.study(named: "tiny")!.id
        let trials = try store.trials(study: study)
        #expect(!trials.contains { $0.state == "running" })
        #expect(trials.contains { $0.attempt == 1 && $0.state == "waiting" && ($0.error ?? "").contains("results-is-a-file") })
        // Deleting is not refused (no live worker), and a batch goes on past a failing study.
        #expect(try store.deleteStudy(named: "tiny") > 0)
        let folder = f.root.appendingPathComponent("batch")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try f.spec(["study": "first", "budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]).data().write(to: folder.appendingPathComponent("a.json"))
        try Data("{ not json".utf8).write(to: folder.appendingPathComponent("b.json"))
        try f.spec(["study": "second", "budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]).data().write(to: folder.appendingPathComponent("c.json"))
        let batch = try topiary(["batch", folder.path, "--db", f.db, "--results", blocked.path, "--importance-cache", f.root.appendingPathComponent("importance").path, "--threads", "1"])
        #expect(batch.status != 0)
        #expect(batch.out.contains("first") && batch.out.contains("second") && batch.out.contains("invalid spec"), "\(batch.out)")
        #expect(try store.studies().flatMap { try store.trials(study: $0.id) }.allSatisfy { $0.state != "running" })
        // Range errors, also for negative values written as a separate argument.
        for (args, words) in [(["--students-per-claim", "0"], "--students-per-claim: 0 is outside"), (["--workers", "-1"], "--workers: -1 is outside"),
                              (["--workers", "1000"], "--workers: 1000 is outside")] {
            let r = try topiary(["search", "run", folder.appendingPathComponent("a.json").path, "--db", f.db] + args)
            #expect(r.status != 0 && r.err.contains(words), "\(r.err)")
        }
        for (args, words) in [(["teacher", "train", "--config", "c.json", "--data", "d", "--out", "o", "--steps", "10", "--warmup", "-5"], "--warmup: -5 is outside"),
                              (["distill", "--teacher", "t", "--student", "s", "--data", "d", "--steps", "5", "--out", "o", "--kl", "-1"], "--kl: -1.0 is outside"),
                              (["bench", "proxy", "--teacher", "t", "--student-config", "s", "--students", "0"], "--students: 0 is outside"),
                              (["results", "top", "x", "--limit", "-3"], "--limit: -3 is outside")] {
            let r = try topiary(args)
            #expect(r.status != 0 && r.err.contains(words), "\(args[0]): \(r.err)")
        }
    }
}

extension HostileInputTests {
    /// Items 12, 13, 14 and the URL rule: queries open the store read-only (nothing written, not
    /// blocked by a writer), a newer store is not modified by being refused, an empty or missing
    /// store is an error for commands that do not create studies, a URL is refused, and a study
    /// deleted under a running process stops it with a plain message.
    @Test func storeOpensAsTheCommandNeeds() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]))
        do {
            let store = try StudyStore(path: f.db)
            let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"), importanceCache: f.root.appendingPathComponent("importance"))
            runner.log = { _ in }
            _ = try runner.run(worker: "w", extend: false)
        }
        // A writer holds the lock: queries still answer at once, and write nothing.
        var patient = Configuration()
        patient.busyMode = .timeout(30)   // the runner's connections may still be closing
        let holder = try DatabaseQueue(path: f.db, configuration: patient)
        let locked = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? holder.inTransaction(.immediate) { _ in
                locked.signal()
                release.wait()
                return .rollback
            }
            done.signal()
        }
        locked.wait()
        let studies = try topiary(["results", "studies", "--db", f.db], timeout: 30)
        #expect(studies.status == 0 && studies.out.contains("tiny"), "\(studies.err)")
        #expect(try topiary(["results", "top", "tiny", "--db", f.db], timeout: 30).status == 0)
        release.signal()
        done.wait()
        try holder.close()
        // Queries leave the store byte for byte as it was (SQLite may create an empty -wal beside
        // a WAL-mode file for a reader; its content stays empty).
        func files() -> [Data] { ["", "-wal"].map { (try? Data(contentsOf: URL(fileURLWithPath: f.db + $0))) ?? Data() } }
        let before = files()
        #expect(try topiary(["results", "studies", "--db", f.db]).status == 0)
        #expect(try topiary(["results", "top", "tiny", "--db", f.db, "--format", "json"]).status == 0)
        #expect(files() == before)
        let tables = try DatabaseQueue(path: f.db).read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
        #expect(!tables.contains("grdb_issue_102"), "\(tables)")
        // A store from a newer Topiary is refused and left byte for byte as it was.
        let newer = f.root.appendingPathComponent("newer.sqlite").path
        try FileManager.default.copyItem(atPath: f.db, toPath: newer)
        try DatabaseQueue(path: newer).write { try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')") }
        let newerBytes = try Data(contentsOf: URL(fileURLWithPath: newer))
        for args in [["results", "studies", "--db", newer], ["search", "run", try f.writeSpec(f.spec()), "--db", newer]] {
            let r = try topiary(args)
            #expect(r.status != 0 && r.err.contains("newer Topiary"), "\(r.err)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: newer)) == newerBytes)
        // Empty, missing (with missing folders) and URL stores.
        let empty = f.root.appendingPathComponent("empty.sqlite").path
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        let emptyRun = try topiary(["results", "studies", "--db", empty])
        #expect(emptyRun.status != 0 && emptyRun.err.contains("empty file"), "\(emptyRun.err)")
        let missing = f.root.appendingPathComponent("no/such/folder/store.sqlite").path
        let missingRun = try topiary(["results", "studies", "--db", missing])
        #expect(missingRun.status != 0 && missingRun.err.contains("no such store"))
        #expect(!FileManager.default.fileExists(atPath: f.root.appendingPathComponent("no").path), "no folder created")
        // A URL is a server, never a folder named after it: PostgreSQL on a port nobody listens
        // on says it cannot connect; another scheme names the ones supported.
        let url = try topiary(["results", "studies", "--db", "postgresql://postgres:secret@127.0.0.1:1/topiary"], in: f.root)
        #expect(url.status != 0 && url.err.contains("cannot connect") && url.err.contains("127.0.0.1:1"), "\(url.err)")
        #expect(!url.err.contains("secret"), "the password is not printed: \(url.err)")
        #expect(!FileManager.default.fileExists(atPath: f.root.appendingPathComponent("postgresql:").path))
        let other = try topiary(["results", "studies", "--db", "mysql://root@127.0.0.1/topiary"], in: f.root)
        #expect(other.status != 0 && other.err.contains("'mysql://' stores are not supported") && other.err.contains("postgresql://"), "\(other.err)")
        #expect(!FileManager.default.fileExists(atPath: f.root.appendingPathComponent("mysql:").path))
        // Deleted under a running process: a plain message, not a constraint failure.
        let store = try StudyStore(path: f.db)
        let id = try store.study(named: "tiny")!.id
        let claimed = try store.trials(study: id).first!
        try store.addTrials([(claimed.candidateID, 99, 6, nil)])
        let trial = try store.claim(study: id, worker: "w2", limit: 1, staleAfter: 60, maxAttempts: 3)
        #expect(trial.count == 1)
        _ = try store.deleteStudy(named: "tiny", evenIfRunning: true)
        do {
            try store.complete(trial[0].id, worker: "w2", score: 1, checkpoint: "x", metrics: [(1, "val_loss", 1)])
            Issue.record("recorded a trial of a deleted study")
        } catch { #expect("\(error)".contains("its study was deleted"), "\(error)") }
    }
}

extension HostileInputTests {
    /// Issue 15: a store replaced by garbage, and a store on a read-only file system: a clear
    /// error for what cannot work, queries still answered read-only, nothing else damaged.
    @Test func garbageAndReadOnlyStores() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let garbage = f.root.appendingPathComponent("garbage.sqlite").path
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).write(to: URL(fileURLWithPath: garbage))
        let before = try Data(contentsOf: URL(fileURLWithPath: garbage))
        for args in [["results", "studies", "--db", garbage], ["search", "run", try f.writeSpec(f.spec()), "--db", garbage]] {
            let r = try topiary(args)
            #expect(r.status != 0 && r.err.contains("not a Topiary store"), "\(r.err)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: garbage)) == before, "the garbage file is left as it was")
        // A real store on a file system mounted read-only.
        let ro = f.root.appendingPathComponent("ro")
        try FileManager.default.createDirectory(at: ro, withIntermediateDirectories: true)
        func run(_ tool: String, _ args: [String]) throws -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tool)
            p.arguments = args
            p.standardError = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            return p.terminationStatus
        }
        guard try run("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", ro.path]) == 0 else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("cannot mount a tmpfs under CI") }
            print("SKIPPED garbageAndReadOnlyStores (read-only part): cannot mount a tmpfs here (needs root)")
            return
        }
        defer { _ = try? run("/bin/umount", [ro.path]) }
        let db = ro.appendingPathComponent("store.sqlite").path
        do {
            let store = try StudyStore(path: db)
            let runner = try SearchRunner(spec: try f.parse(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]])), store: store,
                                          results: f.root.appendingPathComponent("results"), importanceCache: f.root.appendingPathComponent("importance"))
            runner.log = { _ in }
            _ = try runner.run(worker: "w", extend: false)
        }
        // The store's last connection may close a moment later (a heartbeat timer releasing it):
        // remounting read-only waits for no file to be open for writing.
        var remounted = false
        for _ in 0..<50 where !remounted {
            remounted = try run("/bin/mount", ["-o", "remount,ro", ro.path]) == 0
            if !remounted { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(remounted)
        let query = try topiary(["results", "top", "tiny", "--db", db])
        #expect(query.status == 0 && query.out.contains("rank"), "queries answer from a read-only store: \(query.err)")
        let delete = try topiary(["results", "delete", "tiny", "--db", db])
        #expect(delete.status != 0 && !delete.err.isEmpty, "a write to a read-only store is an error")
        #expect(try topiary(["results", "top", "tiny", "--db", db]).status == 0, "and the store is intact")
    }
}
