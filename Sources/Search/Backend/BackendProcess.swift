import Foundation
import Model

/// A started backend process: the leader of its own process group (so signals to the group
/// reach whatever it started), its stdout read as lines on their own thread (new bytes scanned
/// once: linear in the output, each line bounded by ``ExternalBackend/maxLineBytes``), the tail
/// of its stderr, and, for a resident backend, its stdin.
final class BackendProcess: @unchecked Sendable {
    final class Reader: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String] = [], last = Date(), done = false, overflow = false, stderr = Data()
    }

    let process: Process
    let pid: Int32
    let reader = Reader()
    let group = DispatchGroup()
    /// Where jobs are written (resident backends).
    let input: FileHandle?
    private var stopped = false

    /// Starts `command`; the failure says why it could not start.
    static func start(_ command: [String], name: String, stdin: Bool) -> Result<BackendProcess, SearchError> {
        let executable = command[0]
        if executable.contains("/") && !FileManager.default.isExecutableFile(atPath: executable) {
            return .failure(.backend("backend \(name): \(executable) is missing or not executable"))
        }
        do { return .success(try BackendProcess(command, stdin: stdin)) } catch {
            return .failure(.backend("backend \(name): cannot start \(executable): \(error)"))
        }
    }

    private init(_ command: [String], stdin: Bool) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = command
        // A resident backend that dies between jobs must not take Topiary with it: writing its
        // next job then fails (EPIPE, ``send(_:)`` says false) instead of raising SIGPIPE.
        if stdin { signal(SIGPIPE, SIG_IGN) }
        let out = Pipe(), err = Pipe(), inPipe = stdin ? Pipe() : nil
        p.standardOutput = out
        p.standardError = err
        if let inPipe { p.standardInput = inPipe }
        try p.run()
        process = p
        pid = p.processIdentifier
        input = inPipe?.fileHandleForWriting
        Interruption.register(pid)
        let reader = self.reader, group = self.group
        // Lines are read on their own thread (new bytes scanned once: linear in the output), handed
        // over in batches; the clock watches for silence.
        let maxLine = ExternalBackend.maxLineBytes
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            var pending: [UInt8] = []
            while true {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                var complete: [String] = []
                var start = chunk.startIndex
                var overflow = false
                while !overflow, let nl = chunk[start...].firstIndex(of: 0x0A) {
                    pending.append(contentsOf: chunk[start..<nl])
                    overflow = pending.count > maxLine
                    if !overflow { complete.append(String(decoding: pending, as: UTF8.self)) }
                    pending.removeAll(keepingCapacity: true)
                    start = nl + 1
                }
                if !overflow { pending.append(contentsOf: chunk[start...]) }
                // The only place a line's length is checked: a longer one is never handed over.
                overflow = overflow || pending.count > maxLine
                reader.lock.lock()
                reader.lines += complete
                reader.last = Date()
                reader.overflow = overflow
                var backlog = reader.lines.count
                reader.lock.unlock()
                if overflow { break }
                // Back-pressure: a backend that floods waits for the lines to be looked at.
                while backlog > 100_000 {
                    Thread.sleep(forTimeInterval: 0.01)
                    reader.lock.lock(); backlog = reader.lines.count; reader.lock.unlock()
                }
            }
            reader.lock.lock()
            if !pending.isEmpty && !reader.overflow { reader.lines.append(String(decoding: pending, as: UTF8.self)) }
            reader.done = true
            reader.lock.unlock()
        }
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            // The tail is what a failure message quotes; the rest is dropped as it comes.
            var kept = Data()
            while true {
                let chunk = err.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                kept.append(chunk)
                if kept.count > 1 << 16 { kept = kept.suffix(1 << 15) }
            }
            reader.lock.lock(); reader.stderr = kept; reader.lock.unlock()
        }
    }

    /// Writes one line to the backend's stdin; false when it no longer reads.
    func send(_ line: String) -> Bool {
        guard let input else { return false }
        do { try input.write(contentsOf: Data((line + "\n").utf8)) } catch { return false }
        return true
    }

    /// Kills the process group (whatever the backend left behind goes with it) and forgets it.
    func stop() {
        guard !stopped else { return }
        stopped = true
        try? input?.close()
        Interruption.signalGroup(pid, SIGKILL)
        Interruption.unregister(pid)
    }

    deinit { stop() }
}
