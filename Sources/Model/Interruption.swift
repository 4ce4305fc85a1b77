import CPlatform
import Foundation

/// A clean stop on SIGINT or SIGTERM (docs/robustness.md). After ``install(log:)`` the first
/// signal sets a flag that long loops poll through ``check()`` (it throws ``Interrupted``, so that
/// `defer`s run and callers give their work back), and sends SIGTERM to the process groups of the
/// registered children (spawned workers and backends run in groups of their own, so a terminal's
/// Ctrl-C does not reach them). A second signal kills those groups and exits at once.
public enum Interruption {
    /// Thrown by ``check()`` once a signal has arrived.
    public struct Interrupted: Error, CustomStringConvertible, Sendable {
        public let signal: Int32
        public init(signal: Int32) { self.signal = signal }
        /// 128 + the signal: 130 for SIGINT, 143 for SIGTERM, as a shell reports it.
        public var exitCode: Int32 { 128 + signal }
        public var description: String { "interrupted by \(Interruption.name(signal))" }
    }

    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var signal: Int32 = 0
        /// Child → whether it handles a second signal itself (a Topiary worker: it then kills its
        /// own children) rather than being killed.
        var children: [pid_t: Bool] = [:]
        var sources: [DispatchSourceSignal] = []
    }

    private static let state = State()

    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        default: return "signal \(signal)"
        }
    }

    /// Handles SIGINT and SIGTERM from now on (once per process; later calls do nothing).
    /// `log` says what happens (the first signal's line and the second's).
    public static func install(log: @escaping @Sendable (String) -> Void) {
        state.lock.lock()
        defer { state.lock.unlock() }
        guard state.sources.isEmpty else { return }
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { received(sig, log: log) }
            source.resume()
            state.sources.append(source)
        }
    }

    private static func received(_ sig: Int32, log: (String) -> Void) {
        state.lock.lock()
        let first = state.signal == 0
        if first { state.signal = sig }
        let children = state.children
        state.lock.unlock()
        if first {
            log(
                "\(name(sig)): stopping cleanly — the running trials go back to waiting, job folders are "
                    + "removed (send it again to quit at once)"
            )
            for pid in children.keys { signalGroup(pid, SIGTERM) }
        } else {
            log(
                "\(name(sig)) again: quitting at once (the trials still running are taken back when their heartbeat goes stale)"
            )
            for (pid, escalates) in children { signalGroup(pid, escalates ? SIGTERM : SIGKILL) }
            _exit(128 + sig)
        }
    }

    /// The signal received, if any.
    public static var requested: Int32? {
        state.lock.lock()
        defer { state.lock.unlock() }
        return state.signal == 0 ? nil : state.signal
    }

    /// - Throws: ``Interrupted`` once SIGINT or SIGTERM has arrived.
    public static func check() throws {
        if let s = requested { throw Interrupted(signal: s) }
    }

    /// Sleeps up to `seconds`, waking early (and throwing) when a signal arrives.
    public static func sleep(_ seconds: Double) throws {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            try check()
            Thread.sleep(forTimeInterval: min(0.1, max(0, end.timeIntervalSinceNow)))
        }
        try check()
    }

    /// A child whose process group (it leads one) receives SIGTERM on the first signal, and on the
    /// second SIGKILL — or, when it `escalates` (a Topiary worker, which quits at once on its own
    /// second signal, killing its backend), SIGTERM again. A child started after the first signal
    /// is sent SIGTERM at once.
    public static func register(_ pid: pid_t, escalates: Bool = false) {
        state.lock.lock()
        state.children[pid] = escalates
        let late = state.signal != 0
        state.lock.unlock()
        if late { signalGroup(pid, SIGTERM) }
    }

    public static func unregister(_ pid: pid_t) {
        state.lock.lock()
        state.children[pid] = nil
        state.lock.unlock()
    }

    /// Sends `sig` to the process group `pid` leads, or to the process alone when it leads none.
    public static func signalGroup(_ pid: pid_t, _ sig: Int32) {
        if kill(-pid, sig) != 0 { kill(pid, sig) }
    }

    /// Waits up to `grace` seconds for `processes` (sent SIGTERM already) to exit, kills the process
    /// groups of those still running, and waits up to 2 s more: no longer, since `Process.isRunning`
    /// may stay true while a descendant holds Foundation's descriptors (``childExit(_:)``).
    public static func stop(_ processes: [Process], grace: Double) {
        let deadline = Date().addingTimeInterval(grace)
        while processes.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        for p in processes where p.isRunning { signalGroup(p.processIdentifier, SIGKILL) }
        let killed = Date().addingTimeInterval(2)
        while processes.contains(where: \.isRunning) && Date() < killed { Thread.sleep(forTimeInterval: 0.02) }
    }

    /// Whether child `pid` has exited (not yet reaped): `Process.isRunning` stays
    /// true while a grandchild the child left behind holds a descriptor Foundation watches.
    /// Returns its exit status (or the signal that ended it), or nil while it runs.
    public static func childExit(_ pid: pid_t) -> (status: Int32, signaled: Bool)? {
        var code: Int32 = 0, signaled: Int32 = 0
        return tp_child_exited(pid, &code, &signaled) != 0 ? (code, signaled != 0) : nil
    }

    /// Whether a process with this id exists (on this machine).
    public static func isAlive(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }
}
