import Foundation
import Model
import Proxy

/// What a parameter budget counts.
public enum BudgetCount: String, Sendable, Codable {
    case total, nonEmbedding = "non_embedding", active
}

public struct Budget: Sendable, Equatable {
    public var count = BudgetCount.total
    public var minimum: Int
    public var maximum: Int
    /// Optional cap on forward FLOPs per token at the proxy's sequence length.
    public var maxFLOPsPerToken: Int?
    /// Further bounds on other counts (`budget.total`, `budget.active`, `budget.non_embedding`),
    /// e.g. an active-parameter target with a cap on total parameters.
    public var bounds: [Bound] = []
    /// The serving workload the costs below are counted at (`budget.workload`).
    public var workload: Workload?
    /// Cap on weights plus KV cache at the workload, in bytes (`budget.memory`).
    public var maxMemoryBytes: Int?
    /// Cap on the FLOPs of one decoded token at the workload's context (`budget.decode_flops_per_token`).
    public var maxDecodeFLOPsPerToken: Int?
    /// A floor on generated tokens per second at a serving workload (`budget.throughput`).
    public var throughput: ThroughputBudget?

    public struct Bound: Sendable, Equatable {
        public var count: BudgetCount
        public var minimum: Int, maximum: Int
    }

    func counted(_ c: ModelConfig) -> Int { Budget.count(count, c) }

    static func count(_ count: BudgetCount, _ c: ModelConfig) -> Int {
        switch count {
        case .total: return c.parameterCount
        case .active: return c.activeParameterCount
        case .nonEmbedding: return c.nonEmbeddingParameterCount
        }
    }

    /// The first cost at the workload that `c` exceeds (its budget key), if any.
    func violatedCost(_ c: ModelConfig) -> String? {
        if let t = throughput, let e = t.estimate(c), e.tokensPerSecond < t.minimum { return "throughput" }
        guard let workload, maxMemoryBytes != nil || maxDecodeFLOPsPerToken != nil else { return nil }
        let cost = c.inferenceCost(workload)
        if let cap = maxMemoryBytes, cost.memoryBytes > cap { return "memory" }
        if let cap = maxDecodeFLOPsPerToken, cost.decodeFLOPsPerToken > cap { return "decode_flops_per_token" }
        return nil
    }

    /// The first further bound `c` violates, if any.
    func violatedBound(_ c: ModelConfig) -> Bound? {
        bounds.first {
            let n = Budget.count($0.count, c); return n < $0.minimum || n > $0.maximum
        }
    }
}

/// `budget.throughput`: at least `minimum` generated tokens per second at `workload`, each block's
/// time from the measured `table` (`topiary bench throughput`) or, where it has none, from the
/// roofline (the spec's `roofline`, else the table's own).
public struct ThroughputBudget: Sendable, Equatable {
    public var minimum: Double
    public var workload: ServingWorkload
    public var table: ThroughputTable?
    /// The table's file as the spec names it (it may not exist yet: `topiary bench throughput` writes it).
    public var tablePath: String?
    public var roofline: Roofline?

    public func estimate(_ c: ModelConfig) -> ThroughputEstimate? {
        Throughput.estimate(c, at: workload, table: table, roofline: roofline)
    }
}

public enum Strategy: Sendable, Equatable {
    case grid
    case random(samples: Int, seed: UInt64)
    case successiveHalving(minSteps: Int, eta: Int)
    case evolution(population: Int, generations: Int, mutation: Double, crossover: Double, seed: UInt64)
    /// Puzzle's heterogeneous candidates (docs/heterogeneous.md), then successive halving.
    case puzzle(PuzzleSettings)

    public var name: String {
        switch self {
        case .grid: return "grid"
        case .random: return "random"
        case .successiveHalving: return "successive_halving"
        case .evolution: return "evolution"
        case .puzzle: return "puzzle"
        }
    }
}

/// The `puzzle` strategy's settings: the block library (every layer's attention keeps one of
/// `keyValueHeads` groups counts, its MLP one of `widths`, either may be removed when `noOp`),
/// how many solver solutions become candidates and how far apart they are, and the successive
/// halving that judges them.
public struct PuzzleSettings: Sendable, Equatable {
    public var solutions: Int
    public var minHamming: Int
    public var keyValueHeads: [Int]
    public var widths: [Int]
    public var noOp: Bool
    public var minSteps: Int
    public var eta: Int
    /// Blockwise local distillation of every variant before scoring (nil: scored as pruned).
    public var localDistillation: LocalDistillationSettings? = nil
}

/// How many scores each finalist gets and which candidates are finalists.
public struct Replicates: Sendable, Equatable {
    /// Scores per finalist: its own run plus `seeds − 1` reruns from the same pruned init with
    /// data-order seeds proxy.seed + 1, + 2, … (at least 2).
    public var seeds: Int
    /// The finalists: the best `top` candidates of the last rung (default: successive halving's
    /// last-rung survivors, or the best 3 for the other strategies).
    public var top: Int?
    public init(seeds: Int, top: Int? = nil) { self.seeds = seeds; self.top = top }
}

/// Which validation number a search minimises.
public enum Objective: String, Sendable, Codable {
    /// Token-weighted over every language.
    case overall
    /// Unweighted mean over languages.
    case mean
    /// The worst language.
    case worst

    /// The metric a trial records it under (at its end and at its curve points).
    public var metricName: String {
        switch self {
        case .overall: return StudyStore.Metric.valLoss.rawValue
        case .mean: return StudyStore.Metric.valLossMean.rawValue
        case .worst: return StudyStore.Metric.valLossWorst.rawValue
        }
    }

    public func value(_ e: EvaluationResult) -> Double {
        switch self {
        case .overall: return e.overall
        case .mean: return e.languageMean
        case .worst: return e.worst
        }
    }
}

