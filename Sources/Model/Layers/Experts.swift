import Foundation

// Mixture-of-experts pieces: routing, dispatch, per-expert products and their backward passes.
// E experts, k chosen per token; a "row" is one (token, chosen expert) pair, and rows are
// grouped by expert (rows expertStart[e] ..< expertStart[e+1] belong to expert e).

/// How a router turns its logits into k expert choices and gate weights.
public enum RoutingStyle: Sendable, Equatable {
    /// Mixtral (and qwen3_moe with `norm_topk_prob`): softmax over all E experts, keep the
    /// top k, divide by their sum.
    case softmaxThenTopK
    /// qwen3_moe without `norm_topk_prob`: softmax over all E experts, keep the top k as they are.
    case softmaxTopKUnnormalized
    /// JetMoE: keep the top k logits, softmax over those k.
    case topKThenSoftmax
    /// Nemotron-H (DeepSeek-V3's router): scores s = σ(logits); experts are chosen by s plus a
    /// per-expert correction bias, among the experts of the best `topKGroups` of `groups` equal
    /// groups (a group's worth: the sum of its two best biased scores); the k gates are the
    /// chosen scores, divided by their sum (+1e-20) when `normalize`, times `scale`.
    case sigmoid(groups: Int, topKGroups: Int, normalize: Bool, scale: Float)
}

/// One router's decisions in the last forward pass, for N tokens.
public final class RouterState {
    public let N: Int, E: Int, k: Int
    /// (N, E) router logits and softmax over all experts (the sigmoid router: the scores σ(logits)).
    public let logits, probs: UnsafeMutablePointer<Float>
    /// (N, k) gate weight of each chosen expert.
    public let gates: UnsafeMutablePointer<Float>
    /// (N, k) chosen experts, best first.
    public internal(set) var chosen: [Int32]
    /// Dispatch order: row r is token `rowToken[r]`'s choice number `rowSlot[r]`.
    var rowToken: [Int32], rowSlot: [Int32]
    /// (N, k) → row.
    var slotRow: [Int32]
    /// E + 1 row boundaries.
    public internal(set) var expertStart: [Int]

    /// `allocate: false` only counts (the carver hands out placeholders): no index arrays.
    init(N: Int, E: Int, k: Int, allocate: Bool = true, carver: (Int) -> UnsafeMutablePointer<Float>) {
        self.N = N; self.E = E; self.k = k
        logits = carver(N * E); probs = carver(N * E); gates = carver(N * k)
        chosen = [Int32](repeating: 0, count: allocate ? N * k : 0)
        rowToken = chosen; rowSlot = chosen; slotRow = chosen
        expertStart = [Int](repeating: 0, count: allocate ? E + 1 : 0)
    }

    /// The token of dispatch row `r`.
    public func token(ofRow r: Int) -> Int { Int(rowToken[r]) }
    /// The gate weight of dispatch row `r`.
    public func gate(ofRow r: Int) -> Float { gates[Int(rowToken[r]) * k + Int(rowSlot[r])] }
    /// The expert of dispatch row `r`.
    public func expert(ofRow r: Int) -> Int { Int(chosen[Int(rowToken[r]) * k + Int(rowSlot[r])]) }

    /// logsumexp of token n's router logits (masked experts, at −∞, contribute nothing).
    public func logSumExp(_ n: Int) -> Float {
        let z = logits + n * E
        var mx = -Float.infinity
        for e in 0..<E { mx = max(mx, z[e]) }
        var s: Float = 0
        for e in 0..<E where z[e] > -.infinity { s += expf(z[e] - mx) }
        return mx + logf(s)
    }

    /// Tokens routed to expert e in the last forward pass.
    public func load(_ e: Int) -> Int { expertStart[e + 1] - expertStart[e] }

