import Foundation
import Model
import Proxy

/// Puzzle's search (arXiv 2411.19146) judged by Topiary's proxy: every layer's variants are scored
/// by one-block replacement (``BlockLibrary``), the layer-choice program picks the `solutions`
/// best choices under the budget's costs that differ pairwise in `min_hamming` layers
/// (``LayerChoiceProblem``), the best homogeneous choice of the same library joins them as a
/// baseline, and successive halving with the KD proxy decides among them — the solver proposes,
/// the proxy judges.
public struct Puzzle: SearchStrategy {
    public var settings: PuzzleSettings
    public var name: String { "puzzle" }
    var halving: SuccessiveHalving { SuccessiveHalving(minSteps: settings.minSteps, eta: settings.eta) }

    public func fidelities(proxySteps: Int) -> [Int] { halving.fidelities(proxySteps: proxySteps) }
    public func defaultFinalists(_ finalists: Int) -> Int { halving.defaultFinalists(finalists) }
    public func advance(_ finished: FinishedRung) throws -> Bool { try halving.advance(finished) }

    /// Every layer's variants: the teacher's block first, then each groups × width pair, then
    /// (with `no_op`) attention alone removed, the MLP alone removed, both.
    public func library(teacher t: ModelConfig) -> [LayerVariant] {
        let groups = settings.keyValueHeads.sorted(by: >) as [Int?]
        let widths = settings.widths.sorted(by: >) as [Int?]
        var out: [LayerVariant] = []
        for g in groups + (settings.noOp ? [nil] : []) {
            for w in widths + (settings.noOp ? [nil] : []) {
                let v = LayerVariant(keyValueGroups: g, mlpWidth: w)
                if !out.contains(v) { out.append(v) }
            }
        }
        let whole = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        return [whole] + out.filter { $0 != whole }
    }

    /// What each variant of `library` adds to every cost, as one layer of the teacher's student.
    public static func blockCosts(_ library: [LayerVariant], teacher t: ModelConfig, at w: Workload?) -> [BlockCost] {
        library.map { t.blockCost(t.block($0), at: w) }
    }

    /// The layer-choice program of `scores` (per layer, per ``library(teacher:)`` variant) under
    /// the spec's budget: the counted parameters' maximum, and at the workload the memory and
    /// decode-FLOPs caps, each less what lies outside the blocks.
    public static func program(spec: SearchSpec, teacher t: ModelConfig, library: [LayerVariant], scores: [[Double]])
        throws -> LayerChoiceProblem
    {
        let b = spec.budget, w = b.workload
        let costs = blockCosts(library, teacher: t, at: w)
        let outside = t.costOutsideBlocks(at: w)
        var rows: [([Double], Double)] = []
        var parameterRow: Int?, parameterMinimum = 0.0
        if b.maximum < Int.max || b.minimum > 0 {
            guard b.count != .active || !t.isMixture else {
                throw SearchError.spec(
                    file: spec.file, path: "budget.count", reason: "puzzle counts dense teachers only")
            }
            // Non-embedding counts keep the final norm outside the blocks.
            let fixed = b.count == .nonEmbedding ? outside.parameters - t.embeddingParameterCount : outside.parameters
            let perLayer = costs.map { Double($0.parameters) }
            // No maximum: the most the blocks can hold (every layer its largest variant).
            let upper =
                b.maximum < Int.max
                ? Double(b.maximum - fixed) : Double(t.numHiddenLayers) * (perLayer.max() ?? 0) + 1
            parameterRow = rows.count
            parameterMinimum = max(0, Double(b.minimum - fixed))
            rows.append((perLayer, upper))
        }
        if let cap = b.maxMemoryBytes {
            rows.append((costs.map { Double($0.memoryBytes) }, Double(cap - outside.memoryBytes)))
        }
        if let cap = b.maxDecodeFLOPsPerToken {
            rows.append((costs.map { Double($0.decodeFLOPs) }, Double(cap - outside.decodeFLOPs)))
        }
        let L = t.numHiddenLayers
        var costs3 = rows.map { row in Array(repeating: row.0, count: L) }
        if let tp = b.throughput {
            // Seconds add up block by block: Σ_l seconds_l ≤ batch · output / min − the outside's.
            let w = tp.workload
            func seconds(_ block: Block) -> Double {
                Throughput.blockSeconds(block, in: t, at: w, table: tp.table, roofline: tp.roofline)?.seconds
                    ?? .infinity
            }
            let outsideSeconds =
                Throughput.outsideSeconds(t, at: w, table: tp.table, roofline: tp.roofline)?.seconds ?? .infinity
            costs3.append((0..<L).map { l in library.map { seconds(t.block($0, window: t.window(layer: l))) } })
            rows.append(([], Double(w.batch * w.output) / tp.minimum - outsideSeconds))
        }
        guard !rows.isEmpty else {
            throw SearchError.spec(
                file: spec.file, path: "budget",
                reason: "puzzle needs a bound: budget max/parameters, memory, decode_flops_per_token or throughput")
        }
        if let bad = rows.first(where: { $0.1 <= 0 }) {
            throw SearchError.spec(
                file: spec.file, path: "budget",
                reason: "the embedding and head alone exceed a bound (\(Int(bad.1)) left for the blocks)")
        }
        var minimums = Array(repeating: 0.0, count: rows.count)
        if let r = parameterRow {
            guard parameterMinimum <= rows[r].1 else {
                throw SearchError.spec(
                    file: spec.file, path: "budget.min",
                    reason: "no choice of the block library holds \(b.minimum) counted parameters under the maximum")
            }
            minimums[r] = parameterMinimum
        }
        return LayerChoiceProblem(scores: scores, costs: costs3, limits: rows.map(\.1), minimums: minimums)
    }

