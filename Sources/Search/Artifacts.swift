import Foundation
import Model

/// Trial checkpoints on (possibly shared) storage: paths are recorded relative to the artifacts
/// root, which each worker names for itself (`--artifacts`, the spec's `artifacts`), so the same
/// store works from machines that mount the shared folder at different places.
public enum Artifacts {
    /// The artifacts root: `--artifacts`, else the spec's `artifacts`, else `fallback` (`results`).
    public static func root(option: String?, spec: SearchSpec?, fallback: String) -> String {
        option ?? spec?.artifacts ?? fallback
    }

    /// The path the store records: relative to `root` when under it (absolute otherwise).
    public static func relative(_ url: URL, root: URL) -> String {
        let path = url.standardizedFileURL.path, base = root.standardizedFileURL.path
        let prefix = base.hasSuffix("/") ? base : base + "/"
        return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
    }

    /// A recorded path on this machine: relative ones under `root`; absolute ones (stores written
    /// before artifacts roots) as they are.
    public static func resolve(_ stored: String, root: URL) -> URL {
        stored.hasPrefix("/")
            ? URL(fileURLWithPath: stored, isDirectory: true) : root.appendingPathComponent(stored, isDirectory: true)
    }

    /// Why a training checkpoint folder cannot be continued from, or nil when it can: its weights,
    /// AdamW moments and state must be there with readable headers.
    public static func problem(checkpoint url: URL) -> String? {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return "is missing"
        }
        for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            let file = url.appendingPathComponent(f)
            guard fm.isReadableFile(atPath: file.path) else { return "lacks \(f) (or it is unreadable)" }
            if f.hasSuffix(".safetensors") {
                do { _ = try SafeTensorsFile(url: file) } catch { return "has a broken \(f): \(error)" }
            } else if TrainingCheckpoint.step(of: url) == nil {
                return "has a malformed state.json"
            }
        }
        return nil
    }
}