    /// Chooses experts from `logits` (already computed), fills probs, gates and the dispatch order.
    /// Experts in `masked` are never chosen (their logit is −∞). Ties go to the lower index.
    /// `correction`: the sigmoid router's per-expert choice bias (E).
    /// - Returns: false when a logit is not finite (the caller reports where).
    func route(style: RoutingStyle, masked: [Int], correction: UnsafePointer<Float>? = nil) -> Bool {
        let (N, E, k) = (N, E, k)
        var finite = true
        if case let .sigmoid(groups, topKGroups, normalize, scale) = style {
            finite = routeBySigmoid(
                masked: masked, correction: correction, groups: groups, topKGroups: topKGroups, normalize: normalize,
                scale: scale)
            dispatch()
            return finite
        }
        chosen.withUnsafeMutableBufferPointer { chosen in
            for n in 0..<N {
                let z = logits + n * E, p = probs + n * E
                for m in masked { z[m] = -.infinity }
                var mx = -Float.infinity
                for e in 0..<E { if z[e].isNaN || z[e] == .infinity { finite = false }; mx = max(mx, z[e]) }
                var sum: Float = 0
                for e in 0..<E { p[e] = z[e] == -.infinity ? 0 : expf(z[e] - mx); sum += p[e] }
                for e in 0..<E { p[e] /= sum }
                // Top k by logit (the same order as by probability), ties to the lower index.
                let c = chosen.baseAddress! + n * k, g = gates + n * k
                for j in 0..<k {
                    var best = -1
                    for e in 0..<E {
                        var taken = false
                        for i in 0..<j where c[i] == Int32(e) { taken = true }
                        if taken { continue }
                        if best < 0 || z[e] > z[best] { best = e }
                    }
                    c[j] = Int32(best)
                }
                switch style {
                case .softmaxThenTopK:
                    var s: Float = 0
                    for j in 0..<k { s += p[Int(c[j])] }
                    for j in 0..<k { g[j] = p[Int(c[j])] / s }
                case .softmaxTopKUnnormalized:
                    for j in 0..<k { g[j] = p[Int(c[j])] }
                case .topKThenSoftmax:
                    let top = z[Int(c[0])]
                    var s: Float = 0
                    for j in 0..<k { g[j] = expf(z[Int(c[j])] - top); s += g[j] }
                    for j in 0..<k { g[j] /= s }
                case .sigmoid: break
                }
            }
        }
        dispatch()
        return finite
    }

    /// The sigmoid router's choice (``RoutingStyle/sigmoid(groups:topKGroups:normalize:scale:)``),
    /// as transformers' `NemotronHTopkRouter` makes it.
    private func routeBySigmoid(
        masked: [Int], correction: UnsafePointer<Float>?, groups: Int, topKGroups: Int, normalize: Bool, scale: Float
    ) -> Bool {
        let (N, E, k) = (N, E, k), per = E / groups
        var finite = true
        var choice = [Float](repeating: 0, count: E), worth = [Float](repeating: 0, count: groups)
        var keep = [Bool](repeating: false, count: groups)
        /// The best index of `values` not yet taken (ties to the lower index); −1 when all are −∞.
        func best(_ values: [Float], _ taken: (Int) -> Bool) -> Int {
            var b = -1
            for i in values.indices where !taken(i) && values[i] > -.infinity && (b < 0 || values[i] > values[b]) {
                b = i
            }
            return b
        }
        chosen.withUnsafeMutableBufferPointer { chosen in
            for n in 0..<N {
                let z = logits + n * E, p = probs + n * E
                for m in masked { z[m] = -.infinity }
                for e in 0..<E {
                    if z[e].isNaN || z[e] == .infinity { finite = false }
                    p[e] = z[e] == -.infinity ? 0 : 1 / (1 + expf(-z[e]))
                    choice[e] = z[e] == -.infinity ? -.infinity : p[e] + (correction?[e] ?? 0)
                }
                if groups > 1 {
                    // A group's worth is the sum of its two best biased scores.
                    for g in 0..<groups {
                        var (a, b) = (-Float.infinity, -Float.infinity)
                        for e in (g * per)..<((g + 1) * per) {
                            if choice[e] > a { (a, b) = (choice[e], a) } else if choice[e] > b { b = choice[e] }
                        }
                        worth[g] = a + b
                    }
                    for g in 0..<groups { keep[g] = false }
                    for _ in 0..<topKGroups {
                        var b = -1
                        for g in 0..<groups where !keep[g] && (b < 0 || worth[g] > worth[b]) { b = g }
                        keep[b] = true
                    }
                    for e in 0..<E where !keep[e / per] { choice[e] = -.infinity }
                }
                let c = chosen.baseAddress! + n * k, g = gates + n * k
                for j in 0..<k {
                    let e = best(choice) { i in (0..<j).contains { c[$0] == Int32(i) } }
                    // Fewer than k experts left (masking): the first free one, with gate 0.
                    c[j] = Int32(e >= 0 ? e : (0..<E).first { i in !(0..<j).contains { c[$0] == Int32(i) } }!)
                }
                var sum: Float = 1e-20
                for j in 0..<k { sum += p[Int(c[j])] }
                for j in 0..<k { g[j] = (normalize ? p[Int(c[j])] / sum : p[Int(c[j])]) * scale }
            }
        }
        return finite
    }

    /// Dispatch: counting sort of (token, slot) pairs by expert.
    private func dispatch() {
        let (N, E, k) = (N, E, k)
        for e in 0...E { expertStart[e] = 0 }
        for i in 0..<(N * k) { expertStart[Int(chosen[i]) + 1] += 1 }
        for e in 0..<E { expertStart[e + 1] += expertStart[e] }
        var cursor = Array(expertStart[0..<E])
        for n in 0..<N {
            for j in 0..<k {
                let e = Int(chosen[n * k + j]), r = cursor[e]
                cursor[e] += 1
                rowToken[r] = Int32(n); rowSlot[r] = Int32(j); slotRow[n * k + j] = Int32(r)
            }
        }
    }

