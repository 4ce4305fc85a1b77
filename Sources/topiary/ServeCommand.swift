import ArgumentParser
import Foundation
import Model
import Search

/// `topiary serve`: checks its options and the store, then runs the dashboard binary
/// `topiary-serve` that lies beside this one. The dashboard (Hummingbird, and the swift-nio
/// under it) is a product of its own so that building `topiary` for the quick start does not
/// wait for a web server's compile (about 140 s of a fresh release build on 2 cores).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract:
            "Serve a live, read-only dashboard of a study store: studies, each study's report refreshing "
            + "while it runs (progress per rung, ETA, failed trials), candidate pages, and JSON under /api/.",
        discussion: "Runs topiary-serve, built with `swift build -c release --product topiary-serve`."
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

    /// The dashboard binary beside the running one.
    static func serverBinary() -> URL {
        let me =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("topiary-serve")
    }

    func run() throws {
        let binary = Self.serverBinary()
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw ValidationError(
                "the dashboard is its own binary, \(binary.path), and it is not built: "
                    + "`swift build -c release --product topiary-serve` builds it (once)")
        }
        if store.path.contains("://") || FileManager.default.fileExists(atPath: store.path) {
            _ = try store.open(.read) // a clear error now rather than a 500 on every page
        }
        if host != "127.0.0.1" && host != "localhost" && host != "::1" {
            printWarning("--host \(host): the dashboard (read-only) is reachable from other machines")
        }
        var arguments = [
            binary.path, "--store", store.path, "--host", host, "--port", "\(port)",
            "--idle-timeout", "\(idleTimeout)"
        ]
        if noTeacher { arguments.append("--no-teacher") }
        for h in allowHost { arguments += ["--allow-host", h] }
        if let retry = store.dbRetry { setenv("TOPIARY_DB_RETRY", "\(retry)", 1) }
        fflush(nil)
        let argv = arguments.map { strdup($0) } + [nil]
        execv(binary.path, argv)
        throw ValidationError("could not run \(binary.path): \(String(cString: strerror(errno)))")
    }
}
