import CKernels
import Foundation

/// Mamba2's mixer (transformers' `NemotronHMamba2Mixer`, its PyTorch path), on the normed
/// input u (N, C) of a layer:
///
///     z, xBC, dt = split(u · W_inᵀ, [I, convDim, H])
///     x, B, C    = split(SiLU(causal depthwise conv(xBC) + bias), [I, G·N, G·N])
///     Δ          = clamp(softplus(dt + dt_bias), time_step_limit),  A = −exp(A_log)
///     y          = the selective scan of x, Δ, A, B, C, plus D·x      (in its chunked form,
///                  ``mambaScanChunkedForward``; the backward pass recomputes each chunk by the
///                  recurrence, ``tp_mamba_scan_backward``)
///     mid        = residual + RMSNorm_grouped(y · SiLU(z)) · W_outᵀ
///
/// The grouped RMSNorm normalises each of the G groups of I/G channels on its own.
extension DecoderModel {
    func mambaForward(_ l: Int, _ o: MambaOffsets, _ m: Activations.MambaActivations, _ acts: Activations) {
        let P = parameters.pointer, a = acts.layers[l], s = o.shape
        let (B, T, N, C) = (acts.B, acts.T, acts.N, config.hiddenSize)
        let (I, W, Wc, H) = (s.innerWidth, s.projectionWidth, s.convWidth, s.heads)
        gemm(transB: true, m: N, n: W, k: C, a: a.norm1, lda: C, b: P + o.input, ldb: C, c: m.projection, ldc: W)
        for b in 0..<B {
            tp_causal_conv_forward(
                T, Wc, s.convKernel, m.projection + b * T * W + I, W, P + o.conv, o.convBias.map { P + $0 },
                m.convPre + b * T * Wc, Wc)
        }
        for i in 0..<(N * Wc) { m.xbc[i] = silu(m.convPre[i]) }
        for n in 0..<N {
            for h in 0..<H { m.dt[n * H + h] = mambaTimeStep(m.projection[n * W + I + Wc + h], o, head: h) }
        }
        let Q = config.mambaChunkSize, stateFloats = scanStateFloats(s, T: T)
        // Each (sequence, group) task writes its own heads' y and states.
        forEachSequenceAndGroup(o, B: B) { b, g, A, D in
            mambaScanChunkedForward(
                T: T, H: H, P: s.headDim, G: s.groups, N: s.stateSize, chunk: Q, group: g, xbc: m.xbc + b * T * Wc,
                xs: Wc, I: I, dt: m.dt + b * T * H, dts: H, A: A, D: D, y: m.y + b * T * I, ys: I,
                states: m.states + b * stateFloats)
        }
        // normed = w · h / rms(h) per group, h = y · SiLU(z); masked channels leave the mean.
        var kept = [Bool](repeating: true, count: I)
        for h in masks.mambaHeads[l] ?? [] { for p in 0..<s.headDim { kept[h * s.headDim + p] = false } }
        for p in masks.mambaChannels[l] ?? [] { for h in 0..<H { kept[h * s.headDim + p] = false } }
        gatedNorm(o, z: m.projection, zStride: W, y: m.y, out: m.normed, rstd: m.rstd, rows: N, kept: kept)
        // mid = x + normed (N, I) · W_out (C, I)ᵀ
        a.mid.update(from: acts.residual[l], count: N * C)
        gemm(
            transB: true, m: N, n: C, k: I, a: m.normed, lda: I, b: P + o.output, ldb: I, beta: 1, c: a.mid, ldc: C)
    }