    /// The candidates: the solver's solutions, then the best homogeneous choice that fits (when it
    /// is not among them), each a nemotron-nas config.
    public func candidates(spec: SearchSpec, teacher t: ModelConfig, scores: [[Double]], log: (String) -> Void) throws
        -> [Candidate]
    {
        let library = library(teacher: t)
        let problem = try Self.program(spec: spec, teacher: t, library: library, scores: scores)
        var choices = try problem.solve(count: settings.solutions, minHamming: settings.minHamming)
        let L = t.numHiddenLayers
        let homogeneous = library.indices.map { Array(repeating: $0, count: L) }.filter(problem.isFeasible)
            .min { problem.score($0) < problem.score($1) }
        if let h = homogeneous, !choices.contains(h) { choices.append(h) }
        guard !choices.isEmpty else {
            throw SearchError.emptySpace("no choice of the block library's variants fits the budget")
        }
        for (i, c) in choices.enumerated() {
            log(
                String(
                    format: "puzzle: %@ %d: summed replacement score %.4f; ",
                    i == choices.count - 1 && c == homogeneous ? "homogeneous baseline" : "solution", i + 1,
                    problem.score(c))
                    + c.map { Self.describe(library[$0]) }.joined(separator: " "))
        }
        return choices.map { c in
            Candidate(
                config: HeterogeneousPruning.studentConfig(teacher: t, variants: c.map { library[$0] }),
                sequence: spec.proxy.sequence)
        }
    }

    /// "g3/f512", "-/f256", "g1/-": a layer's key/value groups and MLP width.
    /// Where the library's locally distilled blocks live in an importance cache (one file per
    /// teacher and calibration key, library and settings), or nil without local distillation.
    public func blockWeightsFile(cache: URL, importanceKey: String, teacher t: ModelConfig) -> URL? {
        guard let bld = settings.localDistillation else { return nil }
        var f = Fingerprint()
        f.add(importanceKey)
        f.add(library(teacher: t).map(Self.describe).joined(separator: ","))
        f.add(bld.description)
        return cache.appendingPathComponent("puzzle-bld-\(f.hex).safetensors")
    }

    public static func describe(_ v: LayerVariant) -> String {
        (v.keyValueGroups.map { "g\($0)" } ?? "-") + "/" + (v.mlpWidth.map { "f\($0)" } ?? "-")
    }
}
