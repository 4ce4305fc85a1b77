import ArgumentParser
import Foundation
import Model

/// Engine options shared by every command that computes.
struct EngineOptions: ParsableArguments {
    @Option(
        parsing: .unconditional,
        help: "Worker threads for OpenBLAS and the element-wise kernels (default: all cores, or TOPIARY_THREADS).")
    var threads: Int?

    func apply() {
        Parallel.configureFromEnvironment()
        if let threads { Parallel.setThreads(threads) }
    }

    func validate() throws {
        if let threads { try requireRange("--threads", threads, 1...1024) }
    }
}

func directoryURL(_ path: String) -> URL { URL(fileURLWithPath: path, isDirectory: true) }
/// A `--teacher` (or other checkpoint) argument: a folder, or a Hugging Face repo id resolved in
/// the local cache (``HubCache``).
func checkpointURL(_ reference: String) throws -> URL { directoryURL(try HubCache.localPath(reference)) }
func fileURL(_ path: String) -> URL { URL(fileURLWithPath: path) }

func formatCount(_ n: Int) -> String {
    switch n {
    case 1_000_000_000...: return String(format: "%.2fB", Double(n) / 1e9)
    case 1_000_000...: return String(format: "%.2fM", Double(n) / 1e6)
    case 1_000...: return String(format: "%.1fK", Double(n) / 1e3)
    default: return "\(n)"
    }
}

func printJSON(_ value: JSON) { print(String(decoding: value.data(), as: UTF8.self)) }

/// A warning on standard error, so that JSON and tables on standard output stay clean.
func printWarning(_ text: String) { FileHandle.standardError.write(Data("warning: \(text)\n".utf8)) }

/// A range error for a numeric option: `--NAME: VALUE is outside LOW…HIGH (what it means)`.
func requireRange<T: Comparable>(_ option: String, _ value: T, _ range: ClosedRange<T>, _ meaning: String = "") throws {
    guard range.contains(value) else {
        throw ValidationError(
            "\(option): \(value) is outside \(range.lowerBound)…\(range.upperBound)\(meaning.isEmpty ? "" : " (\(meaning))")"
        )
    }
}

extension StorageType: ExpressibleByArgument {}
