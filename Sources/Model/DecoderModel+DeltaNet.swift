import CKernels
import Foundation

/// Gated DeltaNet (transformers' `Qwen3_5GatedDeltaNet`, its PyTorch path), on the normed input u
/// (N, C) of a layer:
///
///     qkv, z, b, a = split(u · W_inᵀ, [convDim, V, Hv, Hv])        (W_in: in_proj_qkv, _z, _b, _a)
///     q, k, v      = split(SiLU(causal depthwise conv(qkv)), [Hk·Dk, Hk·Dk, Hv·Dv])
///     q̂ = q/‖q‖/√Dk, k̂ = k/‖k‖ per key head (‖x‖ = √(Σx² + 1e-6));  β = σ(b)
///     g = −exp(A_log) · softplus(a + dt_bias)
///     o = the gated delta rule of q̂, k̂, v, g, β, value head h reading key head h/(Hv/Hk)
///         (in its chunked form, ``deltaRuleChunkedForward``; the backward pass recomputes each
///         chunk by the recurrence, ``tp_gdn_scan_backward``)
///     mid = residual + (w · RMSNorm(o) · SiLU(z)) · W_outᵀ, the norm over each head's Dv
extension DecoderModel {
    func deltaNetForward(_ l: Int, _ o: DeltaNetOffsets, _ m: Activations.DeltaNetActivations, _ acts: Activations) {
        let P = parameters.pointer, a = acts.layers[l], s = o.shape
        let (B, T, N, C) = (acts.B, acts.T, acts.N, config.hiddenSize)
        let (W, Wc, Kw, Vw) = (s.projectionWidth, s.convWidth, s.keyWidth, s.valueWidth)
        let (Hk, Hv, Dk, Dv) = (s.keyHeads, s.valueHeads, s.keyDim, s.valueDim)
        gemm(transB: true, m: N, n: W, k: C, a: a.norm1, lda: C, b: P + o.input, ldb: C, c: m.projection, ldc: W)
        for b in 0..<B {
            tp_causal_conv_forward(
                T, Wc, s.convKernel, m.projection + b * T * W, W, P + o.conv, nil, m.convPre + b * T * Wc, Wc)
        }
        for i in 0..<(N * Wc) { m.xbc[i] = silu(m.convPre[i]) }
        let scale = 1 / Float(Dk).squareRoot()
        /// y = x·r·factor with r = 1/√(Σx² + 1e-6) over one head's Dk channels; r into `inv`.
        func normalise(
            _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ inv: UnsafeMutablePointer<Float>,
            _ factor: Float
        ) {
            var ss: Float = 0
            for i in 0..<Dk { ss += x[i] * x[i] }
            let r = 1 / (ss + 1e-6).squareRoot()
            inv.pointee = r
            for i in 0..<Dk { y[i] = x[i] * r * factor }
        }
        for n in 0..<N {
            for h in 0..<Hk {
                let x = m.xbc + n * Wc, at = n * Kw + h * Dk
                normalise(x + h * Dk, m.q + at, m.qInv + n * Hk + h, scale)
                normalise(x + Kw + h * Dk, m.k + at, m.kInv + n * Hk + h, 1)
            }
            for h in 0..<Hv {
                (m.beta[n * Hv + h], m.g[n * Hv + h]) = deltaNetGates(m.projection + n * W, o, head: h)
            }
        }
        // Each (sequence, value head) task writes its own head's output and states.
        forEachSequenceAndValueHead(s, m, B: B, T: T) { row, h, i in
            deltaRuleChunkedForward(
                T: T, Dk: Dk, Dv: Dv, chunk: config.deltaNetChunkSize, q: i.q, k: i.k, qks: Kw, v: i.v, vs: Wc, g: i.g,
                beta: i.beta, gs: Hv, o: m.o + row * Vw + h * Dv, os: Vw, states: i.states)
        }
        var kept = [Bool](repeating: true, count: Dv)
        for j in masks.deltaNetChannels[l] ?? [] { kept[j] = false }
        deltaNetGatedNorm(
            o, z: m.projection + Wc, zStride: W, o: m.o, out: m.normed, rstd: m.rstd, rows: N,
            kept: kept.allSatisfy { $0 } ? nil : kept)
        for h in masks.deltaNetHeads[l] ?? [] {
            for n in 0..<N { (m.normed + n * Vw + h * Dv).update(repeating: 0, count: Dv) }
        }
        // mid = x + normed (N, V) · W_out (C, V)ᵀ
        a.mid.update(from: acts.residual[l], count: N * C)
        gemm(
            transB: true, m: N, n: C, k: Vw, a: m.normed, lda: Vw, b: P + o.output, ldb: Vw, beta: 1, c: a.mid,
            ldc: C)
    }

