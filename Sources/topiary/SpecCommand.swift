import ArgumentParser
import Foundation
import Model
import Proxy
import Search

struct SpecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spec", abstract: "Validate search specs.", subcommands: [SpecCheck.self])
}

/// Loads and validates a spec file, reading the teacher's config.json (not its weights).
func loadSpec(_ path: String, students: Int = 4) throws -> SearchSpec {
    try parseSpec(try readSpecJSON(path), file: path, students: students)
}

/// A spec file's JSON, with the errors `spec check` gives for an unreadable or malformed file.
func readSpecJSON(_ path: String) throws -> JSON {
    let data: Data
    do { data = try FileIO.read(fileURL(path), what: "spec") } catch {
        throw SearchError.spec(file: path, path: "(file)", reason: "\(error)")
    }
    guard let json = JSON.parse(data) else {
        throw SearchError.spec(file: path, path: "(root)", reason: "malformed JSON")
    }
    return json
}

/// Validates a spec's JSON (from a file or from the store), reading the teacher's config.json and
/// the corpus's manifest (no weights): sizes against the teacher and memory, the corpus against
/// the spec.
func parseSpec(_ json: JSON, file: String, students: Int = 4) throws -> SearchSpec {
    var teacherConfig: ModelConfig?
    let spec = try SearchSpec(json: json, file: file) { teacher in
        teacherConfig = try SearchSpec.teacherConfig(teacher)
        return teacherConfig!
    }
    // A trial that cannot fit the GPU the spec names is refused first (it is the spec's to change).
    if spec.backend.gpuMemory != nil {
        try TrialPlan.check(
            spec, teacher: teacherConfig!, candidates: Enumeration.of(spec, teacher: teacherConfig!).candidates,
            students: students)
    }
    try spec.checkResources(teacher: teacherConfig!, students: students)
    try spec.checkCorpus(try spec.openCorpus(), teacher: teacherConfig!)
    return spec
}

