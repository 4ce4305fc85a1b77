import CKernels
import Foundation

/// Incremental decoding with a key/value cache: each ``step(_:)`` feeds one token per sequence and
/// gives the next-token logits, attending to every position cached before it (a sliding-window
/// layer to its window). This is how a served model generates after its prompt, and what
/// ``Throughput`` times per block. Dense attention and MLP blocks of every family, layers that
/// differ (heterogeneous configs) included, and Mamba2 and Gated DeltaNet mixers in their
/// recurrent form (a state per sequence, whatever the context); a mixture of experts is refused. Masks are not
/// honoured. Equal to the full forward's logits at every position (tested).
public final class DecodeSession {
    public let model: DecoderModel
    public let batch: Int
    /// Positions the cache holds per sequence.
    public let capacity: Int
    /// Positions cached so far (the next step's position).
    public private(set) var length = 0
    let rotary: RotaryTable
    /// Per layer with attention: keys and values, (B, capacity, G·D) each.
    let keys: [FloatBuffer?], values: [FloatBuffer?]
    let x: FloatBuffer, norm: FloatBuffer, mean: FloatBuffer, rstd: FloatBuffer
    let qkv: FloatBuffer, saved: FloatBuffer, headRstd: FloatBuffer, attn: FloatBuffer
    let pre: FloatBuffer, act: FloatBuffer, scores: FloatBuffer
    public let logits: FloatBuffer
    /// Per Mamba2 layer: the scan's state (B, heads, P, N) and the convolution's last K − 1 inputs
    /// (B, K − 1, convDim), oldest first; and one step's scratch.
    /// Per Gated DeltaNet layer likewise: the rule's state (B, Hv, Dk, Dv) in `ssm` and the
    /// convolution's last K − 1 inputs in `convHistory`.
    let ssm: [FloatBuffer?], convHistory: [FloatBuffer?]
    let mambaScratch: MambaStepScratch?
    let deltaScratch: DeltaNetStepScratch?
    /// Gated attention's gate (B, H·D).
    let gate: FloatBuffer

    struct DeltaNetStepScratch {
        let projection, conv, q, k, o, normed, rstd: FloatBuffer
        init(_ d: DeltaNetShape, batch B: Int) {
            projection = FloatBuffer(count: B * d.projectionWidth)
            conv = FloatBuffer(count: B * d.convWidth)
            q = FloatBuffer(count: B * d.keyWidth)
            k = FloatBuffer(count: B * d.keyWidth)
            o = FloatBuffer(count: B * d.valueWidth)
            normed = FloatBuffer(count: B * d.valueWidth)
            rstd = FloatBuffer(count: B * d.valueHeads)
        }
    }

    struct MambaStepScratch {
        let projection, conv, dt, y, normed, rstd: FloatBuffer
        init(_ m: MambaShape, batch B: Int) {
            projection = FloatBuffer(count: B * m.projectionWidth)
            conv = FloatBuffer(count: B * m.convWidth)
            dt = FloatBuffer(count: B * m.heads)
            y = FloatBuffer(count: B * m.innerWidth)
            normed = FloatBuffer(count: B * m.innerWidth)
            rstd = FloatBuffer(count: B * m.groups)
        }
    }

