import Foundation

/// The gated delta rule of one sequence and one value head in transformers' chunked form
/// (`torch_chunk_gated_delta_rule`: the UT transform over chunks of Q positions), as matrix
/// products. With a chunk's state S₀ (Dk × Dv) at its start, Γᵢ = exp(Gᵢ) for the cumulative log
/// decay Gᵢ = Σ_{j≤i} g_j inside the chunk, K, Q (n × Dk), V (n × Dv) and β (n):
///
///     L[i][j] = −βᵢ (kᵢ·kⱼ) exp(Gᵢ − Gⱼ)  for j < i (else 0),   T = (I − L)⁻¹ (forward substitution)
///     Δ = T·(β ⊙ V) − T·(βΓ ⊙ K)·S₀                               every position's δᵢ at once
///     O = (Γ ⊙ Q)·S₀ + P·Δ,   P[i][j] = (qᵢ·kⱼ) exp(Gᵢ − Gⱼ) for j ≤ i (else 0)
///     S = Γ_last·S₀ + (exp(G_last − G) ⊙ K)ᵀ·Δ
///
/// which is the recurrence S' = aₜS, δₜ = βₜ(vₜ − S'ᵀkₜ), Sₜ = S' + kₜ ⊗ δₜ, oₜ = Sₜᵀqₜ
/// (``tp_gdn_scan_forward``) summed in another order: its cost is linear in T and most of it is
/// products of Q-row blocks. Every chunk's start state is written to `states` (chunk c at
/// c·Dk·Dv), which the backward pass (``tp_gdn_scan_backward``) recomputes each chunk from.
/// Strides: rows of q and k every `qks` floats, of v every `vs`, of g and β every `gs`, of o every
/// `os`. Runs on the calling thread (inside a worker).
public func deltaRuleChunkedForward(
    T: Int, Dk: Int, Dv: Int, chunk Q: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, qks: Int,
    v: UnsafePointer<Float>, vs: Int, g: UnsafePointer<Float>, beta: UnsafePointer<Float>, gs: Int,
    o: UnsafeMutablePointer<Float>, os: Int, states: UnsafeMutablePointer<Float>
) {
    let size = Dk * Dv
    // Scratch: the state, the chunk's triangles (Q × Q) and its row blocks.
    let floats = size + 3 * Q * Q + 4 * Q * Dk + 2 * Q * Dv + 2 * Q
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: floats)
    defer { scratch.deallocate() }
    scratch.initialize(repeating: 0, count: floats)
    var p = scratch
    func take(_ n: Int) -> UnsafeMutablePointer<Float> {
        defer { p += n }
        return p
    }
    let S = take(size), L = take(Q * Q), Tm = take(Q * Q), P = take(Q * Q)
    let kb = take(Q * Dk), kbe = take(Q * Dk), qe = take(Q * Dk), W = take(Q * Dk)
    let vb = take(Q * Dv), D = take(Q * Dv), G = take(Q), E = take(Q)
    var t0 = 0
    while t0 < T {
        let n = min(Q, T - t0)
        (states + (t0 / Q) * size).update(from: S, count: size)
        var acc: Float = 0
        for i in 0..<n {
            acc += g[(t0 + i) * gs]
            G[i] = acc
            E[i] = expf(g[(t0 + i) * gs])
        }
        for i in 0..<n {
            let b = beta[(t0 + i) * gs], e = expf(G[i])
            let kr = k + (t0 + i) * qks, qr = q + (t0 + i) * qks, vr = v + (t0 + i) * vs
            for d in 0..<Dk {
                kb[i * Dk + d] = b * kr[d]
                kbe[i * Dk + d] = b * e * kr[d]
                qe[i * Dk + d] = e * qr[d]
            }
            for d in 0..<Dv { vb[i * Dv + d] = b * vr[d] }
        }
        // L = −(βK)·Kᵀ ⊙ exp(Gᵢ − Gⱼ), strictly lower; P = Q·Kᵀ ⊙ exp(Gᵢ − Gⱼ), lower with the diagonal.
        gemm(transB: true, m: n, n: n, k: Dk, a: kb, lda: Dk, b: k + t0 * qks, ldb: qks, c: L, ldc: Q)
        gemm(transB: true, m: n, n: n, k: Dk, a: q + t0 * qks, lda: qks, b: k + t0 * qks, ldb: qks, c: P, ldc: Q)
        for i in 0..<n {
            // exp(Gᵢ − Gⱼ) for j = i, i−1, …: one factor exp(g_{j+1}) at a time (n exponentials a
            // chunk, not n²; the product rounds as the recurrence's decays do).
            var decay: Float = 1
            let L = L + i * Q, P = P + i * Q
            for j in stride(from: i, through: 0, by: -1) {
                if j < i {
                    decay *= E[j + 1]
                    L[j] = -L[j] * decay
                } else {
                    L[j] = 0
                }
                P[j] *= decay
            }
            for j in (i + 1)..<max(n, i + 1) {
                L[j] = 0
                P[j] = 0
            }
        }
        // T = (I − L)⁻¹, unit lower triangular: row i is eᵢ + Σ_{m<i} L[i][m]·T[m].
        for i in 0..<n {
            let row = Tm + i * Q
            for j in 0..<n { row[j] = j == i ? 1 : 0 }
            for m in 0..<i {
                let l = L[i * Q + m]
                if l == 0 { continue }
                let other = Tm + m * Q
                for j in 0...m { row[j] += l * other[j] }
            }
        }
        // Δ = T·(βV) − (T·(βΓK))·S₀.
        gemm(m: n, n: Dv, k: n, a: Tm, lda: Q, b: vb, ldb: Dv, c: D, ldc: Dv)
        gemm(m: n, n: Dk, k: n, a: Tm, lda: Q, b: kbe, ldb: Dk, c: W, ldc: Dk)
        gemm(m: n, n: Dv, k: Dk, alpha: -1, a: W, lda: Dk, b: S, ldb: Dv, beta: 1, c: D, ldc: Dv)
        // O = (ΓQ)·S₀ + P·Δ.
        let out = o + t0 * os
        gemm(m: n, n: Dv, k: Dk, a: qe, lda: Dk, b: S, ldb: Dv, c: out, ldc: os)
        gemm(m: n, n: Dv, k: n, a: P, lda: Q, b: D, ldb: Dv, beta: 1, c: out, ldc: os)
        // S = Γ_last·S₀ + (exp(G_last − G) ⊙ K)ᵀ·Δ.
        let last = G[n - 1]
        for i in 0..<n {
            let e = expf(last - G[i]), kr = k + (t0 + i) * qks
            for d in 0..<Dk { kb[i * Dk + d] = e * kr[d] }
        }
        let decay = expf(last)
        for i in 0..<size { S[i] *= decay }
        gemm(transA: true, m: Dk, n: Dv, k: n, a: kb, lda: Dk, b: D, ldb: Dv, beta: 1, c: S, ldc: Dv)
        t0 += n
    }
}

