import Foundation

/// Memory checked before it is spent: a command that would allocate more than this machine (or
/// its cgroup) has left refuses with the numbers and the settings that drive them, instead of
/// aborting in the allocator or being killed by the kernel.
public enum MemoryBudget {
    /// Bytes that can still be allocated: the smaller of `MemAvailable` and the cgroup's limit
    /// minus its usage (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`); nil when unknown.
    /// `TOPIARY_MEMORY_LIMIT` (bytes) lowers it, for tests and shared machines.
    public static func available() -> Int? {
        var candidates: [Int] = []
        if let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
            let kb = line.split(separator: " ").compactMap({ Int($0) }).first
        {
            candidates.append(kb * 1024)
        }
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        if let limit = number("/sys/fs/cgroup/memory.max"), let used = number("/sys/fs/cgroup/memory.current") {
            candidates.append(max(0, limit - used))
        } else if let limit = number("/sys/fs/cgroup/memory/memory.limit_in_bytes"), limit < 1 << 60,
            let used = number("/sys/fs/cgroup/memory/memory.usage_in_bytes")
        {
            candidates.append(max(0, limit - used))
        }
        if let s = ProcessInfo.processInfo.environment["TOPIARY_MEMORY_LIMIT"], let limit = Int(s), limit > 0 {
            candidates.append(max(0, limit - residentBytes()))
        }
        return candidates.min()
    }

    /// Throws ``ModelError/insufficientMemory(what:needed:available:drivers:)`` when `bytes` is
    /// more than ``available()``.
    public static func check(_ bytes: Int, for what: String, drivers: @autoclosure () -> String) throws {
        guard let free = available(), bytes > free else { return }
        throw ModelError.insufficientMemory(what: what, needed: bytes, available: free, drivers: drivers())
    }

    /// The settings of a config that drive its size, for error messages.
    public static func drivers(_ c: ModelConfig) -> String {
        "num_hidden_layers \(c.numHiddenLayers), hidden_size \(c.hiddenSize), intermediate_size "
            + "\(c.intermediateSize), vocab_size \(c.vocabSize)"
            + (c.isMixture ? ", num_local_experts \(c.numLocalExperts)" : "")
            + ": \(c.parameterCount) parameters"
    }
}

/// Peak resident memory of this process (VmHWM), in bytes.
public func peakResidentBytes() -> Int { procStatus("VmHWM:") }

/// Current resident memory of this process (VmRSS), in bytes.
public func residentBytes() -> Int { procStatus("VmRSS:") }

func procStatus(_ key: String) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix(key) {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

/// Bytes in binary units: "1.5 KiB", "12.3 MiB", "2.00 GiB", "3.1 TiB".
public func formatBytes(_ n: Int) -> String {
    switch n {
    case (1 << 40)...: return String(format: "%.1f TiB", Double(n) / Double(1 << 40))
    case (1 << 30)...: return String(format: "%.2f GiB", Double(n) / Double(1 << 30))
    case (1 << 20)...: return String(format: "%.1f MiB", Double(n) / Double(1 << 20))
    case (1 << 10)...: return String(format: "%.1f KiB", Double(n) / Double(1 << 10))
    default: return "\(n) B"
    }
}

extension MemoryBudget {
    /// Training `config` with AdamW at (batch, sequence) — parameters, gradients, moments and
    /// activations (``ModelConfig/trainingMemory(batch:sequence:dataParallelWorkers:)``) —
    /// checked against what is available before the model is allocated.
    public static func checkTraining(_ config: ModelConfig, batch: Int, sequence: Int, what: String) throws {
        let m = config.trainingMemory(batch: batch, sequence: sequence)
        try check(
            saturating(m.state, plus: m.activations), for: what,
            drivers: drivers(config) + "; batch \(batch) × sequence \(sequence)")
    }
}
