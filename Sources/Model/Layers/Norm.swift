import Foundation

// Normalisation layers. x, y, dx, dy are (N, C) with N = B·T rows; mean, rstd are (N).

/// RMSNorm (llama): `y = x / sqrt(mean(x²) + eps) · w`.
/// Stores `rstd = 1 / sqrt(mean(x²) + eps)` per row for the backward pass.
func rmsNormForward(
    _ y: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, N: Int, C: Int, eps: Float
) {
    Parallel.chunks(N, minimumPerChunk: max(64, 16384 / C)) { _, rows in
        for n in rows {
            let xr = x + n * C, yr = y + n * C
            var ss: Float = 0
            for c in 0..<C { ss += xr[c] * xr[c] }
            let r = 1 / (ss / Float(C) + eps).squareRoot()
            rstd[n] = r
            for c in 0..<C { yr[c] = xr[c] * r * w[c] }
        }
    }
}

/// Backward of ``rmsNormForward``: `dx += r·(dy·w − x·r²·mean(dy·w·x))`, `dw += Σₙ dy·x·r`.
func rmsNormBackward(
    _ dx: UnsafeMutablePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
    _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
    _ rstd: UnsafePointer<Float>, N: Int, C: Int
) {
    Parallel.chunks(N, minimumPerChunk: max(64, 16384 / C)) { _, rows in
        for n in rows {
            let xr = x + n * C, dyr = dy + n * C, dxr = dx + n * C
            let r = rstd[n]
            var dot: Float = 0
            for c in 0..<C { dot += dyr[c] * w[c] * xr[c] }
            let k = dot * r * r / Float(C)
            for c in 0..<C { dxr[c] += r * (dyr[c] * w[c] - xr[c] * k) }
        }
    }
    for n in 0..<N {
        let xr = x + n * C, dyr = dy + n * C
        let r = rstd[n]
        for c in 0..<C { dw[c] += dyr[c] * xr[c] * r }
    }
}

/// LayerNorm1P (nemotron): `y = (x − μ)·rstd·(1 + w) + b`, with `rstd = 1/sqrt(var + eps)`
/// (biased variance, as `torch.nn.functional.layer_norm`).
func layerNorm1PForward(
    _ y: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>,
    _ rstd: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>, N: Int, C: Int, eps: Float
) {
    Parallel.chunks(N, minimumPerChunk: max(64, 16384 / C)) { _, rows in
        for n in rows {
            let xr = x + n * C, yr = y + n * C
            var s: Float = 0
            for c in 0..<C { s += xr[c] }
            let mu = s / Float(C)
            var v: Float = 0
            for c in 0..<C { let d = xr[c] - mu; v += d * d }
            let r = 1 / (v / Float(C) + eps).squareRoot()
            mean[n] = mu
            rstd[n] = r
            for c in 0..<C { yr[c] = (xr[c] - mu) * r * (1 + w[c]) + b[c] }
        }
    }
}

/// Backward of ``layerNorm1PForward``: with x̂ = (x−μ)·r and g = dy·(1+w),
/// `dx += r·(g − mean(g) − x̂·mean(g·x̂))`, `dw += Σₙ dy·x̂`, `db += Σₙ dy`.
func layerNorm1PBackward(
    _ dx: UnsafeMutablePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
    _ db: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>,
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
    _ mean: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>, N: Int, C: Int
) {
    Parallel.chunks(N, minimumPerChunk: max(64, 16384 / C)) { _, rows in
        for n in rows {
            let xr = x + n * C, dyr = dy + n * C, dxr = dx + n * C
            let mu = mean[n], r = rstd[n]
            var sg: Float = 0, sgx: Float = 0
            for c in 0..<C {
                let g = dyr[c] * (1 + w[c])
                sg += g
                sgx += g * (xr[c] - mu) * r
            }
            sg /= Float(C); sgx /= Float(C)
            for c in 0..<C {
                let xh = (xr[c] - mu) * r
                dxr[c] += r * (dyr[c] * (1 + w[c]) - sg - xh * sgx)
            }
        }
    }
    for n in 0..<N {
        let xr = x + n * C, dyr = dy + n * C
        let mu = mean[n], r = rstd[n]
        for c in 0..<C {
            dw[c] += dyr[c] * (xr[c] - mu) * r
            db[c] += dyr[c]
        }
    }
}

