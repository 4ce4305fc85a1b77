import Foundation
import GRDB
import Model
import Search
import Testing

/// Runs the `topiary` binary that `swift test` builds beside the test bundle, as a user would.
func topiary(_ arguments: [String], in directory: URL? = nil, environment: [String: String] = [:], timeout: Double = 600) throws -> (status: Int32, out: String, err: String) {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary")
    try #require(FileManager.default.isExecutableFile(atPath: binary.path), "swift test builds \(binary.path)")
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let deadline = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: deadline)
    defer { deadline.cancel() }
    // Read both pipes while the process runs (a full pipe would block it).
    let errBox = DataBox(), done = DispatchSemaphore(value: 0)
    DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); done.signal() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    done.wait()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errBox.data, as: UTF8.self))
}

final class DataBox: @unchecked Sendable { var data = Data() }

extension Fixture {
    /// Writes a spec to a file in the fixture and returns its path.
    func writeSpec(_ json: JSON, name: String = "spec.json") throws -> String {
        let url = root.appendingPathComponent(name)
        try json.data().write(to: url)
        return url.path
    }
}

/// Regression tests for the defects a hostile probe found (issue 16), each through the command line.
@Suite struct HostileInputTests {
    /// Item 1: a worker given a spec that differs from the study's must refuse, and a worker
    /// without --spec runs the study's own spec from the store.
    @Test func workerRefusesAnotherSpecAndReadsItsOwnFromTheStore() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let original = try f.writeSpec(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]))
        let results = f.root.appendingPathComponent("results").path, cache = f.root.appendingPathComponent("importance").path
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: try f.parse(JSON.parse(try Data(contentsOf: URL(fileURLWithPath: original)))!), store: store,
                                      results: URL(fileURLWithPath: results), importanceCache: URL(fileURLWithPath: cache))
        let study = try runner.prepare(extend: false)
        var changed = f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]])
        if case var .object(o) = changed, case var .object(proxy) = o["proxy"]! {
            proxy["learning_rate"] = 0.5
            o["proxy"] = .object(proxy)
            changed = .object(o)
        }
        let other = try f.writeSpec(changed, name: "other.json")
        let refused = try topiary(["worker", "--spec", other, "--db", f.db, "--results", results, "--importance-cache", cache, "--threads", "1"])
        #expect(refused.status != 0)
        #expect(refused.err.contains("differs from the spec study 'tiny' was started with"), "\(refused.err)")
        #expect(try store.trials(study: study).allSatisfy { $0.state == "waiting" }, "nothing ran under the other spec")
        // --study alone: the spec comes from the store, and the study finishes.
        let ran = try topiary(["worker", "--study", "tiny", "--db", f.db, "--results", results, "--importance-cache", cache, "--threads", "1"])
        #expect(ran.status == 0, "\(ran.err)")
        #expect(try store.study(named: "tiny")?.state == "complete")
        // Neither --study nor --spec: a clear usage error.
        let neither = try topiary(["worker", "--db", f.db])
        #expect(neither.status != 0 && neither.err.contains("--study"))
    }
}

