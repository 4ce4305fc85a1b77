import Foundation
import Model
import Proxy
import Testing

/// Issue 25, item 1: pruning and export stream from the teacher's files. A pruned checkpoint cut
/// a tensor at a time from the memory-mapped teacher equals the one pruned in memory, every
/// tensor keeps the teacher's dtype bit for bit, and the teacher's fingerprint streams to the
/// same value as the loaded model's.
@Suite struct StreamingPruneTests {
    static func folder(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "topiary-stream-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Every tensor of a checkpoint directory: dtype, shape and bytes.
    static func tensors(_ dir: URL) throws -> [String: (DType, [Int], [UInt8])] {
        var out: [String: (DType, [Int], [UInt8])] = [:]
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".safetensors") }
        for name in files {
            let f = try SafeTensorsFile(url: dir.appendingPathComponent(name))
            for t in f.names {
                out[t] = try f.withBytes(t) { raw, info in (info.dtype, info.shape, Array(raw)) }
            }
        }
        return out
    }

    static let cases: [(Family, [String: JSON])] = [
        (.llama, ["num_hidden_layers": 3, "hidden_size": 18, "num_attention_heads": 3, "intermediate_size": 13]),
        (.nemotron, ["num_key_value_heads": 2, "num_attention_heads": 4, "intermediate_size": 11]),
        (.qwen2, ["num_hidden_layers": 2, "hidden_size": 16]),
        (.qwen3, ["num_attention_heads": 3, "intermediate_size": 9]),
        (.mistral, ["hidden_size": 18, "num_key_value_heads": 1, "num_attention_heads": 2]),
        (.mixtral, ["num_local_experts": 4, "intermediate_size": 7, "hidden_size": 18]),
        (.jetmoe, ["num_local_experts": 4, "num_key_value_heads": 1, "num_hidden_layers": 3]),
        (.qwen3Moe, ["num_experts": 4, "moe_intermediate_size": 7, "num_experts_per_tok": 1]),
    ]

    /// Streamed from a float32 and from a bfloat16 teacher, with and without a conversion: the
    /// same tensors, names, shapes and bytes as pruning the loaded teacher and saving it.
    @Test(arguments: cases.indices)
    func streamedEqualsInMemoryForEveryFamily(_ index: Int) throws {
        let (family, shape) = Self.cases[index]
        let t = family.isMixture ? mixtureTeacher(family) : teacherModel(family)
        let scores = family.isMixture ? randomMixtureScores(t.config) : randomScores(t.config)
        let target = try Pruning.targetConfig(teacher: t.config, target: shape)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        let root = try Self.folder(family.rawValue)
        defer { try? FileManager.default.removeItem(at: root) }
        for stored in [StorageType.float32, .bfloat16] {
            let teacherDir = root.appendingPathComponent("teacher-\(stored.rawValue)")
            try Checkpoint.save(t, to: teacherDir, type: stored)
            let loaded = try Checkpoint.load(teacherDir)
            let weights = try CheckpointWeights(teacherDir)
            #expect(try Fingerprint.of(weights) == Fingerprint.of(loaded), "\(family) \(stored): the streamed fingerprint")
            #expect(weights.storageType == stored)
            let student = Pruning.apply(plan, teacher: loaded, target: target)
            for type in [nil, StorageType.float32, .bfloat16, .float16] {
                let streamed = root.appendingPathComponent("streamed-\(stored.rawValue)-\(type?.rawValue ?? "own")")
                try Pruning.write(plan, teacher: weights, target: target, type: type, to: streamed)
                let inMemory = root.appendingPathComponent("memory-\(stored.rawValue)-\(type?.rawValue ?? "own")")
                try Checkpoint.save(student, to: inMemory, type: type ?? stored)
                let a = try Self.tensors(streamed), b = try Self.tensors(inMemory)
                #expect(a.keys.sorted() == b.keys.sorted() && !a.isEmpty)
                for (name, x) in a {
                    let y = b[name]!
                    #expect(x.0 == y.0 && x.1 == y.1 && x.2 == y.2, "\(family) \(stored)→\(type?.rawValue ?? "own"): \(name)")
                }
                let config = try ModelConfig.load(streamed.appendingPathComponent("config.json"))
                #expect(config == student.config)
                #expect(JSON.parse(try Data(contentsOf: streamed.appendingPathComponent("config.json")))?["dtype"]?.string
                        == (type ?? stored).rawValue)
                // And it loads as the student it is.
                #expect(try Checkpoint.load(streamed).config == student.config)
            }
        }
    }

    /// A bfloat16 value is copied, never converted: the student's bits are the teacher's bits at
    /// the kept indices (checked against the teacher's file directly, not through Topiary's pruning).
    @Test func bfloat16ValuesAreTheTeachersBits() throws {
        let t = teacherModel(.llama)
        let root = try Self.folder("bits")
        defer { try? FileManager.default.removeItem(at: root) }
        let teacherDir = root.appendingPathComponent("teacher")
        try Checkpoint.save(t, to: teacherDir, type: .bfloat16)
        let target = try Pruning.targetConfig(teacher: t.config, target: ["intermediate_size": 9, "hidden_size": 18])
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: randomScores(t.config), options: PruneOptions())
        let out = root.appendingPathComponent("student")
        try Pruning.write(plan, teacher: try CheckpointWeights(teacherDir), target: target, to: out)
        let teacher = try Self.tensors(teacherDir), student = try Self.tensors(out)
        func bits(_ t: (DType, [Int], [UInt8]), _ i: Int) -> UInt16 { UInt16(t.2[2 * i]) | UInt16(t.2[2 * i + 1]) << 8 }
        // layers.1.mlp.down_proj: rows are channels, columns neurons.
        let l = plan.layers[1]
        let src = teacher["model.layers.\(l).mlp.down_proj.weight"]!, dst = student["model.layers.1.mlp.down_proj.weight"]!
        #expect(src.0 == .BF16 && dst.0 == .BF16 && dst.1 == [18, 9])
        for (i, r) in plan.channels.enumerated() {
            for (j, c) in plan.neurons[1].enumerated() {
                #expect(bits(dst, i * 9 + j) == bits(src, r * src.1[1] + c))
            }
        }
    }

    /// A NaN the pruned model would keep is refused, naming the tensor; one it drops is not read.
    @Test func aKeptNaNIsRefusedAndADroppedOneIsNot() throws {
        let t = teacherModel(.llama)
        let target = try Pruning.targetConfig(teacher: t.config, target: ["num_hidden_layers": 3])
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: randomScores(t.config), options: PruneOptions())
        let root = try Self.folder("nan")
        defer { try? FileManager.default.removeItem(at: root) }
        let dropped = (0..<4).first { !plan.layers.contains($0) }!
        for (layer, refused) in [(dropped, false), (plan.layers[0], true)] {
            let teacherDir = root.appendingPathComponent("teacher-\(layer)")
            try Checkpoint.save(t, to: teacherDir)
            // Write a NaN into layer `layer`'s up_proj, in the file, as a corrupted download would.
            let file = teacherDir.appendingPathComponent("model.safetensors")
            let name = "model.layers.\(layer).mlp.up_proj.weight"
            let f = try SafeTensorsFile(url: file)
            let header = try Data(contentsOf: file).prefix(8).withUnsafeBytes {
                Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)))
            }
            let offset = 8 + header + (try f.info(name).begin)
            let h = try FileHandle(forWritingTo: file)
            try h.seek(toOffset: UInt64(offset))
            var nan = Float.nan.bitPattern.littleEndian
            try h.write(contentsOf: Data(bytes: &nan, count: 4))
            try h.close()
            let out = root.appendingPathComponent("student-\(layer)")
            if refused {
                #expect { try Pruning.write(plan, teacher: try CheckpointWeights(teacherDir), target: target, to: out) } throws: {
                    "\($0)".contains("model.layers.0.mlp.up_proj.weight") && "\($0)".contains("NaN")
                }
                #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
            } else {
                try Pruning.write(plan, teacher: try CheckpointWeights(teacherDir), target: target, to: out)
                #expect(try Checkpoint.load(out).config.numHiddenLayers == 3)
            }
        }
    }

    /// Shards: a student larger than the shard size is written as shards with an index, and loads.
    @Test func shardedStudentsLoad() throws {
        let t = teacherModel(.qwen3)
        let root = try Self.folder("shards")
        defer { try? FileManager.default.removeItem(at: root) }
        let teacherDir = root.appendingPathComponent("teacher")
        try Checkpoint.save(t, to: teacherDir, type: .bfloat16)
        let target = try Pruning.targetConfig(teacher: t.config, target: ["num_hidden_layers": 3])
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: randomScores(t.config), options: PruneOptions())
        let out = root.appendingPathComponent("student")
        try Pruning.write(plan, teacher: try CheckpointWeights(teacherDir), target: target, to: out, shardBytes: 4096)
        let shards = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasPrefix("model-") }
        #expect(shards.count > 1)
        let loaded = try Checkpoint.load(out)
        let expected = Pruning.apply(plan, teacher: try Checkpoint.load(teacherDir), target: target)
        #expect(loaded.parameters.array == expected.parameters.array)
    }
}
