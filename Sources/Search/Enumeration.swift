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
        f.add(Axis.axes(for: config).map { "\($0.rawValue)=\($0.value(config))" }.joined(separator: ","))
        if let layers = config.layerVariants {
            f.add(layers.map { "\($0.keyValueGroups ?? 0)/\($0.mlpWidth ?? 0)" }.joined(separator: ","))
        }
        hash = String(f.hex.prefix(12))
        parameters = config.parameterCount
        nonEmbeddingParameters = config.nonEmbeddingParameterCount
        activeParameters = config.activeParameterCount
        flopsPerToken = config.forwardFLOPsPerToken(sequence: sequence)
    }

    /// The HF config keys a search varies, with this candidate's values.
    public var architecture: JSON {
        var keys = Axis.axes(for: config)
        if config.family.derivesQueryHeads { keys.append(.numAttentionHeads) } // derived, shown for reading
        var o = Dictionary(uniqueKeysWithValues: keys.map { ($0.rawValue, JSON($0.value(config))) })
        // A heterogeneous candidate: each layer's key/value groups and MLP width (null: removed).
        if let layers = config.layerVariants {
            o[Self.layersKey] = .array(
                layers.map { [$0.keyValueGroups.map { JSON($0) } ?? .null, $0.mlpWidth.map { JSON($0) } ?? .null] })
        }
        return .object(o)
    }

    /// The architecture key of a heterogeneous candidate's layers.
    public static let layersKey = "layers"

    /// The layer variants an architecture (``architecture``) names, or nil for a homogeneous one.
    public static func layerVariants(_ architecture: JSON) -> [LayerVariant]? {
        guard let layers = architecture[layersKey]?.array else { return nil }
        return layers.map {
            LayerVariant(keyValueGroups: $0.array?.first?.int, mlpWidth: $0.array?.dropFirst().first?.int)
        }
    }

    /// Its costs at a serving workload (``ModelConfig/inferenceCost(_:)``).
    public func cost(_ w: Workload) -> InferenceCost { config.inferenceCost(w) }

    public func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    public static func == (a: Candidate, b: Candidate) -> Bool { a.hash == b.hash }
}

/// Every candidate of a space that fits the budget, and why the others did not.
public struct Enumeration: Sendable {
    public var candidates: [Candidate]
    /// The size of the space (the product of the axes' value counts; saturates at `Int.max`).
    public var combinations: Int
    /// Rule → how many combinations it excluded. Whole branches cut by the budget count as below
    /// or above it, whatever else they break.
    public var excluded: [(rule: String, count: Int)]
    public var smallestCounted: Int?
    public var largestCounted: Int?
    /// More than `limit` candidates fit: `candidates` holds the first `limit` found and
    /// `admittedAtLeast` says how many were seen before the walk stopped.
    public var truncated = false
    public var admittedAtLeast = 0

    /// The most candidates a study admits unless the spec's `max_candidates` says otherwise.
    public static let defaultLimit = 100_000

    /// A sentence saying which bound excluded what (for an empty result).
    public var explanation: String {
        var parts = ["\(combinations) combinations"]
        for (rule, n) in excluded where n > 0 { parts.append("\(n) \(rule)") }
        if let s = smallestCounted, let l = largestCounted {
            parts.append("shapes of this space span \(s)–\(l) counted parameters")
        }
        return parts.joined(separator: "; ")
    }

    static let rules = [
        "break head grouping (num_attention_heads not a multiple of num_key_value_heads)",
        "put more query heads in a group than the teacher's groups hold",
        "have hidden_size not a multiple of num_attention_heads (transformers refuses them)",
        "are below the budget minimum", "are above the budget maximum",
        "exceed budget.flops_per_token",
        "have fewer experts than num_experts_per_tok",
        "break Mamba2 groups (mamba_num_heads not a multiple of n_groups)",
        "have no layers left",
        "break DeltaNet key heads (linear_num_value_heads not a multiple of linear_num_key_heads)",
        "put more DeltaNet value heads under a key head than the teacher's key heads hold"
    ]

    /// The first rule a complete shape breaks, or nil when it is a candidate.
    static func violation(
        _ c: ModelConfig, spec: SearchSpec, teacherPerGroup: Int, teacherValuesPerKey: Int = .max
    ) -> String? {
        let (H, G) = (c.numAttentionHeads, c.numKeyValueHeads)
        let derived = c.family.derivesQueryHeads
        if c.isMixture && c.numLocalExperts < c.numExpertsPerTok { return rules[6] }
        if let m = c.mamba, m.heads % m.groups != 0 { return rules[7] }
        if let d = c.deltaNet, d.valueHeads % d.keyHeads != 0 { return rules[9] }
        if let d = c.deltaNet, d.valuesPerKey > teacherValuesPerKey { return rules[10] }
        if c.numHiddenLayers == 0 { return rules[8] }
        if !derived && H % G != 0 { return rules[0] }
        if !derived && H / G > teacherPerGroup { return rules[1] }
        if c.family.requiresHeadsDivideHidden && c.hiddenSize % H != 0 { return rules[2] }
        let n = spec.budget.counted(c)
        if n < spec.budget.minimum { return rules[3] }
        if n > spec.budget.maximum { return rules[4] }
        if let cap = spec.budget.maxFLOPsPerToken, c.forwardFLOPsPerToken(sequence: spec.proxy.sequence) > cap {
            return rules[5]
        }
        if let bound = spec.budget.violatedBound(c) { return "are outside budget.\(bound.count.rawValue)" }
        if let cost = spec.budget.violatedCost(c) {
            return cost == "throughput" ? "fall below budget.throughput.min" : "exceed budget.\(cost) at the workload"
        }
        return nil
    }