    /// On entry `acts.dResidual` holds dLoss/d(mid); adds the mixer's parameter gradients and
    /// leaves dLoss/d(norm1) in `acts.dNorm`.
    func mambaBackward(_ l: Int, _ o: MambaOffsets, _ m: Activations.MambaActivations, _ acts: Activations) {
        let P = parameters.pointer, Gr = gradients.pointer, a = acts.layers[l], s = o.shape
        let (B, T, N, C) = (acts.B, acts.T, acts.N, config.hiddenSize)
        let (I, W, Wc, H) = (s.innerWidth, s.projectionWidth, s.convWidth, s.heads)
        let dres = acts.dResidual, dProj = acts.dMambaProjection, dXBC = acts.dMambaXBC
        let dY = acts.dMambaY, dNormed = acts.dMambaNormed, dDt = acts.dMambaDt, dAD = acts.dMambaAD
        // dW_out (C, I) += dresᵀ · normed; dNormed (N, I) = dres (N, C) · W_out (C, I)
        gemm(transA: true, m: C, n: I, k: N, a: dres, lda: C, b: m.normed, ldb: I, beta: 1, c: Gr + o.output, ldc: I)
        gemm(m: N, n: I, k: C, a: dres, lda: C, b: P + o.output, ldb: I, c: dNormed, ldc: I)
        // The gated norm: ĥ = h·r, out = w·ĥ; dh = r·(dĥ − ĥ·mean(dĥ·ĥ)) with dĥ = dout·w; then
        // dy = dh·SiLU(z) and dz = dh·y·SiLU′(z).
        let gs = I / s.groups
        for n in 0..<N {
            let z = m.projection + n * W, y = m.y + n * I, dn = dNormed + n * I
            let dy = dY + n * I, dz = dProj + n * W
            for g in 0..<s.groups {
                let r = m.rstd[n * s.groups + g], range = (g * gs)..<((g + 1) * gs)
                var dot: Float = 0
                for i in range {
                    let hHat = y[i] * silu(z[i]) * r, dh = dn[i] * P[o.norm + i]
                    Gr[o.norm + i] += dn[i] * hHat
                    dot += dh * hHat
                }
                let mean = dot / Float(gs)
                for i in range {
                    let sz = silu(z[i]), hHat = y[i] * sz * r
                    let dh = r * (dn[i] * P[o.norm + i] - hHat * mean)
                    dy[i] = dh * sz
                    dz[i] = dh * y[i] * siluDerivative(z[i])
                }
            }
        }
        // The scan, per (sequence, group); dA and dD per sequence, summed after.
        dXBC.update(repeating: 0, count: N * Wc)
        dDt.update(repeating: 0, count: N * H)
        dAD.update(repeating: 0, count: B * 2 * H)
        let Q = config.mambaChunkSize, stateFloats = scanStateFloats(s, T: T)
        forEachSequenceAndGroup(o, B: B) { b, g, A, D in
            tp_mamba_scan_backward(
                T, H, s.headDim, s.groups, s.stateSize, Q, g, m.xbc + b * T * Wc, Wc, I, m.dt + b * T * H, H, A, D,
                m.states + b * stateFloats, dY + b * T * I, I, dXBC + b * T * Wc, dDt + b * T * H, dAD + b * 2 * H,
                dAD + b * 2 * H + H)
        }
        for h in 0..<H {
            var dA: Float = 0, dD: Float = 0
            for b in 0..<B {
                dA += dAD[b * 2 * H + h]
                dD += dAD[b * 2 * H + H + h]
            }
            Gr[o.aLog + h] += dA * -expf(P[o.aLog + h]) // dA/dA_log = A = −exp(A_log)
            Gr[o.d + h] += dD
        }
        // Δ = clamp(softplus(dt + bias), time_step_limit): the gradient passes where it does not bind.
        let limit = config.mambaTimeStepLimit
        for n in 0..<N {
            for h in 0..<H {
                let raw = m.projection[n * W + I + Wc + h] + P[o.dtBias + h]
                let g = limit.passes(softplus(raw)) ? dDt[n * H + h] * softplusDerivative(raw) : 0
                dProj[n * W + I + Wc + h] = g
                Gr[o.dtBias + h] += g
            }
        }
        for i in 0..<(N * Wc) { dXBC[i] *= siluDerivative(m.convPre[i]) }
        for b in 0..<B {
            tp_causal_conv_backward(
                T, Wc, s.convKernel, m.projection + b * T * W + I, W, P + o.conv, dXBC + b * T * Wc, Wc,
                dProj + b * T * W + I, W, Gr + o.conv, o.convBias.map { Gr + $0 })
        }
        // dW_in (W, C) += dProjᵀ · norm1; dNorm (N, C) = dProj (N, W) · W_in (W, C)
        gemm(transA: true, m: W, n: C, k: N, a: dProj, lda: W, b: a.norm1, ldb: C, beta: 1, c: Gr + o.input, ldc: C)
        gemm(m: N, n: C, k: W, a: dProj, lda: W, b: P + o.input, ldb: C, c: acts.dNorm, ldc: C)
    }
}