    /// Backward of the routing: from dGates (N, k) (and the load-balancing and z-loss terms) to
    /// dLogits (N, E). `balance` is dLoss/dP_e for the load-balancing loss's per-expert mean
    /// probability term, already divided by the rows it averages over; `zScale` multiplies the
    /// gradient of Σ_n logsumexp(z_n)².
    func backward(
        style: RoutingStyle, dGates: UnsafePointer<Float>, dLogits: UnsafeMutablePointer<Float>,
        balance: [Float]?, zScale: Float
    ) {
        let (E, k) = (E, k)
        if case let .sigmoid(_, _, normalize, scale) = style {
            sigmoidBackward(
                normalize: normalize, scale: scale, dGates: dGates, dLogits: dLogits, balance: balance, zScale: zScale)
            return
        }
        chosen.withUnsafeBufferPointer { chosen in
            for n in 0..<N {
                let p = probs + n * E, dz = dLogits + n * E, g = gates + n * k, dg = dGates + n * k
                let c = chosen.baseAddress! + n * k
                var dot: Float = 0
                for j in 0..<k { dot += dg[j] * g[j] }
                // dp: gradient with respect to the full softmax (mixtral gates, balance, z-loss).
                for e in 0..<E { dz[e] = 0 }
                switch style {
                case .softmaxThenTopK:
                    var s: Float = 0
                    for j in 0..<k { s += p[Int(c[j])] }
                    for j in 0..<k { dz[Int(c[j])] = (dg[j] - dot) / s }
                case .softmaxTopKUnnormalized:
                    for j in 0..<k { dz[Int(c[j])] = dg[j] }
                case .topKThenSoftmax, .sigmoid:
                    break
                }
                if let balance { for e in 0..<E { dz[e] += balance[e] } }
                // Softmax backward on the dp part: dz = p ⊙ (dp − Σ p·dp).
                var pd: Float = 0
                for e in 0..<E { pd += p[e] * dz[e] }
                for e in 0..<E { dz[e] = p[e] * (dz[e] - pd) }
                if style == .topKThenSoftmax {
                    for j in 0..<k { dz[Int(c[j])] += g[j] * (dg[j] - dot) }
                }
                if zScale != 0 {
                    // d/dz (logsumexp z)² = 2 · lse · softmax(z).
                    let lse = logSumExp(n)
                    for e in 0..<E { dz[e] += zScale * 2 * lse * p[e] }
                }
            }
        }
    }
}

extension RouterState {
    /// The sigmoid router's backward: gates g_j = scale · s_j / S (S = Σ s + 1e-20) or
    /// scale · s_j give ds; the load-balancing term adds to ds (its P_e is the mean score);
    /// dz = ds · s(1 − s), plus the z-loss's 2 · lse · softmax(z). The choice (and so the
    /// correction bias) is not differentiable.
    fileprivate func sigmoidBackward(
        normalize: Bool, scale: Float, dGates: UnsafePointer<Float>, dLogits: UnsafeMutablePointer<Float>,
        balance: [Float]?, zScale: Float
    ) {
        let (E, k) = (E, k)
        chosen.withUnsafeBufferPointer { chosen in
            for n in 0..<N {
                let p = probs + n * E, z = logits + n * E, dz = dLogits + n * E
                let g = gates + n * k, dg = dGates + n * k, c = chosen.baseAddress! + n * k
                for e in 0..<E { dz[e] = 0 }
                if normalize {
                    var sum: Float = 1e-20, dot: Float = 0
                    for j in 0..<k { sum += p[Int(c[j])]; dot += dg[j] * g[j] }
                    for j in 0..<k { dz[Int(c[j])] += (scale * dg[j] - dot) / sum }
                } else {
                    for j in 0..<k { dz[Int(c[j])] += scale * dg[j] }
                }
                if let balance { for e in 0..<E { dz[e] += balance[e] } }
                for e in 0..<E { dz[e] *= p[e] * (1 - p[e]) }
                if zScale != 0 {
                    let lse = logSumExp(n)
                    for e in 0..<E where z[e] > -.infinity { dz[e] += zScale * 2 * lse * expf(z[e] - lse) }
                }
            }
        }
    }
}

/// Gathers rows of `x` (N rows of `stride`, default `width`) into dispatch order:
/// `out[r] = x[rowToken[r]]`, or with `slotted` the token's width-wide slot for its choice j,
/// `x[rowToken[r], j·width ..< (j+1)·width]` (JetMoE's per-choice query heads).
func gatherRows(
    _ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, width: Int, stride: Int? = nil,
    slotted: Bool = false, router r: RouterState
) {
    let ld = stride ?? width
    for row in 0..<(r.N * r.k) {
        let slot = slotted ? Int(r.rowSlot[row]) * width : 0
        (out + row * width).update(from: x + Int(r.rowToken[row]) * ld + slot, count: width)
    }
}