/// A parsed, validated search spec. See docs/search.md for every key and its default.
public struct SearchSpec: Sendable {
    public var study = ""
    /// The teacher's folder (a repo id is resolved to its snapshot in the Hugging Face cache).
    public var teacher = ""
    /// The teacher as the spec names it (a path, or a repo id such as `HuggingFaceTB/SmolLM2-135M-Instruct`).
    public var teacherReference: String = ""
    public var data = ""
    /// axis → values to consider (ascending); axes not named keep the teacher's value.
    public var space: [Axis: [Int]] = [:]
    public var budget = Budget(count: .total, minimum: 0, maximum: 0)
    public var importance = ImportanceSettings()
    public var prune = PruneOptions()
    public var proxy = DistillationRecipe(steps: 100)
    public var strategy = Strategy.grid
    /// Keep only the best `prefilter` candidates by loss after pruning alone (nil: off).
    public var prefilter: Int?
    /// `strategy.tie_slack` (successive halving): at each rung's cut, up to this many candidates
    /// just below it are promoted too when the paired interval of their difference to the last one
    /// promoted contains 0 — a cut is not made inside the noise (0: cut by score alone).
    public var tieSlack = 1
    /// The most candidates the space may admit (default ``Enumeration/defaultLimit``).
    public var maxCandidates: Int?
    public var objective = Objective.mean
    /// `objective.replicates`: rerun the finalists with other data-order seeds, for a measured
    /// noise interval beside each finalist's score.
    public var replicates: Replicates?
    public var exportTop = 3
    /// `proxy.curve_points`: validation evaluations each trial makes inside its steps besides the
    /// one at its end, evenly spaced after the warmup: the points its learning curve is fitted to.
    public var curvePoints = 1
    /// `export.full_distillation_steps`: the length of the full distillation the winners go on to
    /// (default 100 × `proxy.steps`, Minitron's ~100× the proxy's tokens), where the learning curve
    /// predicts each candidate's score.
    public var fullDistillationSteps: Int?
    public var predictionSteps: Int { fullDistillationSteps ?? proxy.steps * 100 }
    /// Where trial checkpoints go (a shared folder on a cluster); `--artifacts` overrides it.
    public var artifacts: String?
    /// Who runs the trials' distillation: the built-in engine (default) or an external backend.
    public var backend = BackendSpec()
    /// The spec's JSON as given (stored with the study).
    public var json = JSON.null
    public var file = ""