    /// Enumerates `spec`'s space against `teacher` in time that grows with the answer, not with
    /// the space: every counted quantity (total, non-embedding, active parameters) is
    /// non-decreasing in every axis (head_dim stays the teacher's), so with each axis sorted, a
    /// branch whose smallest completion is above the budget ends its axis, and one whose largest
    /// completion is below it is skipped. Stops after `limit` candidates (``truncated``).
    /// Same candidates as ``exhaustive(_:teacher:)`` (tested).
    public static func of(_ spec: SearchSpec, teacher: ModelConfig, limit: Int? = nil) -> Enumeration {
        let limit = limit ?? spec.maxCandidates ?? defaultLimit
        let axes = Axis.axes(for: teacher)
        let values = axes.map { Array(Set(spec.space[$0] ?? [$0.value(teacher)])).sorted() }
        let teacherPerGroup = teacher.numAttentionHeads / teacher.numKeyValueHeads
        // Combinations from axis k on, for whole branches cut at axis k.
        var below = [Int](repeating: 1, count: axes.count + 1)
        for k in stride(from: axes.count - 1, through: 0, by: -1) {
            below[k] = saturating(below[k + 1], times: values[k].count)
        }
        var e = Enumeration(
            candidates: [], combinations: below[0], excluded: [], smallestCounted: nil, largestCounted: nil)
        var counts = Dictionary(uniqueKeysWithValues: rules.map { ($0, 0) })
        for bound in spec.budget.bounds { counts["are outside budget.\(bound.count.rawValue)"] = 0 }
        func completed(_ c: ModelConfig, from k: Int, largest: Bool) -> ModelConfig {
            var d = c
            for j in k..<axes.count { axes[j].set(&d, largest ? values[j].last! : values[j].first!) }
            return d
        }
        e.smallestCounted = spec.budget.counted(completed(teacher, from: 0, largest: false))
        e.largestCounted = spec.budget.counted(completed(teacher, from: 0, largest: true))
        var admitted = 0
        func walk(_ k: Int, _ c: ModelConfig) -> Bool { // false: stop, the limit is reached
            if k == axes.count {
                if let rule = violation(
                    c, spec: spec, teacherPerGroup: teacherPerGroup,
                    teacherValuesPerKey: teacher.deltaNet?.valuesPerKey ?? .max)
                {
                    counts[rule, default: 0] += 1; return true
                }
                admitted += 1
                if e.candidates.count < limit {
                    e.candidates.append(Candidate(config: c, sequence: spec.proxy.sequence)); return true
                }
                e.truncated = true
                return false
            }
            for (i, v) in values[k].enumerated() {
                var d = c
                axes[k].set(&d, v)
                if spec.budget.counted(completed(d, from: k + 1, largest: false)) > spec.budget.maximum {
                    counts[rules[4]]! = saturating(
                        counts[rules[4]]!, plus: saturating(values[k].count - i, times: below[k + 1]))
                    break
                }
                if spec.budget.counted(completed(d, from: k + 1, largest: true)) < spec.budget.minimum {
                    counts[rules[3]]! = saturating(counts[rules[3]]!, plus: below[k + 1])
                    continue
                }
                if !walk(k + 1, d) { return false }
            }
            return true
        }
        _ = walk(0, teacher)
        e.admittedAtLeast = admitted
        e.candidates.sort { ($0.parameters, $0.hash) < ($1.parameters, $1.hash) }
        e.excluded = counts.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return e
    }

    /// Every combination, one by one: the reference ``of(_:teacher:limit:)`` is tested against.
    public static func exhaustive(_ spec: SearchSpec, teacher: ModelConfig) -> [Candidate] {
        let axes = Axis.axes(for: teacher)
        let values = axes.map { spec.space[$0] ?? [$0.value(teacher)] }
        let teacherPerGroup = teacher.numAttentionHeads / teacher.numKeyValueHeads
        var candidates: [Candidate] = []
        var index = [Int](repeating: 0, count: axes.count)
        outer: while true {
            var c = teacher
            for (k, axis) in axes.enumerated() { axis.set(&c, values[k][index[k]]) }
            if violation(
                c, spec: spec, teacherPerGroup: teacherPerGroup,
                teacherValuesPerKey: teacher.deltaNet?.valuesPerKey ?? .max) == nil
            {
                candidates.append(Candidate(config: c, sequence: spec.proxy.sequence))
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
        return Array(Set(candidates)).sorted { ($0.parameters, $0.hash) < ($1.parameters, $1.hash) }
    }
}

extension Enumeration {
    /// Throws when the space admits more candidates than a study takes, with the count and what to do.
    public func requireWithinLimit(_ spec: SearchSpec) throws {
        guard truncated else { return }
        throw SearchError.spec(
            file: spec.file, path: "space",
            reason:
                "the budget admits more than \(candidates.count) candidates (of \(combinations) "
                + "combinations); tighten the budget or the space, "
                + "sample it with \"strategy\": {\"name\": \"random\", \"samples\": N} after narrowing it, or "
                + "raise \"max_candidates\" if you mean it"
        )
    }
}