extension HostileInputTests {
    /// Item 2: `prune --out` equal to (or inside, or holding) the teacher is refused; an existing,
    /// non-empty --out needs --force, and is then replaced whole.
    @Test func pruneNeverOverwritesItsInputs() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let target = f.root.appendingPathComponent("target.json")
        try (["num_hidden_layers": 2] as JSON).data().write(to: target)
        let weights = f.teacher.appendingPathComponent("model.safetensors")
        let before = try Data(contentsOf: weights)
        func prune(_ out: String, _ extra: [String] = []) throws -> (status: Int32, out: String, err: String) {
            try topiary(["prune", "--teacher", f.teacher.path, "--to", target.path, "--out", out, "--data", f.corpus.path,
                         "--samples", "4", "--calibration-seq", "8", "--importance-cache", f.root.appendingPathComponent("cache").path, "--threads", "1"] + extra)
        }
        for (out, words) in [(f.teacher.path, "is the input --teacher"), (f.teacher.path + "/.", "is the input --teacher"),
                             (f.teacher.appendingPathComponent("sub").path, "inside the input --teacher"),
                             (f.root.path, "holds the input --teacher")] {
            let r = try prune(out, ["--force"])
            #expect(r.status != 0 && r.err.contains(words), "\(out): \(r.err)")
        }
        #expect(try Data(contentsOf: weights) == before, "the teacher is untouched")
        let out = f.root.appendingPathComponent("student")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: out.appendingPathComponent("notes.txt"))
        let refused = try prune(out.path)
        #expect(refused.status != 0 && refused.err.contains("pass --force"), "\(refused.err)")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("notes.txt").path))
        let forced = try prune(out.path, ["--force"])
        #expect(forced.status == 0, "\(forced.err)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("notes.txt").path), "replaced whole")
        #expect(try Checkpoint.load(out).config.numHiddenLayers == 2)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: f.root.path).filter { $0.contains(".tmp-") || $0.contains(".old-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// Item 5: `data prepare --force --out` an input folder is refused and the inputs stay.
    @Test func dataPrepareNeverDeletesItsInputs() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let raw = f.root.appendingPathComponent("raw")
        try FileManager.default.createDirectory(at: raw, withIntermediateDirectories: true)
        try Data("one document\n".utf8).write(to: raw.appendingPathComponent("a.txt"))
        for out in [raw.path, raw.deletingLastPathComponent().path] {
            let r = try topiary(["data", "prepare", "--format", "text", raw.path, "--out", out, "--force"])
            #expect(r.status != 0 && r.err.contains("input"), "\(r.err)")
        }
        #expect(FileManager.default.fileExists(atPath: raw.appendingPathComponent("a.txt").path))
    }

    /// Item 3: export leaves the user's files alone, never leaves two folders for one rank or a
    /// killed export's temporaries, and says when the study is unfinished (also in distill.json).
    @Test func exportKeepsUserFilesAndOneFolderPerRank() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]]))
        let store = try StudyStore(path: f.db)
        let cache = f.root.appendingPathComponent("importance")
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"), importanceCache: cache)
        runner.log = { _ in }
        let study = try runner.run(worker: "w", extend: false)
        let out = f.root.appendingPathComponent("export")
        func export(_ top: Int, _ extra: [String] = []) throws -> (status: Int32, out: String, err: String) {
            try topiary(["export", "tiny", "--top", String(top), "--out", out.path, "--db", f.db, "--importance-cache", cache.path, "--threads", "1"] + extra)
        }
        #expect(try export(2).status == 0)
        let fm = FileManager.default
        func rankFolders() throws -> [String] { try fm.contentsOfDirectory(atPath: out.path).filter { $0.first!.isNumber }.sorted() }
        let first = try rankFolders()
        #expect(first.count == 2)
        // The user's files: beside the folders (kept always) and inside one (refused without --force).
        try Data("mine".utf8).write(to: out.appendingPathComponent("mine.txt"))
        try Data("notes".utf8).write(to: out.appendingPathComponent(first[0]).appendingPathComponent("notes.txt"))
        let refused = try export(1)
        #expect(refused.status != 0 && refused.err.contains("notes.txt"), "\(refused.err)")
        #expect(fm.fileExists(atPath: out.appendingPathComponent(first[0]).appendingPathComponent("notes.txt").path))
        try fm.removeItem(at: out.appendingPathComponent(first[0]).appendingPathComponent("notes.txt"))
        // A killed export's temporary (its PID gone) is cleaned; a smaller export leaves no stale rank.
        let abandoned = out.appendingPathComponent(".1-0123456789ab.tmp-2147483000")
        try fm.createDirectory(at: abandoned, withIntermediateDirectories: true)
        #expect(try export(1).status == 0)
        #expect(try rankFolders() == [first[0]])
        #expect(!fm.fileExists(atPath: abandoned.path))
        #expect(fm.fileExists(atPath: out.appendingPathComponent("mine.txt").path))
        // An unfinished study: a warning, and distill.json records the state.
        try store.setStudyState(study, "running")
        let unfinished = try export(1)
        #expect(unfinished.status == 0 && unfinished.err.contains("is not finished"), "\(unfinished.err)")
        let distill = JSON.parse(try Data(contentsOf: out.appendingPathComponent(first[0]).appendingPathComponent("distill.json")))!
        #expect(distill["study_state"] == .string("running"))
        #expect(try export(0).err.contains("--top must be at least 1"))
    }
}

