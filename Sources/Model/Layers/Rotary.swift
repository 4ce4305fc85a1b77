import Foundation

/// Rotary position embeddings as transformers computes them: for rotary dimension R (= D for
/// llama, `Int(D·partial_rotary_factor)` for nemotron) and i < R/2,
/// `inv_freq[i] = 1 / theta^(2i/R)` (float32), angle = t · inv_freq[i] (float32 product), and
/// the pair (x[i], x[i+R/2]) is rotated by that angle ("rotate_half" convention). Dimensions
/// R..<D pass through unchanged. ``ModelConfig/rope`` rescales the frequencies (and, for yarn,
/// multiplies cos and sin by its attention factor): see ``RopeScaling``.
struct RotaryTable {
    let rotaryDim: Int
    let T: Int
    /// cos and sin, (T, R/2).
    let cos: [Float]
    let sin: [Float]

    init(config: ModelConfig, T: Int) {
        let R = config.rotaryDim, half = R / 2
        rotaryDim = R
        self.T = T
        var c = [Float](repeating: 0, count: T * half), s = c
        let (inverse, scale) = config.rope.frequencies(
            R: R, theta: config.ropeTheta,
            maxPositions: config.maxPositionEmbeddings, sequence: T)
        for i in 0..<half {
            let invFreq = inverse[i]
            for t in 0..<T {
                let angle = Float(t) * invFreq
                c[t * half + i] = Float(Foundation.cos(Double(angle))) * scale
                s[t * half + i] = Float(Foundation.sin(Double(angle))) * scale
            }
        }
        cos = c
        sin = s
    }

    /// Rotates `heads` consecutive heads of D floats in each of N rows, all at position `t` (one
    /// decoded token per sequence), in place.
    func apply(_ x: UnsafeMutablePointer<Float>, rows N: Int, stride: Int, heads: Int, D: Int, position t: Int) {
        precondition(t < T)
        let half = rotaryDim / 2
        for n in 0..<N {
            for h in 0..<heads {
                let v = x + n * stride + h * D
                for i in 0..<half {
                    let a = v[i], b = v[i + half], co = cos[t * half + i], si = sin[t * half + i]
                    v[i] = a * co - b * si
                    v[i + half] = b * co + a * si
                }
            }
        }
    }

    /// Rotates `heads` consecutive heads of D floats in each row, in place.
    /// `x` points at the first head of row 0; rows are `stride` floats apart; row n is position
    /// n mod T. `inverse` applies the transpose rotation (the backward pass).
    func apply(_ x: UnsafeMutablePointer<Float>, rows N: Int, stride: Int, heads: Int, D: Int, inverse: Bool) {
        let half = rotaryDim / 2
        cos.withUnsafeBufferPointer { cp in
            sin.withUnsafeBufferPointer { sp in
                let cp = cp.baseAddress!, sp = sp.baseAddress!
                Parallel.chunks(N, minimumPerChunk: max(64, 8192 / max(1, heads * D))) { _, rows in
                    for n in rows {
                        let t = n % T
                        let cr = cp + t * half, sr = sp + t * half
                        for h in 0..<heads {
                            let v = x + n * stride + h * D
                            for i in 0..<half {
                                let a = v[i], b = v[i + half]
                                let co = cr[i], si = inverse ? -sr[i] : sr[i]
                                v[i] = a * co - b * si
                                v[i + half] = b * co + a * si
                            }
                        }
                    }
                }
            }
        }
    }
}
