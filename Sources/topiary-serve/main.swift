// topiary-serve: the live dashboard over a study store, run by `topiary serve` (which checks
// the options and the store first, then runs this binary with them spelled out):
//
//   topiary-serve --store PATH --host HOST --port PORT --idle-timeout SECONDS
//                 [--no-teacher] [--allow-host NAME]...
import Dashboard
import Foundation
import Search

func fail(_ message: String, status: Int32 = 64) -> Never {
    FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
    exit(status)
}

struct Options {
    var storePath = "", host = "127.0.0.1", port = 8080, idleTimeout = 15.0, noTeacher = false
    var allowed: [String] = []

    init(_ arguments: [String]) {
        var rest = arguments[...]
        func value(_ flag: String) -> String {
            guard let v = rest.popFirst() else { fail("\(flag) needs a value") }
            return v
        }
        var store: String?
        while let flag = rest.popFirst() {
            switch flag {
            case "--store": store = value(flag)
            case "--host": host = value(flag)
            case "--port":
                guard let p = Int(value(flag)) else { fail("--port takes an integer") }
                port = p
            case "--idle-timeout":
                guard let t = Double(value(flag)) else { fail("--idle-timeout takes seconds") }
                idleTimeout = t
            case "--no-teacher": noTeacher = true
            case "--allow-host": allowed.append(value(flag))
            default:
                fail("unknown argument \(flag) (topiary-serve is run by `topiary serve`; see `topiary serve --help`)")
            }
        }
        guard let store else { fail("--store is required (topiary-serve is run by `topiary serve`)") }
        storePath = store
    }
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
let (storePath, host, port) = (options.storePath, options.host, options.port)

/// The teacher's score per study, computed once per server.
final class TeacherCache: @unchecked Sendable {
    let enabled: Bool
    let lock = NSLock()
    var values: [String: TeacherReference?] = [:]
    init(enabled: Bool) { self.enabled = enabled }
    func reference(_ st: StudyStore, _ name: String) -> TeacherReference? {
        guard enabled else { return nil }
        lock.lock()
        defer { lock.unlock() }
        if let v = values[name] { return v }
        let v = TeacherReference.load(st, study: name)
        values[name] = v
        return v
    }
}

let cache = TeacherCache(enabled: !options.noTeacher)
let dashboard = Dashboard(storePath: storePath, teacher: { st, name in cache.reference(st, name) })
if dashboard.storeIsMissing {
    print("no store at \(storePath) yet: the dashboard shows it once `topiary search run` creates it")
}
let shown = StudyStore.redacted(storePath)
let done = DispatchSemaphore(value: 0)
nonisolated(unsafe) var failure: (any Error)?
let (h, p, a, idle) = (host, port, options.allowed, options.idleTimeout)
Task.detached {
    do {
        try await dashboard.run(host: h, port: p, allowedHosts: a, idleTimeout: idle) { bound in
            print("serving \(shown) on http://\(h):\(bound)/ (read-only; Ctrl-C to stop)")
            fflush(nil)
        }
    } catch { failure = error }
    done.signal()
}
done.wait()
if let error = failure {
    let text = "\(error)"
    if text.contains("in use") || text.contains("EADDRINUSE") {
        fail(
            "--host \(host) --port \(port): the address is already in use (another server listens "
                + "there); pick another port, or --port 0 for any free one")
    }
    fail("\(error)", status: 1)
}