extension HostileInputTests {
    /// Items 8, 9 and 18: a config that does not describe its weights is refused from the headers,
    /// before anything is allocated; counting is closed-form whatever the depth; `model info` on a
    /// checkpoint checks the headers; memory is checked before it is spent.
    @Test func implausibleConfigsAreRefusedBeforeAllocating() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        // 2^31 layers: counted without building anything per layer.
        var deep = f.config
        deep.numHiddenLayers = 1 << 31
        try deep.validate()
        #expect(deep.parameterCount == (f.config.parameterCount - f.config.embeddingParameterCount - f.config.hiddenSize) / 3 * (1 << 31) + f.config.embeddingParameterCount + f.config.hiddenSize)
        #expect(deep.trainingMemory(batch: 16, sequence: 256).activations > 0)
        // 10^14 layers: too large to count exactly, a clear error naming the key.
        deep.numHiddenLayers = 100_000_000_000_000
        #expect(throws: ModelError.self) { try deep.validate() }
        do { try deep.validate() } catch { #expect("\(error)".contains("num_hidden_layers")) }
        // A config whose intermediate_size exceeds its weights: refused from the headers (an
        // allocation of 10^11 floats would abort the test process instead).
        let wide = f.root.appendingPathComponent("wide")
        try FileManager.default.createDirectory(at: wide, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: f.teacher.appendingPathComponent("model.safetensors"), to: wide.appendingPathComponent("model.safetensors"))
        var c = JSON.parse(try Data(contentsOf: f.teacher.appendingPathComponent("config.json")))!.object!
        c["intermediate_size"] = JSON(1 << 26)
        try JSON.object(c).data().write(to: wide.appendingPathComponent("config.json"))
        do {
            _ = try Checkpoint.load(wide)
            Issue.record("loaded a checkpoint whose config does not match")
        } catch { #expect("\(error)".contains("does not match config.json"), "\(error)") }
        let info = try topiary(["model", "info", wide.path])
        #expect(info.status != 0 && info.err.contains("mlp.gate_proj.weight"), "\(info.err)")
        let infoDeep = try topiary(["model", "info", "--json", { () -> String in
            var d = c; d["intermediate_size"] = JSON(f.config.intermediateSize); d["num_hidden_layers"] = JSON(1 << 31)
            let url = f.root.appendingPathComponent("deep.json"); try? JSON.object(d).data().write(to: url); return url.path }()])
        #expect(infoDeep.status == 0, "\(infoDeep.err)")
        let trainDeep = try topiary(["bench", "train", "--config", f.root.appendingPathComponent("deep.json").path, "--steps", "1"])
        #expect(trainDeep.status != 0 && trainDeep.err.contains("refusing before allocating"), "\(trainDeep.err)")
        // Memory: a limit below what loading needs is refused with the numbers, not an abort.
        let eval = try topiary(["model", "eval", f.teacher.path, "--data", f.corpus.path], environment: ["TOPIARY_MEMORY_LIMIT": "1000"])
        #expect(eval.status != 0 && eval.err.contains("refusing before allocating") && eval.err.contains("num_hidden_layers"), "\(eval.err)")
    }
}

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
    }
}

