import ArgumentParser
import Dashboard
import Foundation
import Model
import Search

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract:
            "Serve a live, read-only dashboard of a study store: studies, each study's report refreshing "
            + "while it runs (progress per rung, ETA, failed trials), candidate pages, and JSON under /api/."
    )

    @Option(help: "Address to listen on (loopback by default; anything else exposes the store to the network).")
    var host = "127.0.0.1"
    @Option(parsing: .unconditional, help: "Port (0: any free port, printed).") var port = 8080
    @Option(
        help: ArgumentHelp(
            "Another host name requests may name in their Host header (repeatable; loopback names and --host "
                + "are always allowed; others get 421, against DNS rebinding).")
    )
    var allowHost: [String] = []
    @Flag(help: "Do not load teachers to draw their scores.") var noTeacher = false
    @Option(
        parsing: .unconditional,
        help:
            "Seconds a connection may stay open without a whole request before it is closed (against half-open requests)."
    )
    var idleTimeout = 15.0
    @OptionGroup var store: StoreOptions

    func validate() throws {
        try requireRange("--port", port, 0...65535, "TCP port")
        try requireRange("--idle-timeout", idleTimeout, 0.1...3600, "seconds")
    }

    func run() throws {
        let cache = TeacherCache(enabled: !noTeacher)
        let dashboard = Dashboard(storePath: store.path, teacher: { st, name in cache.reference(st, name) })
        if dashboard.storeIsMissing {
            print("no store at \(store.path) yet: the dashboard shows it once `topiary search run` creates it")
        } else {
            _ = try store.open(.read) // a clear error now rather than a 500 on every page
        }
        if host != "127.0.0.1" && host != "localhost" && host != "::1" {
            printWarning("--host \(host): the dashboard (read-only) is reachable from other machines")
        }
        let done = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        let host = self.host, port = self.port, path = StudyStore.redacted(store.path), allowed = allowHost,
            idle = idleTimeout
        Task {
            do {
                try await dashboard.run(host: host, port: port, allowedHosts: allowed, idleTimeout: idle) { bound in
                    print("serving \(path) on http://\(host):\(bound)/ (read-only; Ctrl-C to stop)")
                    fflush(nil)
                }
            } catch { failure.set(error) }
            done.signal()
        }
        done.wait()
        if let error = failure.get() {
            let text = "\(error)"
            if text.contains("in use") || text.contains("EADDRINUSE") {
                throw ValidationError(
                    "--host \(host) --port \(port): the address is already in use (another server listens "
                        + "there); pick another port, or --port 0 for any free one"
                )
            }
            throw error
        }
    }
}

/// The teacher's score per study, computed once per server.
final class TeacherCache: @unchecked Sendable {
    let enabled: Bool
    let lock = NSLock()
    var values: [String: TeacherReference?] = [:]
    init(enabled: Bool) { self.enabled = enabled }
    func reference(_ st: StudyStore, _ name: String) -> TeacherReference? {
        guard enabled else { return nil }
        lock.lock(); defer { lock.unlock() }
        if let v = values[name] { return v }
        let v = teacherReference(st, study: name)
        values[name] = v
        return v
    }
}

final class FailureBox: @unchecked Sendable {
    let lock = NSLock()
    var error: (any Error)?
    func set(_ e: any Error) { lock.lock(); error = e; lock.unlock() }
    func get() -> (any Error)? { lock.lock(); defer { lock.unlock() }; return error }
}