/// Qwen3's per-head RMSNorm on queries and keys, in place on a fused qkv buffer (rows of
/// (H+2G)·D): each of the H query heads (weight `qWeight`, D) and G key heads (`kWeight`) of a
/// row is normalised over its D dimensions; values are left alone. The inputs are copied to
/// `saving` (rows of (H+G)·D) and `rstd` (rows of H+G) for the backward pass.
func headNormForward(
    _ qkv: UnsafeMutablePointer<Float>, saving xs: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
    qWeight: UnsafePointer<Float>, kWeight: UnsafePointer<Float>, rows N: Int, _ s: AttentionShape, eps: Float
) {
    let (H, G, D, W) = (s.H, s.G, s.D, s.qkvWidth), heads = H + G
    Parallel.chunks(N, minimumPerChunk: max(16, 8192 / max(1, heads * D))) { _, rows in
        for n in rows {
            for h in 0..<heads {
                let v = qkv + n * W + h * D, x = xs + (n * heads + h) * D, w = h < H ? qWeight : kWeight
                x.update(from: v, count: D)
                var ss: Float = 0
                for d in 0..<D { ss += x[d] * x[d] }
                let r = 1 / (ss / Float(D) + eps).squareRoot()
                rstd[n * heads + h] = r
                for d in 0..<D { v[d] = x[d] * r * w[d] }
            }
        }
    }
}

/// Backward of ``headNormForward``, in place: on entry `dqkv` holds the gradient with respect
/// to the normalised heads, on exit with respect to their inputs; `dqWeight`/`dkWeight` += Σ dy·x·r.
func headNormBackward(
    _ dqkv: UnsafeMutablePointer<Float>, _ xs: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    qWeight: UnsafePointer<Float>, kWeight: UnsafePointer<Float>,
    dqWeight: UnsafeMutablePointer<Float>, dkWeight: UnsafeMutablePointer<Float>, rows N: Int, _ s: AttentionShape
) {
    let (H, G, D, W) = (s.H, s.G, s.D, s.qkvWidth), heads = H + G
    // Weight gradients first (they read dy), one sequential pass so that the sums need no merging.
    for n in 0..<N {
        for h in 0..<heads {
            let dy = dqkv + n * W + h * D, x = xs + (n * heads + h) * D, r = rstd[n * heads + h]
            let dw = h < H ? dqWeight : dkWeight
            for d in 0..<D { dw[d] += dy[d] * x[d] * r }
        }
    }
    Parallel.chunks(N, minimumPerChunk: max(16, 8192 / max(1, heads * D))) { _, rows in
        for n in rows {
            for h in 0..<heads {
                let dy = dqkv + n * W + h * D, x = xs + (n * heads + h) * D, r = rstd[n * heads + h]
                let w = h < H ? qWeight : kWeight
                var dot: Float = 0
                for d in 0..<D { dot += dy[d] * w[d] * x[d] }
                let k = dot * r * r / Float(D)
                for d in 0..<D { dy[d] = r * (dy[d] * w[d] - x[d] * k) }
            }
        }
    }
}

/// `x[n, :] += bias` for N rows of `width`.
func addRowBias(_ x: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows N: Int, width: Int) {
    for n in 0..<N {
        let row = x + n * width
        for i in 0..<width { row[i] += bias[i] }
    }
}

/// `sums[i] += Σₙ x[n, i]` for N rows of `width` (a bias's gradient).
func addColumnSums(_ sums: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows N: Int, width: Int) {
    for n in 0..<N {
        let row = x + n * width
        for i in 0..<width { sums[i] += row[i] }
    }
}
