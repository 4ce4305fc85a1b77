import Foundation

/// How rotary frequencies are rescaled for long contexts: transformers' `rope_type` with its
/// parameters (`rope_parameters` in v5 configs, `rope_scaling` in v4), computed as
/// `transformers.modeling_rope_utils` does.
///
/// With R rotary dimensions, i < R/2 and base θ, the default inverse frequencies are
/// `inv[i] = 1 / θ^(2i/R)` (float32), and the angle of position t is `t · inv[i]`:
/// - `linear`: `inv[i] / factor`.
/// - `dynamic` (NTK): for a sequence of T > `max_position_embeddings` (M) positions,
///   θ' = θ · (factor·T/M − (factor − 1))^(R/(R−2)); θ itself for T ≤ M. (transformers caches
///   the largest T seen across calls; Topiary computes each sequence length as a fresh model
///   would.)
/// - `llama3`: wavelengths λ = 2π/inv longer than O/`low_freq_factor` (O: `original_max_position_embeddings`,
///   `max_position_embeddings` when absent, as transformers defaults it)
///   are divided by `factor`; those shorter than O/`high_freq_factor` kept; in between
///   interpolated with s = (O/λ − low)/(high − low): `(1 − s)·inv/factor + s·inv`.
/// - `yarn`: extrapolated `1/θ^(2i/R)` and interpolated `1/(factor·θ^(2i/R))` blended by a
///   linear ramp between the correction dimensions of `beta_fast` and `beta_slow` (floored and
///   ceiled when `truncate`, the default); cos and sin are multiplied by the attention factor
///   (given, or `0.1·mscale·ln(factor) + 1` over the same with `mscale_all_dim`).
/// Agrees with transformers to float32 rounding of the frequencies (conformance fixtures
/// `llama_rope_*`, `qwen2_yarn`).
public struct RopeScaling: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        case `default`, linear, dynamic, llama3, yarn
    }
    public var kind: Kind
    public var factor: Double?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var originalMaxPositionEmbeddings: Int?
    public var attentionFactor: Double?
    public var betaFast: Double?
    public var betaSlow: Double?
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var truncate: Bool?

    public static let none = RopeScaling(kind: .default)

    public init(
        kind: Kind, factor: Double? = nil, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
        originalMaxPositionEmbeddings: Int? = nil, attentionFactor: Double? = nil, betaFast: Double? = nil,
        betaSlow: Double? = nil, mscale: Double? = nil, mscaleAllDim: Double? = nil, truncate: Bool? = nil
    ) {
        self.kind = kind; self.factor = factor; self.lowFreqFactor = lowFreqFactor; self.highFreqFactor = highFreqFactor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings; self.attentionFactor = attentionFactor
        self.betaFast = betaFast; self.betaSlow = betaSlow; self.mscale = mscale; self.mscaleAllDim = mscaleAllDim
        self.truncate = truncate
    }

    /// The keys each kind reads (besides `rope_type`, `type`, `rope_theta`, `partial_rotary_factor`).
    static func keys(of kind: Kind) -> [String] {
        switch kind {
        case .default: return []
        case .linear, .dynamic: return ["factor"]
        case .llama3: return ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
        case .yarn:
            return [
                "factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                "mscale", "mscale_all_dim", "truncate"
            ]
        }
    }

    /// The parameters as transformers writes them inside `rope_parameters` (without `rope_theta`).
    var json: [String: JSON] {
        var out: [String: JSON] = ["rope_type": .string(kind.rawValue)]
        func put(_ key: String, _ v: Double?) { if let v { out[key] = .float(v) } }
        put("factor", factor); put("low_freq_factor", lowFreqFactor); put("high_freq_factor", highFreqFactor)
        if let o = originalMaxPositionEmbeddings { out["original_max_position_embeddings"] = JSON(o) }
        put("attention_factor", attentionFactor); put("beta_fast", betaFast); put("beta_slow", betaSlow)
        put("mscale", mscale); put("mscale_all_dim", mscaleAllDim)
        if let t = truncate { out["truncate"] = .bool(t) }
        return out
    }

    /// Checks the values each kind needs.
    /// - Throws: ``ModelError/invalidConfig(file:key:reason:)`` naming `path.key`.
    func validate(path: String, file: String) throws {
        func fail(_ key: String, _ reason: String) -> ModelError {
            .invalidConfig(file: file, key: "\(path).\(key)", reason: reason)
        }
        func positive(_ key: String, _ v: Double?) throws {
            guard let v else { throw fail(key, "missing (rope_type '\(kind.rawValue)' needs it)") }
            if !(v > 0 && v.isFinite) { throw fail(key, "must be a positive number, got \(v)") }
        }
        switch kind {
        case .default: return
        case .linear, .dynamic:
            try positive("factor", factor)
        case .llama3:
            try positive("factor", factor); try positive("low_freq_factor", lowFreqFactor);
            try positive("high_freq_factor", highFreqFactor)
            if highFreqFactor! <= lowFreqFactor! {
                throw fail(
                    "high_freq_factor", "\(highFreqFactor!) must be greater than low_freq_factor \(lowFreqFactor!)")
            }
        case .yarn:
            if factor != nil { try positive("factor", factor) }
            if let a = attentionFactor, !(a > 0) { throw fail("attention_factor", "must be positive, got \(a)") }
        }
        if let o = originalMaxPositionEmbeddings, o <= 0 {
            throw fail("original_max_position_embeddings", "must be positive, got \(o)")
        }
    }

    /// Inverse frequencies (R/2 of them, float32) and the factor cos and sin are multiplied by,
    /// for sequences of `sequence` positions.
    /// - Parameters:
    ///   - R: rotary dimensions; `theta`: the base; `maxPositions`: `max_position_embeddings`.
    public func frequencies(R: Int, theta: Double, maxPositions: Int, sequence: Int) -> (
        inverse: [Float], attention: Float
    ) {
        let half = R / 2
        // 1 / base^(2i/R) rounded to float32 (transformers computes the power in float32; the
        // two agree to an ulp or so).
        func standard(_ base: Double) -> [Float] {
            (0..<half).map { i in Float(1.0 / pow(base, Double(2 * i) / Double(R))) }
        }
        switch kind {
        case .default:
            return (standard(theta), 1)
        case .linear:
            let f = Float(factor!)
            return (standard(theta).map { $0 / f }, 1)
        case .dynamic:
            let f = factor!, M = Double(maxPositions)
            let seq = Double(max(sequence, maxPositions))
            let base = theta * pow(f * seq / M - (f - 1), Double(R) / Double(R - 2))
            return (standard(base), 1)
        case .llama3:
            let inv = standard(theta)
            let f = Float(factor!), low = Float(lowFreqFactor!), high = Float(highFreqFactor!)
            let old = Float(originalMaxPositionEmbeddings ?? maxPositions)
            let lowWavelen = old / low, highWavelen = old / high
            return (
                inv.map { v in
                    let wavelen = Float(2 * Double.pi) / v
                    var scaled = wavelen > lowWavelen ? v / f : v
                    if !(wavelen < highWavelen) && !(wavelen > lowWavelen) {
                        let s = (old / wavelen - low) / (high - low)
                        scaled = (1 - s) * scaled / f + s * scaled
                    }
                    return scaled
                }, 1
            )
        case .yarn:
            let original = originalMaxPositionEmbeddings ?? maxPositions
            let f = factor ?? Double(maxPositions) / Double(original)
            func mscaleOf(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            let attention: Double
            if let a = attentionFactor {
                attention = a
            } else if let m = mscale, let all = mscaleAllDim, m != 0, all != 0 {
                attention = mscaleOf(f, m) / mscaleOf(f, all)
            } else {
                attention = mscaleOf(f)
            }
            let fast = (betaFast.flatMap { $0 == 0 ? nil : $0 }) ?? 32,
                slow = (betaSlow.flatMap { $0 == 0 ? nil : $0 }) ?? 1
            func correctionDim(_ rotations: Double) -> Double {
                Double(R) * log(Double(original) / (rotations * 2 * Double.pi)) / (2 * log(theta))
            }
            var low = correctionDim(fast), high = correctionDim(slow)
            if truncate ?? true { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0); high = min(high, Double(R - 1))
            if low == high { high += 0.001 }
            let pos = (0..<half).map { i in Float(pow(theta, Double(2 * i) / Double(R))) }
            let ff = Float(f)
            return (
                (0..<half).map { i in
                    let ramp = min(max((Float(i) - Float(low)) / Float(high - low), 0), 1)
                    let extrapolationFactor = 1 - ramp
                    let extrapolation = 1 / pos[i], interpolation = 1 / (ff * pos[i])
                    return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
                }, Float(attention)
            )
        }
    }
}
