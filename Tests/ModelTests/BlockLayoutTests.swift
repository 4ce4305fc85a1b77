import Foundation
@testable import Model
import Testing

/// Issue 23: the decoder as a block list, its tensors tagged with roles. Every family's layout
/// gives each tensor a role and an axis role per dimension (what generic pruning walks), one
/// tensor per role, layer and expert; the blocks differ exactly where the config says layers
/// differ; and the block-wise accounting equals the layout's count.
@Suite struct BlockLayoutTests {
    @Test(arguments: Family.allCases)
    func everyTensorHasItsRolesOnce(_ family: Family) throws {
        for tied in [false, true] {
            let c = tinyConfig(family, tied: tied, layers: 3)
            let layout = ParameterLayout(config: c)
            var seen: Set<String> = []
            for e in layout.entries {
                let role = try #require(e.role, "\(family) \(e.name) has no role")
                #expect(e.dims.count == e.shape.count, "\(family) \(e.name): \(e.dims.count) axis roles, \(e.shape.count) axes")
                #expect(seen.insert("\(role)/\(e.layer ?? -1)/\(e.expert ?? -1)").inserted, "\(family) \(e.name): role \(role) twice")
                #expect(layout.entry(role, layer: e.layer, expert: e.expert) == e)
                // A unit's width divides its axis (heads × D, copies of gate/up).
                for (d, n) in zip(e.dims, e.shape) where d.unit != nil {
                    #expect(n % (d.width * d.copies) == 0, "\(family) \(e.name): axis of \(n) is not whole units")
                }
            }
            #expect(layout.count == c.parameterCount, "\(family) tied \(tied)")
            #expect(c.activeParameterCount <= c.parameterCount)
            #expect(layout.entry(.lmHead) == nil || !tied)
            #expect(layout.embeddingCount == c.embeddingParameterCount)
        }
    }

    @Test func blocksDifferWhereTheConfigSaysLayersDiffer() throws {
        let moe = tinyConfig(.qwen3Moe, layers: 3)   // layer 1: a dense MLP
        #expect(moe.blocks.map(\.isSparse) == [true, false, true])
        #expect(moe.blocks[1].channelMixer == .dense(width: moe.intermediateSize))
        #expect(moe.blocks[0].channelMixer == .experts(count: 4, topK: 2, width: 8))
        #expect(moe.distinctBlocks.map(\.count).sorted() == [1, 2])
        let qwen2 = tinyConfig(.qwen2, layers: 3)    // layer 1: a window of 3
        let windows = qwen2.blocks.map { b -> Int? in
            guard case let .attention(_, _, _, window, _) = b.mixer else { return nil }
            return window
        }
        #expect(windows == [nil, 3, nil])
        let jet = tinyConfig(.jetmoe)
        #expect(jet.blocks.allSatisfy { $0.mixer == .attention(heads: 4, groups: 2, headDim: 4, window: nil, experts: 4) })
        // Depth costs nothing: a config of 10^12 layers is counted from its few distinct blocks.
        var deep = tinyConfig(.llama)
        deep.numHiddenLayers = 1_000_000_000_000
        #expect(deep.distinctBlocks.count == 1 && deep.distinctBlocks[0].count == 1_000_000_000_000)
    }
}
