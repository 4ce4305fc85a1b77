import Foundation

/// Validation loss overall and per language.
public struct EvaluationResult: Sendable, Equatable {
    /// Mean next-token loss per language (nats/token).
    public var perLanguage: [String: Double]
    /// Tokens scored per language.
    public var tokens: [String: Int]
    /// Token-weighted mean over every scored token.
    public var overall: Double
    /// Unweighted mean of the per-language losses.
    public var languageMean: Double
    /// The worst language's loss.
    public var worst: Double
    /// Per language, each scored window's summed loss and token count (for intervals by
    /// resampling windows; empty when the caller did not keep them).
    public var windows: [String: [WindowLoss]] = [:]

    public var json: JSON {
        [
            "overall": JSON(overall), "language_mean": JSON(languageMean), "worst": JSON(worst),
            "per_language": .object(perLanguage.mapValues { JSON($0) }),
            "tokens": .object(tokens.mapValues { JSON($0) })
        ]
    }
}

public enum Evaluation {
    /// Scores `model` on consecutive, non-overlapping windows of T+1 tokens from the start of each
    /// language's validation range, up to `maxTokensPerLanguage` predicted tokens per language
    /// (every language at least one window; see ``TokenShards/forEachWindowBatch(_:batch:sequence:maxTokensPerLanguage:_:)``).
    /// - Throws: ``ModelError/nonFinite(step:what:)`` if a loss is NaN (`step` names the caller's step).
    public static func validationLoss(
        model: DecoderModel, shards: TokenShards, split: String = "validation",
        batch: Int, sequence T: Int, maxTokensPerLanguage: Int, step: Int = 0,
        activations: Activations? = nil
    ) throws -> EvaluationResult {
        let acts = activations ?? Activations(config: model.config, batch: batch, sequence: T)
        precondition(acts.T == T)
        var tally = LossTally()
        try shards.forEachWindowBatch(split, batch: acts.B, sequence: T, maxTokensPerLanguage: maxTokensPerLanguage) {
            lang, tokens, targets in
            try model.forward(tokens: tokens, acts)
            _ = try model.loss(acts, targets: targets, gradient: false)
            tally.add(lang, rowLosses: UnsafeBufferPointer(acts.rowLosses), targets: targets, sequence: T)
        }
        return try tally.result(step: step)
    }

    /// Unigram baseline: the cross-entropy of validation tokens under the training split's token
    /// frequencies (add-one smoothed), per language — what a model must clearly beat.
    public static func unigramLoss(shards: TokenShards, maxTokensPerLanguage: Int) -> [String: Double] {
        let V = shards.vocabularySize
        var result: [String: Double] = [:]
        for lang in shards.languages {
            guard let train = shards.stats["train"]?[lang], let val = shards.stats["validation"]?[lang] else {
                continue
            }
            var counts = [Double](repeating: 1, count: V)
            for t in shards.tokens("train", start: train.tokenStart, count: train.tokens) { counts[Int(t)] += 1 }
            let total = counts.reduce(0, +)
            let n = min(val.tokens, maxTokensPerLanguage + 1)
            let tokens = shards.tokens("validation", start: val.tokenStart, count: n)
            var sum = 0.0
            for t in tokens.dropFirst() { sum -= log(counts[Int(t)] / total) }
            result[lang] = sum / Double(max(n - 1, 1))
        }
        return result
    }
}

/// One validation window's summed next-token loss and the tokens it scored.
public struct WindowLoss: Sendable, Equatable {
    public var sum: Double
    public var tokens: Int
    public init(sum: Double, tokens: Int) { self.sum = sum; self.tokens = tokens }
}

/// Per-language sums of per-token losses, turned into an ``EvaluationResult``.
public struct LossTally: Sendable {
    var sums: [String: Double] = [:]
    var counts: [String: Int] = [:]
    var order: [String] = []
    var windows: [String: [WindowLoss]] = [:]
    public init() {}

