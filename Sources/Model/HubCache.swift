import Foundation

/// Finds a checkpoint named by a folder path or by a Hugging Face repo id in the local cache,
/// never over the network.
///
/// A reference that names an existing folder is that folder. Otherwise a reference of the form
/// `ORG/NAME` (letters, digits, `-`, `_`, `.`) is looked up as the Hub's cache lays it out:
/// `HUB/models--ORG--NAME/snapshots/REV`, where REV is the commit hash in
/// `HUB/models--ORG--NAME/refs/main` (or `refs/R` for `ORG/NAME@R`, or the snapshot named R),
/// and HUB is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`.
public enum HubCache {
    /// The cache folder the environment names.
    public static func hubDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let hub = environment["HF_HUB_CACHE"], !hub.isEmpty { return URL(fileURLWithPath: hub, isDirectory: true) }
        if let home = environment["HF_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home, isDirectory: true).appendingPathComponent("hub", isDirectory: true)
        }
        let cache =
            environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? NSHomeDirectory()) + "/.cache"
        return URL(fileURLWithPath: cache, isDirectory: true).appendingPathComponent(
            "huggingface/hub", isDirectory: true)
    }

    /// `reference` itself when it is a folder here or not shaped like a repo id; otherwise the path
    /// of its snapshot in the cache (``resolve(_:environment:)``, which throws when it is not cached).
    public static func localPath(_ reference: String) throws -> String {
        guard !FileManager.default.fileExists(atPath: reference), isRepoID(reference) else { return reference }
        return try resolve(reference).path
    }

    /// Whether `reference` has the shape of a repo id (`ORG/NAME`, optionally `@REVISION`).
    public static func isRepoID(_ reference: String) -> Bool { parse(reference) != nil }

    static func parse(_ reference: String) -> (org: String, name: String, revision: String?)? {
        var id = Substring(reference), revision: String? = nil
        if let at = id.firstIndex(of: "@") {
            revision = String(id[id.index(after: at)...])
            id = id[..<at]
            guard let r = revision, !r.isEmpty, r.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
            else { return nil }
        }
        let parts = id.split(separator: "/", omittingEmptySubsequences: false)
        let allowed: (Character) -> Bool = { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(allowed) && $0 != "." && $0 != ".." })
        else { return nil }
        return (String(parts[0]), String(parts[1]), revision)
    }

    /// The folder `reference` names.
    /// - Throws: ``ModelError/io(path:reason:)`` saying where it looked when neither a folder
    ///   nor a cached snapshot exists.
    public static func resolve(_ reference: String, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> URL
    {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: reference, isDirectory: &isDirectory), isDirectory.boolValue {
            return URL(fileURLWithPath: reference, isDirectory: true)
        }
        guard let (org, name, revision) = parse(reference) else {
            throw ModelError.io(path: reference, reason: "no such folder (and not a Hugging Face repo id ORG/NAME)")
        }
        let hub = hubDirectory(environment: environment)
        let repo = hub.appendingPathComponent("models--\(org)--\(name)", isDirectory: true)
        let snapshots = repo.appendingPathComponent("snapshots", isDirectory: true)
        let ref = revision ?? "main"
        var commit: String? = nil
        if let text = try? String(contentsOf: repo.appendingPathComponent("refs/\(ref)"), encoding: .utf8) {
            commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
        } else if let revision, fm.fileExists(atPath: snapshots.appendingPathComponent(revision).path) {
            commit = revision
        }
        let hint =
            "not a folder, and not in the Hugging Face cache: looked in \(repo.path) "
            + "(the hub cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub; "
            + "Topiary never downloads: fetch it with `huggingface-cli download \(org)/\(name)` where there is a network)"
        guard fm.fileExists(atPath: repo.path) else { throw ModelError.io(path: reference, reason: hint) }
        guard let commit, !commit.isEmpty, !commit.contains("/") else {
            throw ModelError.io(
                path: reference,
                reason: "\(repo.path) has no refs/\(ref); name a snapshot as \(org)/\(name)@REVISION (snapshots: "
                    + ((try? fm.contentsOfDirectory(atPath: snapshots.path).sorted().joined(separator: ", ")) ?? "none")
                    + ")")
        }
        let snapshot = snapshots.appendingPathComponent(commit, isDirectory: true)
        guard fm.fileExists(atPath: snapshot.appendingPathComponent("config.json").path) else {
            throw ModelError.io(
                path: reference, reason: "refs/\(ref) names snapshot \(commit), but \(snapshot.path) has no config.json"
            )
        }
        return snapshot
    }
}
