import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 27, item 1: a floor on generated tokens per second at a serving workload, from block
/// times measured by `topiary bench throughput` or estimated by the roofline.
struct ThroughputBudgetTests {
    static let line: JSON = ["flops_per_second": 1e9, "bytes_per_second": "100MB"]
    static func floor(_ min: Double, table: String? = nil, roofline: JSON? = line) -> JSON {
        var o: [String: JSON] = ["min": JSON(min), "batch": 2, "input": 8, "output": 4]
        if let table { o["table"] = .string(table) }
        if let roofline { o["roofline"] = roofline }
        return .object(o)
    }
    static let workload = ServingWorkload(batch: 2, input: 8, output: 4)

    /// The floor keeps exactly the shapes whose estimate reaches it, as a filter over every
    /// combination does, and counts the rest under its rule.
    @Test func rooflineFloorKeepsExactlyTheShapesFastEnough() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let all = Enumeration.of(try f.parse(f.spec()), teacher: f.config).candidates
        let line = Roofline(flopsPerSecond: 1e9, bytesPerSecond: 1e8)
        func rate(_ c: Candidate) -> Double {
            Throughput.estimate(c.config, at: Self.workload, table: nil, roofline: line)!.tokensPerSecond
        }
        let rates = all.map(rate).sorted()
        let floor = rates[rates.count / 2]
        let spec = try f.parse(f.spec(["budget": ["min": 1, "max": JSON(f.config.parameterCount), "throughput": Self.floor(floor)]]))
        #expect(spec.budget.throughput?.roofline == line && spec.budget.throughput?.workload == Self.workload)
        let e = Enumeration.of(spec, teacher: f.config)
        let expected = all.filter { rate($0) >= floor }
        #expect(Set(e.candidates.map(\.hash)) == Set(expected.map(\.hash)))
        #expect(!expected.isEmpty && expected.count < all.count)
        #expect(e.excluded.first { $0.rule == "fall below budget.throughput.min" }?.count == all.count - expected.count)
        #expect(Set(Enumeration.exhaustive(spec, teacher: f.config).map(\.hash)) == Set(expected.map(\.hash)))
    }

    static let badBudgets: [(JSON, String)] = [
        (["min": 1, "throughput": ["batch": 2, "input": 8, "output": 4, "roofline": line]], "budget.throughput.min"),
        (["min": 1, "throughput": ["min": 10, "input": 8, "output": 4, "roofline": line]], "budget.throughput.batch"),
        (["min": 1, "throughput": ["min": 10, "batch": 2, "input": 60, "output": 8, "roofline": line]], "budget.throughput"),
        (["min": 1, "throughput": ["min": 10, "batch": 2, "input": 8, "output": 4]], "budget.throughput"),
        (["min": 1, "throughput": floor(10, table: "/nonexistent/table.json", roofline: nil)], "budget.throughput.table"),
        (["min": 1, "throughput": floor(10, roofline: ["flops_per_second": 1e9])], "budget.throughput.roofline.bytes_per_second"),
        (["min": 1, "throughput": floor(-1)], "budget.throughput.min"),
        (["min": 1, "throughput": ["min": 10, "batch": 2, "input": 8, "output": 4, "roofline": line, "context": 8]],
         "budget.throughput.context"),
    ]

    @Test(arguments: badBudgets)
    func badThroughputBudgetsNameTheirKey(budget: JSON, path: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        #expect { _ = try f.parse(f.spec(["budget": budget])) } throws: { error in
            guard case let SearchError.spec(_, p, _) = error else { return false }
            return p == path
        }
    }

    /// `bench throughput` measures every block shape of the candidates once and writes the table;
    /// `spec check` then prints each candidate's tokens/s from it (nothing estimated), and a second
    /// measurement finds every shape already there.
    @Test func benchThroughputWritesTheTableSpecCheckReads() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let file = f.root.appendingPathComponent("spec.json"), table = f.root.appendingPathComponent("table.json")
        try f.spec(["budget": ["min": 1, "max": JSON(f.config.parameterCount),
                               "throughput": Self.floor(1, table: table.path, roofline: nil)]]).data().write(to: file)
        let missing = try topiary(["spec", "check", file.path])
        #expect(missing.status != 0 && missing.err.contains("budget.throughput.table") && missing.err.contains("bench throughput"))
        let bench = try topiary(["bench", "throughput", file.path, "--repeats", "1", "--threads", "1"])
        #expect(bench.status == 0, "\(bench.err)")
        let measured = try JSONDecoder().decode(ThroughputTable.self, from: Data(contentsOf: table))
        #expect(measured.workload == Self.workload && measured.roofline != nil && measured.threads == 1)
        let spec = try f.parse(JSON.parse(try Data(contentsOf: file))!)
        let candidates = Enumeration.of(spec, teacher: f.config).candidates
        #expect(!candidates.isEmpty)
        for c in candidates {
            for b in c.config.blocks { #expect(measured.blocks[Throughput.key(b, in: c.config)] != nil) }
            #expect(measured.outside[Throughput.outsideKey(c.config)] != nil)
        }
        let check = try topiary(["spec", "check", file.path, "--json"])
        #expect(check.status == 0, "\(check.err)")
        let rows = try #require(JSON.parse(Data(check.out.utf8))?.array)
        #expect(rows.count == candidates.count)
        for r in rows {
            #expect(r["throughput"]?["estimated_parts"]?.int == 0)
            #expect((r["throughput"]?["tokens_per_second"]?.double ?? 0) > 0)
        }
        let text = try topiary(["spec", "check", file.path])
        #expect(text.out.contains("tokens/s") && text.out.contains("measured: \(table.path)"))
        let again = try topiary(["bench", "throughput", file.path, "--repeats", "1", "--threads", "1", "--check", "2"])
        #expect(again.out.contains("already measured") && again.out.contains("0 block shapes") == false)
        // --check: the teacher and two candidates timed whole, each beside the sum of its blocks.
        let checked = again.out.split(separator: "\n").filter { $0.contains("sum of blocks") }
        #expect(again.out.contains("whole-model check: 3 models") && checked.count == 3, "\(again.out)")
        #expect(checked.first?.hasPrefix("  teacher: measured ") == true)
        for line in checked {
            let ratio = Double(line.components(separatedBy: "measured/sum ").last ?? "") ?? 0
            #expect(ratio > 0 && ratio.isFinite, "\(line)")
        }
        let counts = again.out.split(separator: "\n").first { $0.contains("already measured") }.map(String.init) ?? ""
        #expect(counts.hasPrefix("\(measured.blocks.count) block shapes, \(measured.blocks.count) already"), "\(counts)")
        // A table measured at another workload is refused by name.
        var other = measured
        other.workload.batch = 3
        try JSONEncoder().encode(other).write(to: table)
        let stale = try topiary(["spec", "check", file.path])
        #expect(stale.status != 0 && stale.err.contains("another workload"))
    }

    /// The puzzle strategy's program bounds the summed block seconds: every solution reaches the floor.
    /// `results pareto --cost throughput`: each row's tokens/s is the candidate's estimate at the
    /// study's floor, and no candidate is both faster and better than a front member.
    @Test func paretoAgainstThroughput() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let all = Enumeration.of(try f.parse(f.spec()), teacher: f.config).candidates
        let line = Roofline(flopsPerSecond: 1e9, bytesPerSecond: 1e8)
        let rates = all.map { Throughput.estimate($0.config, at: Self.workload, table: nil, roofline: line)!.tokensPerSecond }.sorted()
        let spec = try f.writeSpec(f.spec(["budget": ["min": 1, "max": JSON(f.config.parameterCount),
                                                      "throughput": Self.floor(rates[rates.count / 2])]]))
        let run = try topiary(["search", "run", spec, "--db", f.db, "--artifacts", f.root.appendingPathComponent("a").path,
                               "--threads", "1"], in: f.root)
        #expect(run.status == 0, "\(run.err)")
        let front = try topiary(["results", "pareto", "tiny", "--cost", "throughput", "--db", f.db, "--format", "json"])
        #expect(front.status == 0, "\(front.err)")
        let rows = try #require(JSON.parse(Data(front.out.utf8))?.array)
        let store = try StudyStore(path: f.db, access: .read)
        defer { store.close() }
        let ranked = try store.top(study: try #require(try store.study(named: "tiny")).id)
        func rate(_ hash: String) throws -> Double {
            let a = try #require(ranked.first { $0.trial.hash == hash }).trial.architecture
            let c = try Pruning.targetConfig(teacher: f.config, target: a.object ?? [:])
            return Throughput.estimate(c, at: Self.workload, table: nil, roofline: line)!.tokensPerSecond
        }
        #expect(!rows.isEmpty && rows.count < ranked.count, "\(rows.count) of \(ranked.count)")
        for r in rows {
            let hash = try #require(r["candidate"]?.string)
            let shown = try #require(r["throughput"]?.double)
            let expected = try rate(hash)
            #expect(abs(shown - expected) <= 0.05 + 1e-9, "\(hash): \(shown) vs \(expected)")
            let mine = try #require(ranked.first { $0.trial.hash == hash })
            let beaten = try ranked.filter { $0.trial.rung == mine.trial.rung && $0.value < mine.value }
                .contains { try rate($0.trial.hash) > shown + 0.05 }
            #expect(!beaten, "\(hash) is beaten on both")
        }
        // Two costs at once: the front over parameters, tokens/s and the score holds the
        // throughput front and nothing another candidate beats on all three.
        let both = try topiary(["results", "pareto", "tiny", "--cost", "parameters,throughput", "--db", f.db, "--format", "json"])
        #expect(both.status == 0, "\(both.err)")
        let rows2 = try #require(JSON.parse(Data(both.out.utf8))?.array)
        let hashes2 = Set(rows2.compactMap { $0["candidate"]?.string })
        #expect(Set(rows.compactMap { $0["candidate"]?.string }).isSubset(of: hashes2) && rows2.count < ranked.count)
        let top = ranked.map(\.trial.rung).max()!
        for r in rows2 {
            let hash = try #require(r["candidate"]?.string)
            let mine = try #require(ranked.first { $0.trial.hash == hash })
            let beaten = try ranked.filter { $0.trial.rung == top && $0.value < mine.value && $0.trial.parameters <= mine.trial.parameters }
                .contains { try rate($0.trial.hash) >= (try rate(hash)) }
            #expect(!beaten, "\(hash) is beaten on all three")
        }
        #expect(try topiary(["results", "pareto", "tiny", "--cost", "throughput,throughput", "--db", f.db]).status != 0)
        #expect(try topiary(["results", "pareto", "tiny", "--cost", "memory,speed", "--db", f.db]).err.contains("'speed'"))
        let html = try StudyReport(store: store, study: "tiny").indexHTML()
        #expect(html.contains("<svg id=\"pareto-throughput\"") && !html.contains("pareto-memory"))
        let table = try topiary(["results", "pareto", "tiny", "--cost", "throughput", "--db", f.db, "--format", "table"])
        #expect(table.out.contains("throughput") && table.out.contains("*"), "\(table.out)")
        // A study without a floor says what is missing.
        let plain = try f.writeSpec(f.spec(["study": "plain"]), name: "plain.json")
        #expect(try topiary(["search", "run", plain, "--db", f.db, "--artifacts", f.root.appendingPathComponent("b").path,
                             "--threads", "1"], in: f.root).status == 0)
        let refused = try topiary(["results", "pareto", "plain", "--cost", "throughput", "--db", f.db])
        #expect(refused.status != 0 && refused.err.contains("budget.throughput"), "\(refused.err)")
    }

    @Test func puzzleSolutionsReachTheFloor() throws {
        let (f, teacher) = try PuzzleTests.fixture()
        defer { f.cleanup() }
        let t = try ModelConfig.load(teacher.appendingPathComponent("config.json"))
        let line = Roofline(flopsPerSecond: 1e9, bytesPerSecond: 1e8)
        let teacherRate = Throughput.estimate(t, at: Self.workload, table: nil, roofline: line)!.tokensPerSecond
        var json = f.spec(["strategy": ["name": "puzzle", "solutions": 3, "min_hamming": 1, "num_key_value_heads": [2, 1],
                                        "intermediate_size": [512, 256]],
                           "space": [:], "budget": ["max": 1_000_000, "throughput": Self.floor(teacherRate * 1.3)]])
        json = .object(json.object!.merging(["teacher": .string(teacher.path)]) { $1 })
        let spec = try f.parse(json)
        let puzzle = try #require(spec.strategy.value as? Puzzle)
        let library = puzzle.library(teacher: t)
        // Scores that prefer the teacher's own block, so the floor is what pushes layers to shrink.
        let scores = (0..<t.numHiddenLayers).map { l in library.indices.map { Double($0) + Double(l) * 0.1 } }
        let candidates = try puzzle.candidates(spec: spec, teacher: t, scores: scores) { _ in }
        #expect(!candidates.isEmpty)
        for c in candidates {
            let rate = Throughput.estimate(c.config, at: Self.workload, table: nil, roofline: line)!.tokensPerSecond
            #expect(rate >= teacherRate * 1.3 * (1 - 1e-9), "\(c.config.layerVariants ?? []) at \(rate)")
        }
    }

    /// A puzzle spec with a throughput floor whose table is `table`, and the spec's file.
    static func puzzleThroughputSpec(_ f: Fixture, teacher: URL, table: URL, backend: JSON? = nil) throws -> URL {
        var json = f.spec(["strategy": ["name": "puzzle", "solutions": 2, "num_key_value_heads": [2, 1], "intermediate_size": [512, 256]],
                           "space": [:], "budget": ["max": 1_000_000, "throughput": Self.floor(1, table: table.path, roofline: nil)]])
        json = .object(json.object!.merging(["teacher": .string(teacher.path)]) { $1 })
        if let backend { json = .object(json.object!.merging(["backend": backend]) { $1 }) }
        let file = f.root.appendingPathComponent("puzzle-throughput.json")
        try json.data().write(to: file)
        return file
    }

    /// Issue 27, item 1: `bench throughput --backend torch` times the same block shapes as the
    /// built-in engine (the puzzle library's, and what lies outside the blocks) with PyTorch — each
    /// block's decode step checked against its prefill — and writes a table that names the device
    /// and torch and that `spec check` reads; `--check` times the teacher and candidates whole.
    @Test func benchThroughputOnTheTorchBackendTimesTheSameShapes() throws {
        guard let python = BackendTests.python("benchThroughputOnTheTorchBackendTimesTheSameShapes") else { return }
        let (f, teacher) = try PuzzleTests.fixture()
        defer { f.cleanup() }
        let table = f.root.appendingPathComponent("torch-table.json"), builtinTable = f.root.appendingPathComponent("builtin.json")
        let file = try Self.puzzleThroughputSpec(f, teacher: teacher, table: table)
        let torch = try topiary(["bench", "throughput", file.path, "--backend", "torch", "--python", python, "--repeats", "1",
                                 "--check", "2"])
        #expect(torch.status == 0, "\(torch.err)")
        let builtin = try topiary(["bench", "throughput", file.path, "--out", builtinTable.path, "--repeats", "1", "--threads", "1"])
        #expect(builtin.status == 0, "\(builtin.err)")
        let t = try JSONDecoder().decode(ThroughputTable.self, from: Data(contentsOf: table))
        let b = try JSONDecoder().decode(ThroughputTable.self, from: Data(contentsOf: builtinTable))
        #expect(Set(t.blocks.keys) == Set(b.blocks.keys) && t.blocks.count == 9, "\(t.blocks.keys.sorted())")
        #expect(Set(t.outside.keys) == Set(b.outside.keys))
        #expect(t.engine.hasPrefix("torch ") && t.engine.contains("cpu") && t.workload == Self.workload && t.roofline != nil)
        for (key, p) in t.blocks {
            #expect([p.prefill, p.decodeFirst, p.decodeLast].allSatisfy { $0 > 0 && $0.isFinite }, "\(key)")
        }
        let checked = torch.out.split(separator: "\n").filter { $0.contains("sum of blocks") }
        #expect(torch.out.contains("whole-model check: 3 models") && checked.count == 3, "\(torch.out)")
        #expect(torch.out.contains("backend torch: timed block 'C16 H4 G1 D4 F256 swiglu'"), "\(torch.out)")
        let check = try topiary(["spec", "check", file.path])
        #expect(check.status == 0 && check.out.contains("measured: \(table.path)"), "\(check.err)")
    }

    /// A backend's timings are checked before they are kept: a decode step that does not reproduce
    /// its prefill, a shape left untimed, a time that is not positive — each refused, naming the
    /// part, and no table written; a shape the torch timer does not build (a mixture of experts)
    /// is refused before the backend starts.
    @Test(arguments: [("diverge", "does not compute what it times"), ("missing", "no timing of"),
                      ("negative", "not positive and finite")])
    func aBackendsTimingsAreCheckedBeforeTheyAreKept(mode: String, message: String) throws {
        let (f, teacher) = try PuzzleTests.fixture()
        defer { f.cleanup() }
        let script = f.root.appendingPathComponent("timer.py")
        try #"""
            import json, sys
            mode, job = sys.argv[1], json.load(open(sys.argv[2]))
            out = lambda **f: print(json.dumps(f), flush=True)
            out(event="machine", machine="liar", engine="liar", threads=1, flops_per_second=1e9, bytes_per_second=1e9)
            parts = [("block", p["key"]) for p in job["blocks"]] + [("outside", o["key"]) for o in job["outside"]]
            for i, (part, key) in enumerate(parts):
                if mode == "missing" and i == 0:
                    continue
                out(event="timed", part=part, key=key, prefill=-1.0 if mode == "negative" else 1e-3, decode_first=1e-4,
                    decode_last=1e-4, decode_error=0.5 if mode == "diverge" else 0.0)
            out(event="done", failed=[])
            """#.write(to: script, atomically: true, encoding: .utf8)
        let table = f.root.appendingPathComponent("table.json")
        let file = try Self.puzzleThroughputSpec(
            f, teacher: teacher, table: table, backend: ["command": ["/usr/bin/env", "python3", .string(script.path), .string(mode)]])
        let r = try topiary(["bench", "throughput", file.path, "--repeats", "1"])
        #expect(r.status != 0 && r.err.contains(message), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: table.path))
        // The same liar, honest: its table is written as it said.
        if mode == "diverge" {
            try String(contentsOf: script, encoding: .utf8).replacingOccurrences(of: "0.5 if mode", with: "0.0 if mode")
                .write(to: script, atomically: true, encoding: .utf8)
            let ok = try topiary(["bench", "throughput", file.path, "--repeats", "1"])
            #expect(ok.status == 0, "\(ok.err)")
            let t = try JSONDecoder().decode(ThroughputTable.self, from: Data(contentsOf: table))
            #expect(t.machine == "liar" && t.blocks.count == 9 && t.blocks.values.allSatisfy { $0.prefill == 1e-3 })
        }
        // A mixture's blocks: refused by the torch timer before it runs (no Python is started).
        guard mode == "missing" else { return }
        let m = try Fixture(family: .mixtral)
        defer { m.cleanup() }
        let mixture = m.root.appendingPathComponent("spec.json")
        try m.spec(["space": ["num_local_experts": [2, 3], "intermediate_size": [8, 16]],
                    "budget": ["min": 1, "max": JSON(m.config.parameterCount),
                               "throughput": Self.floor(1, table: m.root.appendingPathComponent("t.json").path, roofline: nil)]])
            .data().write(to: mixture)
        let refused = try topiary(["bench", "throughput", mixture.path, "--backend", "torch", "--python", "/nonexistent/python"])
        #expect(refused.status != 0 && refused.err.contains("Llama's numerics") && refused.err.contains("experts"), "\(refused.err)")
    }
}
