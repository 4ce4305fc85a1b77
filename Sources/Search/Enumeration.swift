import Foundation
import Model
import Proxy

/// One architecture of a search space, with its exact accounting.
public struct Candidate: Sendable, Hashable {
    public var config: ModelConfig
    /// Short stable id: FNV-1a of the axis values.
    public var hash: String
    public var parameters: Int
    public var nonEmbeddingParameters: Int
    /// For dense models every parameter is active.
    public var activeParameters: Int
    public var flopsPerToken: Int

    public init(config: ModelConfig, sequence: Int) {
        self.config = config
        var f = Fingerprint()
        f.add(Axis.axes(for: config.family).map { "\($0.rawValue)=\($0.value(config))" }.joined(separator: ","))
        hash = String(f.hex.prefix(12))
        parameters = config.parameterCount
        nonEmbeddingParameters = config.nonEmbeddingParameterCount
        activeParameters = config.activeParameterCount
        flopsPerToken = config.forwardFLOPsPerToken(sequence: sequence)
    }

    /// The HF config keys a search varies, with this candidate's values.
    public var architecture: JSON {
        var keys = Axis.axes(for: config.family)
        if config.family == .jetmoe { keys.append(.numAttentionHeads) }   // derived, shown for reading
        return .object(Dictionary(uniqueKeysWithValues: keys.map { ($0.rawValue, JSON($0.value(config))) }))
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    public static func == (a: Candidate, b: Candidate) -> Bool { a.hash == b.hash }
}

/// Every candidate of a space that fits the budget, and why the others did not.
public struct Enumeration: Sendable {
    public var candidates: [Candidate]
    public var combinations: Int
    /// Rule → how many combinations it excluded (first failing rule counts).
    public var excluded: [(rule: String, count: Int)]
    public var smallestCounted: Int?
    public var largestCounted: Int?

    /// A sentence saying which bound excluded what (for an empty result).
    public var explanation: String {
        var parts = ["\(combinations) combinations"]
        for (rule, n) in excluded where n > 0 { parts.append("\(n) \(rule)") }
        if let s = smallestCounted, let l = largestCounted { parts.append("structurally valid shapes span \(s)–\(l) counted parameters") }
        return parts.joined(separator: "; ")
    }

    /// Enumerates `spec`'s space against `teacher`.
    public static func of(_ spec: SearchSpec, teacher: ModelConfig) -> Enumeration {
        let axes = Axis.axes(for: teacher.family)
        let values = axes.map { spec.space[$0] ?? [$0.value(teacher)] }
        let teacherPerGroup = teacher.numAttentionHeads / teacher.numKeyValueHeads
        var counts = ["break head grouping (num_attention_heads not a multiple of num_key_value_heads)": 0,
                      "put more query heads in a group than the teacher's groups hold": 0,
                      "have hidden_size not a multiple of num_attention_heads (transformers refuses them)": 0,
                      "are below the budget minimum": 0, "are above the budget maximum": 0,
                      "exceed budget.flops_per_token": 0,
                      "have fewer experts than num_experts_per_tok": 0]
        for bound in spec.budget.bounds { counts["are outside budget.\(bound.count.rawValue)"] = 0 }
        var candidates: [Candidate] = []
        var smallest: Int?, largest: Int?
        var index = [Int](repeating: 0, count: axes.count)
        var combinations = 0
        outer: while true {
            combinations += 1
            var c = teacher
            for (k, axis) in axes.enumerated() { axis.set(&c, values[k][index[k]]) }
            let (H, G) = (c.numAttentionHeads, c.numKeyValueHeads)
            let jet = c.family == .jetmoe
            if c.family.isMixture && c.numLocalExperts < c.numExpertsPerTok { counts["have fewer experts than num_experts_per_tok"]! += 1 }
            else if !jet && H % G != 0 { counts["break head grouping (num_attention_heads not a multiple of num_key_value_heads)"]! += 1 }
            else if !jet && H / G > teacherPerGroup { counts["put more query heads in a group than the teacher's groups hold"]! += 1 }
            else if !jet && c.hiddenSize % H != 0 { counts["have hidden_size not a multiple of num_attention_heads (transformers refuses them)"]! += 1 }
            else {
                let n = spec.budget.counted(c)
                smallest = min(smallest ?? n, n); largest = max(largest ?? n, n)
                if n < spec.budget.minimum { counts["are below the budget minimum"]! += 1 }
                else if n > spec.budget.maximum { counts["are above the budget maximum"]! += 1 }
                else if let cap = spec.budget.maxFLOPsPerToken, c.forwardFLOPsPerToken(sequence: spec.proxy.sequence) > cap {
                    counts["exceed budget.flops_per_token"]! += 1
                } else if let bound = spec.budget.violatedBound(c) {
                    counts["are outside budget.\(bound.count.rawValue)"]! += 1
                } else {
                    candidates.append(Candidate(config: c, sequence: spec.proxy.sequence))
                }
            }
            var k = axes.count - 1
            while k >= 0 {
                index[k] += 1
                if index[k] < values[k].count { continue outer }
                index[k] = 0
                k -= 1
            }
            break
        }
        candidates.sort { ($0.parameters, $0.hash) < ($1.parameters, $1.hash) }
        return Enumeration(candidates: candidates, combinations: combinations,
                           excluded: counts.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                           smallestCounted: smallest, largestCounted: largest)
    }
}
