import Foundation
@testable import Model
import Testing

/// Issue 27, item 1: memory and FLOPs at a serving workload, each against a count made by hand.
struct InferenceCostTests {
    /// SmolLM2-135M's shape: 30 llama layers, hidden 576, 9 heads over 3 groups of 64, MLP 1536,
    /// vocabulary 49,152, tied embeddings.
    static let smol = ModelConfig(
        family: .llama, vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
        numAttentionHeads: 9, numKeyValueHeads: 3, headDim: 64, tieWordEmbeddings: true, maxPositionEmbeddings: 8192)

    @Test func smolLM2AtEightThousandTokens() {
        let c = Self.smol
        #expect(c.parameterCount == 134_515_008)
        let cost = c.inferenceCost(Workload(batch: 1, context: 8192, weights: .bfloat16))
        // 134,515,008 parameters × 2 bytes.
        #expect(cost.weightBytes == 269_030_016)
        // 30 layers × (keys + values) × 3 groups × 64 × 8,192 positions × 2 bytes.
        #expect(cost.kvCacheBytes == 30 * 2 * 3 * 64 * 8192 * 2)
        #expect(cost.kvCacheBytes == 188_743_680)
        #expect(cost.memoryBytes == 457_773_696)
        // Per layer: qkv 576·(9+6)·64 + o 9·64·576 + MLP 3·576·1536 = 3,538,944 weights; × 30, plus
        // the LM head 49,152·576 (tied, still a product) = 134,479,872; × 2 FLOPs. Attention:
        // 30 · 4 · 9 · 64 · 8,192.
        #expect(cost.decodeFLOPsPerToken == 2 * 134_479_872 + 30 * 4 * 9 * 64 * 8192)
        #expect(cost.decodeFLOPsPerToken == 835_190_784)
        // Batch and cache dtype scale the cache only.
        let wide = c.inferenceCost(Workload(batch: 4, context: 8192, weights: .float32, cache: .bfloat16))
        #expect(wide.weightBytes == 134_515_008 * 4)
        #expect(wide.kvCacheBytes == 4 * 188_743_680)
        #expect(wide.decodeFLOPsPerToken == cost.decodeFLOPsPerToken)
    }

    /// What the solver adds up: every block's cost plus what lies outside the blocks is the
    /// model's, for a heterogeneous model and a homogeneous one, with and without a workload.
    @Test func blockCostsSumToTheModels() {
        for c in [heterogeneousConfig(), heterogeneousConfig(tied: true), Self.smol] {
            for w in [Workload(batch: 3, context: 40, weights: .bfloat16, cache: .float32), nil] {
                let parts = c.blocks.map { c.blockCost($0, at: w) } + [c.costOutsideBlocks(at: w)]
                #expect(parts.reduce(0) { $0 + $1.parameters } == c.parameterCount)
                #expect(parts.reduce(0) { $0 + $1.decodeFLOPs } == c.inferenceCost(w ?? Workload(batch: 1, context: 0)).decodeFLOPsPerToken)
                if let w { #expect(parts.reduce(0) { $0 + $1.memoryBytes } == c.inferenceCost(w).memoryBytes) }
            }
        }
    }

    /// A sliding-window layer caches its window, not the context, and attends over it.
    @Test func slidingWindowLayersCacheTheirWindow() {
        let c = ModelConfig(
            family: .qwen2, vocabSize: 257, hiddenSize: 24, intermediateSize: 32, numHiddenLayers: 3,
            numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, slidingWindow: 4,
            slidingLayers: [1])
        let cost = c.inferenceCost(Workload(batch: 2, context: 10, weights: .float32))
        // Layers 0 and 2 hold 10 positions, layer 1 its window of 4; 2·3·4 = 24 values a position.
        #expect(cost.kvCacheBytes == (10 + 4 + 10) * 24 * 2 * 4)
        // qkv 24·(6+6)·4 (+ its bias, not a product) + o 6·4·24 + MLP 3·24·32 = 4,032 per layer;
        // the untied head 257·24.
        #expect(c.matmulParameterCount == 3 * 4032 + 257 * 24)
        #expect(cost.decodeFLOPsPerToken == 2 * (3 * 4032 + 257 * 24) + 4 * 6 * 4 * (10 + 4 + 10))
        // Beyond the window nothing changes for layer 1.
        let short = c.inferenceCost(Workload(batch: 2, context: 3, weights: .float32))
        #expect(short.kvCacheBytes == (3 + 3 + 3) * 24 * 2 * 4)
    }

    /// JetMoE: k attention experts of G query heads each over one shared key/value projection.
    @Test func mixtureOfAttentionCountsTheChosenExperts() {
        let c = ModelConfig(
            family: .jetmoe, vocabSize: 257, hiddenSize: 24, intermediateSize: 16, numHiddenLayers: 3,
            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, maxPositionEmbeddings: 64, numLocalExperts: 4,
            numExpertsPerTok: 2)
        let cost = c.inferenceCost(Workload(batch: 1, context: 8, weights: .bfloat16))
        #expect(cost.kvCacheBytes == 3 * 2 * 2 * 4 * 8 * 2)
        #expect(cost.decodeFLOPsPerToken == 2 * c.matmulParameterCount + 3 * 4 * (2 * 2) * 4 * 8)
        #expect(cost.weightBytes == c.parameterCount * 2)
    }
}
