import Foundation
import Model
import Search
import Testing

/// Runs the `topiary` binary that `swift test` builds beside the test bundle, as a user would.
func topiary(_ arguments: [String], in directory: URL? = nil, environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
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