extension HostileInputTests {
    /// Item 7: sizes are bounded against the teacher and against memory by `spec check`, before a
    /// study allocates anything.
    @Test func specCheckBoundsEverySize() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let proxy: [String: JSON] = ["steps": 6, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3]
        func with(_ key: String, _ value: JSON, in section: [String: JSON]) -> JSON { var s = section; s[key] = value; return .object(s) }
        let importance: [String: JSON] = ["calibration_samples": 4, "sequence_length": 8]
        for (edit, words) in [(["proxy": with("sequence_length", 1_000_000_000, in: proxy)], "proxy.sequence_length: 1000000000 is longer than the teacher's max_position_embeddings 64"),
                              (["proxy": with("batch_size", 1_000_000_000, in: proxy)], "proxy.batch_size"),
                              (["importance": with("calibration_samples", 1_000_000_000_000, in: importance)], "importance.calibration_samples")] as [([String: JSON], String)] {
            let r = try topiary(["spec", "check", try f.writeSpec(f.spec(edit), name: "big.json")])
            #expect(r.status != 0 && r.err.contains(words), "\(words): \(r.err)")
        }
        // Within the machine but beyond a memory limit: refused with the numbers.
        let r = try topiary(["spec", "check", try f.writeSpec(f.spec(), name: "ok.json")], environment: ["TOPIARY_MEMORY_LIMIT": "1000"])
        #expect(r.status != 0 && r.err.contains("refusing before allocating"), "\(r.err)")
        #expect(try topiary(["spec", "check", try f.writeSpec(f.spec(), name: "ok.json")]).status == 0)
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
        let holder = try DatabaseQueue(path: f.db)
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
        let url = try topiary(["results", "studies", "--db", "postgresql://postgres@127.0.0.1:5432/topiary"], in: f.root)
        #expect(url.status != 0 && url.err.contains("not supported"))
        #expect(!FileManager.default.fileExists(atPath: f.root.appendingPathComponent("postgresql:").path))
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
    /// Item 15: file problems in plain words, never Foundation's numbered error domains — and a
    /// FIFO where a file should be is refused, not read (which would hang).
    @Test func fileProblemsInPlainWords() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let fm = FileManager.default
        let broken = f.root.appendingPathComponent("broken")
        try fm.createDirectory(at: broken, withIntermediateDirectories: true)
        try fm.copyItem(at: f.teacher.appendingPathComponent("config.json"), to: broken.appendingPathComponent("config.json"))
        #expect(mkfifo(broken.appendingPathComponent("model.safetensors").path, 0o600) == 0)
        let target = f.root.appendingPathComponent("target.json")
        try (["num_hidden_layers": 2] as JSON).data().write(to: target)
        let aFile = f.root.appendingPathComponent("a-file")
        try Data("x".utf8).write(to: aFile)
        let cases: [([String], String)] = [
            (["model", "eval", broken.path, "--data", f.corpus.path], "is not a regular file"),
            (["prune", "--teacher", f.teacher.path, "--to", target.path, "--out", aFile.path, "--data", f.corpus.path], "is an existing file, not a folder"),
            (["prune", "--teacher", f.teacher.path, "--to", target.path, "--out", f.root.appendingPathComponent(String(repeating: "n", count: 300)).path,
              "--data", f.corpus.path, "--samples", "4", "--calibration-seq", "8", "--importance-cache", f.root.appendingPathComponent("cache").path], "too long"),
            (["spec", "check", f.root.path], "is a folder, not a spec"),
        ]
        for (args, words) in cases {
            let r = try topiary(args + (args[0] == "spec" ? [] : ["--threads", "1"]), timeout: 60)
            #expect(r.status != 0 && r.err.contains(words) && !r.err.contains("NSCocoaErrorDomain") && !r.err.contains("(null)"), "\(args[0...1]): \(r.err)")
        }
        try fm.removeItem(at: broken.appendingPathComponent("model.safetensors"))
        try fm.createDirectory(at: broken.appendingPathComponent("model.safetensors"), withIntermediateDirectories: true)
        let folder = try topiary(["model", "eval", broken.path, "--data", f.corpus.path])
        #expect(folder.status != 0 && folder.err.contains("is a folder, not a safetensors file"), "\(folder.err)")
    }
}

extension HostileInputTests {
    /// Issue 15: a full disk (a 64 KB tmpfs) is refused before writing, and nothing is left on it.
    /// Needs `mount` as root: skipped with a message elsewhere, but never under CI.
    @Test func fullDiskIsRefusedBeforeWriting() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let small = f.root.appendingPathComponent("small")
        try FileManager.default.createDirectory(at: small, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=64k", "tmpfs", small.path]
        mount.standardError = FileHandle.nullDevice
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("cannot mount a tmpfs under CI") }
            print("SKIPPED fullDiskIsRefusedBeforeWriting: cannot mount a tmpfs here (needs root)")
            return
        }
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [small.path]
            try? umount.run()
            umount.waitUntilExit()
        }
        let target = f.root.appendingPathComponent("target.json")
        try (["num_hidden_layers": 2] as JSON).data().write(to: target)
        let prune = try topiary(["prune", "--teacher", f.teacher.path, "--to", target.path, "--out", small.appendingPathComponent("student").path,
                                 "--data", f.corpus.path, "--samples", "4", "--calibration-seq", "8",
                                 "--importance-cache", f.root.appendingPathComponent("cache").path, "--threads", "1"])
        #expect(prune.status != 0 && prune.err.contains("free; nothing was written"), "\(prune.err)")
        let raw = f.root.appendingPathComponent("raw.txt")
        try Data(String(repeating: "a document of some length\n%\n", count: 4000).utf8).write(to: raw)
        let prepare = try topiary(["data", "prepare", "--format", "text", "--separator", "%", raw.path, "--out", small.appendingPathComponent("corpus").path])
        #expect(prepare.status != 0 && prepare.err.contains("free; nothing was written"), "\(prepare.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: small.path).isEmpty, "nothing left on the full disk")
        // A store on the full disk: filled first, then a study cannot be recorded — a clear error.
        let filler = small.appendingPathComponent("filler")
        FileManager.default.createFile(atPath: filler.path, contents: Data(repeating: 0, count: 60 << 10))
        let store = try topiary(["search", "run", try f.writeSpec(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]])),
                                 "--db", small.appendingPathComponent("store.sqlite").path, "--results", f.root.appendingPathComponent("results").path,
                                 "--importance-cache", f.root.appendingPathComponent("cache").path, "--threads", "1"])
        #expect(store.status != 0 && (store.err.contains("full") || store.err.contains("space")) && !store.err.contains("Fatal"), "\(store.err)")
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