    /// The config of the teacher folder a spec names (`teacher/config.json`).
    /// - Throws: ``ModelError`` when the folder holds no config or it does not read.
    public static func teacherConfig(_ teacher: String) throws -> ModelConfig {
        let url = URL(fileURLWithPath: teacher, isDirectory: true).appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ModelError.io(path: teacher, reason: "no teacher checkpoint here (config.json missing)")
        }
        return try ModelConfig.load(url)
    }

    /// A backend from its JSON (`{"name": "torch", …}`), checked as in a spec.
    public static func backend(_ o: [String: JSON]) throws -> BackendSpec {
        try BackendSpec.parse(o) { SearchError.spec(file: "--backend", path: $0, reason: $1) }
    }

    static let topKeys = [
        "study", "teacher", "data", "space", "budget", "importance", "proxy", "strategy", "prefilter", "objective",
        "export", "max_candidates", "artifacts", "backend"
    ]

    /// Why `value` cannot reach a generated script or a file name, or nil: it holds a control
    /// character (a newline would end a script line and start a command); with
    /// `lineSeparators`, U+2028 and U+2029 too.
    public static func controlCharacterProblem(_ value: String, lineSeparators: Bool = false) -> String? {
        guard
            let bad = value.unicodeScalars.first(where: {
                $0.properties.generalCategory == .control || (lineSeparators && ($0 == "\u{2028}" || $0 == "\u{2029}"))
            })
        else { return nil }
        return "\(value.debugDescription) contains the control character U+\(String(format: "%04X", bad.value))"
    }

    /// Why `name` cannot name a study, or nil. The name becomes a folder under results/, a file
    /// name in exports and an argument of workers and scripts: letters, digits, '-', '_' or '.',
    /// at most 100 characters, not '.' or '..', not starting with '-'. Names read from a store
    /// are held to the same rule (`store copy`, `report`).
    public static func studyNameProblem(_ study: String) -> String? {
        guard study.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            return "'\(study)': use letters, digits, '-', '_' or '.'"
        }
        guard study.count <= 100 else { return "\(study.count) characters; at most 100" }
        guard study != "." && study != ".." else { return "'\(study)' cannot name a folder" }
        // A leading '-' would read as an option wherever the name is passed on (workers, scripts).
        guard !study.hasPrefix("-") else { return "'\(study)' starts with '-'; start it with a letter or digit" }
        return nil
    }

    /// Set while `topiary bench throughput` reads a spec whose table it is about to measure.
    nonisolated(unsafe) public static var measuringThroughput = false

    /// Parses and validates a spec against the teacher's config, one section after another.
    /// - Throws: ``SearchError/spec(file:path:reason:)`` naming the JSON path and rule.
    public init(json root: JSON, file: String, teacherConfig: (String) throws -> ModelConfig) throws {
        self.file = file
        json = root
        let rd = SpecReader(file: file)
        guard let o = root.object else { throw rd.fail("(root)", "not a JSON object") }
        try rd.check(o, "", Self.topKeys)
        let t = try readStudyAndTeacher(o, rd, teacherConfig)
        try readData(o, rd)
        try readSpace(o, rd, teacher: t)
        try readBudget(o, rd, teacher: t)
        try readImportance(o, rd, teacher: t)
        try readProxy(o, rd, teacher: t)
        try readStrategy(o, rd, teacher: t)
        try readObjectiveAndExport(o, rd)
    }

    /// `study`, `teacher` (a repo id resolved in the HF cache), `backend`, `artifacts`; the teacher's config.
    private mutating func readStudyAndTeacher(
        _ o: [String: JSON], _ rd: SpecReader, _ teacherConfig: (String) throws -> ModelConfig
    ) throws -> ModelConfig {
        study = try rd.string(o["study"], "study")
        if let problem = Self.studyNameProblem(study) { throw rd.fail("study", problem) }
        teacher = try rd.string(o["teacher"], "teacher")
        teacherReference = teacher
        // A Hugging Face repo id (ORG/NAME) that is not a folder here: its snapshot in the local cache.
        do { teacher = try HubCache.localPath(teacher) } catch { throw rd.fail("teacher", "\(error)") }
        if let b = o["backend"] {
            guard let bo = b.object else {
                throw rd.fail(
                    "backend", "an object: {\"name\": \"torch\", \"device\": \"cpu\"} or {\"command\": [...]}")
            }
            backend = try BackendSpec.parse(bo, fail: { rd.fail($0, $1) })
        }
        if let a = o["artifacts"] {
            artifacts = try rd.string(a, "artifacts")
            guard !(artifacts ?? "").isEmpty else {
                throw rd.fail("artifacts", "an empty path; name a folder (shared by every worker on a cluster)")
            }
        }
        // Paths reach generated scripts (slurm submit) and file names: no control characters.
        for (value, path) in [(artifacts, "artifacts"), (teacherReference, "teacher")] {
            if let value, let problem = Self.controlCharacterProblem(value) { throw rd.fail(path, problem) }
        }
        do { return try teacherConfig(teacher) } catch { throw rd.fail("teacher", "\(error)") }
    }

    /// `data`: a path, or `{"corpus": path, "sampling": {"temperature": α}}`.
    private mutating func readData(_ o: [String: JSON], _ rd: SpecReader) throws {
        // data: a path, or {"corpus": path, "sampling": {"temperature": α}}
        if let d = o["data"]?.object {
            try rd.check(d, "data", ["corpus", "sampling"])
            data = try rd.string(d["corpus"], "data.corpus")
            if let s = try rd.object(d["sampling"], "data.sampling") {
                try rd.check(s, "data.sampling", ["temperature", "alpha"])
                if let a = s["temperature"] ?? s["alpha"] {
                    proxy.alpha = try rd.number(a, "data.sampling.temperature")
                }
            }
        } else {
            data = try rd.string(o["data"], "data")
        }
        if let problem = Self.controlCharacterProblem(data) {
            throw rd.fail(o["data"]?.object != nil ? "data.corpus" : "data", problem)
        }
    }

    /// `space`: per axis of the teacher's family, a value, a list or a range, none above the teacher.
    private mutating func readSpace(_ o: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        // space
        guard let sp = try rd.object(o["space"], "space") else { throw rd.fail("space", "missing") }
        let axes = Axis.axes(for: t)
        for axis in Axis.allCases where !axes.contains(axis) && sp[axis.rawValue] != nil {
            throw rd.fail(
                "space.\(axis.rawValue)",
                t.family.derivesQueryHeads && axis == .numAttentionHeads
                    ? "\(t.family.displayName) derives num_attention_heads as num_key_value_heads × num_experts_per_tok; "
                        + "vary those instead"
                    : t.hybridLayers != nil && axis == .numHiddenLayers
                        ? "a hybrid teacher's depth is counted per layer type: vary "
                            + axes.filter { $0.layerType != nil }.map(\.rawValue).joined(separator: ", ")
                        : [
                            .numLocalExperts, .numExpertsPerTok, .numExperts, .moeIntermediateSize, .nRoutedExperts,
                            .moeSharedExpertIntermediateSize, .sharedExpertIntermediateSize, .numMoELayers
                        ].contains(axis) && !t.isMixture
                            ? "the teacher is a dense \(t.family.rawValue) model; expert axes need a mixture "
                                + "teacher (mixtral, jetmoe, qwen3_moe, qwen3_5_moe_text, or nemotron_h with moe layers)"
                            : "not an axis of a \(t.family.rawValue) teacher; its axes are "
                                + axes.map(\.rawValue).joined(separator: ", ") + " (\(axis.rawValue) is an axis of "
                                + Family.allCases.filter { $0.axes.contains(axis) }.map(\.rawValue).joined(
                                    separator: ", ")
                                + " teachers)"
            )
        }
        try rd.check(sp, "space", axes.map(\.rawValue))
        var space: [Axis: [Int]] = [:]
        for axis in axes {
            let path = "space.\(axis.rawValue)"
            let teacherValue = axis.value(t)
            // A hybrid decoder may drop every layer of a type.
            let least = axis.layerType != nil ? 0 : 1
            guard let v = sp[axis.rawValue] else { space[axis] = [teacherValue]; continue }
            var values: [Int]
            if let list = v.array {
                guard !list.isEmpty else { throw rd.fail(path, "empty list") }
                values = try list.enumerated().map { try rd.int($1, "\(path)[\($0)]", min: least) }
                for (i, x) in values.enumerated() where x > teacherValue {
                    throw rd.fail("\(path)[\(i)]", "\(x) is larger than the teacher's \(teacherValue)")
                }
            } else if let r = v.object {
                try rd.check(r, path, ["min", "max", "step"])
                let lo = try rd.int(r["min"], "\(path).min", min: least),
                    hi = try rd.int(r["max"], "\(path).max", min: least)
                let step = try r["step"].map { try rd.int($0, "\(path).step") } ?? 1
                guard lo <= hi else { throw rd.fail(path, "min \(lo) is above max \(hi)") }
                guard hi <= teacherValue else {
                    throw rd.fail("\(path).max", "\(hi) is larger than the teacher's \(teacherValue)")
                }
                values = Array(stride(from: lo, through: hi, by: step))
            } else {
                values = [try rd.int(v, path, min: least)]
                if values[0] > teacherValue {
                    throw rd.fail(path, "\(values[0]) is larger than the teacher's \(teacherValue)")
                }
            }
            if axis == .hiddenSize && t.family.requiresHeadsDivideHidden {
                // transformers 5 refuses hidden_size not divisible by the head count; say so per value
                // when no head count in the space could divide it.
                let heads = sp[Axis.numAttentionHeads.rawValue] == nil ? [t.numAttentionHeads] : nil
                if let heads {
                    for (i, x) in values.enumerated() where x % heads[0] != 0 {
                        throw rd.fail(
                            sp[axis.rawValue]?.array != nil ? "\(path)[\(i)]" : path,
                            "\(x) is not a multiple of num_attention_heads \(heads[0]) (transformers refuses such a config)"
                        )
                    }
                }
            }
            space[axis] = Array(Set(values)).sorted()
        }
        self.space = space
    }

    /// `budget`: the counted parameters' bounds, other counts' bounds, FLOPs per token.
    private mutating func readBudget(_ o: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        // budget
        guard let b = try rd.object(o["budget"], "budget") else { throw rd.fail("budget", "missing") }
        try rd.check(
            b, "budget",
            [
                "parameters", "tolerance", "min", "max", "count", "flops_per_token", "total", "active", "non_embedding",
                "workload", "memory", "decode_flops_per_token", "throughput"
            ])
        let count: BudgetCount
        if let c = b["count"] {
            guard let s = c.string, let bc = BudgetCount(rawValue: s) else {
                throw rd.fail("budget.count", "total, non_embedding or active")
            }
            count = bc
        } else {
            count = .total
        }
        var minimum: Int, maximum: Int
        if let p = b["parameters"] {
            let target = try rd.int(p, "budget.parameters")
            let tol = try b["tolerance"].map { try rd.number($0, "budget.tolerance") } ?? 0.05
            guard tol < 1 else { throw rd.fail("budget.tolerance", "must be below 1") }
            minimum = Int((Double(target) * (1 - tol)).rounded(.up))
            maximum = Int((Double(target) * (1 + tol)).rounded(.down))
            if b["min"] != nil || b["max"] != nil {
                throw rd.fail("budget", "give either parameters (with tolerance) or min/max, not both")
            }
        } else {
            guard b["min"] != nil || b["max"] != nil else {
                throw rd.fail("budget", "give parameters (with tolerance) or min and/or max")
            }
            minimum = try b["min"].map { try rd.int($0, "budget.min", min: 0) } ?? 0
            maximum = try b["max"].map { try rd.int($0, "budget.max") } ?? Int.max
            guard minimum <= maximum else { throw rd.fail("budget", "min \(minimum) is above max \(maximum)") }
        }
        let teacherCount = Budget(count: count, minimum: 0, maximum: 0).counted(t)
        if minimum > teacherCount {
            throw rd.fail(
                b["parameters"] != nil ? "budget.parameters" : "budget.min",
                "asks for at least \(minimum) \(count.rawValue) parameters but the teacher has \(teacherCount)")
        }
        let flops = try b["flops_per_token"].map { try rd.int($0, "budget.flops_per_token") }
        budget = Budget(count: count, minimum: minimum, maximum: maximum, maxFLOPsPerToken: flops)
        for other in [BudgetCount.total, .active, .nonEmbedding] {
            guard let bound = try rd.object(b[other.rawValue], "budget.\(other.rawValue)") else { continue }
            let path = "budget.\(other.rawValue)"
            guard other != count else {
                throw rd.fail(path, "is the budget's own count; give its bounds with parameters or min/max")
            }
            try rd.check(bound, path, ["min", "max"])
            guard bound["min"] != nil || bound["max"] != nil else { throw rd.fail(path, "give min and/or max") }
            let lo = try bound["min"].map { try rd.int($0, "\(path).min", min: 0) } ?? 0
            let hi = try bound["max"].map { try rd.int($0, "\(path).max") } ?? Int.max
            guard lo <= hi else { throw rd.fail(path, "min \(lo) is above max \(hi)") }
            budget.bounds.append(.init(count: other, minimum: lo, maximum: hi))
        }
        try readWorkload(b, rd, teacher: t)
        try readThroughput(b, rd, teacher: t)
    }

    /// `budget.throughput {"min", "batch", "input", "output", "dtype", "table", "roofline"}`.
    private mutating func readThroughput(_ b: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        guard let o = try rd.object(b["throughput"], "budget.throughput") else { return }
        let path = "budget.throughput"
        try rd.check(o, path, ["min", "batch", "input", "output", "dtype", "table", "roofline"])
        func required(_ key: String) throws -> JSON {
            guard let v = o[key] else { throw rd.fail("\(path).\(key)", "missing") }
            return v
        }
        let minimum = try rd.number(try required("min"), "\(path).min")
        guard minimum > 0 else { throw rd.fail("\(path).min", "must be positive (generated tokens per second)") }
        let batch = try rd.int(try required("batch"), "\(path).batch", min: 1)
        let input = try rd.int(try required("input"), "\(path).input", min: 1)
        let output = try rd.int(try required("output"), "\(path).output", min: 1)
        guard input + output <= t.maxPositionEmbeddings else {
            throw rd.fail(
                path, "input + output = \(input + output) is longer than the teacher's max_position_embeddings")
        }
        var dtype = StorageType.bfloat16
        if let v = o["dtype"] {
            guard let name = v.string, let d = StorageType(rawValue: name) else {
                throw rd.fail("\(path).dtype", "float32, bfloat16 or float16")
            }
            dtype = d
        }
        let workload = ServingWorkload(batch: batch, input: input, output: output, dtype: dtype)
        var roofline: Roofline?
        if let r = try rd.object(o["roofline"], "\(path).roofline") {
            try rd.check(r, "\(path).roofline", ["flops_per_second", "bytes_per_second"])
            let f = try rd.number(
                try r["flops_per_second"] ?? { throw rd.fail("\(path).roofline.flops_per_second", "missing") }(),
                "\(path).roofline.flops_per_second")
            guard let bv = r["bytes_per_second"] else { throw rd.fail("\(path).roofline.bytes_per_second", "missing") }
            let bytes =
                try bv.string.flatMap(TrialPlan.parseBytes).map(Double.init)
                ?? rd.number(bv, "\(path).roofline.bytes_per_second")
            guard f > 0, bytes > 0 else { throw rd.fail("\(path).roofline", "rates must be positive") }
            roofline = Roofline(flopsPerSecond: f, bytesPerSecond: bytes)
        }
        var table: ThroughputTable?
        let tablePath = try o["table"].map { v -> String in
            guard let s = v.string, !s.isEmpty else { throw rd.fail("\(path).table", "a file name") }
            return s
        }
        if let tablePath, let data = FileManager.default.contents(atPath: tablePath) {
            do {
                table = try JSONDecoder().decode(ThroughputTable.self, from: data)
            } catch {
                throw rd.fail("\(path).table", "\(tablePath) is not a throughput table (\(error))")
            }
            if table?.workload != workload {
                throw rd.fail(
                    "\(path).table",
                    "\(tablePath) was measured at another workload; measure this one with topiary bench throughput")
            }
        } else if let tablePath, roofline == nil, !SearchSpec.measuringThroughput {
            throw rd.fail(
                "\(path).table",
                "\(tablePath) does not exist; measure it with `topiary bench throughput \(file)`, or give roofline")
        }
        guard table?.roofline != nil || roofline != nil || SearchSpec.measuringThroughput else {
            throw rd.fail(
                path,
                "give table (measured by `topiary bench throughput`) or roofline {flops_per_second, bytes_per_second}")
        }
        budget.throughput = ThroughputBudget(
            minimum: minimum, workload: workload, table: table, tablePath: tablePath, roofline: roofline)
    }

    /// `budget.workload` and the costs bounded at it: `memory` (weights plus KV cache, bytes as
    /// "78000MiB" or a number) and `decode_flops_per_token`.
    private mutating func readWorkload(_ b: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        if let w = try rd.object(b["workload"], "budget.workload") {
            try rd.check(w, "budget.workload", ["batch", "context", "dtype", "kv_dtype"])
            guard let batchValue = w["batch"] else { throw rd.fail("budget.workload.batch", "missing") }
            guard let contextValue = w["context"] else { throw rd.fail("budget.workload.context", "missing") }
            let batch = try rd.int(batchValue, "budget.workload.batch", min: 1)
            let context = try rd.int(contextValue, "budget.workload.context", min: 1)
            guard context <= t.maxPositionEmbeddings else {
                throw rd.fail(
                    "budget.workload.context",
                    "\(context) is longer than the teacher's max_position_embeddings \(t.maxPositionEmbeddings)")
            }
            func type(_ key: String) throws -> StorageType? {
                guard let v = w[key] else { return nil }
                guard let name = v.string, let type = StorageType(rawValue: name) else {
                    throw rd.fail("budget.workload.\(key)", "float32, bfloat16 or float16")
                }
                return type
            }
            let weights = try type("dtype") ?? .bfloat16
            budget.workload = Workload(batch: batch, context: context, weights: weights, cache: try type("kv_dtype"))
        }
        if let m = b["memory"] {
            guard budget.workload != nil else {
                throw rd.fail(
                    "budget.memory", "needs budget.workload {\"batch\", \"context\"} to count the KV cache at")
            }
            let bytes = m.string.flatMap(TrialPlan.parseBytes) ?? m.int
            guard let bytes, bytes > 0 else {
                throw rd.fail("budget.memory", "a size such as \"78000MiB\", \"16GB\" or a number of bytes")
            }
            budget.maxMemoryBytes = bytes
        }
        if let f = b["decode_flops_per_token"] {
            guard budget.workload != nil else {
                throw rd.fail("budget.decode_flops_per_token", "needs budget.workload {\"batch\", \"context\"}")
            }
            budget.maxDecodeFLOPsPerToken = try rd.int(f, "budget.decode_flops_per_token", min: 1)
        }
    }

    /// `importance`: calibration, aggregation, depth metric, expert metric.
    private mutating func readImportance(_ o: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        // importance
        if let imp = try rd.object(o["importance"], "importance") {
            try rd.check(
                imp, "importance",
                [
                    "calibration_samples", "sequence_length", "batch", "sequence", "depth", "contiguous", "language",
                    "experts", "loss_tokens"
                ])
            if let v = imp["loss_tokens"] {
                importance.lossTokensPerLanguage = try rd.int(v, "importance.loss_tokens", min: 0)
            }
            if let v = imp["experts"] {
                guard let m = v.string.flatMap(ExpertMetric.init(rawValue:)) else {
                    throw rd.fail("importance.experts", "gated_output_norm or frequency, got \(v)")
                }
                prune.expertMetric = m
            }
            if let v = imp["calibration_samples"] {
                importance.samples = try rd.int(v, "importance.calibration_samples")
            }
            if let v = imp["sequence_length"] {
                importance.sequence = try rd.int(v, "importance.sequence_length", min: 2)
            }
            for (key, kp) in [("batch", \ImportanceSettings.batchAggregation), ("sequence", \.sequenceAggregation)] {
                if let v = imp[key] {
                    guard let a = v.string.flatMap(Aggregation.init) else {
                        throw rd.fail("importance.\(key)", "mean, l2 or variance")
                    }
                    importance[keyPath: kp] = a
                }
            }
            if let v = imp["depth"] {
                guard let m = v.string.flatMap(LayerMetric.init) else {
                    throw rd.fail("importance.depth", "block_importance or loss_rise")
                }
                prune.layerMetric = m
            }
            if let v = imp["contiguous"] {
                guard let x = v.bool else { throw rd.fail("importance.contiguous", "true or false") };
                prune.contiguousLayers = x
            }
            if let v = imp["language"] { importance.language = try rd.string(v, "importance.language") }
        }

        // The layer-skip loss ranks layers for depth pruning: without a depth axis it is not computed.
        if space[.numHiddenLayers] == [t.numHiddenLayers] { importance.lossTokensPerLanguage = 0 }
    }

    /// `proxy`: the distillation recipe every trial runs, and its curve points.
    private mutating func readProxy(_ o: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        // proxy
        let teacherConfigLayers = t.numHiddenLayers
        if let p = try rd.object(o["proxy"], "proxy") {
            try rd.check(
                p, "proxy",
                [
                    "steps", "batch_size", "sequence_length", "learning_rate", "warmup", "schedule", "loss",
                    "temperature", "reverse_kl", "eval_tokens", "seed",
                    "curve_points"
                ])
            if let v = p["curve_points"] {
                curvePoints = try rd.int(v, "proxy.curve_points", min: 0)
                // Each point is a full evaluation: more than a few dozen per trial is a mistake.
                guard curvePoints <= 64 else {
                    throw rd.fail("proxy.curve_points", "\(curvePoints) evaluations inside every trial; at most 64")
                }
            }
            if let v = p["steps"] { proxy.steps = try rd.int(v, "proxy.steps") }
            if let v = p["batch_size"] { proxy.batch = try rd.int(v, "proxy.batch_size") }
            if let v = p["sequence_length"] { proxy.sequence = try rd.int(v, "proxy.sequence_length", min: 2) }
            if let v = p["learning_rate"] {
                proxy.learningRate = try rd.number(v, "proxy.learning_rate", positive: true)
            }
            if let v = p["warmup"] { proxy.warmup = try rd.int(v, "proxy.warmup", min: 0) }
            if let v = p["schedule"] {
                let s = try rd.string(v, "proxy.schedule")
                guard ["cosine", "wsd", "constant"].contains(s) else {
                    throw rd.fail("proxy.schedule", "cosine, wsd or constant")
                }
                proxy.schedule = s
            }
            if let l = try rd.object(p["loss"], "proxy.loss") {
                try rd.check(l, "proxy.loss", ["logits_kl", "lm", "hidden", "hidden_distance", "hidden_layers"])
                if let v = l["logits_kl"] { proxy.loss.kl = try rd.number(v, "proxy.loss.logits_kl") }
                if let v = l["lm"] { proxy.loss.lm = try rd.number(v, "proxy.loss.lm") }
                if let v = l["hidden"] { proxy.loss.hidden.weight = try rd.number(v, "proxy.loss.hidden") }
                if let v = l["hidden_distance"] {
                    guard let d = v.string.flatMap(HiddenLoss.Distance.init) else {
                        throw rd.fail("proxy.loss.hidden_distance", "cosine or mse")
                    }
                    proxy.loss.hidden.distance = d
                }
                if let v = l["hidden_layers"] {
                    guard let pairs = v.array else {
                        throw rd.fail("proxy.loss.hidden_layers", "a list of [student, teacher] residual indices")
                    }
                    proxy.loss.hidden.layers = try pairs.enumerated().map { i, p in
                        guard let a = p.array, a.count == 2, let s = a[0].int, let t = a[1].int, s >= 0, t >= 0,
                            t <= teacherConfigLayers
                        else {
                            throw rd.fail(
                                "proxy.loss.hidden_layers[\(i)]",
                                "expected [student, teacher] with teacher in 0...\(teacherConfigLayers)")
                        }
                        return [s, t]
                    }
                }
                if proxy.loss.kl == 0 && proxy.loss.lm == 0 && proxy.loss.hidden.weight == 0 {
                    throw rd.fail("proxy.loss", "every weight is zero")
                }
            }
            if let v = p["temperature"] {
                proxy.loss.temperature = try rd.number(v, "proxy.temperature", positive: true)
            }
            if let v = p["reverse_kl"] {
                guard let x = v.bool else { throw rd.fail("proxy.reverse_kl", "true or false") };
                proxy.loss.direction = x ? .reverse : .forward
            }
            if let v = p["eval_tokens"] { proxy.evalTokens = try rd.int(v, "proxy.eval_tokens") }
            if let v = p["seed"] { proxy.seed = UInt64(try rd.int(v, "proxy.seed", min: 0)) }
        }
        proxy.evalEvery = proxy.steps
    }

    /// `strategy`: its name and settings.
    private mutating func readStrategy(_ o: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        // strategy
        if let s = try rd.object(o["strategy"], "strategy") {
            let name = try rd.string(s["name"], "strategy.name")
            switch name {
            case "grid":
                try rd.check(s, "strategy", ["name"])
                strategy = .grid
            case "random":
                try rd.check(s, "strategy", ["name", "samples", "seed"])
                strategy = .random(
                    samples: try rd.int(s["samples"], "strategy.samples"),
                    seed: UInt64(try s["seed"].map { try rd.int($0, "strategy.seed", min: 0) } ?? 0))
            case "successive_halving":
                try rd.check(s, "strategy", ["name", "min_steps", "eta", "tie_slack"])
                if let t = s["tie_slack"] { tieSlack = try rd.int(t, "strategy.tie_slack", min: 0) }
                let minSteps =
                    try s["min_steps"].map { try rd.int($0, "strategy.min_steps") } ?? max(1, proxy.steps / 9)
                let eta = try s["eta"].map { try rd.int($0, "strategy.eta", min: 2) } ?? 3
                guard minSteps <= proxy.steps else {
                    throw rd.fail("strategy.min_steps", "\(minSteps) is above proxy.steps \(proxy.steps)")
                }
                strategy = .successiveHalving(minSteps: minSteps, eta: eta)
            case "evolution":
                try rd.check(s, "strategy", ["name", "population", "generations", "mutation", "crossover", "seed"])
                strategy = .evolution(
                    population: try s["population"].map { try rd.int($0, "strategy.population", min: 2) } ?? 8,
                    generations: try s["generations"].map { try rd.int($0, "strategy.generations") } ?? 3,
                    mutation: try s["mutation"].map { try rd.number($0, "strategy.mutation") } ?? 0.3,
                    crossover: try s["crossover"].map { try rd.number($0, "strategy.crossover") } ?? 0.5,
                    seed: UInt64(try s["seed"].map { try rd.int($0, "strategy.seed", min: 0) } ?? 0))
            case "puzzle":
                try readPuzzle(s, rd, teacher: t)
            default:
                throw rd.fail(
                    "strategy.name",
                    "'\(name)' is not grid, random, successive_halving, evolution or puzzle"
                        + (closest(name, in: ["grid", "random", "successive_halving", "evolution", "puzzle"]).map {
                            "; did you mean '\($0)'?"
                        } ?? ""))
            }
        }
    }

    /// `strategy` `puzzle`: the block library against the teacher (groups dividing its key/value
    /// heads, widths the nemotron-nas format can write, at most the teacher's), the solutions,
    /// and the halving.
    private mutating func readPuzzle(_ s: [String: JSON], _ rd: SpecReader, teacher t: ModelConfig) throws {
        // Variants the nemotron-nas format cannot write are refused here, by name, not at export.
        let unwritable = [
            "num_attention_heads":
                "nemotron-nas keeps every layer's query heads (num_attention_heads is one number for the model); "
                + "a layer may drop key/value groups (num_key_value_heads) or its attention (no_op)",
            "num_experts": "nemotron-nas has no experts per layer: mixture variants cannot be written",
            "num_local_experts": "nemotron-nas has no experts per layer: mixture variants cannot be written",
            "mamba_num_heads": "nemotron-nas has no Mamba2 layers: hybrid variants cannot be written",
            "linear_num_value_heads": "nemotron-nas has no Gated DeltaNet layers: hybrid variants cannot be written"
        ]
        if let (key, reason) = unwritable.sorted(by: { $0.key < $1.key }).first(where: { s[$0.key] != nil }) {
            throw rd.fail("strategy.\(key)", reason)
        }
        try rd.check(
            s, "strategy",
            [
                "name", "solutions", "min_hamming", "num_key_value_heads", "intermediate_size", "no_op", "min_steps",
                "eta", "tie_slack", "local_distillation"
            ])
        let whole = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        do {
            try HeterogeneousPruning.check(Array(repeating: whole, count: t.numHiddenLayers), teacher: t)
        } catch { throw rd.fail("strategy.name", "\(error)") }
        func list(_ key: String, _ fallback: Int) throws -> [Int] {
            guard let v = s[key] else { return [fallback] }
            guard let a = v.array, !a.isEmpty else { throw rd.fail("strategy.\(key)", "a non-empty list of integers") }
            return try a.enumerated().map { try rd.int($0.element, "strategy.\(key)[\($0.offset)]") }
        }
        let givenGroups = try list("num_key_value_heads", t.numKeyValueHeads)
        for (i, g) in givenGroups.enumerated() where g <= 0 || t.numKeyValueHeads % g != 0 {
            throw rd.fail(
                "strategy.num_key_value_heads[\(i)]", "\(g) does not divide the teacher's \(t.numKeyValueHeads)")
        }
        let groups = Array(Set(givenGroups + [t.numKeyValueHeads])).sorted()
        let givenWidths = try list("intermediate_size", t.intermediateSize)
        let widths = Array(Set(givenWidths + [t.intermediateSize])).sorted()
        // The teacher's own width is always in the library, so it is checked too (after the list).
        for (i, w) in (givenWidths + [t.intermediateSize]).enumerated() {
            guard w <= t.intermediateSize else {
                throw rd.fail("strategy.intermediate_size[\(i)]", "\(w) is above the teacher's \(t.intermediateSize)")
            }
            guard NemotronNASFormat.canWrite(width: w, hidden: t.hiddenSize) else {
                throw rd.fail(
                    "strategy.intermediate_size[\(i)]",
                    "\(w) cannot be written in the nemotron-nas format (its ffn_mult rounds widths up to a multiple of 256)"
                )
            }
        }
        if let v = s["tie_slack"] { tieSlack = try rd.int(v, "strategy.tie_slack", min: 0) }
        let minSteps = try s["min_steps"].map { try rd.int($0, "strategy.min_steps") } ?? max(1, proxy.steps / 9)
        guard minSteps <= proxy.steps else {
            throw rd.fail("strategy.min_steps", "\(minSteps) is above proxy.steps \(proxy.steps)")
        }
        strategy = .puzzle(
            PuzzleSettings(
                solutions: try s["solutions"].map { try rd.int($0, "strategy.solutions") } ?? 4,
                minHamming: try s["min_hamming"].map { try rd.int($0, "strategy.min_hamming") } ?? 2,
                keyValueHeads: groups, widths: widths,
                noOp: try s["no_op"].map {
                    guard let b = $0.bool else { throw rd.fail("strategy.no_op", "true or false") }
                    return b
                } ?? true,
                minSteps: minSteps, eta: try s["eta"].map { try rd.int($0, "strategy.eta", min: 2) } ?? 3,
                localDistillation: try readLocalDistillation(s["local_distillation"], rd, teacher: t)))
    }

    /// `strategy.local_distillation`: `true` (defaults), `false`/absent (blocks scored as
    /// pruned), or `{"steps", "batch_size", "sequence_length", "learning_rate", "seed",
    /// "layers_per_pass"}` — by default 64 steps at the proxy's batch, sequence and rate, seed
    /// proxy.seed + 1, every layer's blocks at once.
    private func readLocalDistillation(_ v: JSON?, _ rd: SpecReader, teacher t: ModelConfig) throws
        -> LocalDistillationSettings?
    {
        let key = "strategy.local_distillation"
        guard let v else { return nil }
        var d = LocalDistillationSettings(
            steps: 64, batchSize: proxy.batch, sequence: proxy.sequence, learningRate: proxy.learningRate,
            seed: proxy.seed &+ 1)
        if let b = v.bool { return b ? d : nil }
        guard let o = try rd.object(v, key) else { return nil }
        try rd.check(o, key, ["steps", "batch_size", "sequence_length", "learning_rate", "seed", "layers_per_pass"])
        if let x = o["layers_per_pass"] { d.layersPerPass = try rd.int(x, key + ".layers_per_pass") }
        if let x = o["steps"] { d.steps = try rd.int(x, key + ".steps") }
        if let x = o["batch_size"] { d.batchSize = try rd.int(x, key + ".batch_size") }
        if let x = o["sequence_length"] {
            d.sequence = try rd.int(x, key + ".sequence_length")
            guard d.sequence <= t.maxPositionEmbeddings else {
                throw rd.fail(
                    key + ".sequence_length",
                    "\(d.sequence) is above the teacher's max_position_embeddings \(t.maxPositionEmbeddings)")
            }
        }
        if let x = o["learning_rate"] { d.learningRate = try rd.number(x, key + ".learning_rate", positive: true) }
        if let x = o["seed"] { d.seed = UInt64(try rd.int(x, key + ".seed", min: 0)) }
        return d
    }

    /// `prefilter`, `max_candidates`, `objective`, `export`.
    private mutating func readObjectiveAndExport(_ o: [String: JSON], _ rd: SpecReader) throws {
        if let v = o["prefilter"] { prefilter = try rd.int(v, "prefilter") }
        if let v = o["max_candidates"] { maxCandidates = try rd.int(v, "max_candidates") }
        if let ob = try rd.object(o["objective"], "objective") {
            try rd.check(ob, "objective", ["metric", "languages", "replicates"])
            if let m = ob["metric"], m.string != "val_loss" {
                throw rd.fail("objective.metric", "only val_loss is available")
            }
            if let r = ob["replicates"] {
                if r.object == nil {
                    replicates = Replicates(seeds: try rd.int(r, "objective.replicates", min: 2))
                } else if let ro = try rd.object(r, "objective.replicates") {
                    try rd.check(ro, "objective.replicates", ["seeds", "top"])
                    replicates = Replicates(
                        seeds: try rd.int(ro["seeds"], "objective.replicates.seeds", min: 2),
                        top: try ro["top"].map { try rd.int($0, "objective.replicates.top") })
                }
            }
            if let l = ob["languages"] {
                guard let x = l.string.flatMap(Objective.init) else {
                    throw rd.fail("objective.languages", "overall, mean or worst")
                }
                objective = x
            }
        }
        if let e = try rd.object(o["export"], "export") {
            try rd.check(e, "export", ["top", "full_distillation_steps"])
            if let v = e["top"] { exportTop = try rd.int(v, "export.top") }
            if let v = e["full_distillation_steps"] {
                fullDistillationSteps = try rd.int(v, "export.full_distillation_steps")
            }
        }
    }
}