    /// On entry `acts.dResidual` holds dLoss/d(mid); adds the mixer's parameter gradients and
    /// leaves dLoss/d(norm1) in `acts.dNorm`.
    func deltaNetBackward(_ l: Int, _ o: DeltaNetOffsets, _ m: Activations.DeltaNetActivations, _ acts: Activations) {
        let P = parameters.pointer, Gr = gradients.pointer, a = acts.layers[l], s = o.shape
        let (B, T, N, C) = (acts.B, acts.T, acts.N, config.hiddenSize)
        let (W, Wc, Kw, Vw) = (s.projectionWidth, s.convWidth, s.keyWidth, s.valueWidth)
        let (Hk, Hv, Dk, Dv) = (s.keyHeads, s.valueHeads, s.keyDim, s.valueDim)
        let dres = acts.dResidual, dProj = acts.dDeltaProjection, dXBC = acts.dDeltaXBC
        let dO = acts.dDeltaO, dNormed = acts.dDeltaNormed
        let dq = acts.dDeltaQK, dk = acts.dDeltaQK + N * Hv * Dk, dg = acts.dDeltaGB, dBeta = acts.dDeltaGB + N * Hv
        // dW_out (C, V) += dresᵀ · normed; dNormed (N, V) = dres (N, C) · W_out (C, V)
        gemm(transA: true, m: C, n: Vw, k: N, a: dres, lda: C, b: m.normed, ldb: Vw, beta: 1, c: Gr + o.output, ldc: Vw)
        gemm(m: N, n: Vw, k: C, a: dres, lda: C, b: P + o.output, ldb: Vw, c: dNormed, ldc: Vw)
        // The gated norm: ô = o·r, out = w·ô·SiLU(z); dô = dout·w·SiLU(z), do = r·(dô − ô·mean(dô·ô)),
        // dz = dout·w·ô·SiLU′(z).
        for n in 0..<N {
            for h in 0..<Hv {
                let r = m.rstd[n * Hv + h], ob = m.o + n * Vw + h * Dv, z = m.projection + n * W + Wc + h * Dv
                let dn = dNormed + n * Vw + h * Dv, dz = dProj + n * W + Wc + h * Dv, dout = dO + n * Vw + h * Dv
                var dot: Float = 0
                for j in 0..<Dv {
                    let oHat = ob[j] * r, sz = silu(z[j]), w = P[o.norm + j]
                    Gr[o.norm + j] += dn[j] * oHat * sz
                    dz[j] = dn[j] * w * oHat * siluDerivative(z[j])
                    let dHat = dn[j] * w * sz
                    dout[j] = dHat
                    dot += dHat * oHat
                }
                let mean = dot / Float(Dv)
                for j in 0..<Dv { dout[j] = r * (dout[j] - ob[j] * r * mean) }
            }
        }
        forEachSequenceAndValueHead(s, m, B: B, T: T) { row, h, i in
            tp_gdn_scan_backward(
                T, Dk, Dv, config.deltaNetChunkSize, i.q, i.k, Kw, i.v, Wc, i.g, i.beta, Hv, i.states,
                dO + row * Vw + h * Dv, Vw, dq + (row * Hv + h) * Dk, dk + (row * Hv + h) * Dk, Hv * Dk,
                dXBC + row * Wc + 2 * Kw + h * Dv, Wc, dg + row * Hv + h, dBeta + row * Hv + h, Hv)
        }
        let scale = 1 / Float(Dk).squareRoot()
        /// Key head hk's dq (or dk) of row n, summed over the value heads that read it, back
        /// through its normalisation into dXBC.
        func unnormalise(_ n: Int, _ hk: Int, source: Int, grads: UnsafePointer<Float>, inv r: Float, factor: Float) {
            let x = m.xbc + n * Wc + source, dx = dXBC + n * Wc + source
            for i in 0..<Dk { dx[i] = 0 }
            for h in (hk * s.valuesPerKey)..<((hk + 1) * s.valuesPerKey) {
                let d = grads + (n * Hv + h) * Dk
                for i in 0..<Dk { dx[i] += d[i] }
            }
            var dot: Float = 0
            for i in 0..<Dk { dot += x[i] * dx[i] }
            let r3 = r * r * r * dot
            for i in 0..<Dk { dx[i] = factor * (r * dx[i] - x[i] * r3) }
        }
        for n in 0..<N {
            // q̂ = x·r·factor with r = (Σx² + ε)^(−1/2): dx = factor·(r·dŷ − x·r³·(x·dŷ)), dŷ summed
            // over the value heads that read the key head.
            for hk in 0..<Hk {
                unnormalise(n, hk, source: hk * Dk, grads: dq, inv: m.qInv[n * Hk + hk], factor: scale)
                unnormalise(n, hk, source: Kw + hk * Dk, grads: dk, inv: m.kInv[n * Hk + hk], factor: 1)
            }
            // β = σ(b); g = −exp(A_log)·softplus(a + dt_bias).
            for h in 0..<Hv {
                let aRaw = m.projection[n * W + Wc + Vw + Hv + h] + P[o.dtBias + h]
                let beta = m.beta[n * Hv + h], gh = dg[n * Hv + h]
                dProj[n * W + Wc + Vw + h] = dBeta[n * Hv + h] * beta * (1 - beta)
                let da = gh * -expf(P[o.aLog + h]) * softplusDerivative(aRaw)
                dProj[n * W + Wc + Vw + Hv + h] = da
                Gr[o.dtBias + h] += da
                Gr[o.aLog + h] += gh * m.g[n * Hv + h]
            }
        }
        for i in 0..<(N * Wc) { dXBC[i] *= siluDerivative(m.convPre[i]) }
        for b in 0..<B {
            tp_causal_conv_backward(
                T, Wc, s.convKernel, m.projection + b * T * W, W, P + o.conv, dXBC + b * T * Wc, Wc,
                dProj + b * T * W, W, Gr + o.conv, nil)
        }
        // dW_in (W, C) += dProjᵀ · norm1; dNorm (N, C) = dProj (N, W) · W_in (W, C)
        gemm(transA: true, m: W, n: C, k: N, a: dProj, lda: W, b: a.norm1, ldb: C, beta: 1, c: Gr + o.input, ldc: C)
        gemm(m: N, n: C, k: W, a: dProj, lda: W, b: P + o.input, ldb: C, c: acts.dNorm, ldc: C)
    }