    public init(model: DecoderModel, batch B: Int, capacity: Int) throws {
        let c = model.config
        guard !c.isMixture, !c.family.hasAttentionExperts else {
            throw ModelError.invalidInput(
                "decoding with a cache covers dense blocks; \(c.family.rawValue) routes experts")
        }
        guard B >= 1, capacity >= 1 else { throw ModelError.invalidInput("decode batch and capacity must be positive") }
        self.model = model
        batch = B
        self.capacity = capacity
        rotary = RotaryTable(config: c, T: capacity)
        var widest = 1, widestMLP = 1
        var k: [FloatBuffer?] = [], v: [FloatBuffer?] = [], ssm: [FloatBuffer?] = [], history: [FloatBuffer?] = []
        for l in 0..<c.numHiddenLayers {
            let s = model.attentionShape(B, 1, layer: l)
            let o = model.layerOffsets[l]
            if let m = o.mamba?.shape {
                ssm.append(FloatBuffer(count: B * m.heads * m.headDim * m.stateSize))
                history.append(FloatBuffer(count: B * (m.convKernel - 1) * m.convWidth))
            } else if let d = o.deltaNet?.shape {
                ssm.append(FloatBuffer(count: B * d.valueHeads * d.keyDim * d.valueDim))
                history.append(FloatBuffer(count: B * (d.convKernel - 1) * d.convWidth))
            } else {
                ssm.append(nil)
                history.append(nil)
            }
            if o.hasMixer, o.mamba == nil, o.deltaNet == nil {
                widest = max(widest, s.qkvWidth + (c.family.definition.hasGatedAttention ? s.outWidth : 0))
                k.append(FloatBuffer(count: B * capacity * s.G * s.D))
                v.append(FloatBuffer(count: B * capacity * s.G * s.D))
            } else {
                k.append(nil)
                v.append(nil)
            }
            widestMLP = max(widestMLP, model.mlpWidth(l))
        }
        keys = k
        values = v
        self.ssm = ssm
        convHistory = history
        mambaScratch = c.mamba.map { MambaStepScratch($0, batch: B) }
        deltaScratch = c.deltaNet.map { DeltaNetStepScratch($0, batch: B) }
        let C = c.hiddenSize, H = c.numAttentionHeads, D = c.headDim
        gate = FloatBuffer(count: c.family.definition.hasGatedAttention ? B * H * D : 0)
        x = FloatBuffer(count: B * C)
        norm = FloatBuffer(count: B * C)
        mean = FloatBuffer(count: B)
        rstd = FloatBuffer(count: B)
        qkv = FloatBuffer(count: B * widest)
        saved = FloatBuffer(count: B * widest)
        headRstd = FloatBuffer(count: B * widest)
        attn = FloatBuffer(count: B * H * D)
        pre = FloatBuffer(count: B * 2 * widestMLP)
        act = FloatBuffer(count: B * widestMLP)
        scores = FloatBuffer(count: Parallel.threads * capacity)
        logits = FloatBuffer(count: B * c.vocabSize)
    }

    /// Feeds `tokens` (one per sequence) at position ``length`` and leaves the next-token logits
    /// (B, V) in ``logits``.
    public func step(_ tokens: [Int32]) throws {
        let c = model.config, C = c.hiddenSize, V = c.vocabSize, P = model.parameters.pointer
        guard tokens.count == batch else {
            throw ModelError.invalidInput("expected \(batch) tokens, got \(tokens.count)")
        }
        guard length < capacity else {
            throw ModelError.invalidInput("the cache holds \(capacity) positions, all used")
        }
        for (i, t) in tokens.enumerated() where t < 0 || Int(t) >= V {
            throw ModelError.invalidInput("token id \(t) of sequence \(i) is outside the vocabulary 0..<\(V)")
        }
        for (b, t) in tokens.enumerated() {
            (x.pointer + b * C).update(from: P + model.embedding + Int(t) * C, count: C)
        }
        for l in 0..<c.numHiddenLayers { layer(l) }
        head()
        length += 1
    }