/// Mamba2's selective scan of one sequence and one group g of B and C in its chunked (SSD) form,
/// as matrix products: per chunk of Q positions with the start state S₀ (P × N) of head h, the
/// cumulative log decay cᵢ = Σ_{j≤i} Δⱼ·A_h inside the chunk, X (n × P), B, C (n × N):
///
///     Y = diag(exp(c))·C·S₀ᵀ + ((C·Bᵀ) ⊙ exp(cᵢ − cⱼ)[j ≤ i])·(Δ ⊙ X) + D_h·X
///     S = exp(c_last)·S₀ + (exp(c_last − c) ⊙ Δ ⊙ X)ᵀ·B
///
/// which is the recurrence Sₜ = exp(ΔₜA)·Sₜ₋₁ + Δₜ·xₜ ⊗ Bₜ, yₜ = Sₜ·Cₜ + D·xₜ
/// (``tp_mamba_scan_forward``, whose arguments and state layout it takes) summed in another
/// order; C·Bᵀ is shared by the group's heads. Runs on the calling thread (inside a worker).
public func mambaScanChunkedForward(
    T: Int, H: Int, P: Int, G: Int, N: Int, chunk Q: Int, group g: Int, xbc: UnsafePointer<Float>, xs: Int, I: Int,
    dt: UnsafePointer<Float>, dts: Int, A: UnsafePointer<Float>, D: UnsafePointer<Float>,
    y: UnsafeMutablePointer<Float>, ys: Int, states: UnsafeMutablePointer<Float>
) {
    let per = H / G, size = P * N
    let floats = per * size + 2 * Q * Q + 2 * Q * P + 2 * Q
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: floats)
    defer { scratch.deallocate() }
    scratch.initialize(repeating: 0, count: floats)
    let S = scratch, CB = S + per * size, M = CB + Q * Q, xd = M + Q * Q, xe = xd + Q * P, c = xe + Q * P
    let e = c + Q
    let bOffset = I + g * N, cOffset = I + G * N + g * N
    var t0 = 0
    while t0 < T {
        let n = min(Q, T - t0)
        // C·Bᵀ (n × n) of the group.
        gemm(
            transB: true, m: n, n: n, k: N, a: xbc + t0 * xs + cOffset, lda: xs, b: xbc + t0 * xs + bOffset, ldb: xs,
            c: CB, ldc: Q)
        for hh in 0..<per {
            let h = g * per + hh, Sh = S + hh * size
            (states + ((t0 / Q) * H + h) * size).update(from: Sh, count: size)
            var acc: Float = 0
            for i in 0..<n {
                acc += dt[(t0 + i) * dts + h] * A[h]
                c[i] = acc
                e[i] = expf(dt[(t0 + i) * dts + h] * A[h])
            }
            for i in 0..<n {
                let d = dt[(t0 + i) * dts + h], x = xbc + (t0 + i) * xs + h * P
                for p in 0..<P { xd[i * P + p] = d * x[p] }
                // exp(cᵢ − cⱼ) for j = i, i−1, …: one factor exp(Δ_{j+1}·A) at a time.
                var decay: Float = 1
                for j in stride(from: i, through: 0, by: -1) {
                    if j < i { decay *= e[j + 1] }
                    M[i * Q + j] = CB[i * Q + j] * decay
                }
                for j in (i + 1)..<max(n, i + 1) { M[i * Q + j] = 0 }
            }
            // Y = exp(c) ⊙ (C·S₀ᵀ) + M·(Δ ⊙ X) + D·X.
            let out = y + t0 * ys + h * P
            gemm(transB: true, m: n, n: P, k: N, a: xbc + t0 * xs + cOffset, lda: xs, b: Sh, ldb: N, c: out, ldc: ys)
            for i in 0..<n {
                let e = expf(c[i]), x = xbc + (t0 + i) * xs + h * P, row = out + i * ys
                for p in 0..<P { row[p] = e * row[p] + D[h] * x[p] }
            }
            gemm(m: n, n: P, k: n, a: M, lda: Q, b: xd, ldb: P, beta: 1, c: out, ldc: ys)
            // S = exp(c_last)·S₀ + (exp(c_last − c) ⊙ Δ ⊙ X)ᵀ·B.
            let last = c[n - 1]
            for i in 0..<n {
                let e = expf(last - c[i])
                for p in 0..<P { xe[i * P + p] = e * xd[i * P + p] }
            }
            let decay = expf(last)
            for i in 0..<size { Sh[i] *= decay }
            gemm(
                transA: true, m: P, n: N, k: n, a: xe, lda: P, b: xbc + t0 * xs + bOffset, ldb: xs, beta: 1, c: Sh,
                ldc: N)
        }
        t0 += n
    }
}