    /// Value head h's rate β = σ(b) and log decay g = −exp(A_log)·softplus(a + dt_bias) from one
    /// row of the in-projection — the training scan and decoding both take them.
    @inline(__always) func deltaNetGates(_ row: UnsafePointer<Float>, _ o: DeltaNetOffsets, head h: Int)
        -> (beta: Float, g: Float)
    {
        let P = parameters.pointer, s = o.shape, base = s.convWidth + s.valueWidth
        let b = row[base + h], a = row[base + s.valueHeads + h]
        return (1 / (1 + expf(-b)), -expf(P[o.aLog + h]) * softplus(a + P[o.dtBias + h]))
    }

    /// The gated norm of `rows` rows: out = w · o / rms(o) · SiLU(z) over each value head's Dv
    /// channels (z read with row stride `zStride`); the reciprocal RMS per row and head into `rstd`.
    func deltaNetGatedNorm(
        _ o: DeltaNetOffsets, z: UnsafePointer<Float>, zStride: Int, o y: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, rows N: Int, kept: [Bool]? = nil
    ) {
        let P = parameters.pointer, s = o.shape, Dv = s.valueDim, eps = Float(config.normEps)
        // Masked channels (`kept` false) leave the mean and output zero, as if pruned.
        let count = Float(kept?.filter { $0 }.count ?? Dv)
        for n in 0..<N {
            for h in 0..<s.valueHeads {
                let base = h * Dv, yr = y + n * s.valueWidth + base, zr = z + n * zStride + base
                let outr = out + n * s.valueWidth + base
                var ms: Float = 0
                for j in 0..<Dv where kept?[j] ?? true { ms += yr[j] * yr[j] }
                let r = 1 / (ms / count + eps).squareRoot()
                rstd[n * s.valueHeads + h] = r
                for j in 0..<Dv { outr[j] = kept?[j] ?? true ? P[o.norm + j] * (yr[j] * r) * silu(zr[j]) : 0 }
            }
        }
    }

    /// One (sequence, value head)'s inputs to the gated delta rule, at its first position: the
    /// normalised query and key of its key head, its value, log decay and rate, and its
    /// chunk-start states.
    struct DeltaRuleInputs {
        var q, k, v, g, beta: UnsafePointer<Float>
        var states: UnsafeMutablePointer<Float>
    }

    /// Runs `body(first row, value head, inputs)` for every sequence and value head,
    /// concurrently (each task touches only its own head's outputs and states).
    func forEachSequenceAndValueHead(
        _ s: DeltaNetShape, _ m: Activations.DeltaNetActivations, B: Int, T: Int,
        _ body: (Int, Int, DeltaRuleInputs) -> Void
    ) {
        let (Hv, Kw, Wc, stateFloats) = (s.valueHeads, s.keyWidth, s.convWidth, deltaNetStateFloats(s, T: T))
        Parallel.chunks(B * Hv) { _, range in
            for task in range {
                let (row, h) = (task / Hv * T, task % Hv), key = h / s.valuesPerKey * s.keyDim
                body(
                    row, h,
                    DeltaRuleInputs(
                        q: m.q + row * Kw + key, k: m.k + row * Kw + key, v: m.xbc + row * Wc + 2 * Kw + h * s.valueDim,
                        g: m.g + row * Hv + h, beta: m.beta + row * Hv + h, states: m.states + task * stateFloats))
            }
        }
    }

    /// Floats of one (sequence, value head)'s chunk-start states.
    func deltaNetStateFloats(_ s: DeltaNetShape, T: Int) -> Int {
        (T + config.deltaNetChunkSize - 1) / config.deltaNetChunkSize * s.keyDim * s.valueDim
    }
}

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