    /// Layer l on the hidden states ``x`` (B, C) at position ``length``, in place.
    func layer(_ l: Int) {
        let c = model.config, o = model.layerOffsets[l], P = model.parameters.pointer
        let (B, C, p) = (batch, c.hiddenSize, length)
        if let mo = o.mamba, let state = ssm[l], let history = convHistory[l], let scratch = mambaScratch {
            model.normForward(
                norm.pointer, mean.pointer, rstd.pointer, x.pointer, weight: o.norm1, bias: o.norm1Bias, N: B)
            mambaStep(mo, state: state.pointer, history: history.pointer, scratch)
        } else if let dn = o.deltaNet, let state = ssm[l], let history = convHistory[l], let scratch = deltaScratch {
            model.normForward(
                norm.pointer, mean.pointer, rstd.pointer, x.pointer, weight: o.norm1, bias: o.norm1Bias, N: B)
            deltaNetStep(dn, state: state.pointer, history: history.pointer, scratch)
        } else if o.hasMixer, let K = keys[l], let Vc = values[l] {
            let s = model.attentionShape(B, 1, layer: l), GD = s.G * s.D
            model.normForward(
                norm.pointer, mean.pointer, rstd.pointer, x.pointer, weight: o.norm1, bias: o.norm1Bias, N: B)
            let q = qkv.pointer, gated = c.family.definition.hasGatedAttention
            if gated {
                // Projected into `saved`, then split into queries, keys, values and the gate.
                let PW = s.qkvWidth + s.outWidth
                gemm(
                    transB: true, m: B, n: PW, k: C, a: norm.pointer, lda: C, b: P + o.qkv, ldb: C, c: saved.pointer,
                    ldc: PW)
                model.splitGatedProjection(saved.pointer, qkv: q, gate: gate.pointer, s, rows: B)
            } else {
                gemm(
                    transB: true, m: B, n: s.qkvWidth, k: C, a: norm.pointer, lda: C, b: P + o.qkv, ldb: C, c: q,
                    ldc: s.qkvWidth)
            }
            if let bias = o.qkvBias { addRowBias(q, P + bias, rows: B, width: s.qkvWidth) }
            if let qn = o.qNorm, let kn = o.kNorm {
                headNormForward(
                    q, saving: saved.pointer, rstd: headRstd.pointer, qWeight: P + qn, kWeight: P + kn, rows: B, s,
                    eps: Float(c.normEps))
            }
            rotary.apply(q, rows: B, stride: s.qkvWidth, heads: s.H + s.G, D: s.D, position: p)
            for b in 0..<B {
                (K.pointer + (b * capacity + p) * GD).update(from: q + b * s.qkvWidth + s.H * s.D, count: GD)
                (Vc.pointer + (b * capacity + p) * GD).update(from: q + b * s.qkvWidth + (s.H + s.G) * s.D, count: GD)
            }
            let lo = s.window > 0 ? max(0, p - s.window + 1) : 0, n = p + 1 - lo
            let (H, D, out, cap) = (s.H, s.D, attn.pointer, capacity)
            let scratch = scores.pointer, qk = UnsafePointer(q)
            Parallel.chunks(B * H) { worker, range in
                let sc = scratch + worker * cap
                for bh in range {
                    let b = bh / H, h = bh % H, g = s.group(h)
                    let kb = K.pointer + (b * cap + lo) * GD + g * D, vb = Vc.pointer + (b * cap + lo) * GD + g * D
                    // scores (1, n) = q (1, D) · K[lo…p] (n, D)ᵀ / √D; then softmax; out (1, D) = P · V[lo…p]
                    gemm(
                        transB: true, m: 1, n: n, k: D, alpha: s.scale, a: qk + b * s.qkvWidth + h * D, lda: D,
                        b: kb, ldb: GD, c: sc, ldc: n)
                    let m = maximum(sc, count: n)
                    let inv = 1 / expShifted(sc, count: n, shift: m)
                    for j in 0..<n { sc[j] *= inv }
                    gemm(
                        m: 1, n: D, k: n, a: sc, lda: n, b: vb, ldb: GD, c: out + b * s.outWidth + h * D,
                        ldc: s.outWidth)
                }
            }
            if gated { for i in 0..<(B * s.outWidth) { out[i] *= sigmoid(gate.pointer[i]) } }
            gemm(
                transB: true, m: B, n: C, k: s.outWidth, a: attn.pointer, lda: s.outWidth, b: P + o.o, ldb: s.outWidth,
                beta: 1, c: x.pointer, ldc: C)
        }
        guard o.hasChannelMixer else { return }
        model.normForward(norm.pointer, mean.pointer, rstd.pointer, x.pointer, weight: o.norm2, bias: o.norm2Bias, N: B)
        model.denseMLPForward(l, norm: norm.pointer, pre: pre.pointer, act: act.pointer, out: x.pointer, rows: B)
    }

    /// One position of a Mamba2 mixer, its recurrent form: the in-projection of the normed rows;
    /// the convolution over the kept K − 1 inputs and this one; Δ; the state's update
    /// S = exp(Δ·A)·S + Δ·x ⊗ B and readout y = S·C + D·x; the gated norm; x += out_proj.
    func mambaStep(
        _ o: MambaOffsets, state: UnsafeMutablePointer<Float>, history: UnsafeMutablePointer<Float>,
        _ t: MambaStepScratch
    ) {
        let c = model.config, s = o.shape, P = model.parameters.pointer
        let (B, C, I, W, Wc, H, K) = (
            batch, c.hiddenSize, s.innerWidth, s.projectionWidth, s.convWidth, s.heads, s.convKernel
        )
        let (Pd, Ns, perGroup) = (s.headDim, s.stateSize, s.heads / s.groups)
        gemm(
            transB: true, m: B, n: W, k: C, a: norm.pointer, lda: C, b: P + o.input, ldb: C, c: t.projection.pointer,
            ldc: W)
        for b in 0..<B {
            let row = t.projection.pointer + b * W, hist = history + b * (K - 1) * Wc, out = t.conv.pointer + b * Wc
            for ch in 0..<Wc {
                var v = o.convBias.map { P[$0 + ch] } ?? 0
                for k in 0..<(K - 1) { v += P[o.conv + ch * K + k] * hist[k * Wc + ch] }
                v += P[o.conv + ch * K + K - 1] * row[I + ch]
                out[ch] = silu(v)
            }
            // The oldest input leaves the history, this one enters it.
            if K > 1 {
                for k in 0..<(K - 2) { (hist + k * Wc).update(from: hist + (k + 1) * Wc, count: Wc) }
                (hist + (K - 2) * Wc).update(from: row + I, count: Wc)
            }
            for h in 0..<H {
                let dt = model.mambaTimeStep(row[I + Wc + h], o, head: h), g = h / perGroup
                tp_mamba_state_step(
                    Pd, Ns, state + (b * H + h) * Pd * Ns, out + h * Pd, out + I + g * Ns,
                    out + I + s.groups * Ns + g * Ns, dt, expf(-expf(P[o.aLog + h]) * dt), P[o.d + h],
                    t.y.pointer + b * I + h * Pd)
            }
        }
        model.gatedNorm(
            o, z: t.projection.pointer, zStride: W, y: t.y.pointer, out: t.normed.pointer, rstd: t.rstd.pointer, rows: B
        )
        gemm(
            transB: true, m: B, n: C, k: I, a: t.normed.pointer, lda: I, b: P + o.output, ldb: I, beta: 1,
            c: x.pointer, ldc: C)
    }

