import Foundation

/// The rules for a folder a command writes (`prune --out`, `data prepare --out`, `export --out`,
/// `distill --out`, `teacher train --out`):
/// - never one of the command's inputs, inside one, or a folder that holds one (replacing it
///   would delete the input);
/// - never an existing file;
/// - an existing folder that is not empty only with `--force`.
/// Paths are compared after resolving `.`, `..` and symbolic links, so `teacher/.` or a link to
/// the teacher is the teacher.
public enum OutputDirectory {
    /// Checks `out` against the rules above.
    /// - Parameters:
    ///   - inputs: the command's inputs as (option, path), named in the error.
    ///   - force: whether an existing, non-empty folder may be replaced.
    /// - Throws: ``ModelError/invalidInput(_:)`` naming the option, the paths and the rule.
    public static func check(_ out: URL, option: String = "--out", inputs: [(option: String, path: URL)], force: Bool)
        throws
    {
        let target = canonical(out)
        for input in inputs {
            let source = canonical(input.path)
            if target == source {
                throw ModelError.invalidInput(
                    "\(option) \(out.path) is the input \(input.option) \(input.path.path): writing there "
                        + "would overwrite it; choose another folder"
                )
            }
            if isInside(target, source) {
                throw ModelError.invalidInput(
                    "\(option) \(out.path) is inside the input \(input.option) \(input.path.path); choose a folder outside it"
                )
            }
            if isInside(source, target) {
                throw ModelError.invalidInput(
                    "\(option) \(out.path) holds the input \(input.option) \(input.path.path): replacing it "
                        + "would delete the input; choose another folder"
                )
            }
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out.path, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else {
            throw ModelError.invalidInput("\(option) \(out.path) is an existing file, not a folder")
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []
        if !entries.isEmpty && !force {
            throw ModelError.invalidInput(
                "\(option) \(out.path) exists and is not empty (\(entries.count) "
                    + "entr\(entries.count == 1 ? "y" : "ies")); pass --force to replace it"
            )
        }
    }

    /// Writes a whole folder so that `out` is either the old folder or the complete new one:
    /// `body` fills a temporary sibling (`.NAME.tmp-PID`), then the old folder is moved aside, the
    /// new one renamed in, and the old one removed. A temporary sibling left by a killed process
    /// (its PID no longer running) is removed first.
    public static func replace(_ out: URL, _ body: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let parent = out.deletingLastPathComponent()
        do { try fm.createDirectory(at: parent, withIntermediateDirectories: true) } catch {
            throw ModelError.io(path: parent.path, reason: "cannot create the folder: \(FileIO.describe(error))")
        }
        removeAbandonedTemporaries(in: parent, prefix: ".\(out.lastPathComponent)")
        let tmp = parent.appendingPathComponent(".\(out.lastPathComponent).tmp-\(getpid())")
        let old = parent.appendingPathComponent(".\(out.lastPathComponent).old-\(getpid())")
        try? fm.removeItem(at: tmp)
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
        } catch {
            throw ModelError.io(path: parent.path, reason: "cannot write here: \(FileIO.describe(error))")
        }
        do { try body(tmp) } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
        let existed = fm.fileExists(atPath: out.path)
        if existed, rename(out.path, old.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? fm.removeItem(at: tmp)
            throw ModelError.io(path: out.path, reason: "cannot move the old folder aside: \(reason)")
        }
        if rename(tmp.path, out.path) != 0 {
            let reason = String(cString: strerror(errno))
            if existed { _ = rename(old.path, out.path) }
            try? fm.removeItem(at: tmp)
            throw ModelError.io(path: out.path, reason: "cannot rename into place: \(reason)")
        }
        if existed { try? fm.removeItem(at: old) }
    }

    /// Removes entries `PREFIX….tmp-PID` / `PREFIX….old-PID` in `folder` whose process is gone.
    public static func removeAbandonedTemporaries(in folder: URL, prefix: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return }
        for name in entries where name.hasPrefix(prefix) {
            guard
                let dot = name.range(of: ".tmp-", options: .backwards) ?? name.range(of: ".old-", options: .backwards),
                let pid = Int32(name[dot.upperBound...])
            else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            }
        }
    }

    /// `url` with `.`/`..` and symbolic links resolved, also where its last components do not exist yet.
    static func canonical(_ url: URL) -> [String] {
        var existing = url.standardizedFileURL
        var missing: [String] = []
        while !FileManager.default.fileExists(atPath: existing.path) && existing.path != "/" {
            missing.insert(existing.lastPathComponent, at: 0)
            existing.deleteLastPathComponent()
        }
        var resolved = existing.path
        if let r = realpath(existing.path, nil) {
            resolved = String(cString: r)
            free(r)
        }
        return resolved.split(separator: "/").map(String.init) + missing
    }

    static func isInside(_ a: [String], _ b: [String]) -> Bool { a.count > b.count && Array(a.prefix(b.count)) == b }
}