/// The inverse of a slotted ``gatherRows(_:_:width:stride:slotted:router:)``: writes row r of
/// `rows` (N·k, width) into its token's slot for its choice j of `x` (N rows of `stride`).
func scatterToSlots(
    _ x: UnsafeMutablePointer<Float>, _ rows: UnsafePointer<Float>, width: Int, stride: Int, router r: RouterState
) {
    for row in 0..<(r.N * r.k) {
        (x + Int(r.rowToken[row]) * stride + Int(r.rowSlot[row]) * width).update(from: rows + row * width, count: width)
    }
}

/// Per-expert products over dispatch rows: for each expert e,
/// `out[rows of e] (n_e, m) = in[rows of e] (n_e, kk) · W_e (m, kk)ᵀ`, W_e at `weights(e)`.
func expertsForward(
    _ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, m: Int, kk: Int,
    weights: (Int) -> UnsafeMutablePointer<Float>, router r: RouterState
) {
    for e in 0..<r.E where r.load(e) > 0 {
        let s = r.expertStart[e]
        gemm(
            transB: true, m: r.load(e), n: m, k: kk, a: input + s * kk, lda: kk, b: weights(e), ldb: kk, c: out + s * m,
            ldc: m)
    }
}

/// Backward of ``expertsForward``: `dW_e (m, kk) += dOut_eᵀ · in_e` and, when `dInput` is given,
/// `dIn_e (n_e, kk) = dOut_e (n_e, m) · W_e (m, kk)` (overwritten).
func expertsBackward(
    dInput: UnsafeMutablePointer<Float>?, dWeights: (Int) -> UnsafeMutablePointer<Float>,
    _ dOut: UnsafePointer<Float>, _ input: UnsafePointer<Float>, m: Int, kk: Int,
    weights: (Int) -> UnsafeMutablePointer<Float>, router r: RouterState
) {
    for e in 0..<r.E where r.load(e) > 0 {
        let s = r.expertStart[e], n = r.load(e)
        gemm(
            transA: true, m: m, n: kk, k: n, a: dOut + s * m, lda: m, b: input + s * kk, ldb: kk, beta: 1,
            c: dWeights(e), ldc: kk)
        if let dInput {
            gemm(m: n, n: kk, k: m, a: dOut + s * m, lda: m, b: weights(e), ldb: kk, c: dInput + s * kk, ldc: kk)
        }
    }
}

/// `out[n] += Σ_j gate[n, j] · y[row(n, j)]` (+ bias), y is (N·k, C) in dispatch order.
func combineExperts(
    _ out: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, bias: UnsafePointer<Float>?, C: Int,
    router r: RouterState
) {
    Parallel.chunks(r.N, minimumPerChunk: max(16, 8192 / C)) { _, tokens in
        for n in tokens {
            let o = out + n * C
            for j in 0..<r.k {
                let g = r.gates[n * r.k + j], src = y + Int(r.slotRow[n * r.k + j]) * C
                for i in 0..<C { o[i] += g * src[i] }
            }
            if let bias { for i in 0..<C { o[i] += bias[i] } }
        }
    }
}

/// Backward of ``combineExperts``: `dGates[n, j] = dOut[n] · y[row]`, `dy[row] = gate · dOut[n]`,
/// and `dBias += Σ_n dOut[n]`.
func combineExpertsBackward(
    dy: UnsafeMutablePointer<Float>, dGates: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
    _ dOut: UnsafePointer<Float>, _ y: UnsafePointer<Float>, C: Int, router r: RouterState
) {
    for row in 0..<(r.N * r.k) {
        let n = Int(r.rowToken[row]), j = Int(r.rowSlot[row])
        let d = dOut + n * C, src = y + row * C, dst = dy + row * C, g = r.gates[n * r.k + j]
        var dot: Float = 0
        for i in 0..<C { dot += d[i] * src[i]; dst[i] = g * d[i] }
        dGates[n * r.k + j] = dot
    }
    if let dBias {
        for n in 0..<r.N { let d = dOut + n * C; for i in 0..<C { dBias[i] += d[i] } }
    }
}

/// `dx[rowToken[r]] += d[r]` (scatter-add of per-row gradients back to tokens).
func scatterAddRows(_ dx: UnsafeMutablePointer<Float>, _ d: UnsafePointer<Float>, width: Int, router r: RouterState) {
    for row in 0..<(r.N * r.k) {
        let dst = dx + Int(r.rowToken[row]) * width, src = d + row * width
        for i in 0..<width { dst[i] += src[i] }
    }
}