    /// One position of a Gated DeltaNet mixer, its recurrent form: the in-projection of the normed
    /// rows; the convolution over the kept K − 1 inputs and this one; q and k normalised; β and
    /// the decay; the rule's step per value head (``tp_gdn_state_step``); the gated norm;
    /// x += out_proj.
    func deltaNetStep(
        _ o: DeltaNetOffsets, state: UnsafeMutablePointer<Float>, history: UnsafeMutablePointer<Float>,
        _ t: DeltaNetStepScratch
    ) {
        let c = model.config, s = o.shape, P = model.parameters.pointer
        let (B, C, W, Wc, K) = (batch, c.hiddenSize, s.projectionWidth, s.convWidth, s.convKernel)
        let (Hk, Hv, Dk, Dv, Kw, Vw) = (s.keyHeads, s.valueHeads, s.keyDim, s.valueDim, s.keyWidth, s.valueWidth)
        gemm(
            transB: true, m: B, n: W, k: C, a: norm.pointer, lda: C, b: P + o.input, ldb: C, c: t.projection.pointer,
            ldc: W)
        let scale = 1 / Float(Dk).squareRoot()
        for b in 0..<B {
            let row = t.projection.pointer + b * W, hist = history + b * (K - 1) * Wc, out = t.conv.pointer + b * Wc
            for ch in 0..<Wc {
                var v: Float = 0
                for k in 0..<(K - 1) { v += P[o.conv + ch * K + k] * hist[k * Wc + ch] }
                v += P[o.conv + ch * K + K - 1] * row[ch]
                out[ch] = silu(v)
            }
            if K > 1 {
                for k in 0..<(K - 2) { (hist + k * Wc).update(from: hist + (k + 1) * Wc, count: Wc) }
                (hist + (K - 2) * Wc).update(from: row, count: Wc)
            }
            for h in 0..<Hk {
                for (source, dest, factor) in [(h * Dk, t.q.pointer, scale), (Kw + h * Dk, t.k.pointer, 1)] {
                    let xr = out + source, y = dest + b * Kw + h * Dk
                    var ss: Float = 0
                    for i in 0..<Dk { ss += xr[i] * xr[i] }
                    let r = 1 / (ss + 1e-6).squareRoot()
                    for i in 0..<Dk { y[i] = xr[i] * r * factor }
                }
            }
            for h in 0..<Hv {
                let (beta, g) = model.deltaNetGates(row, o, head: h), hk = h / s.valuesPerKey
                tp_gdn_state_step(
                    Dk, Dv, state + (b * Hv + h) * Dk * Dv, t.q.pointer + b * Kw + hk * Dk,
                    t.k.pointer + b * Kw + hk * Dk, out + 2 * Kw + h * Dv, expf(g), beta,
                    t.o.pointer + b * Vw + h * Dv)
            }
        }
        model.deltaNetGatedNorm(
            o, z: t.projection.pointer + Wc, zStride: W, o: t.o.pointer, out: t.normed.pointer, rstd: t.rstd.pointer,
            rows: B)
        gemm(
            transB: true, m: B, n: C, k: Vw, a: t.normed.pointer, lda: Vw, b: P + o.output, ldb: Vw, beta: 1,
            c: x.pointer, ldc: C)
    }

    /// The final norm and the LM head on ``x``: logits (B, V).
    func head() {
        let c = model.config, C = c.hiddenSize, P = model.parameters.pointer
        model.normForward(
            norm.pointer, mean.pointer, rstd.pointer, x.pointer, weight: model.finalNorm, bias: model.finalNormBias,
            N: batch)
        gemm(
            transB: true, m: batch, n: c.vocabSize, k: C, a: norm.pointer, lda: C, b: P + model.lmHead, ldb: C,
            c: logits.pointer, ldc: c.vocabSize)
    }

    /// Treats the cache as holding `n` positions, whatever it holds (timing a step at a context).
    func assumeCached(_ n: Int) {
        precondition(n < capacity)
        length = n
    }
}
