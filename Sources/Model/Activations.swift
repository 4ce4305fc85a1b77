/// Every activation a training step keeps, for one (batch B, sequence T) shape, carved out of
/// one allocation and reused every step. N = B·T.
///
/// Per layer: `residual[l]` (N, C) the stream entering layer l (`residual[L]` leaves the
/// last layer), `mid` (N, C) after attention, `norm1`/`norm2` (N, C) normalised inputs with
/// `mean`/`rstd` (N) each, `qkv` (N, (H+2G)·D) after rotary, `probs` (B, H, T, T), `attn`
/// (N, H·D), `mlpPre` (N, 2F or F), `mlpAct` (N, F). Then `finalNorm` (N, C) and `logits`
/// (N, V) (overwritten by dlogits in the backward pass). Gradient scratch is shared by layers.
public final class Activations {
    public let B: Int, T: Int
    public var N: Int { B * T }
    let config: ModelConfig
    let storage: FloatBuffer
    /// Token ids (N) and targets (N, -1 = ignored) of the current step.
    public internal(set) var tokens: [Int32]
    public internal(set) var targets: [Int32]
    let rotary: RotaryTable

    public struct Layer {
        public var mid, norm1, mean1, rstd1, qkv, probs, attn, norm2, mean2, rstd2, mlpPre, mlpAct: UnsafeMutablePointer<Float>
    }
    public internal(set) var residual: [UnsafeMutablePointer<Float>] = []
    /// Per-layer activations of the last forward pass (read by importance scoring).
    public internal(set) var layers: [Layer] = []
    public internal(set) var finalNorm: UnsafeMutablePointer<Float>
    var finalMean, finalRstd, logitsPointer, rowLoss: UnsafeMutablePointer<Float>
    // Gradient scratch, shared by all layers.
    public internal(set) var dResidual: UnsafeMutablePointer<Float>
    var dNorm, dQKV, dAttn, dMLPPre, dMLPAct, dScores: UnsafeMutablePointer<Float>

    /// Floats needed for shape (B, T), used by ``ModelConfig/trainingMemory(batch:sequence:)``.
    public static func floatCount(config c: ModelConfig, B: Int, T: Int, threads: Int = Parallel.threads) -> Int {
        let N = B * T, C = c.hiddenSize, F = c.intermediateSize
        let qkvW = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim
        let attnW = c.numAttentionHeads * c.headDim
        let pre = c.family == .llama ? 2 * F : F
        let perLayer = N * C * 3 + N * 4 + N * qkvW + B * c.numAttentionHeads * T * T + N * attnW + N * pre + N * F
        let final = N * C + 3 * N + N * c.vocabSize
        let scratch = N * C * 2 + N * qkvW + N * attnW + N * pre + N * F + threads * T * T
        return N * C * (c.numHiddenLayers + 1) + perLayer * c.numHiddenLayers + final + scratch
    }

    public init(config c: ModelConfig, batch B: Int, sequence T: Int) {
        self.B = B
        self.T = T
        config = c
        let N = B * T, C = c.hiddenSize, F = c.intermediateSize
        let qkvW = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim
        let attnW = c.numAttentionHeads * c.headDim
        let pre = c.family == .llama ? 2 * F : F
        let threads = Parallel.threads
        storage = FloatBuffer(count: Activations.floatCount(config: c, B: B, T: T, threads: threads))
        tokens = [Int32](repeating: 0, count: N)
        targets = [Int32](repeating: -1, count: N)
        rotary = RotaryTable(config: c, T: T)
        var cursor = storage.pointer
        func carve(_ n: Int) -> UnsafeMutablePointer<Float> { defer { cursor += n }; return cursor }
        for _ in 0...c.numHiddenLayers { residual.append(carve(N * C)) }
        for _ in 0..<c.numHiddenLayers {
            layers.append(Layer(mid: carve(N * C), norm1: carve(N * C), mean1: carve(N), rstd1: carve(N),
                                qkv: carve(N * qkvW), probs: carve(B * c.numAttentionHeads * T * T),
                                attn: carve(N * attnW), norm2: carve(N * C), mean2: carve(N), rstd2: carve(N),
                                mlpPre: carve(N * pre), mlpAct: carve(N * F)))
        }
        finalNorm = carve(N * C); finalMean = carve(N); finalRstd = carve(N)
        logitsPointer = carve(N * c.vocabSize); rowLoss = carve(N)
        dResidual = carve(N * C); dNorm = carve(N * C); dQKV = carve(N * qkvW); dAttn = carve(N * attnW)
        dMLPPre = carve(N * pre); dMLPAct = carve(N * F); dScores = carve(threads * T * T)
        precondition(cursor - storage.pointer <= storage.count)
    }

    /// Logits (N, V) of the last forward pass (or dlogits after a loss with gradient).
    public var logits: UnsafeMutableBufferPointer<Float> { .init(start: logitsPointer, count: N * config.vocabSize) }
    /// The residual stream entering layer `l` (l = L: the last layer's output), (N, C).
    public func hidden(_ l: Int) -> UnsafeMutableBufferPointer<Float> { .init(start: residual[l], count: N * config.hiddenSize) }
    /// Each row's loss from the last ``DecoderModel/loss(_:gradient:)``, (N).
    public var rowLosses: UnsafeMutableBufferPointer<Float> { .init(start: rowLoss, count: N) }
}
