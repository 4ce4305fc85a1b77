import Foundation
import Model
import Proxy

/// A study's candidates priced at its serving workloads: memory, KV cache and decode FLOPs at
/// `budget.workload` (exact counts), generated tokens/s at `budget.throughput` (its block table,
/// else its roofline) — what `results pareto --cost …` and the report's fronts draw.
public struct ServingCosts: Sendable {
    public enum Cost: String, Sendable, CaseIterable {
        case memory, kvCache = "kv_cache", decodeFLOPs = "decode_flops", throughput

        /// Axis label.
        public var label: String {
            switch self {
            case .memory: return "memory at the workload (bytes: weights + KV cache)"
            case .kvCache: return "KV cache at the workload (bytes)"
            case .decodeFLOPs: return "decode FLOPs per token at the workload"
            case .throughput: return "generated tokens/s at the throughput workload"
            }
        }
        /// Whether more is better (throughput) rather than less.
        public var higherIsBetter: Bool { self == .throughput }
    }

    /// Value per candidate hash, and whether a throughput rate has a roofline part.
    public var values: [Cost: [String: Double]] = [:]
    public var estimated: [String: Bool] = [:]

    /// The costs the study's spec has a workload for, of every ranked candidate. Throws when the
    /// teacher's config cannot be read or a candidate's block has no time.
    public init(spec: SearchSpec, teacher: ModelConfig, ranked: [StudyStore.Ranked], study: String) throws {
        let b = spec.budget
        guard b.workload != nil || b.throughput != nil else { return }
        var seen: Set<String> = []
        for r in ranked where seen.insert(r.trial.hash).inserted {
            let a = r.trial.architecture
            let c =
                try Candidate.layerVariants(a).map {
                    HeterogeneousPruning.studentConfig(teacher: teacher, variants: $0)
                } ?? Pruning.targetConfig(teacher: teacher, target: a.object ?? [:])
            if let w = b.workload {
                let cost = c.inferenceCost(w)
                values[.memory, default: [:]][r.trial.hash] = Double(cost.memoryBytes)
                values[.kvCache, default: [:]][r.trial.hash] = Double(cost.kvCacheBytes)
                values[.decodeFLOPs, default: [:]][r.trial.hash] = Double(cost.decodeFLOPsPerToken)
            }
            if let tp = b.throughput {
                guard let e = tp.estimate(c) else {
                    throw SearchError.store(
                        "study '\(study)': candidate \(r.trial.hash) has a block neither in the table nor under a roofline"
                    )
                }
                values[.throughput, default: [:]][r.trial.hash] = e.tokensPerSecond
                estimated[r.trial.hash] = e.estimated > 0
            }
        }
    }

    /// The study's spec and teacher config, as the store recorded them.
    public static func of(_ row: StudyStore.StudyRow, ranked: [StudyStore.Ranked]) throws -> ServingCosts {
        func config(_ path: String) throws -> ModelConfig {
            try ModelConfig.load(URL(fileURLWithPath: path, isDirectory: true).appendingPathComponent("config.json"))
        }
        let spec = try SearchSpec(json: row.spec, file: "store:\(row.name)", teacherConfig: config)
        return try ServingCosts(spec: spec, teacher: try config(spec.teacher), ranked: ranked, study: row.name)
    }

    /// The front against `cost`: candidates no other beats on both it and the score.
    public func front(_ ranked: [StudyStore.Ranked], _ cost: Cost) -> [StudyStore.Ranked] {
        guard let v = values[cost] else { return [] }
        return StudyStore.pareto(
            ranked,
            cost: { r in
                let x = v[r.trial.hash] ?? .nan
                return cost.higherIsBetter ? -x : x
            })
    }
}
