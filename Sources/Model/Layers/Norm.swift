import Foundation

// Normalisation layers. x, y, dx, dy are (N, C) with N = B·T rows; mean, rstd are (N).

/// RMSNorm (llama): `y = x / sqrt(mean(x²) + eps) · w`.
/// Stores `rstd = 1 / sqrt(mean(x²) + eps)` per row for the backward pass.
func rmsNormForward(_ y: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, N: Int, C: Int, eps: Float) {
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
func rmsNormBackward(_ dx: UnsafeMutablePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
                     _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                     _ rstd: UnsafePointer<Float>, N: Int, C: Int) {
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
func layerNorm1PForward(_ y: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>,
                        _ rstd: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                        _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>, N: Int, C: Int, eps: Float) {
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
func layerNorm1PBackward(_ dx: UnsafeMutablePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
                         _ db: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>,
                         _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                         _ mean: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>, N: Int, C: Int) {
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