/// The spec's JSON reading rules: every error names the JSON path; unknown keys get a "did you mean".
struct SpecReader {
    let file: String

    func fail(_ path: String, _ reason: String) -> SearchError { .spec(file: file, path: path, reason: reason) }
    func check(_ dict: [String: JSON], _ path: String, _ allowed: [String]) throws {
        for k in dict.keys.sorted() where !allowed.contains(k) {
            let p = path.isEmpty ? k : "\(path).\(k)"
            let hint =
                closest(k, in: allowed).map { "; did you mean '\($0)'?" }
                ?? " (allowed: \(allowed.joined(separator: ", ")))"
            throw fail(p, "unknown key\(hint)")
        }
    }
    func object(_ v: JSON?, _ path: String) throws -> [String: JSON]? {
        guard let v else { return nil }
        guard let o = v.object else { throw fail(path, "expected an object") }
        return o
    }
    func string(_ v: JSON?, _ path: String) throws -> String {
        guard let s = v?.string, !s.isEmpty else {
            throw fail(path, v == nil ? "missing" : "expected a non-empty string")
        }
        return s
    }
    func int(_ v: JSON?, _ path: String, min: Int = 1) throws -> Int {
        guard let n = v?.int else { throw fail(path, v == nil ? "missing" : v!.notAnIntegerReason) }
        guard n >= min else { throw fail(path, "\(n) is below the minimum \(min)") }
        return n
    }
    func number(_ v: JSON?, _ path: String, positive: Bool = false) throws -> Double {
        guard let x = v?.double else { throw fail(path, v == nil ? "missing" : "expected a number, got \(v!)") }
        guard x >= 0, !positive || x > 0 else {
            throw fail(path, "\(x) must be \(positive ? "positive" : "non-negative")")
        }
        return x
    }
}

extension SearchSpec {
    /// The steps a trial that runs from `start` to `end` evaluates at: `curvePoints` steps evenly
    /// spaced inside (start, end) and after the warmup, then `end` (its score).
    public func evaluationSteps(from start: Int, to end: Int) -> [Int] {
        let first = max(start, proxy.warmup)
        guard curvePoints > 0, end - first > 1 else { return [end] }
        let inside = (1...curvePoints).map {
            first + Int((Double(end - first) * Double($0) / Double(curvePoints + 1)).rounded())
        }
        return Array(Set(inside.filter { $0 > first && $0 < end })).sorted() + [end]
    }
}