    /// Adds the losses of the rows whose target is not ignored. With `sequence` T, each block of
    /// T rows (one window) is also kept as a ``WindowLoss``.
    public mutating func add(
        _ language: String, rowLosses: UnsafeBufferPointer<Float>, targets: [Int32], sequence T: Int? = nil
    ) {
        if sums[language] == nil { order.append(language) }
        var sum = sums[language] ?? 0, n = counts[language] ?? 0
        for i in 0..<targets.count where targets[i] >= 0 { sum += Double(rowLosses[i]); n += 1 }
        sums[language] = sum
        counts[language] = n
        guard let T, T > 0 else { return }
        for w in 0..<(targets.count / T) {
            var ws = 0.0, wn = 0
            for i in (w * T)..<((w + 1) * T) where targets[i] >= 0 { ws += Double(rowLosses[i]); wn += 1 }
            if wn > 0 { windows[language, default: []].append(WindowLoss(sum: ws, tokens: wn)) }
        }
    }

    /// Means per language, token-weighted overall, unweighted mean and worst.
    /// - Throws: ``ModelError/nonFinite(step:what:)`` naming the language whose loss is not finite.
    public func result(step: Int) throws -> EvaluationResult {
        var perLanguage: [String: Double] = [:]
        for lang in order {
            let mean = sums[lang]! / Double(max(counts[lang]!, 1))
            guard mean.isFinite else { throw ModelError.nonFinite(step: step, what: "validation loss for '\(lang)'") }
            perLanguage[lang] = mean
        }
        let total = counts.values.reduce(0, +)
        let overall = perLanguage.reduce(0.0) { $0 + $1.value * Double(counts[$1.key]!) } / Double(max(total, 1))
        let mean = perLanguage.values.reduce(0, +) / Double(max(perLanguage.count, 1))
        return EvaluationResult(
            perLanguage: perLanguage, tokens: counts, overall: overall, languageMean: mean,
            worst: perLanguage.values.max() ?? 0, windows: windows)
    }
}

extension EvaluationResult {
    /// The result of the same evaluation had it scored `windows` (per language) instead: per-language
    /// means, token-weighted overall, unweighted mean and worst recomputed from the windows.
    public init(windows: [String: [WindowLoss]]) {
        var perLanguage: [String: Double] = [:], tokens: [String: Int] = [:]
        var total = 0.0, count = 0
        for (lang, ws) in windows where !ws.isEmpty {
            let s = ws.reduce(0.0) { $0 + $1.sum }, n = ws.reduce(0) { $0 + $1.tokens }
            perLanguage[lang] = s / Double(max(n, 1))
            tokens[lang] = n
            total += s
            count += n
        }
        self.init(
            perLanguage: perLanguage, tokens: tokens, overall: total / Double(max(count, 1)),
            languageMean: perLanguage.values.reduce(0, +) / Double(max(perLanguage.count, 1)),
            worst: perLanguage.values.max() ?? 0, windows: windows)
    }
}

extension TokenShards {
    /// Consecutive, non-overlapping windows of T+1 tokens from the start of each language's range
    /// in `split`, at most `max(1, maxTokensPerLanguage / T)` per language, batched B rows at a time:
    /// `body(language, tokens (B·T), targets (B·T, −1 = ignored))`. A language shorter than one
    /// window gets one partial window; a language with fewer than two tokens is skipped. Unused
    /// rows of the last batch have every target ignored.
    public func forEachWindowBatch(
        _ split: String = "validation", batch B: Int, sequence T: Int, maxTokensPerLanguage: Int,
        _ body: (_ language: String, _ tokens: [Int32], _ targets: [Int32]) throws -> Void
    ) rethrows {
        for lang in languages {
            guard let st = stats[split]?[lang], st.tokens >= 2 else { continue }
            let windows = min(max(1, (st.tokens - 1) / T), max(1, maxTokensPerLanguage / T))
            var w = 0
            while w < windows {
                let rows = min(B, windows - w)
                var tokens = [Int32](repeating: 0, count: B * T), targets = [Int32](repeating: -1, count: B * T)
                for r in 0..<rows {
                    let start = st.tokenStart + (w + r) * T
                    let len = min(T + 1, st.tokenEnd - start)
                    let window = self.tokens(split, start: start, count: len)
                    for t in 0..<(len - 1) { tokens[r * T + t] = window[t]; targets[r * T + t] = window[t + 1] }
                }
                try body(lang, tokens, targets)
                w += rows
            }
        }
    }
}
