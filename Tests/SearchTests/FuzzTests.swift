import Foundation
import FuzzSupport
import Model
import Search
import Testing

/// Seeded mutations of a real checkpoint's config.json, each run through `topiary model info`
/// and `model eval` under a 4 GB address-space limit: every run must end in a result or a clear
/// error (exit 0 or 1), never a crash (abort, out of memory, trap). TOPIARY_FUZZ_CONFIGS sets the
/// count (the CI pass runs 120; the documented long run 1,500).
@Suite struct ConfigFuzzTests {
    static let mutations: [JSON] = [0, -1, 1, 2, 3, 7, JSON(1 << 31), JSON(1 << 40), JSON(1_000_000_000_000), 1.5, -0.5, 1e308, "x", "", .null, true,
                                    [], [:], [1, 2], JSON(Double.greatestFiniteMagnitude), 65_536, 67_108_864]

    @Test func mutatedConfigsNeverCrash() throws {
        let count = Int(ProcessInfo.processInfo.environment["TOPIARY_FUZZ_CONFIGS"] ?? "") ?? 120
        let f = try Fixture()
        defer { f.cleanup() }
        let base = JSON.parse(try Data(contentsOf: f.teacher.appendingPathComponent("config.json")))!.object!
        let keys = base.keys.sorted() + ["rope_scaling", "sliding_window", "num_local_experts", "partial_rotary_factor", "model_type"]
        var rng = SeededGenerator(seed: 2026)
        let dir = f.root.appendingPathComponent("fuzzed")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: f.teacher.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        // TOPIARY_BINARY: fuzz another build (e.g. an older commit, to count what it crashed on).
        let binary = ProcessInfo.processInfo.environment["TOPIARY_BINARY"]
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary").path
        var outcomes = [Int32: Int](), crashes: [String] = []
        for i in 0..<count {
            var c = base
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let key = keys[Int(rng.next() % UInt64(keys.count))]
                if rng.next() % 8 == 0 { c[key] = nil } else { c[key] = Self.mutations[Int(rng.next() % UInt64(Self.mutations.count))] }
            }
            try JSON.object(c).data().write(to: dir.appendingPathComponent("config.json"))
            for command in ["model info \(dir.path)", "model eval \(dir.path) --data \(f.corpus.path) --tokens 32 --seq 8 --batch 2 --threads 1"] {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/bin/sh")
                p.arguments = ["-c", "ulimit -v 4000000; exec \(binary) \(command) >/dev/null 2>&1"]
                try p.run()
                p.waitUntilExit()
                let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
                outcomes[status, default: 0] += 1
                if status > 1 { crashes.append("#\(i) \(command.split(separator: " ").prefix(2).joined(separator: " ")) exit \(status): \(JSON.object(c))") }
            }
        }
        print("config fuzz: \(count) configs × 2 commands, exits \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))")
        #expect(crashes.isEmpty, "\(crashes.count) crashes, first: \(crashes.prefix(3).joined(separator: "\n"))")
        #expect(outcomes[1, default: 0] > 0 && outcomes[0, default: 0] > 0, "both valid and refused configs were tried")
    }
}

/// The spec parser and the safetensors index reader under the same seeded mutations as the
/// Model parsers (`ParserFuzzTests`): a result or a thrown error, never a crash.
@Suite struct SpecFuzzTests {
    @Test func specsAndShardIndexes() throws {
        let iterations = Mutation.iterations
        let f = try Fixture()
        defer { f.cleanup() }
        var rng = SeededGenerator(seed: 505)
        let base = f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount)]])
        var accepted = 0
        for _ in 0..<iterations {
            var j = base
            for _ in 0..<(1 + Int(rng.next() % 3)) { j = Mutation.mutate(j, &rng) }
            guard let spec = try? f.parse(j) else { continue }
            accepted += 1
            let e = Enumeration.of(spec, teacher: f.config, limit: 1000)
            _ = try? e.requireWithinLimit(spec)
            _ = try? spec.checkResources(teacher: f.config)
        }
        // A sharded checkpoint whose index lies.
        let sharded = f.root.appendingPathComponent("sharded")
        let m = try Checkpoint.load(f.teacher)
        try Checkpoint.save(m, to: sharded, shardBytes: 4096)
        let indexURL = sharded.appendingPathComponent("model.safetensors.index.json")
        let index = JSON.parse(try Data(contentsOf: indexURL))!
        var loaded = 0
        for _ in 0..<max(1, iterations / 3) {
            var j = index
            for _ in 0..<(1 + Int(rng.next() % 2)) { j = Mutation.mutate(j, &rng) }
            try j.data().write(to: indexURL)
            if (try? Checkpoint.load(sharded)) != nil { loaded += 1 }
        }
        print("fuzz specs: \(iterations) inputs, \(accepted) accepted; safetensors index: \(max(1, iterations / 3)) inputs, \(loaded) loaded; 0 crashes")
        #expect(accepted > 0)
    }
}