extension DecoderModel {
    /// The gated grouped RMSNorm of `rows` rows: out = w · g / rms(g) over each group's channels,
    /// g = y · SiLU(z) (z read with row stride `zStride`), channels not `kept` zero and outside
    /// the mean; the reciprocal RMS per row and group into `rstd`.
    func gatedNorm(
        _ o: MambaOffsets, z: UnsafePointer<Float>, zStride: Int, y: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, rows N: Int, kept: [Bool]? = nil
    ) {
        let P = parameters.pointer, s = o.shape, I = s.innerWidth, gs = I / s.groups, eps = Float(config.normEps)
        let counts = (0..<s.groups).map { g in
            Float(max(1, kept.map { $0[(g * gs)..<((g + 1) * gs)].filter { $0 }.count } ?? gs))
        }
        for n in 0..<N {
            let z = z + n * zStride, y = y + n * I, out = out + n * I
            for g in 0..<s.groups {
                var ms: Float = 0
                for i in (g * gs)..<((g + 1) * gs) {
                    let h = kept?[i] ?? true ? y[i] * silu(z[i]) : 0
                    out[i] = h
                    ms += h * h
                }
                let r = 1 / (ms / counts[g] + eps).squareRoot()
                rstd[n * s.groups + g] = r
                for i in (g * gs)..<((g + 1) * gs) { out[i] = P[o.norm + i] * (out[i] * r) }
            }
        }
    }

    /// Head h's time step from its in-projection value: Δ = clamp(softplus(raw + dt_bias),
    /// time_step_limit) — the training scan and decoding both take it.
    @inline(__always) func mambaTimeStep(_ raw: Float, _ o: MambaOffsets, head h: Int) -> Float {
        config.mambaTimeStepLimit.clamp(softplus(raw + parameters.pointer[o.dtBias + h]))
    }

    /// Floats of one sequence's chunk-start states.
    func scanStateFloats(_ s: MambaShape, T: Int) -> Int {
        (T + config.mambaChunkSize - 1) / config.mambaChunkSize * s.heads * s.headDim * s.stateSize
    }

    /// Runs `body(sequence, group, A, D)` for every sequence and group of B and C, concurrently
    /// (each task touches only its own heads, its group's B and C, and its sequence's rows), with
    /// A = −exp(A_log) and D.
    func forEachSequenceAndGroup(
        _ o: MambaOffsets, B: Int, _ body: (Int, Int, UnsafePointer<Float>, UnsafePointer<Float>) -> Void
    ) {
        let P = parameters.pointer, groups = o.shape.groups
        let A = (0..<o.shape.heads).map { -expf(P[o.aLog + $0]) }
        A.withUnsafeBufferPointer { A in
            Parallel.chunks(B * groups) { _, range in
                for task in range { body(task / groups, task % groups, A.baseAddress!, P + o.d) }
            }
        }
    }
}

@inline(__always) func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }
@inline(__always) func siluDerivative(_ x: Float) -> Float {
    let s = 1 / (1 + expf(-x))
    return s * (1 + x * (1 - s))
}
/// PyTorch's softplus: log(1 + eˣ), and x itself above 20.
@inline(__always) func softplus(_ x: Float) -> Float { x > 20 ? x : log1pf(expf(x)) }
@inline(__always) func softplusDerivative(_ x: Float) -> Float { x > 20 ? 1 : 1 / (1 + expf(-x)) }
