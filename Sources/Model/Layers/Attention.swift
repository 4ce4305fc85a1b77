import Foundation

/// Shapes of causal grouped-query attention over a fused QKV buffer.
///
/// qkv is (B, T, (H+2G)·D): per row the H query heads, then G key heads, then G value heads.
/// Query head h reads key/value head g = h / (H/G). probs is (B, H, T, T) with zeros above
/// the diagonal; out is (B, T, H·D).
struct AttentionShape {
    let B: Int, T: Int, H: Int, G: Int, D: Int
    var qkvWidth: Int { (H + 2 * G) * D }
    var outWidth: Int { H * D }
    var groupSize: Int { H / G }
    var scale: Float { 1 / Float(D).squareRoot() }
}

/// `out = softmax(Q Kᵀ / √D + causal mask) V` for every (batch, head); stores the probabilities.
func attentionForward(_ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
                      _ qkv: UnsafePointer<Float>, _ s: AttentionShape) {
    let (T, H, G, D, W) = (s.T, s.H, s.G, s.D, s.qkvWidth)
    Parallel.chunks(s.B * H) { _, range in
        for bh in range {
            let b = bh / H, h = bh % H, g = h / s.groupSize
            let q = qkv + b * T * W + h * D
            let k = qkv + b * T * W + (H + g) * D
            let v = qkv + b * T * W + (H + G + g) * D
            let p = probs + bh * T * T
            // (T, T) = (T, D) · (T, D)ᵀ
            gemm(transB: true, m: T, n: T, k: D, alpha: s.scale, a: q, lda: W, b: k, ldb: W, c: p, ldc: T)
            for i in 0..<T {
                let row = p + i * T
                let m = maximum(row, count: i + 1)
                let inv = 1 / expShifted(row, count: i + 1, shift: m)
                for j in 0...i { row[j] *= inv }
                for j in (i + 1)..<T { row[j] = 0 }
            }
            // (T, D) = (T, T) · (T, D)
            gemm(m: T, n: D, k: T, a: p, lda: T, b: v, ldb: W, c: out + b * T * s.outWidth + h * D, ldc: s.outWidth)
        }
    }
}

/// Backward of ``attentionForward``. Writes (does not accumulate) dqkv. `scratch` holds
/// `Parallel.threads` blocks of T×T floats.
///
/// With P the probabilities and dO the output gradient: dP = dO Vᵀ, dV = Σ_heads Pᵀ dO,
/// dS = P ⊙ (dP − rowsum(P ⊙ dP)), dQ = dS K / √D, dK = Σ_heads dSᵀ Q / √D.
func attentionBackward(_ dqkv: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                       _ qkv: UnsafePointer<Float>, _ probs: UnsafePointer<Float>,
                       _ scratch: UnsafeMutablePointer<Float>, _ s: AttentionShape) {
    let (T, H, G, D, W) = (s.T, s.H, s.G, s.D, s.qkvWidth)
        // One work item per (batch, kv group) so that dK and dV accumulate without races.
    Parallel.chunks(s.B * G) { worker, range in
        let dp = scratch + worker * T * T
        for bg in range {
            let b = bg / G, g = bg % G
            let k = qkv + b * T * W + (H + g) * D
            let v = qkv + b * T * W + (H + G + g) * D
            let dk = dqkv + b * T * W + (H + g) * D
            let dv = dqkv + b * T * W + (H + G + g) * D
            for r in 0..<s.groupSize {
                let h = g * s.groupSize + r
                let first: Float = r == 0 ? 0 : 1
                let q = qkv + b * T * W + h * D
                let dq = dqkv + b * T * W + h * D
                let p = probs + (b * H + h) * T * T
                let dO = dout + b * T * s.outWidth + h * D
                // dP (T, T) = dO (T, D) · V (T, D)ᵀ
                gemm(transB: true, m: T, n: T, k: D, a: dO, lda: s.outWidth, b: v, ldb: W, c: dp, ldc: T)
                // dV (T, D) += Pᵀ (T, T) · dO (T, D)
                gemm(transA: true, m: T, n: D, k: T, a: p, lda: T, b: dO, ldb: s.outWidth, beta: first, c: dv, ldc: W)
                for i in 0..<T {
                    let pr = p + i * T, dr = dp + i * T
                    var dot: Float = 0
                    for j in 0...i { dot += pr[j] * dr[j] }
                    for j in 0...i { dr[j] = pr[j] * (dr[j] - dot) }
                    for j in (i + 1)..<T { dr[j] = 0 }
                }
                // dQ (T, D) = dS (T, T) · K (T, D) / √D
                gemm(m: T, n: D, k: T, alpha: s.scale, a: dp, lda: T, b: k, ldb: W, c: dq, ldc: W)
                // dK (T, D) += dSᵀ (T, T) · Q (T, D) / √D
                gemm(transA: true, m: T, n: D, k: T, alpha: s.scale, a: dp, lda: T, b: q, ldb: W, beta: first, c: dk, ldc: W)
            }
        }
    }
}
