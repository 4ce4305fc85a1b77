import Foundation
import Model
@testable import Search
import Testing

/// Issue 27, item 3: the layer-choice program solved by GLPK against every choice enumerated.
struct LayerChoiceTests {
    /// The K best choices that differ pairwise in H layers, by brute force: the best feasible
    /// choice, then the best that is H layers from each one kept, and so on.
    static func bruteForce(_ p: LayerChoiceProblem, count: Int, minHamming: Int) -> [[Int]] {
        var all: [[Int]] = [[]]
        for s in p.scores { all = all.flatMap { prefix in s.indices.map { prefix + [$0] } } }
        var kept: [[Int]] = []
        for c in all.filter(p.isFeasible).sorted(by: { p.score($0) < p.score($1) }) where kept.count < count {
            if kept.allSatisfy({ LayerChoiceProblem.hamming($0, c) >= minHamming }) { kept.append(c) }
        }
        return kept
    }

    @Test(arguments: 0..<12)
    func solverMatchesBruteForce(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) + 100)
        let L = 4 + seed % 3, V = 3 + seed % 2
        func uniform() -> Double { Double(rng.next() % 1_000_000) / 1_000_000 }
        let scores = (0..<L).map { _ in (0..<V).map { _ in uniform() } }
        // Two costs at byte scale (10^9), as memory budgets are: larger variants cost more.
        let costs = (0..<2).map { _ in (0..<L).map { _ in (0..<V).map { _ in 1e9 * uniform() } } }
        let limits = costs.map { c in 0.55 * c.reduce(0) { $0 + ($1.max() ?? 0) } }
        // Odd seeds: a minimum on the first cost too, which the scores below make bind.
        let minimums = seed % 2 == 1 ? [0.3 * costs[0].reduce(0) { $0 + ($1.max() ?? 0) }, 0] : [0, 0]
        let p = LayerChoiceProblem(scores: scores, costs: costs, limits: limits, minimums: minimums)
        let (K, H) = (4, 1 + seed % 3)
        let solved = try p.solve(count: K, minHamming: H)
        let expected = Self.bruteForce(p, count: K, minHamming: H)
        #expect(solved.count == expected.count, "seed \(seed): \(solved.count) vs \(expected.count) solutions")
        for (a, b) in zip(solved, expected) {
            #expect(p.isFeasible(a))
            #expect(abs(p.score(a) - p.score(b)) < 1e-9, "seed \(seed): \(a) \(p.score(a)) vs \(b) \(p.score(b))")
        }
        for i in solved.indices { for j in solved.indices where j > i {
            #expect(LayerChoiceProblem.hamming(solved[i], solved[j]) >= H)
        } }
    }

    /// A minimum binds: scores that favour the cheapest variants pick less than the minimum
    /// without it, and with it the cheapest choice that reaches it (as brute force finds).
    @Test func aMinimumBinds() throws {
        let costs: [[[Double]]] = [(0..<5).map { l in [1e9, 2e9 + Double(l) * 1e8, 3e9] }]
        let scores = costs[0].map { $0.map { $0 / 1e9 } }
        let free = LayerChoiceProblem(scores: scores, costs: costs, limits: [14e9])
        let floor = LayerChoiceProblem(scores: scores, costs: costs, limits: [14e9], minimums: [9.5e9])
        func total(_ c: [Int]) -> Double { zip(costs[0], c).reduce(0) { $0 + $1.0[$1.1] } }
        let a = try #require(try free.solve(count: 1, minHamming: 1).first)
        #expect(total(a) == 5e9)
        let b = try floor.solve(count: 3, minHamming: 1)
        #expect(!b.isEmpty && b.allSatisfy { total($0) >= 9.5e9 && total($0) <= 14e9 })
        let expected = Self.bruteForce(floor, count: 3, minHamming: 1)
        #expect(zip(b, expected).allSatisfy { abs(floor.score($0) - floor.score($1)) < 1e-9 } && b.count == expected.count)
        let impossible = LayerChoiceProblem(scores: scores, costs: costs, limits: [14e9], minimums: [15e9])
        #expect { _ = try impossible.solve(count: 1, minHamming: 1) } throws: { "\($0)".contains("minimum") }
    }

    @Test func infeasibleAndMalformedProblems() throws {
        let p = LayerChoiceProblem(scores: [[0, 1], [0, 1]], costs: [[[5, 4], [5, 4]]], limits: [7])
        #expect(try p.solve(count: 3, minHamming: 1).isEmpty, "no choice fits 7")
        let bad = LayerChoiceProblem(scores: [[0, 1]], costs: [[[1]]], limits: [1])
        #expect { _ = try bad.solve(count: 1, minHamming: 1) } throws: { "\($0)".contains("cost 0") }
    }
}
