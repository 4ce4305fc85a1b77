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
        #expect(try Checkpoint.storageType(out) == .float32, "the teacher's type by default")
        // --dtype: the same student in bfloat16, every value the float32 one rounded.
        let half = f.root.appendingPathComponent("student-bf16")
        let r = try prune(half.path, ["--dtype", "bfloat16"])
        #expect(r.status == 0 && r.out.contains("in bfloat16"), "\(r.err)")
        #expect(try Checkpoint.storageType(half) == .bfloat16)
        let full = try Checkpoint.load(out), rounded = try Checkpoint.load(half)
        #expect(full.parameters.array.map { Float(bitPattern: UInt32(StorageType.bfloat16Bits($0)) << 16) } == rounded.parameters.array)
        #expect(try prune(f.root.appendingPathComponent("x").path, ["--dtype", "float8"]).err.contains("--dtype"))
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
            try topiary(["export", "tiny", "--top", String(top), "--out", out.path, "--db", f.db, "--importance-cache", cache.path, "--artifacts", f.root.appendingPathComponent("results").path, "--threads", "1"] + extra)
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
