import Foundation
import Testing

@testable import Model

/// Decoding with a key/value cache against the full forward pass, and throughput's counts.
struct DecodeTests {
    static let configs: [(String, ModelConfig)] = [
        ("llama", tinyConfig(.llama)), ("qwen2", tinyConfig(.qwen2)), ("qwen3", tinyConfig(.qwen3, tied: true)),
        ("nemotron", tinyConfig(.nemotron)), ("mistral", tinyConfig(.mistral)), ("heterogeneous", heterogeneousConfig()),
        // Mamba2's recurrent form against the training scan (chunks of 4 crossed at 7).
        ("nemotron_h", hybridConfig()), ("nemotron_h without conv bias", hybridConfig(convBias: false)),
        // Gated DeltaNet's recurrent form and gated attention (chunks of 4 crossed at 7).
        ("qwen3_5", qwen35Config()), ("qwen3_5 tied, one value head per key head", qwen35Config(tied: true, valueHeads: 2)),
    ]

    /// Every step's logits equal the full forward's at that position (windows of 3 crossed at 7).
    @Test(arguments: configs.indices)
    func stepsEqualTheFullForward(_ i: Int) throws {
        let (name, c) = Self.configs[i]
        let m = DecoderModel(config: c)
        m.initialize(seed: 7)
        let (B, T) = (2, 7)
        var rng = SeededGenerator(seed: 3)
        let tokens = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
        let acts = Activations(config: c, batch: B, sequence: T)
        try m.forward(tokens: tokens, acts)
        let session = try DecodeSession(model: m, batch: B, capacity: T)
        var worst: Float = 0, largest: Float = 0
        for t in 0..<T {
            try session.step((0..<B).map { tokens[$0 * T + t] })
            for b in 0..<B {
                for v in 0..<c.vocabSize {
                    let full = acts.logits[(b * T + t) * c.vocabSize + v]
                    worst = max(worst, abs(session.logits.pointer[b * c.vocabSize + v] - full))
                    largest = max(largest, abs(full))
                }
            }
        }
        #expect(session.length == T)
        #expect(worst < 1e-5, "\(name): worst logit difference \(worst) (logits up to \(largest))")
        #expect(largest > 0.1, "\(name): logits too small to compare")
        #expect(throws: ModelError.self) { try session.step([0, 0]) }
    }

    @Test func mixturesAreRefused() {
        let m = DecoderModel(config: tinyConfig(.mixtral))
        #expect(throws: ModelError.self) { try DecodeSession(model: m, batch: 1, capacity: 4) }
    }

    /// The roofline of one llama block by hand: C 16, H 4, G 2, D 4, F 20 (1,728 matrix
    /// parameters, 1,760 in all); batch 2, prompts of 4, 3 generated, bfloat16; 1 GFLOP/s, 100 MB/s.
    @Test func rooflineByHand() throws {
        let c = tinyConfig(.llama)
        let b = c.block(0)
        let w = ServingWorkload(batch: 2, input: 4, output: 3)
        let line = Roofline(flopsPerSecond: 1e9, bytesPerSecond: 1e8)
        let t = Throughput.rooflineTimes(b, in: c, at: w, line)
        // Prefill: 2·(2·1728·4 + 4·4·4·(1+2+3+4)) = 28,928 FLOPs; 1760·2 + 2·4·16·2 = 3,776 bytes.
        #expect(abs(t.prefill - 3.776e-5) < 1e-12)
        // Decode at 5 cached: bytes 3520 + 2·5·16·2 = 3,840 (FLOPs 7,552); at 6: 3,904.
        #expect(abs(t.decodeFirst - 3.84e-5) < 1e-12)
        #expect(abs(t.decodeLast - 3.904e-5) < 1e-12)
        #expect(abs(t.seconds(output: 3) - (3.776e-5 + 3.84e-5 + 3.904e-5)) < 1e-12)
        // The head: 2·23·16·2 = 1,472 FLOPs against 23·16·2 = 736 bytes: 7.36e-6 s a step.
        #expect(abs(Throughput.rooflineOutside(c, at: w, line).prefill - 7.36e-6) < 1e-12)
    }

    /// A table's entries replace the roofline for the shapes it holds, and the estimate says how
    /// many parts it estimated.
    @Test func tableEntriesAreUsedWhereMeasured() throws {
        let c = heterogeneousConfig()
        let w = ServingWorkload(batch: 2, input: 8, output: 4)
        let line = Roofline(flopsPerSecond: 1e9, bytesPerSecond: 1e8)
        let roof = try #require(Throughput.estimate(c, at: w, table: nil, roofline: line))
        #expect(roof.estimated == 6 && roof.parts == 6)
        #expect(Throughput.estimate(c, at: w, table: nil, roofline: nil) == nil)
        var table = ThroughputTable(machine: "test", engine: "built-in", threads: 1, workload: w, roofline: nil)
        let measured = try Throughput.measure(c.block(0), like: c, at: w, repeats: 1)
        #expect(measured.prefill > 0 && measured.decodeFirst > 0 && measured.decodeLast > 0)
        table.blocks[Throughput.key(c.block(0), in: c)] = measured
        table.outside[Throughput.outsideKey(c)] = try Throughput.measureOutside(like: c, at: w, repeats: 1)
        let mixed = try #require(Throughput.estimate(c, at: w, table: table, roofline: line))
        #expect(mixed.estimated == 4)
        let rest = c.blocks.dropFirst().reduce(0.0) { $0 + Throughput.rooflineTimes($1, in: c, at: w, line).seconds(output: 4) }
        let expected = measured.seconds(output: 4) + rest + table.outside[Throughput.outsideKey(c)]!.seconds(output: 4)
        #expect(abs(mixed.seconds - expected) < 1e-12 * max(1, expected))
        #expect(abs(mixed.tokensPerSecond - 8 / expected) < 1e-9 * (8 / expected))
        // Keys tell shapes apart.
        #expect(Set(c.blocks.map { Throughput.key($0, in: c) }).count == 5)
    }
}
