import CGLPK
import Foundation

/// Puzzle's search (arXiv 2411.19146, §4): choose one variant per layer so that the summed
/// replacement scores are least while every cost stays within its budget — a 0/1 integer program,
/// solved exactly by GLPK's branch and cut (`glp_intopt`).
///
/// Variables `x[l][v]` ∈ {0, 1}: layer l takes variant v. Rows: `Σ_v x[l][v] = 1` for every
/// layer; `minimum[k] ≤ Σ_l Σ_v cost[k][l][v] · x[l][v] ≤ limit[k]` for every cost k (each row
/// divided by its limit, so that byte counts of 10^11 and FLOPs of 10^12 sit beside the 0/1 rows without
/// rounding trouble). The K best solutions that differ pairwise in at least H layers come one at
/// a time: after each, the row `Σ_l x[l][chosen_l] ≤ L − H` cuts off it and its neighbours.
public struct LayerChoiceProblem: Sendable {
    /// `scores[l][v]`: how much replacing layer l by variant v costs the model (lower is better).
    public var scores: [[Double]]
    /// `costs[k][l][v]`: what variant v of layer l adds to cost k (parameters, bytes, FLOPs).
    public var costs: [[[Double]]]
    /// `limits[k]`: the most cost k may sum to over the layers.
    public var limits: [Double]
    /// `minimums[k]`: the least cost k must sum to (0: no minimum).
    public var minimums: [Double]

    public init(scores: [[Double]], costs: [[[Double]]], limits: [Double], minimums: [Double]? = nil) {
        self.scores = scores
        self.costs = costs
        self.limits = limits
        self.minimums = minimums ?? Array(repeating: 0, count: limits.count)
    }

    /// The summed score of a choice (one variant index per layer).
    public func score(_ choice: [Int]) -> Double { zip(scores, choice).reduce(0) { $0 + $1.0[$1.1] } }

    /// Whether a choice keeps every cost within its limit.
    public func isFeasible(_ choice: [Int]) -> Bool {
        costs.indices.allSatisfy { k in
            let sum = zip(costs[k], choice).reduce(0) { $0 + $1.0[$1.1] }
            return sum <= limits[k] && sum >= minimums[k]
        }
    }

    /// Layers in which two choices differ.
    public static func hamming(_ a: [Int], _ b: [Int]) -> Int { zip(a, b).filter { $0 != $1 }.count }

    /// Up to `count` choices, best first, each differing from every earlier one in at least
    /// `minHamming` layers; fewer when no more are feasible. Exact (an optimum of each program).
    public func solve(count: Int, minHamming: Int) throws -> [[Int]] {
        let L = scores.count
        guard L > 0, scores.allSatisfy({ !$0.isEmpty }) else { throw SearchError.solver("no layers or no variants") }
        for (k, cost) in costs.enumerated()
        where cost.count != L || zip(cost, scores).contains(where: { $0.count != $1.count }) {
            throw SearchError.solver("cost \(k) does not give every variant of every layer a value")
        }
        guard limits.count == costs.count, limits.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw SearchError.solver("every cost needs a positive, finite limit")
        }
        guard minimums.count == costs.count, zip(minimums, limits).allSatisfy({ $0 >= 0 && $0 <= $1 }) else {
            throw SearchError.solver("every cost's minimum must lie in 0…its limit")
        }
        var column: [[Int32]] = [] // column[l][v]: GLPK's 1-based column
        var next: Int32 = 1
        for s in scores {
            column.append(
                s.indices.map { _ in
                    defer { next += 1 }; return next
                })
        }
        glp_term_out(GLP_OFF)
        let lp = glp_create_prob()
        defer { glp_delete_prob(lp) }
        glp_set_obj_dir(lp, GLP_MIN)
        glp_add_cols(lp, next - 1)
        for (l, s) in scores.enumerated() {
            for (v, score) in s.enumerated() {
                let j = column[l][v]
                glp_set_col_kind(lp, j, GLP_BV)
                glp_set_obj_coef(lp, j, score)
            }
        }
        // Coefficients, 1-based as GLPK wants them (index 0 unused).
        var ia: [Int32] = [0], ja: [Int32] = [0], ar: [Double] = [0]
        var rows: Int32 = 0
        func addRow(_ entries: [(Int32, Double)], type: Int32, lower: Double, upper: Double) {
            rows += 1
            glp_add_rows(lp, 1)
            glp_set_row_bnds(lp, rows, type, lower, upper)
            for (j, a) in entries where a != 0 {
                ia.append(rows)
                ja.append(j)
                ar.append(a)
            }
        }
        for l in 0..<L { addRow(column[l].map { ($0, 1) }, type: GLP_FX, lower: 1, upper: 1) }
        for (k, cost) in costs.enumerated() {
            var entries: [(Int32, Double)] = []
            for l in 0..<L { for v in cost[l].indices { entries.append((column[l][v], cost[l][v] / limits[k])) } }
            let lower = minimums[k] / limits[k]
            addRow(entries, type: lower > 0 ? GLP_DB : GLP_UP, lower: lower, upper: 1)
        }
        var found: [[Int]] = []
        var parm = glp_iocp()
        glp_init_iocp(&parm)
        parm.presolve = GLP_ON
        parm.msg_lev = GLP_MSG_OFF
        while found.count < count {
            glp_load_matrix(lp, Int32(ar.count - 1), &ia, &ja, &ar)
            let rc = glp_intopt(lp, &parm)
            let status = glp_mip_status(lp)
            // No (further) feasible choice: GLPK's presolver says so with GLP_ENOPFS.
            if rc == GLP_ENOPFS || status == GLP_NOFEAS { break }
            guard rc == 0, status == GLP_OPT else {
                throw SearchError.solver("GLPK stopped (glp_intopt \(rc), status \(status))")
            }
            let choice = column.map { cols in cols.firstIndex { glp_mip_col_val(lp, $0) > 0.5 } ?? 0 }
            found.append(choice)
            // The next solution differs from this one in at least minHamming layers.
            addRow(
                choice.enumerated().map { (column[$0.offset][$0.element], 1) }, type: GLP_UP, lower: 0,
                upper: Double(L - max(1, minHamming)))
        }
        return found
    }
}
