import ArgumentParser
import Foundation
import Model

/// Engine options shared by every command that computes.
struct EngineOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Worker threads for OpenBLAS and the element-wise kernels (default: all cores, or TOPIARY_THREADS).")
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
func fileURL(_ path: String) -> URL { URL(fileURLWithPath: path) }

/// Peak resident memory of this process (VmHWM), in bytes.
func peakResidentBytes() -> Int { procStatus("VmHWM:") }

/// Current resident memory of this process (VmRSS), in bytes.
func residentBytes() -> Int { procStatus("VmRSS:") }

func procStatus(_ key: String) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix(key) {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

func formatCount(_ n: Int) -> String {
    switch n {
    case 1_000_000_000...: return String(format: "%.2fB", Double(n) / 1e9)
    case 1_000_000...: return String(format: "%.2fM", Double(n) / 1e6)
    case 1_000...: return String(format: "%.1fK", Double(n) / 1e3)
    default: return "\(n)"
    }
}

func formatBytes(_ n: Int) -> String {
    switch n {
    case (1 << 30)...: return String(format: "%.2f GiB", Double(n) / Double(1 << 30))
    case (1 << 20)...: return String(format: "%.1f MiB", Double(n) / Double(1 << 20))
    case (1 << 10)...: return String(format: "%.1f KiB", Double(n) / Double(1 << 10))
    default: return "\(n) B"
    }
}

func printJSON(_ value: JSON) { print(String(decoding: value.data(), as: UTF8.self)) }

/// A warning on standard error, so that JSON and tables on standard output stay clean.
func printWarning(_ text: String) { FileHandle.standardError.write(Data("warning: \(text)\n".utf8)) }

/// A range error for a numeric option: `--NAME: VALUE is outside LOW…HIGH (what it means)`.
func requireRange<T: Comparable>(_ option: String, _ value: T, _ range: ClosedRange<T>, _ meaning: String = "") throws {
    guard range.contains(value) else {
        throw ValidationError("\(option): \(value) is outside \(range.lowerBound)…\(range.upperBound)\(meaning.isEmpty ? "" : " (\(meaning))")")
    }
}