struct SpecCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract:
            "Validate a search spec and print the candidates it would run, with exact parameter counts; touches no store."
    )

    @Argument(help: "Search spec (JSON).") var spec: String
    @Flag(help: "Print JSON.") var json = false
    @Option(parsing: .unconditional, help: "List at most K candidates (the full count is always shown).") var limit =
        100

    func validate() throws { try requireRange("--limit", limit, 0...Int.max) }

    func run() throws {
        let s = try loadSpec(spec)
        let teacher = try ModelConfig.load(directoryURL(s.teacher).appendingPathComponent("config.json"))
        let start = DispatchTime.now().uptimeNanoseconds
        let e = Enumeration.of(s, teacher: teacher)
        let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        if let puzzle = s.strategy.value as? Puzzle { return try printPuzzle(s, puzzle, teacher: teacher) }
        guard !e.candidates.isEmpty else { throw SearchError.emptySpace(e.explanation) }
        try e.requireWithinLimit(s)
        let shown = e.candidates.prefix(limit)
        if json {
            printJSON(
                .array(
                    shown.map { c in
                        var o: [String: JSON] = [
                            "candidate": .string(c.hash), "architecture": c.architecture,
                            "parameters": JSON(c.parameters),
                            "non_embedding_parameters": JSON(c.nonEmbeddingParameters),
                            "active_parameters": JSON(c.activeParameters),
                            "flops_per_token": JSON(c.flopsPerToken)
                        ]
                        if let t = s.budget.throughput, let e = t.estimate(c.config) {
                            o["throughput"] = [
                                "tokens_per_second": JSON(e.tokensPerSecond), "seconds": JSON(e.seconds),
                                "estimated_parts": JSON(e.estimated), "parts": JSON(e.parts)
                            ]
                        }
                        if let w = s.budget.workload {
                            let cost = c.cost(w)
                            o["workload"] = [
                                "weight_bytes": JSON(cost.weightBytes), "kv_cache_bytes": JSON(cost.kvCacheBytes),
                                "memory_bytes": JSON(cost.memoryBytes),
                                "decode_flops_per_token": JSON(cost.decodeFLOPsPerToken)
                            ]
                        }
                        return .object(o)
                    }))
            return
        }
        print(
            "study \(s.study): teacher \(s.teacher) (\(teacher.parameterCount) parameters), strategy "
                + "\(s.strategy.name), objective \(s.objective.rawValue)"
        )
        switch s.backend.kind {
        case .builtin: break
        case let .torch(python, script):
            print(
                "backend: torch on \(s.backend.device), \(s.backend.dtype) "
                    + "(\(python)\(script.map { " \($0)" } ?? ""); heartbeat timeout \(Int(s.backend.heartbeatTimeout)) s)"
            )
        case let .command(parts):
            print(
                "backend: \(parts.joined(separator: " ")) JOB.json on \(s.backend.device) (heartbeat timeout "
                    + "\(Int(s.backend.heartbeatTimeout)) s)"
            )
        }
        func range(_ lo: Int, _ hi: Int) -> String { "[\(lo), \(hi == Int.max ? "∞" : String(hi))]" }
        print(
            "budget: \(s.budget.count.rawValue) parameters in \(range(s.budget.minimum, s.budget.maximum))"
                + s.budget.bounds.map { ", \($0.count.rawValue) in \(range($0.minimum, $0.maximum))" }.joined())
        let workload = s.budget.workload
        if let w = workload {
            print(
                "workload: batch \(w.batch) × context \(w.context), weights \(w.weights.rawValue), KV cache "
                    + "\(w.cache.rawValue)"
                    + (s.budget.maxMemoryBytes.map { "; memory ≤ \($0) bytes (\(formatBytes($0)))" } ?? "")
                    + (s.budget.maxDecodeFLOPsPerToken.map { "; decode FLOPs/token ≤ \($0)" } ?? ""))
        }
        printThroughput(s)
        let tp = s.budget.throughput
        let moe = teacher.isMixture, hybrid = teacher.hybridLayers != nil, shared = teacher.sharedExpertWidth > 0
        print(
            "candidate      layers hidden heads kv  mlp "
                + (moe ? "experts top-k " + (shared ? "shared " : "") + "     active " : "")
                + (hybrid ? "pattern      mixer     " : "")
                + "  parameters  non-embedding  FLOPs/token"
                + (workload != nil ? "   weight bytes  KV-cache bytes    memory bytes  decode FLOPs" : "")
                + (tp != nil ? "   tokens/s" : ""))
        for c in shown {
            let k = c.config
            let experts =
                moe
                ? String(format: "%7d %5d ", k.numLocalExperts, k.numExpertsPerTok)
                    + (shared ? String(format: "%6d ", k.sharedExpertWidth) : "")
                    + String(format: "%12d ", c.activeParameters) : ""
            print(
                String(
                    format: "%@ %6d %6d %5d %2d %5d ", c.hash as NSString, k.numHiddenLayers, k.hiddenSize,
                    k.numAttentionHeads, k.numKeyValueHeads, moe ? k.expertWidth : k.intermediateSize) + experts
                    + (hybrid
                        ? String(String(k.hybridLayers!.map(\.letter))).padding(
                            toLength: 12, withPad: " ", startingAt: 0)
                            + " "
                            + (k.mamba.map { "\($0.heads)×\($0.headDim)" } ?? k.deltaNet.map {
                                "\($0.valueHeads)×\($0.valueDim)"
                            }
                            ?? "").padding(toLength: 9, withPad: " ", startingAt: 0)
                            + " "
                        : "")
                    + String(format: "%12d %14d %12d", c.parameters, c.nonEmbeddingParameters, c.flopsPerToken)
                    + (workload.map {
                        let cost = c.cost($0)
                        return String(
                            format: " %14d %15d %15d %13d", cost.weightBytes, cost.kvCacheBytes, cost.memoryBytes,
                            cost.decodeFLOPsPerToken)
                    } ?? "")
                    + (tp.flatMap { $0.estimate(k) }.map {
                        String(format: " %10.1f", $0.tokensPerSecond) + ($0.estimated > 0 ? "*" : "")
                    } ?? ""))
        }
        if let tp, e.candidates.contains(where: { tp.estimate($0.config)?.estimated ?? 0 > 0 }) {
            print("* some blocks estimated by the roofline (no measurement in the table)")
        }
        if shown.count < e.candidates.count {
            print(
                "… \(e.candidates.count - shown.count) more (--limit \(limit); --limit \(e.candidates.count) lists all)"
            )
        }
        print("\(e.candidates.count) candidates of \(e.explanation) (enumerated in \(String(format: "%.1f", ms)) ms)")
    }

    /// A puzzle spec: its block library with each variant's costs, what lies outside the blocks,
    /// and the budget the solver fills (its candidates come from the library's scores at search time).
    func printPuzzle(_ s: SearchSpec, _ puzzle: Puzzle, teacher: ModelConfig) throws {
        let library = puzzle.library(teacher: teacher), w = s.budget.workload
        let costs = Puzzle.blockCosts(library, teacher: teacher, at: w)
        let outside = teacher.costOutsideBlocks(at: w)
        // The program the solver gets (it checks the budget leaves room beside the embedding and head).
        _ = try Puzzle.program(
            spec: s, teacher: teacher, library: library,
            scores: Array(repeating: Array(repeating: 0, count: library.count), count: teacher.numHiddenLayers))
        if json {
            printJSON(
                [
                    "strategy": "puzzle", "layers": JSON(teacher.numHiddenLayers),
                    "variants": .array(
                        zip(library, costs).map { v, c in
                            [
                                "num_key_value_heads": v.keyValueGroups.map { JSON($0) } ?? .null,
                                "intermediate_size": v.mlpWidth.map { JSON($0) } ?? .null,
                                "parameters": JSON(c.parameters), "memory_bytes": JSON(c.memoryBytes),
                                "decode_flops_per_token": JSON(c.decodeFLOPs)
                            ]
                        }),
                    "outside_blocks": [
                        "parameters": JSON(outside.parameters), "memory_bytes": JSON(outside.memoryBytes),
                        "decode_flops_per_token": JSON(outside.decodeFLOPs)
                    ]
                ])
            return
        }
        print(
            "study \(s.study): teacher \(s.teacher) (\(teacher.parameterCount) parameters, \(teacher.numHiddenLayers) layers), "
                + "strategy puzzle: \(puzzle.settings.solutions) solutions at least \(puzzle.settings.minHamming) layers apart, "
                + "plus the best homogeneous choice, judged by successive halving")
        if let w {
            print(
                "workload: batch \(w.batch) × context \(w.context), weights \(w.weights.rawValue), KV cache \(w.cache.rawValue)"
                    + (s.budget.maxMemoryBytes.map { "; memory ≤ \($0) bytes (\(formatBytes($0)))" } ?? "")
                    + (s.budget.maxDecodeFLOPsPerToken.map { "; decode FLOPs/token ≤ \($0)" } ?? ""))
        }
        if s.budget.maximum < Int.max { print("budget: \(s.budget.count.rawValue) parameters ≤ \(s.budget.maximum)") }
        printThroughput(s)
        let tp = s.budget.throughput
        print("block library (each layer takes one; kv: key/value groups, mlp: width, -: removed):")
        print("   kv   mlp   parameters   memory bytes  decode FLOPs" + (tp != nil ? "   seconds" : ""))
        for (v, c) in zip(library, costs) {
            func pad(_ x: String) -> String { String(repeating: " ", count: max(0, 5 - x.count)) + x }
            var seconds = ""
            if let tp {
                if let t = Throughput.blockSeconds(
                    teacher.block(v), in: teacher, at: tp.workload, table: tp.table, roofline: tp.roofline)
                {
                    seconds = String(format: " %9.5f", t.seconds) + (t.estimated ? "*" : "")
                }
            }
            print(
                pad(v.keyValueGroups.map(String.init) ?? "-") + " " + pad(v.mlpWidth.map(String.init) ?? "-")
                    + String(format: " %12d %14d %13d", c.parameters, c.memoryBytes, c.decodeFLOPs) + seconds)
        }
        print(
            "outside the blocks (embedding, head, final norm): \(outside.parameters) parameters, \(outside.memoryBytes) "
                + "memory bytes, \(outside.decodeFLOPs) decode FLOPs")
        print(
            "\(library.count) variants × \(teacher.numHiddenLayers) layers: candidates are chosen at `search run` from their "
                + "one-block replacement scores"
                + (puzzle.settings.localDistillation.map {
                    ", each variant first locally distilled (\($0.steps) steps of \($0.batchSize) × \($0.sequence) tokens, "
                        + "rate \($0.learningRate))"
                } ?? ", each variant as pruned (no local distillation)"))
    }

    /// The throughput floor, its workload and where block times come from.
    func printThroughput(_ s: SearchSpec) {
        guard let t = s.budget.throughput else { return }
        let w = t.workload
        var source: [String] = []
        if let table = t.table, let path = t.tablePath {
            source.append("measured: \(path) (\(table.engine), \(table.machine), \(table.threads) threads)")
        }
        if let r = t.roofline ?? t.table?.roofline {
            source.append(
                String(
                    format: "roofline %.3g FLOP/s, %.3g bytes/s for shapes not measured", r.flopsPerSecond,
                    r.bytesPerSecond))
        }
        print(
            String(format: "throughput: ≥ %.1f generated tokens/s", t.minimum)
                + " at batch \(w.batch) × (\(w.input) prompt + \(w.output) generated) tokens, \(w.dtype.rawValue); "
                + source.joined(separator: "; "))
    }
}
