import Foundation
import Model
@testable import Search
import Testing

/// Issue 27, item 1: budgets on memory and decode FLOPs at a named serving workload.
struct WorkloadBudgetTests {
    static let workload: JSON = ["batch": 4, "context": 48, "dtype": "bfloat16"]

    /// The memory cap keeps exactly the shapes whose weights plus KV cache fit, the same as
    /// filtering every combination by hand; the excluded ones are counted under their rule.
    @Test func memoryBudgetKeepsExactlyTheShapesThatFit() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let free = try f.parse(f.spec())
        let all = Enumeration.of(free, teacher: f.config).candidates
        let w = Workload(batch: 4, context: 48, weights: .bfloat16)
        let memories = all.map { $0.config.inferenceCost(w).memoryBytes }.sorted()
        let cap = memories[memories.count / 2]
        let spec = try f.parse(f.spec(["budget": ["min": 1, "max": JSON(f.config.parameterCount), "workload": Self.workload,
                                                  "memory": JSON(cap)]]))
        #expect(spec.budget.workload == w && spec.budget.maxMemoryBytes == cap)
        let e = Enumeration.of(spec, teacher: f.config)
        let expected = all.filter { $0.config.inferenceCost(w).memoryBytes <= cap }
        #expect(Set(e.candidates.map(\.hash)) == Set(expected.map(\.hash)))
        #expect(!e.candidates.isEmpty && e.candidates.count < all.count)
        #expect(e.excluded.first { $0.rule == "exceed budget.memory at the workload" }?.count == all.count - expected.count)
        #expect(Set(Enumeration.exhaustive(spec, teacher: f.config).map(\.hash)) == Set(expected.map(\.hash)))
        // Decode FLOPs the same way.
        let flops = all.map { $0.cost(w).decodeFLOPsPerToken }.sorted()[all.count / 3]
        let capped = try f.parse(f.spec(["budget": ["min": 1, "max": JSON(f.config.parameterCount), "workload": Self.workload,
                                                    "decode_flops_per_token": JSON(flops)]]))
        #expect(Set(Enumeration.of(capped, teacher: f.config).candidates.map(\.hash))
                == Set(all.filter { $0.cost(w).decodeFLOPsPerToken <= flops }.map(\.hash)))
    }

    static let badBudgets: [(JSON, String)] = [
        (["min": 1, "memory": "1GiB"], "budget.memory"),
        (["min": 1, "decode_flops_per_token": 1000], "budget.decode_flops_per_token"),
        (["min": 1, "workload": ["context": 48]], "budget.workload.batch"),
        (["min": 1, "workload": ["batch": 1]], "budget.workload.context"),
        (["min": 1, "workload": ["batch": 1, "context": 65]], "budget.workload.context"),
        (["min": 1, "workload": ["batch": 0, "context": 8]], "budget.workload.batch"),
        (["min": 1, "workload": ["batch": 1, "context": 8, "dtype": "int8"]], "budget.workload.dtype"),
        (["min": 1, "workload": ["batch": 1, "context": 8, "kv": "bfloat16"]], "budget.workload.kv"),
        (["min": 1, "workload": ["batch": 1, "context": 8], "memory": "a lot"], "budget.memory"),
    ]

    @Test(arguments: badBudgets)
    func badWorkloadBudgetsNameTheirKey(budget: JSON, path: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        #expect { _ = try f.parse(f.spec(["budget": budget])) } throws: { error in
            guard case let SearchError.spec(_, p, _) = error else { return false }
            return p == path
        }
    }

    /// `spec check` prints each candidate's weights, KV cache, memory and decode FLOPs at the
    /// workload; `--json` gives the same numbers.
    @Test func specCheckPrintsTheCosts() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let file = f.root.appendingPathComponent("spec.json")
        try f.spec(["budget": ["min": 1, "max": JSON(f.config.parameterCount), "workload": Self.workload, "memory": "1MiB"]])
            .data().write(to: file)
        let text = try topiary(["spec", "check", file.path])
        #expect(text.status == 0, "\(text.err)")
        #expect(text.out.contains("workload: batch 4 × context 48, weights bfloat16, KV cache bfloat16; memory ≤ 1048576 bytes"))
        #expect(text.out.contains("KV-cache bytes"))
        let json = try topiary(["spec", "check", file.path, "--json"])
        let rows = try #require(JSON.parse(Data(json.out.utf8))?.array)
        let spec = try f.parse(JSON.parse(try Data(contentsOf: file))!)
        let byHash = Dictionary(uniqueKeysWithValues: Enumeration.of(spec, teacher: f.config).candidates.map { ($0.hash, $0) })
        #expect(rows.count == byHash.count)
        for r in rows {
            let c = try #require(byHash[r["candidate"]?.string ?? ""])
            let cost = c.cost(spec.budget.workload!)
            #expect(r["workload"]?["memory_bytes"]?.int == cost.memoryBytes)
            #expect(r["workload"]?["kv_cache_bytes"]?.int == cost.kvCacheBytes)
            #expect(r["workload"]?["decode_flops_per_token"]?.int == cost.decodeFLOPsPerToken)
            // The line for the candidate carries the same four numbers.
            let line = try #require(text.out.split(separator: "\n").first { $0.hasPrefix(c.hash) })
            #expect(line.hasSuffix(String(format: " %14d %15d %15d %13d", cost.weightBytes, cost.kvCacheBytes, cost.memoryBytes,
                                          cost.decodeFLOPsPerToken)))
        }
    }
}
