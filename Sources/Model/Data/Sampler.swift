import Foundation

/// How training batches weigh languages.
public enum LanguageSampling: Sendable, Equatable {
    /// q_i ∝ p_i^α, p_i language i's share of training tokens (α = 1 natural, 0.3 common, 0 uniform).
    case temperature(Double)
    /// UniMax (Chung et al., 2023): a token budget spread uniformly over languages, no language
    /// repeated more than `maxEpochs` times; what a small language cannot use goes to the others.
    case unimax(budgetTokens: Int, maxEpochs: Double)

    /// Sampling probabilities for languages with `tokens[i]` training tokens.
    public func probabilities(tokens: [Int]) -> [Double] {
        let total = Double(tokens.reduce(0, +))
        switch self {
        case let .temperature(alpha):
            let w = tokens.map { $0 > 0 ? pow(Double($0) / total, alpha) : 0 }
            let s = w.reduce(0, +)
            return w.map { $0 / s }
        case let .unimax(budget, maxEpochs):
            var allocation = [Double](repeating: 0, count: tokens.count)
            var remaining = Double(budget)
            let order = tokens.indices.sorted { tokens[$0] < tokens[$1] }
            for (k, i) in order.enumerated() {
                let share = remaining / Double(order.count - k)
                allocation[i] = min(share, maxEpochs * Double(tokens[i]))
                remaining -= allocation[i]
            }
            let s = allocation.reduce(0, +)
            return allocation.map { $0 / s }
        }
    }
}

/// Draws training batches: for each of B rows a language (by ``LanguageSampling``) and a
/// uniformly placed window of T+1 tokens inside that language's range. Batch `step` depends
/// only on (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
public struct BatchSampler: Sendable {
    public let languages: [String]
    public let probabilities: [Double]
    let ranges: [Range<Int>]
    let shards: TokenShards
    let split: String
    public let batch: Int, sequence: Int
    public let seed: UInt64

    /// - Throws: ``ModelError/invalidInput(_:)`` when a language has fewer than T+1 tokens.
    public init(
        shards: TokenShards, split: String = "train", batch: Int, sequence: Int,
        sampling: LanguageSampling, seed: UInt64, only language: String? = nil
    ) throws {
        let stats = shards.stats[split] ?? [:]
        var langs = shards.languages.filter { (stats[$0]?.tokens ?? 0) > 0 }
        if let language {
            guard langs.contains(language) else {
                throw ModelError.invalidInput(
                    "language '\(language)' is not in the corpus (\(langs.joined(separator: ", ")))")
            }
            langs = [language]
        }
        guard !langs.isEmpty else { throw ModelError.invalidInput("the corpus has no \(split) tokens in any language") }
        for l in langs where stats[l]!.tokens < sequence + 1 {
            throw ModelError.invalidInput(
                "language '\(l)' has \(stats[l]!.tokens) \(split) tokens, fewer than one window of \(sequence + 1)")
        }
        languages = langs
        ranges = langs.map { stats[$0]!.tokenStart..<stats[$0]!.tokenEnd }
        probabilities = sampling.probabilities(tokens: langs.map { stats[$0]!.tokens })
        self.shards = shards
        self.split = split
        self.batch = batch
        self.sequence = sequence
        self.seed = seed
    }

    /// Tokens (B·T) and next-token targets (B·T) of batch `step`, and each row's language index.
    public func batch(step: Int) -> (tokens: [Int32], targets: [Int32], languages: [Int]) {
        var rng = SeededGenerator(seed: seed ^ SeededGenerator.mix(UInt64(step) &+ 0x5851_F42D_4C95_7F2D))
        let T = sequence
        var tokens = [Int32](repeating: 0, count: batch * T), targets = tokens
        var rowLanguages: [Int] = []
        var window = [Int32](repeating: 0, count: T + 1)
        for b in 0..<batch {
            let u = rng.uniform()
            var acc = 0.0, li = probabilities.count - 1
            for (i, p) in probabilities.enumerated() { acc += p; if u < acc { li = i; break } }
            let r = ranges[li]
            let start = r.lowerBound + Int(rng.next() % UInt64(r.count - T))
            window.withUnsafeMutableBufferPointer {
                shards.tokens(split, start: start, count: T + 1, into: $0.baseAddress!)
            }
            for t in 0..<T { tokens[b * T + t] = window[t]; targets[b * T + t] = window[t + 1] }
            rowLanguages.append(li)
        }
        return (tokens, targets, rowLanguages)
    }
}
