import Foundation

/// Writes files so that a crash never leaves a half-written file under the final name:
/// bytes go to `NAME.tmp-PID` in the same directory, are flushed, and are renamed over `NAME`.
public enum AtomicFile {
    /// Writes `data` to `url` atomically, creating the parent directory if needed.
    /// - Throws: ``ModelError/io(path:reason:)`` when the directory or file cannot be written.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { handle in try handle.write(contentsOf: data) }
    }

    /// Calls `body` with a handle on a temporary file beside `url`, then renames it to `url`.
    public static func write(to url: URL, _ body: (FileHandle) throws -> Void) throws {
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelError.io(path: directory.path, reason: "cannot create the folder: \(FileIO.describe(error))")
        }
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
            throw ModelError.io(path: url.path, reason: "cannot write here (permission denied or read-only)")
        }
        do {
            let handle = try FileHandle(forWritingTo: temporary)
            defer { try? handle.close() }
            try body(handle)
            try handle.synchronize()
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            if let error = error as? ModelError { throw error }
            throw ModelError.io(path: url.path, reason: "write failed: \(FileIO.describe(error))")
        }
        if rename(temporary.path, url.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ModelError.io(path: url.path, reason: "cannot rename into place: \(reason)")
        }
    }
}
