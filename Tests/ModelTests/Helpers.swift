import Foundation
import Model
import Testing

/// Where the committed transformers fixtures live.
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// ‖a − b‖ / ‖b‖ (with ‖b‖ floored so that an all-zero reference compares absolutely).
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "length \(a.count) vs \(b.count)")
    var num = 0.0, den = 0.0
    for i in 0..<a.count {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    return num.squareRoot() / max(den.squareRoot(), 1e-12)
}

func temporaryDirectory(_ name: String = #function) -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("topiary-tests-\(getpid())-\(name.filter { $0.isLetter || $0.isNumber })-\(UInt32.random(in: 0...UInt32.max))")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A tiny config for numerical checks (mixtures: 4 experts, top 2; JetMoE: 2 kv heads × top 2).
/// qwen2: a window of 3 on layer 1; mistral: a window of 3 everywhere; qwen3: head_dim 6 (≠
/// hidden/heads); qwen3_moe: experts of width 8, no renormalisation, layer 1 a dense MLP of 12.
func tinyConfig(_ family: Family, tied: Bool = false, vocab: Int = 23, layers: Int = 2) -> ModelConfig {
    let moe = family.isMixture
    return ModelConfig(family: family, vocabSize: vocab, hiddenSize: 16, intermediateSize: moe ? 12 : (family == .llama ? 20 : 24),
                       numHiddenLayers: layers, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: family == .qwen3 ? 6 : 4,
                       ropeTheta: 100, partialRotaryFactor: family == .nemotron ? 0.5 : 1, tieWordEmbeddings: tied,
                       maxPositionEmbeddings: 64, initializerRange: 0.3,
                       numLocalExperts: moe ? 4 : 0, numExpertsPerTok: moe ? 2 : 0, routerAuxLossCoef: moe ? 0.05 : nil,
                       moeIntermediateSize: family == .qwen3Moe ? 8 : nil, denseMLPLayers: family == .qwen3Moe && layers > 1 ? [1] : [],
                       slidingWindow: family == .qwen2 || family == .mistral ? 3 : nil, slidingLayers: family == .qwen2 ? [1] : nil)
}

/// A Nemotron-H decoder of Mamba2, MLP, attention and Mamba2 layers: 4 Mamba heads of 3 channels
/// in 2 groups, a state of 5, a convolution of 3 taps, and a chunk of 4 positions (so that the
/// backward pass's state checkpoints are crossed).
func hybridConfig(vocab: Int = 23, layers: [HybridLayer] = [.mamba, .mlp, .attention, .mamba],
                  convBias: Bool = true) -> ModelConfig {
    var c = ModelConfig(family: .nemotronH, vocabSize: vocab, hiddenSize: 16, intermediateSize: 20, numHiddenLayers: layers.count,
                        numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4,
                        maxPositionEmbeddings: 64, initializerRange: 0.3)
    c.hybridLayers = layers
    c.mamba = MambaShape(heads: 4, headDim: 3, groups: 2, stateSize: 5, convKernel: 3)
    c.mambaChunkSize = 4
    c.mambaConvBias = convBias
    return c
}

/// A Nemotron-H decoder with mixture-of-experts layers: 6 squared-ReLU experts of 5 (top 2) in
/// `groups` groups (the best `groups / 2` kept, at least 1), gates renormalised and scaled by 1.5
/// unless `normalize` is off, a shared expert of 7, and a latent width of `latent` where given.
func nemotronHMoEConfig(vocab: Int = 23, layers: [HybridLayer] = [.mamba, .moe, .attention, .moe],
                        groups: Int = 2, normalize: Bool = true, latent: Int? = nil) -> ModelConfig {
    var c = hybridConfig(vocab: vocab, layers: layers)
    c.numLocalExperts = 6
    c.numExpertsPerTok = 2
    c.moeIntermediateSize = 5
    c.moeSharedExpertIntermediateSize = 7
    c.moeLatentSize = latent
    c.routerGroups = groups
    c.routerTopKGroups = max(1, groups / 2)
    c.normTopKProb = normalize
    c.routedScalingFactor = normalize ? 1.5 : 1
    c.routerAuxLossCoef = 0
    return c
}

/// A Qwen3.5 decoder: Gated DeltaNet (2 key heads of `keyDim`, `valueHeads` value heads of `valueDim`, a
/// convolution of 3 taps, chunks of 4), gated attention with half of each head rotating, SwiGLU.
/// `mixture`: Qwen3.5-MoE, 3 experts of 6 (top 2) and a shared expert of 10 per layer.
func qwen35Config(vocab: Int = 23, layers: [HybridLayer] = [.deltaNet, .attention, .deltaNet], tied: Bool = false,
                  valueHeads: Int = 4, keyDim: Int = 4, valueDim: Int = 3, mixture: Bool = false) -> ModelConfig {
    var c = ModelConfig(family: mixture ? .qwen35Moe : .qwen35, vocabSize: vocab, hiddenSize: 16,
                        intermediateSize: mixture ? 10 : 20, numHiddenLayers: layers.count,
                        numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, ropeTheta: 100, partialRotaryFactor: 0.5,
                        tieWordEmbeddings: tied, maxPositionEmbeddings: 64, initializerRange: 0.3,
                        numLocalExperts: mixture ? 3 : 0, numExpertsPerTok: mixture ? 2 : 0,
                        moeIntermediateSize: mixture ? 6 : nil, normTopKProb: mixture ? true : nil)
    c.hybridLayers = layers
    c.deltaNet = DeltaNetShape(keyHeads: 2, valueHeads: valueHeads, keyDim: keyDim, valueDim: valueDim, convKernel: 3)
    c.deltaNetChunkSize = 4
    return c
}

/// A nemotron-nas decoder whose five layers differ: 2 key/value groups and an MLP of 512, no
/// attention and 256, 1 group and no MLP, neither, 2 groups and 256.
func heterogeneousConfig(tied: Bool = false, vocab: Int = 23) -> ModelConfig {
    var c = ModelConfig(family: .nemotronNAS, vocabSize: vocab, hiddenSize: 16, intermediateSize: 512, numHiddenLayers: 5,
                        numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, ropeTheta: 100, tieWordEmbeddings: tied,
                        maxPositionEmbeddings: 64, initializerRange: 0.3)
    c.layerVariants = [LayerVariant(keyValueGroups: 2, mlpWidth: 512), LayerVariant(keyValueGroups: nil, mlpWidth: 256),
                       LayerVariant(keyValueGroups: 1, mlpWidth: nil), LayerVariant(keyValueGroups: nil, mlpWidth: nil),
                       LayerVariant(keyValueGroups: 2, mlpWidth: 256)]
    return c
}

/// A fixture's config.json with some keys replaced (nil removes one), read as Topiary reads it.
func configVariant(_ fixture: URL, _ changes: [String: JSON?]) throws -> ModelConfig {
    var json = try #require(JSON.parse(try Data(contentsOf: fixture))?.object)
    for (key, value) in changes { json[key] = value ?? nil }
    return try ModelConfig.decode(JSON.object(json).data())
}

/// What reading that variant throws ("accepted" when it reads).
func configRefusal(_ fixture: URL, _ changes: [String: JSON?]) -> String {
    do {
        _ = try configVariant(fixture, changes)
        return "accepted"
    } catch { return "\(error)" }
}
