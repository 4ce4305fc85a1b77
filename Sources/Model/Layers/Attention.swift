import Foundation

/// Shapes of causal grouped-query attention over a fused QKV buffer.
///
/// qkv is (B, T, (H+2G)·D): per row the H query heads, then G key heads, then G value heads.
/// Query head h reads key/value head g = h / (H/G) (grouped-query attention), or g = h mod G
/// when `interleaved` (JetMoE repeats the G key/value heads once per chosen expert). probs is
/// (B, H, T, T) with zeros above the diagonal; out is (B, T, H·D).
struct AttentionShape {
    let B: Int, T: Int, H: Int, G: Int, D: Int
    var interleaved = false
    /// Sliding window W (query i sees keys i−W < j ≤ i, as transformers' sliding-window mask);
    /// 0 for full causal attention.
    var window = 0
    /// The first key query row i sees.
    func firstKey(_ i: Int) -> Int { window > 0 ? max(0, i - window + 1) : 0 }
    /// The key/value head query head h reads.
    func group(_ h: Int) -> Int { interleaved ? h % G : h / groupSize }
    /// The r-th query head reading key/value head g.
    func head(group g: Int, _ r: Int) -> Int { interleaved ? r * G + g : g * groupSize + r }
    var qkvWidth: Int { (H + 2 * G) * D }
    var outWidth: Int { H * D }
    var groupSize: Int { H / G }
    var scale: Float { 1 / Float(D).squareRoot() }
    /// Query rows are processed in blocks; block [r0, r1) only needs keys 0..<r1, so the
    /// products skip most of the masked upper triangle (62.5% of the full T×T work at 4 blocks).
    var block: Int { max(32, (T + 3) / 4) }
}

/// `out = softmax(Q Kᵀ / √D + causal mask) V` for every (batch, head); stores the probabilities
/// (zero outside the causal, and sliding, window: the backward pass relies on it).
func attentionForward(
    _ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
    _ qkv: UnsafePointer<Float>, _ s: AttentionShape
) {
    let (T, H, G, D, W) = (s.T, s.H, s.G, s.D, s.qkvWidth)
    Parallel.chunks(s.B * H) { _, range in
        for bh in range {
            let b = bh / H, h = bh % H, g = s.group(h)
            let q = qkv + b * T * W + h * D
            let k = qkv + b * T * W + (H + g) * D
            let v = qkv + b * T * W + (H + G + g) * D
            let p = probs + bh * T * T
            let o = out + b * T * s.outWidth + h * D
            for r0 in stride(from: 0, to: T, by: s.block) {
                let r1 = min(T, r0 + s.block)
                // S[r0..<r1, 0..<r1] (rows, r1) = Q[r0..<r1] (rows, D) · K[0..<r1] (r1, D)ᵀ / √D
                gemm(
                    transB: true, m: r1 - r0, n: r1, k: D, alpha: s.scale, a: q + r0 * W, lda: W, b: k, ldb: W,
                    c: p + r0 * T, ldc: T)
                for i in r0..<r1 {
                    let row = p + i * T, lo = s.firstKey(i)
                    let m = maximum(row + lo, count: i + 1 - lo)
                    let inv = 1 / expShifted(row + lo, count: i + 1 - lo, shift: m)
                    for j in 0..<lo { row[j] = 0 }
                    for j in lo...i { row[j] *= inv }
                    for j in (i + 1)..<T { row[j] = 0 }
                }
                // O[r0..<r1] (rows, D) = P[r0..<r1, 0..<r1] · V[0..<r1] (r1, D)
                gemm(
                    m: r1 - r0, n: D, k: r1, a: p + r0 * T, lda: T, b: v, ldb: W, c: o + r0 * s.outWidth,
                    ldc: s.outWidth)
            }
        }
    }
}

/// Backward of ``attentionForward``. Writes (does not accumulate) dqkv. `scratch` holds
/// `Parallel.threads` blocks of T×T floats.
///
/// With P the probabilities and dO the output gradient: dP = dO Vᵀ, dV = Σ_heads Pᵀ dO,
/// dS = P ⊙ (dP − rowsum(P ⊙ dP)), dQ = dS K / √D, dK = Σ_heads dSᵀ Q / √D.
func attentionBackward(
    _ dqkv: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
    _ qkv: UnsafePointer<Float>, _ probs: UnsafePointer<Float>,
    _ scratch: UnsafeMutablePointer<Float>, _ s: AttentionShape
) {
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
            for t in 0..<T {
                (dk + t * W).update(repeating: 0, count: D)
                (dv + t * W).update(repeating: 0, count: D)
            }
            for r in 0..<s.groupSize {
                let h = s.head(group: g, r)
                let q = qkv + b * T * W + h * D
                let dq = dqkv + b * T * W + h * D
                let p = probs + (b * H + h) * T * T
                let dO = dout + b * T * s.outWidth + h * D
                for r0 in stride(from: 0, to: T, by: s.block) {
                    let r1 = min(T, r0 + s.block), rows = r1 - r0
                    let pb = p + r0 * T, db = dp + r0 * T
                    // dP (rows, r1) = dO[r0..<r1] (rows, D) · V[0..<r1] (r1, D)ᵀ
                    gemm(
                        transB: true, m: rows, n: r1, k: D, a: dO + r0 * s.outWidth, lda: s.outWidth, b: v, ldb: W,
                        c: db, ldc: T)
                    // dV[0..<r1] (r1, D) += Pᵀ (r1, rows) · dO[r0..<r1] (rows, D)
                    gemm(
                        transA: true, m: r1, n: D, k: rows, a: pb, lda: T, b: dO + r0 * s.outWidth, ldb: s.outWidth,
                        beta: 1, c: dv, ldc: W)
                    for i in r0..<r1 {
                        let pr = p + i * T, dr = dp + i * T
                        var dot: Float = 0
                        for j in 0...i { dot += pr[j] * dr[j] }
                        for j in 0...i { dr[j] = pr[j] * (dr[j] - dot) }
                        for j in (i + 1)..<r1 { dr[j] = 0 }
                    }
                    // dQ[r0..<r1] (rows, D) = dS (rows, r1) · K[0..<r1] (r1, D) / √D
                    gemm(m: rows, n: D, k: r1, alpha: s.scale, a: db, lda: T, b: k, ldb: W, c: dq + r0 * W, ldc: W)
                    // dK[0..<r1] (r1, D) += dSᵀ (r1, rows) · Q[r0..<r1] (rows, D) / √D
                    gemm(
                        transA: true, m: r1, n: D, k: rows, alpha: s.scale, a: db, lda: T, b: q + r0 * W, ldb: W,
                        beta: 1, c: dk, ldc: W)
                }
            }
        }
    }
}
