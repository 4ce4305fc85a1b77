import Foundation
import Model
import Proxy

/// Who does a trial's arithmetic (docs/backends.md): the built-in engine, or an external process
/// that speaks the trial-backend protocol — Topiary writes a JSON job (teacher, pruned student
/// inits, the exact batches, the recipe, resume checkpoints, evaluation windows), the process
/// answers with JSON Lines on stdout and writes checkpoints in Topiary's layout.
public struct BackendSpec: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case builtin
        /// The reference PyTorch backend (`backends/torch/topiary_backend.py`) run by `python`.
        case torch(python: String, script: String?)
        /// Any program; Topiary appends the job file's path to its arguments.
        case command([String])
    }

    public var kind: Kind = .builtin
    /// `cpu`, `cuda`, `cuda:1`, … (external backends).
    public var device = "cpu"
    /// `float32`, or `bfloat16` (autocast on a GPU) for external backends.
    public var dtype = "float32"
    /// Seconds without a line from the backend after which it is killed and its trials failed.
    public var heartbeatTimeout = 300.0
    /// How the torch backend holds a trial in memory (``TrialExecution``).
    public var execution = TrialExecution()
    /// Processes (GPUs) one trial runs on (`gpus_per_trial`): above 1 the torch backend runs
    /// under `torchrun`, FSDP2 sharding every student, its moments and the teacher; rank 0 speaks
    /// protocol 1.
    public var gpusPerTrial = 1
    /// The memory of one GPU (`gpu_memory`): when given, `search run` refuses a spec whose
    /// trials would not fit one (``TrialPlan``).
    public var gpuMemory: Int?
    /// 2: one resident process per worker takes job after job on its stdin (the torch backend's
    /// default); 1: a process per job (a command's default).
    public var protocolVersion = 1
    public init() {}

    /// The keys a torch backend takes beyond the common ones.
    static let executionKeys = [
        "attention", "teacher_dtype", "student", "micro_batch", "activation_checkpointing", "gpu_memory",
        "gpus_per_trial"
    ]

    public var isBuiltin: Bool { kind == .builtin }
    public var name: String {
        switch kind {
        case .builtin: return "builtin"
        case .torch: return "torch"
        case .command: return "command"
        }
    }

    /// Parses the spec's `"backend"` object.
    static func parse(_ o: [String: JSON], fail: (String, String) -> Error) throws -> BackendSpec {
        var b = BackendSpec()
        let allowed =
            ["name", "python", "script", "device", "dtype", "command", "heartbeat_timeout", "protocol"] + executionKeys
        for k in o.keys where !allowed.contains(k) {
            throw fail("backend.\(k)", "unknown key (allowed: \(allowed.joined(separator: ", ")))")
        }
        if let d = o["device"] {
            guard let s = d.string, s == "cpu" || s == "cuda" || s.hasPrefix("cuda:") || s == "mps" else {
                throw fail("backend.device", "cpu, cuda, cuda:N or mps")
            }
            b.device = s
        }
        if let d = o["dtype"] {
            guard let s = d.string, ["float32", "bfloat16"].contains(s) else {
                throw fail("backend.dtype", "float32 or bfloat16")
            }
            b.dtype = s
        }
        if b.dtype == "bfloat16" && b.device == "cpu" {
            throw fail("backend.dtype", "bfloat16 autocast needs a GPU device; on cpu use float32")
        }
        b.execution.teacherDtype = b.dtype
        if let a = o["attention"] {
            guard let v = a.string, ["sdpa", "eager"].contains(v) else {
                throw fail(
                    "backend.attention",
                    "sdpa (PyTorch's scaled dot-product attention, flash on GPUs that have it) or eager")
            }
            b.execution.attention = v
        }
        if let t = o["teacher_dtype"] {
            guard let v = t.string, ["float32", "bfloat16"].contains(v) else {
                throw fail("backend.teacher_dtype", "float32 or bfloat16 (the dtype the teacher is held in)")
            }
            b.execution.teacherDtype = v
        }
        if let t = o["student"] {
            guard let v = t.string, ["autocast", "bf16"].contains(v) else {
                throw fail(
                    "backend.student",
                    "autocast (float32 master weights, computing in backend.dtype) or bf16 (bfloat16 weights, float32 "
                        + "optimizer state)")
            }
            b.execution.student = v
        }
        if let m = o["micro_batch"] {
            guard let v = m.int, v >= 0, v <= 1 << 20 else {
                throw fail(
                    "backend.micro_batch",
                    "rows per micro-batch (gradients accumulated over the batch), or 0 for the whole batch")
            }
            b.execution.microBatch = v
        }
        if let g = o["gpus_per_trial"] {
            guard let v = g.int, (1...1024).contains(v) else {
                throw fail("backend.gpus_per_trial", "processes (GPUs) per trial, 1 to 1024")
            }
            b.gpusPerTrial = v
        }
        if let g = o["gpu_memory"] {
            guard let v = g.string.flatMap(TrialPlan.parseBytes) ?? g.int, v > 0 else {
                throw fail("backend.gpu_memory", "one GPU's memory, as \"80GiB\" or a number of bytes")
            }
            b.gpuMemory = v
        }
        if let c = o["activation_checkpointing"] {
            guard let v = c.bool else { throw fail("backend.activation_checkpointing", "true or false") }
            b.execution.activationCheckpointing = v
        }
        if let t = o["heartbeat_timeout"] {
            guard let v = t.double, v >= 1, v <= 86_400 else {
                throw fail("backend.heartbeat_timeout", "seconds between 1 and 86400")
            }
            b.heartbeatTimeout = v
        }
        if let c = o["command"] {
            guard o["name"] == nil || o["name"]?.string == "command" else {
                throw fail("backend", "give either a name or a command, not both")
            }
            guard let parts = c.array?.compactMap(\.string), !parts.isEmpty, parts.count == c.array?.count else {
                throw fail(
                    "backend.command",
                    "a non-empty list of strings (the program and its arguments; the job file is appended)")
            }
            b.kind = .command(parts)
            b.protocolVersion = try protocolVersion(o, default: 1, fail: fail)
            return b
        }
        switch o["name"]?.string ?? "builtin" {
        case "builtin":
            guard o.count == (o["name"] == nil ? 0 : 1) else {
                throw fail("backend", "the built-in engine takes no options")
            }
        case "torch":
            if let p = o["python"], p.string?.isEmpty ?? true {
                throw fail("backend.python", "the path of a Python with torch and transformers")
            }
            b.kind = .torch(python: o["python"]?.string ?? Self.defaultPython(), script: o["script"]?.string)
            b.protocolVersion = try protocolVersion(o, default: b.gpusPerTrial > 1 ? 1 : 2, fail: fail)
            if b.gpusPerTrial > 1 && b.protocolVersion == 2 {
                throw fail(
                    "backend.protocol",
                    "a trial on several processes (gpus_per_trial) runs one job per torchrun: protocol 1")
            }
        case let other:
            throw fail("backend.name", "'\(other)' is not builtin or torch (or give a command)")
        }
        return b
    }

    static func protocolVersion(_ o: [String: JSON], default d: Int, fail: (String, String) -> Error) throws -> Int {
        guard let v = o["protocol"] else { return d }
        guard let n = v.int, n == 1 || n == 2 else {
            throw fail("backend.protocol", "1 (a process per job) or 2 (one resident process per worker)")
        }
        return n
    }

    /// `TOPIARY_PYTHON`, else `.venv/bin/python` in the working folder, else the environment
    /// scripts/torch-venv.sh makes, else `python3`.
    static func defaultPython() -> String {
        let env = ProcessInfo.processInfo.environment
        if let p = env["TOPIARY_PYTHON"] { return p }
        let venv =
            (env["TOPIARY_TORCH_VENV"]
                ?? ((env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/topiary/torch-venv")) + "/bin/python"
        for candidate in [FileManager.default.currentDirectoryPath + "/.venv/bin/python", venv]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "python3"
    }

    /// The program and arguments to run (the job path is appended).
    func commandLine() throws -> [String] {
        switch kind {
        case .builtin: return []
        case let .command(parts): return parts
        case let .torch(python, script):
            let resolved = try script ?? Self.findTorchScript()
            guard gpusPerTrial > 1 else { return [python, resolved] }
            // torchrun on this machine: one process per GPU (or, on a CPU, per gloo rank).
            return [
                python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", String(gpusPerTrial),
                resolved
            ]
        }
    }

    /// `backends/torch/topiary_backend.py`: beside `TOPIARY_BACKENDS`, else in the working folder
    /// or a parent of the running binary (a checkout's `.build/…/topiary`).
    static func findTorchScript() throws -> String {
        let relative = "torch/topiary_backend.py"
        var candidates: [String] = []
        if let dir = ProcessInfo.processInfo.environment["TOPIARY_BACKENDS"] { candidates.append(dir + "/" + relative) }
        candidates.append(FileManager.default.currentDirectoryPath + "/backends/" + relative)
        var dir = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
        ).deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(dir.appendingPathComponent("backends/" + relative).path)
            dir.deleteLastPathComponent()
        }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw SearchError.backend(
                "the torch backend's script backends/torch/topiary_backend.py is not in "
                    + "\(candidates.prefix(2).joined(separator: " or ")) or beside the binary; set "
                    + "TOPIARY_BACKENDS or the spec's backend.script"
            )
        }
        return found
    }
}

/// What a backend returns for one student.
struct BackendTrialResult {
    /// The loss every 10 steps (what the store keeps as `train_loss`).
    var trainLoss: [(Int, Double)]
    var point: CurvePoint
    /// The validation points before the end (``SearchSpec/evaluationSteps(from:to:)``).
    var curve: [CurvePoint] = []
    /// Every step's loss, as the backend reported it.
    var steps: [(Int, Double)] = []
    /// The memory the job added at its peak, as the backend measured it (its `done` line).
    var peakMemoryBytes: Int?
}

/// A worker's resident backend process (protocol 2), kept from one job to the next so that the
/// teacher is loaded once per worker; ``close()`` ends it (stdin closed, then its group killed).
public final class ResidentBackend: @unchecked Sendable {
    var process: BackendProcess?
    /// Jobs sent to the current process.
    var jobs = 0
    public init() {}

    public func close() {
        guard let p = process else { return }
        try? p.input?.close()
        let deadline = Date().addingTimeInterval(ExternalBackend.exitGrace)
        while p.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        p.stop()
        process = nil
    }

    deinit { close() }
}

/// A student's init as an external backend reads it: a Hugging Face folder, written into the
/// job folder when the job is (or one that exists already).
struct StudentInit {
    let config: ModelConfig
    /// Writes the init into the folder it is given, or names the folder it already is.
    let materialize: (URL) throws -> URL

    /// A model in memory, saved as float32.
    static func model(_ m: DecoderModel) -> StudentInit {
        StudentInit(config: m.config) {
            try Checkpoint.save(m, to: $0)
            return $0
        }
    }

    /// A Hugging Face folder that exists (its headers checked against its config here).
    static func folder(_ url: URL) throws -> StudentInit {
        let config = try CheckpointWeights(url).config
        return StudentInit(config: config) { _ in url }
    }

    /// The teacher pruned by `plan`, cut from its files a tensor at a time in its own dtype
    /// (``Pruning/write(_:teacher:target:type:to:shardBytes:)``): never a float32 copy of the teacher.
    static func pruned(_ plan: PrunePlan, teacher: CheckpointWeights, target: ModelConfig) -> StudentInit {
        StudentInit(config: Pruning.studentConfig(plan, teacher: teacher.config, target: target)) {
            try Pruning.write(plan, teacher: teacher, target: target, to: $0)
            return $0
        }
    }

    /// The teacher cut into heterogeneous layer `variants` (the puzzle strategy's candidates, a
    /// nemotron-nas checkpoint with its modeling files), streamed from its files in its own dtype
    /// (``HeterogeneousPruning/write(teacher:variants:scores:trained:type:to:shardBytes:)``),
    /// locally distilled blocks taking their layers' place where `trained` has them.
    static func heterogeneous(
        _ variants: [LayerVariant], teacher: CheckpointWeights, scores: ImportanceScores, trained: BlockWeights?
    ) -> StudentInit {
        StudentInit(config: HeterogeneousPruning.studentConfig(teacher: teacher.config, variants: variants)) {
            try HeterogeneousPruning.write(
                teacher: teacher, variants: variants, scores: scores, trained: trained, to: $0)
            return $0
        }
    }
}

/// Runs a claim's students through an external backend.
struct ExternalBackend {
    let spec: BackendSpec
    let log: (String) -> Void
    /// The worker's resident backend (protocol 2), or nil: one process per job (protocol 1).
    var resident: ResidentBackend? = nil

    /// ``distill(teacherPath:students:corpus:recipe:startStep:endStep:evaluateAt:jobDirectory:batchCache:run:)``
    /// for students in memory (saved as float32 inits).
    func distill(
        teacherPath: String, students: [(name: String, model: DecoderModel, resume: URL?, out: URL)],
        corpus: TokenShards,
        recipe: DistillationRecipe, startStep: Int, endStep: Int, evaluateAt: [Int]? = nil, jobDirectory: URL,
        batchCache: URL? = nil, run: JSON
    ) throws -> [Int: Result<BackendTrialResult, SearchError>] {
        try distill(
            teacherPath: teacherPath,
            students: students.map { ($0.name, StudentInit.model($0.model), $0.resume, $0.out) },
            corpus: corpus, recipe: recipe, startStep: startStep, endStep: endStep, evaluateAt: evaluateAt,
            jobDirectory: jobDirectory, batchCache: batchCache, run: run)
    }

    /// - Returns: per student index, its result or the failure message (the backend's own words).
    func distill(
        teacherPath: String, students: [(name: String, start: StudentInit, resume: URL?, out: URL)],
        corpus: TokenShards,
        recipe: DistillationRecipe, startStep: Int, endStep: Int, evaluateAt: [Int]? = nil, jobDirectory: URL,
        batchCache: URL? = nil, run: JSON
    ) throws -> [Int: Result<BackendTrialResult, SearchError>] {
        // Refused before anything is written.
        if let moe = students.first(where: { $0.start.config.family.hasAttentionExperts }) {
            throw SearchError.backend(
                "the \(spec.name) backend does not distil JetMoE students yet (\(moe.name)); use the built-in engine")
        }
        guard recipe.loss.hidden.weight == 0 else {
            throw SearchError.backend(
                "the \(spec.name) backend does not distil hidden states yet (proxy.loss.hidden); use the built-in engine"
            )
        }
        let fm = FileManager.default
        try Self.freshDirectory(jobDirectory)
        defer { try? fm.removeItem(at: jobDirectory) }
        // The students' pruned inits, as Hugging Face folders.
        var entries: [DistillJob.Student] = []
        for (i, s) in students.enumerated() {
            let initDir = try s.start.materialize(jobDirectory.appendingPathComponent("init-\(i)"))
            try fm.createDirectory(at: s.out, withIntermediateDirectories: true)
            entries.append(
                DistillJob.Student(name: s.name, init: initDir.path, resume: s.resume?.path, out: s.out.path))
        }
        // The exact batches of steps startStep+1 … endStep: in the job folder, or in `batchCache`
        // once for every claim of the same steps (named by what draws them).
        let batchesFile = try Self.batches(
            corpus: corpus, recipe: recipe, from: startStep, to: endStep,
            in: batchCache ?? jobDirectory, shared: batchCache != nil)
        let languages = corpus.languages
        let T = recipe.sequence
        let validationFile = jobDirectory.appendingPathComponent("validation.safetensors")
        let vLanguage = try Self.writeValidationWindows(
            corpus, batch: recipe.batch, sequence: T, maxTokensPerLanguage: recipe.evalTokens, to: validationFile)
        let withKL = languages.map { (corpus.stats["validation"]?[$0]?.tokens ?? 0) > T }
        let job = DistillJob(
            device: spec.device, dtype: spec.dtype, teacher: URL(fileURLWithPath: teacherPath).standardizedFileURL.path,
            students: entries, batches: .init(file: batchesFile.path, from: startStep, to: endStep),
            validation: .init(file: validationFile.path, languages: languages, withKL: withKL),
            evaluateAt: evaluateAt ?? [endStep], heartbeatSeconds: heartbeatSeconds, execution: spec.execution,
            recipe: DistillJob.recipe(recipe), run: run)
        let jobFile = try Self.write(job, in: jobDirectory)
        let events = try runProcess(
            jobFile: jobFile, students: students.count,
            steps: (startStep, endStep, recipe.batch * recipe.sequence * students.count))
        if case let .lines(lines) = events,
            let loaded = lines.first(where: { $0["event"]?.string == "start" })?["teacher_loaded"]?.bool
        {
            if let done = lines.last(where: { $0["event"]?.string == "done" }),
                let peak = (try? BackendEvent.decode(BackendEvent.Done.self, done).get())?.peakMemoryBytes
            {
                log("backend \(spec.name): peak memory \(TrialPlan.gib(peak)) above the job's start")
            }
            let on =
                resident.map { "job \($0.jobs) on resident process \($0.process.map { String($0.pid) } ?? "?")" }
                ?? "a process for this job"
            log("backend \(spec.name): \(on): teacher \(loaded ? "loaded" : "reused")")
        }
        return collect(
            events: events, students: students.map(\.name), languages: languages, withKL: withKL, T: T,
            windowLanguages: vLanguage, startStep: startStep, endStep: endStep, evaluateAt: evaluateAt ?? [endStep])
    }

    /// The file of `recipe`'s batches for steps from+1 … to, as int32 `tokens` and `targets`
    /// (steps, B, T): the built-in engine's sampler's, token for token. `shared`: reused when a file
    /// drawn by the same corpus, recipe and steps is already there (written atomically, so workers
    /// that race write the same bytes).
    static func batches(
        corpus: TokenShards, recipe: DistillationRecipe, from startStep: Int, to endStep: Int, in folder: URL,
        shared: Bool
    ) throws -> URL {
        var url = folder.appendingPathComponent("batches.safetensors")
        if shared {
            var f = Fingerprint()
            f.add(corpus.directory.standardizedFileURL.path)
            f.add(JSON.object(corpus.stats.mapValues { .object($0.mapValues { JSON($0.tokens) }) }).description)
            f.add("\(recipe.batch) \(recipe.sequence) \(recipe.alpha) \(recipe.seed)")
            url = folder.appendingPathComponent(
                "steps-\(startStep + 1)-\(endStep)-\(f.hex).safetensors")
            if FileManager.default.fileExists(atPath: url.path) { return url }
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
        let sampler = try BatchSampler(
            shards: corpus, batch: recipe.batch, sequence: recipe.sequence, sampling: .temperature(recipe.alpha),
            seed: recipe.seed)
        var tokens: [Int32] = [], targets: [Int32] = []
        for step in (startStep + 1)...endStep {
            let b = sampler.batch(step: step)
            tokens += b.tokens
            targets += b.targets
        }
        let steps = endStep - startStep
        try SafeTensorsWriter.write(
            int32: [
                ("tokens", [steps, recipe.batch, recipe.sequence], tokens),
                ("targets", [steps, recipe.batch, recipe.sequence], targets)
            ], to: url)
        return url
    }

    /// An empty job folder (what a killed earlier job left there removed).
    static func freshDirectory(_ url: URL) throws {
        try? FileManager.default.removeItem(at: url)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The validation windows the built-in engine evaluates (rows with at least one target), as
    /// int32 `tokens` and `targets` [W, T] and `language` [W] (an index into `corpus.languages`).
    /// Returns the language of each window.
    static func writeValidationWindows(
        _ corpus: TokenShards, batch: Int, sequence T: Int, maxTokensPerLanguage: Int, to url: URL
    ) throws -> [Int32] {
        var tokens: [Int32] = [], targets: [Int32] = [], language: [Int32] = []
        let languages = corpus.languages
        corpus.forEachWindowBatch(batch: batch, sequence: T, maxTokensPerLanguage: maxTokensPerLanguage) {
            lang, tk, tg in
            for r in 0..<(tk.count / T) where tg[(r * T)..<((r + 1) * T)].contains(where: { $0 >= 0 }) {
                tokens += tk[(r * T)..<((r + 1) * T)]
                targets += tg[(r * T)..<((r + 1) * T)]
                language.append(Int32(languages.firstIndex(of: lang)!))
            }
        }
        let w = language.count
        try SafeTensorsWriter.write(
            int32: [("tokens", [w, T], tokens), ("targets", [w, T], targets), ("language", [w], language)], to: url)
        return language
    }

    /// The same for a teacher in memory (its config and fingerprint taken from it).
    func importance(
        teacherPath: String, teacher: DecoderModel, corpus: TokenShards, calibration: CalibrationSet,
        settings: ImportanceSettings, batch: Int = 16, jobDirectory: URL
    ) throws -> ImportanceScores {
        try importance(
            teacherPath: teacherPath, teacher: teacher.config, teacherFingerprint: Fingerprint.of(teacher),
            corpus: corpus, calibration: calibration, settings: settings, batch: batch, jobDirectory: jobDirectory)
    }

    /// Importance scores of the teacher on `calibration` (and the layer-skip loss on the validation
    /// windows), computed by the backend; the same definitions as ``Importance/compute``.
    func importance(
        teacherPath: String, teacher c: ModelConfig, teacherFingerprint: String, corpus: TokenShards,
        calibration: CalibrationSet,
        settings: ImportanceSettings,
        batch: Int = 16, jobDirectory: URL
    ) throws -> ImportanceScores {
        guard !c.isMixture else {
            throw SearchError.backend(
                "the \(spec.name) backend does not compute importance of mixtures of experts yet; use the built-in engine"
            )
        }
        try Pruning.requireUniformLayers(c)
        try Self.freshDirectory(jobDirectory)
        defer { try? FileManager.default.removeItem(at: jobDirectory) }
        let T = calibration.sequence, B = min(batch, calibration.samples)
        let calibrationFile = jobDirectory.appendingPathComponent("calibration.safetensors")
        try SafeTensorsWriter.write(
            int32: [("tokens", [calibration.samples, T], calibration.tokens)], to: calibrationFile)
        let validationFile = jobDirectory.appendingPathComponent("validation.safetensors")
        _ = try Self.writeValidationWindows(
            corpus, batch: B, sequence: T, maxTokensPerLanguage: settings.lossTokensPerLanguage, to: validationFile)
        let job = ImportanceJob(
            device: spec.device, dtype: spec.dtype, teacher: URL(fileURLWithPath: teacherPath).standardizedFileURL.path,
            batch: B,
            calibration: .init(file: calibrationFile.path), validation: .init(file: validationFile.path),
            aggregation: .init(
                sequence: settings.sequenceAggregation.rawValue, batch: settings.batchAggregation.rawValue),
            heartbeatSeconds: heartbeatSeconds)
        let lines = try runJob(job, in: jobDirectory)
        guard let r = try events(BackendEvent.Importance.self, "importance", in: lines).last else {
            throw SearchError.backend("backend \(spec.name): no importance line")
        }
        func matrix(_ key: String, _ m: [[Double]], _ rows: Int, _ cols: Int) throws -> [[Double]] {
            guard m.count == rows, m.allSatisfy({ $0.count == cols && $0.allSatisfy(\.isFinite) }) else {
                throw SearchError.backend("backend \(spec.name): '\(key)' is not \(rows)×\(cols) finite numbers")
            }
            return m
        }
        func vector(_ key: String, _ v: [Double], _ n: Int) throws -> [Double] {
            guard v.count == n, v.allSatisfy(\.isFinite) else {
                throw SearchError.backend("backend \(spec.name): '\(key)' is not \(n) finite numbers")
            }
            return v
        }
        let L = c.numHiddenLayers
        let sum = r.lossSum, tokens = r.lossTokens
        guard sum.isFinite, tokens > 0 else {
            throw SearchError.backend("backend \(spec.name): no finite loss_sum over loss_tokens > 0")
        }
        let base = sum / Double(tokens)
        let rise = try vector("skipped_loss_sums", r.skippedLossSums, L).map { $0 / Double(tokens) - base }
        /// A hybrid score: per layer, `width` numbers where the layer is of `type`, none elsewhere.
        func perLayer(_ key: String, _ m: [[Double]]?, _ type: HybridLayer, _ width: Int) throws -> [[Double]]? {
            guard let types = c.hybridLayers, types.contains(type) else { return nil }
            guard let m, m.count == L else {
                throw SearchError.backend("backend \(spec.name): '\(key)' is missing or not one list per layer")
            }
            return try (0..<L).map { l in try vector("\(key)[\(l)]", m[l], types[l] == type ? width : 0) }
        }
        var scores = ImportanceScores(
            teacherFingerprint: teacherFingerprint, calibrationFingerprint: calibration.fingerprint,
            settings: settings,
            heads: try matrix("heads", r.heads, L, c.numAttentionHeads),
            neurons: try matrix("neurons", r.neurons, L, c.intermediateSize),
            channels: try vector("channels", r.channels, c.hiddenSize),
            blockImportance: try vector("block_importance", r.blockImportance, L),
            layerLossRise: settings.lossTokensPerLanguage == 0 ? [] : rise,
            baseValidationLoss: settings.lossTokensPerLanguage == 0 ? 0 : base)
        scores.mambaChannels = try perLayer("mamba_channels", r.mambaChannels, .mamba, c.mamba?.innerWidth ?? 0)
        scores.deltaNetHeads = try perLayer(
            "deltanet_heads", r.deltaNetHeads, .deltaNet, c.deltaNet?.valueHeads ?? 0)
        scores.deltaNetChannels = try perLayer(
            "deltanet_channels", r.deltaNetChannels, .deltaNet, c.deltaNet?.valueWidth ?? 0)
        return scores
    }

    /// How often the backend is asked to say it is alive: a quarter of the timeout, 1–30 s.
    var heartbeatSeconds: Double { max(1, min(30, spec.heartbeatTimeout / 4)) }

    /// What the process said: its event lines, or one failure for every student.
    enum Events { case lines([[String: JSON]]), failed(String) }

    /// The longest line a backend may print (an evaluation line of a large validation set is a
    /// few hundred kilobytes).
    static let maxLineBytes = 16 << 20
    /// Lines a backend may print between two steps of progress (a student's highest step rising), beyond
    /// 8 per student and 4 per heartbeat interval waited: a backend that talks without training
    /// is stopped before its lines fill the memory.
    static let linesPerStep = 1000
    /// Seconds a backend has to exit after its `done` line or a SIGTERM, before its process group
    /// is killed.
    static let exitGrace = 5.0
    /// Seconds what a backend left holding its stdout has after it exited, before the group is killed.
    static let leftoverGrace = 1.0

    /// Runs the backend on `jobFile`, watching for silence. `steps` (first and last step, tokens
    /// per step over all students) turns its step lines into progress lines with tokens/s and ETA
    /// (at most one per 10 s). What the backend may say is bounded (``maxLineBytes``,
    /// ``linesPerStep``); the job is done when it printed `done` and exited (status 0, or
    /// non-zero with per-student errors); whatever it started is killed with its process group
    /// when the job ends. On SIGINT or SIGTERM (``Interruption``) the backend's group is stopped
    /// and ``Interruption/Interrupted`` thrown.
    func runProcess(jobFile: URL, students: Int = 1, steps: (first: Int, last: Int, tokens: Int)? = nil) throws
        -> Events
    {
        if let resident { return try runResident(resident, jobFile: jobFile, students: students, steps: steps) }
        let command = try spec.commandLine()
        try Interruption.check()
        let proc: BackendProcess
        switch BackendProcess.start(command + [jobFile.path], name: spec.name, stdin: false) {
        case let .failure(message): return .failed(message.description)
        case let .success(started): proc = started
        }
        // Whatever the backend left behind (a child holding the pipes, a worker pool) goes with it.
        defer { proc.stop() }
        return try watch(proc, students: students, steps: steps, resident: false).events
    }

    /// A job on the worker's resident backend (protocol 2): started with `--serve` on first use
    /// (it says `ready`), then sent each job file's path on its stdin. A backend that fails a job
    /// other than by an error line (silence, a malformed line, an exit) is stopped and the next
    /// job starts a fresh one.
    func runResident(
        _ slot: ResidentBackend, jobFile: URL, students: Int, steps: (first: Int, last: Int, tokens: Int)?
    ) throws -> Events {
        try Interruption.check()
        if let old = slot.process, !old.process.isRunning {
            old.stop()
            slot.process = nil
        }
        if slot.process == nil {
            switch BackendProcess.start(try spec.commandLine() + ["--serve"], name: spec.name, stdin: true) {
            case let .failure(message): return .failed(message.description)
            case let .success(started):
                if let refused = try awaitReady(started) {
                    started.stop()
                    return .failed(refused)
                }
                slot.process = started
                slot.jobs = 0
                log("backend \(spec.name): resident process \(started.pid) started (protocol 2)")
            }
        }
        let proc = slot.process!
        guard proc.send(jobFile.path) else {
            proc.stop()
            slot.process = nil
            return .failed("backend \(spec.name): the resident process no longer reads its jobs (it exited?)")
        }
        slot.jobs += 1
        let watched: (events: Events, alive: Bool)
        do { watched = try watch(proc, students: students, steps: steps, resident: true) } catch {
            proc.stop()
            slot.process = nil
            throw error
        }
        if !watched.alive {
            proc.stop()
            slot.process = nil
        }
        return watched.events
    }

    /// Waits for a resident backend's `ready` line (protocol 2); nil when it came, else why not.
    func awaitReady(_ proc: BackendProcess) throws -> String? {
        let started = Date()
        while true {
            proc.reader.lock.lock()
            let fresh = proc.reader.lines
            proc.reader.lines.removeAll(keepingCapacity: true)
            let finished = proc.reader.done
            proc.reader.lock.unlock()
            for line in fresh where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                let object = JSON.parse(Data(line.utf8))?.object
                guard object?["event"]?.string == "ready" else {
                    return "backend \(spec.name) does not speak protocol 2 (its first line was not `ready`: "
                        + String(line.prefix(200)) + "); give \"protocol\": 1 in the spec's backend"
                }
                guard object?["protocol"]?.int == 2 else {
                    return
                        "backend \(spec.name) is ready for protocol \(object?["protocol"].map { "\($0)" } ?? "?"), not 2"
                }
                return nil
            }
            if finished || !proc.process.isRunning {
                proc.reader.lock.lock()
                let tail = String(decoding: proc.reader.stderr, as: UTF8.self).trimmingCharacters(
                    in: .whitespacesAndNewlines)
                proc.reader.lock.unlock()
                return "backend \(spec.name) exited before it was ready: " + String(tail.suffix(500))
            }
            if let s = Interruption.requested {
                proc.stop()
                throw Interruption.Interrupted(signal: s)
            }
            if Date().timeIntervalSince(started) > spec.heartbeatTimeout {
                return "backend \(spec.name) was not ready within \(Int(spec.heartbeatTimeout)) s (heartbeat timeout)"
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    /// Watches a started backend through one job: its lines, its silence, its exit. `resident`:
    /// the job ends at its `done` line and the process is left running for the next one.
    func watch(
        _ proc: BackendProcess, students: Int, steps: (first: Int, last: Int, tokens: Int)?, resident: Bool
    ) throws -> (events: Events, alive: Bool) {
        let (p, pid, reader, group) = (proc.process, proc.pid, proc.reader, proc.group)
        // A resident backend was idle before this job: its silence counts from now.
        reader.lock.lock(); reader.last = Date(); reader.lock.unlock()
        var events: [[String: JSON]] = []
        var failure: String?
        var interrupted: Int32?
        var lastProgress = Date(), lastLogged = Date()
        let started = Date()
        var highest: [String: Int] = [:]
        var linesSinceProgress = 0
        var sawDone = false
        var exitedAt: Date?, doneAt: Date?
        while true {
            reader.lock.lock()
            let fresh = reader.lines
            reader.lines.removeAll(keepingCapacity: true)
            let silent = Date().timeIntervalSince(reader.last), finished = reader.done, overflow = reader.overflow
            reader.lock.unlock()
            for line in fresh where !line.trimmingCharacters(in: .whitespaces).isEmpty && !(resident && sawDone) {
                guard let object = JSON.parse(Data(line.utf8))?.object, let event = object["event"]?.string else {
                    let nonFinite = ["NaN", "Infinity"].contains { line.contains($0) }
                    failure =
                        "backend \(spec.name) printed "
                        + (nonFinite
                            ? "a non-finite number (NaN or infinity): "
                            : "a malformed line (not a JSON object with an \"event\"): ")
                        + String(line.prefix(200))
                    break
                }
                linesSinceProgress += 1
                // Progress: a student's step beyond its highest so far.
                if event == "step", let step = object["step"]?.int,
                    step > highest[object["student"]?.string ?? "", default: 0]
                {
                    highest[object["student"]?.string ?? ""] = step
                    linesSinceProgress = 0
                    lastProgress = Date()
                }
                let budget =
                    Self.linesPerStep + 8 * students + 4
                    * Int(Date().timeIntervalSince(lastProgress) / heartbeatSeconds)
                if linesSinceProgress > budget {
                    failure =
                        "backend \(spec.name) printed more than \(budget) lines without a step of progress "
                        + "(its last step \(highest.values.max() ?? 0)); killed"
                    break
                }
                // A throughput job's parts, a block-scores job's blocks are their progress.
                if event == "block_score" {
                    linesSinceProgress = 0
                    lastProgress = Date()
                }
                if event == "timed" {
                    linesSinceProgress = 0
                    lastProgress = Date()
                    log(
                        "backend \(spec.name): timed \(object["part"]?.string ?? "?") '\(object["key"]?.string ?? "?")'"
                            + String(
                                format: " (prefill %.3g s, decode step %.3g → %.3g s)",
                                object["prefill"]?.double ?? .nan,
                                object["decode_first"]?.double ?? .nan, object["decode_last"]?.double ?? .nan))
                }
                // Heartbeats only keep the clock going (done above); they are not kept.
                if event == "heartbeat" { continue }
                if event == "done" { sawDone = true; doneAt = Date() }
                events.append(object)
                if event == "step", let step = object["step"]?.int, linesSinceProgress == 0,
                    Date().timeIntervalSince(lastLogged) > 10
                {
                    lastLogged = Date()
                    logProgress(step: step, steps: steps, object: object, started: started)
                }
            }
            if failure == nil && overflow {
                failure = "backend \(spec.name) printed a line longer than \(Self.maxLineBytes >> 20) MiB; killed"
            }
            if failure != nil { break }
            if let s = Interruption.requested { interrupted = s; break }
            if exitedAt == nil && (!p.isRunning || Interruption.childExit(pid) != nil) { exitedAt = Date() }
            // Done: the output ended, or the backend exited and what it left holding its stdout
            // had `leftoverGrace` to let go, or it said `done` and had `exitGrace` to exit.
            if resident && sawDone { break }
            if finished && (!p.isRunning || sawDone) { break }
            if let e = exitedAt, Date().timeIntervalSince(e) > Self.leftoverGrace { break }
            if let d = doneAt, Date().timeIntervalSince(d) > Self.exitGrace {
                log("backend \(spec.name): said done but did not exit within \(Int(Self.exitGrace)) s; killed")
                break
            }
            if silent > spec.heartbeatTimeout && exitedAt == nil {
                failure =
                    "backend \(spec.name) said nothing for \(Int(spec.heartbeatTimeout)) s (heartbeat timeout); killed"
                break
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        // A resident backend that finished its job stays for the next one; a job-level error
        // (no student named) fails every student of this job.
        if resident && sawDone && failure == nil && interrupted == nil {
            if let said = events.last(where: { $0["event"]?.string == "error" && $0["student"] == nil }) {
                return (
                    .failed("backend \(spec.name): " + (said["message"]?.string ?? "an error without a message")), true
                )
            }
            return (.lines(events), true)
        }
        if let interrupted {
            // Stopped by a signal: SIGTERM went to the group (``Interruption``); give it time to
            // stop, then kill what is left (the deferred kill reaches what outlived its leader).
            Interruption.stop([p], grace: Self.exitGrace)
            throw Interruption.Interrupted(signal: interrupted)
        }
        // Peeked before the kill below, which would otherwise be the status of one still running.
        let peeked = Interruption.childExit(pid)
        // Whatever it started goes too (the readers then reach the end of the pipes): Foundation
        // sees the exit only once the descriptors it gave the backend are closed in every process.
        Interruption.signalGroup(pid, SIGKILL)
        let deadline = Date().addingTimeInterval(2)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        _ = group.wait(timeout: .now() + 2)
        if let failure { return (.failed(failure), false) }
        // A descendant that left the group may still hold them: the status is then the one peeked.
        let exit: (status: Int32, signaled: Bool) =
            p.isRunning
            ? (peeked ?? (SIGKILL, true))
            : (p.terminationStatus, p.terminationReason == .uncaughtSignal)
        reader.lock.lock()
        let stderrText = String(decoding: reader.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        reader.lock.unlock()
        let said = events.last { $0["event"]?.string == "error" && $0["student"] == nil }?["message"]?.string
        let status = exit.signaled ? "was killed by signal \(exit.status)" : "exited with status \(exit.status)"
        // `done` said and exited: a non-zero status after it (or the kill of one that would not
        // exit) leaves the per-student errors to say the rest.
        if sawDone { return (.lines(events), false) }
        if exit.status != 0 || exit.signaled {
            return (.failed("backend \(spec.name) \(status): " + (said ?? String(stderrText.suffix(500)))), false)
        }
        return (
            .failed(
                "backend \(spec.name) exited with status 0 without its done line" + (said.map { ": \($0)" } ?? "")),
            false
        )
    }

    /// A progress line for a backend's step (tokens/s and ETA over all students).
    private func logProgress(
        step: Int, steps: (first: Int, last: Int, tokens: Int)?, object: [String: JSON], started: Date
    ) {
        var line = "backend \(spec.name): step \(step)"
        if let steps { line += "/\(steps.last)" }
        line +=
            " \(object["student"]?.string ?? "") loss \(object["train_loss"]?.double.map { String(format: "%.4f", $0) } ?? "?")"
        if let steps, step > steps.first {
            let elapsed = Date().timeIntervalSince(started), done = Double(step - steps.first)
            let eta = elapsed / done * Double(steps.last - step)
            line += String(
                format: ", %.0f tokens/s, ETA %dm%02ds", done * Double(steps.tokens) / elapsed, Int(eta) / 60,
                Int(eta) % 60)
        }
        log(line)
    }

    /// The students' results from a backend's events, each checked against the job: step lines
    /// inside (startStep, endStep], one evaluation row per window at endStep with 1…T scored tokens,
    /// a non-negative loss sum and KL, a checkpoint at endStep.
    func collect(
        events: Events, students: [String], languages: [String], withKL: [Bool], T: Int, windowLanguages: [Int32],
        startStep: Int = 0, endStep: Int, evaluateAt: [Int] = []
    ) -> [Int: Result<BackendTrialResult, SearchError>] {
        var result: [Int: Result<BackendTrialResult, SearchError>] = [:]
        guard case let .lines(lines) = events else {
            if case let .failed(message) = events {
                for i in students.indices { result[i] = .failure(.backend(message)) }
            }
            return result
        }
        // The job's own peak memory, from its done line (the same for every student).
        let peakMemory = lines.last { $0["event"]?.string == "done" }
            .flatMap { try? BackendEvent.decode(BackendEvent.Done.self, $0).get() }?.peakMemoryBytes
        for (i, name) in students.enumerated() {
            let mine = lines.filter { $0["student"]?.string == name }
            if let error = mine.first(where: { $0["event"]?.string == "error" }) {
                let message = (try? BackendEvent.decode(BackendEvent.Failure.self, error).get())?.message
                result[i] = .failure(.backend("backend \(spec.name): " + (message ?? "an error without a message")))
                continue
            }
            // Each line as its event's type; the first that is not names its field.
            var malformed: String?
            func typed<T: Decodable>(_ type: T.Type, _ event: String) -> [T] {
                var out: [T] = []
                for line in mine where line["event"]?.string == event {
                    switch BackendEvent.decode(type, line) {
                    case let .success(e): out.append(e)
                    case let .failure(problem):
                        if malformed == nil { malformed = "a malformed \(event) line (\(problem))" }
                    }
                }
                return out
            }
            let stepLines = typed(BackendEvent.Step.self, "step")
            let evals = typed(BackendEvent.Eval.self, "eval")
            let checkpoints = typed(BackendEvent.Checkpoint.self, "checkpoint")
            var trainLoss: [(Int, Double)] = [], all: [(Int, Double)] = []
            var lastLoss = Double.nan
            for e in stepLines where malformed == nil {
                let step = e.step, loss = e.trainLoss
                guard loss.isFinite else { malformed = "a non-finite loss (\(loss)) at step \(step)"; break }
                guard step > startStep && step <= endStep else {
                    malformed = "a step line for step \(step), outside the job's steps \(startStep + 1)…\(endStep)"
                    break
                }
                lastLoss = loss
                all.append((step, loss))
                if step % 10 == 0 { trainLoss.append((step, loss)) }
            }
            guard let eval = evals.last, eval.step == endStep, eval.windows.count == windowLanguages.count else {
                result[i] = .failure(
                    .backend(
                        "backend \(spec.name): "
                            + (malformed
                                ?? "no evaluation of \(name) at step \(endStep) with one row per validation window")))
                continue
            }
            if let malformed { result[i] = .failure(.backend("backend \(spec.name): \(malformed)")); continue }
            // A window scores 1…T tokens; a negative log-likelihood sum or KL is impossible.
            func evaluation(_ rows: [[Double]]) -> (EvaluationResult, Double)? {
                guard rows.count == windowLanguages.count else { return nil }
                var windows: [String: [WindowLoss]] = [:]
                var klSum = 0.0, klCount = 0
                for (w, row) in rows.enumerated() {
                    guard row.count == 3, let n = Int(exactly: row[1]) else { return nil }
                    let sum = row[0], kl = row[2]
                    guard sum.isFinite, kl.isFinite, (1...T).contains(n), sum >= 0, kl >= -1e-4 * Double(n) else {
                        return nil
                    }
                    let lang = languages[Int(windowLanguages[w])]
                    windows[lang, default: []].append(WindowLoss(sum: sum, tokens: n))
                    if withKL[Int(windowLanguages[w])] { klSum += kl; klCount += n }
                }
                return (EvaluationResult(windows: windows), klSum / Double(max(klCount, 1)))
            }
            let impossible =
                "backend \(spec.name): a malformed, non-finite or impossible evaluation row for \(name) (each "
                + "window scores 1…\(T) tokens with a non-negative loss sum)"
            guard let (validation, validationKL) = evaluation(eval.windows) else {
                result[i] = .failure(.backend(impossible))
                continue
            }
            // The curve points the job asked for before the end (each checked as the last one).
            var curve: [CurvePoint] = []
            var badCurve = false
            for step in evaluateAt where step < endStep {
                guard let e = evals.last(where: { $0.step == step }) else { continue }
                guard let (v, kl) = evaluation(e.windows) else { badCurve = true; break }
                curve.append(
                    CurvePoint(
                        step: step, trainLoss: all.last { $0.0 == step }?.1 ?? .nan, validation: v, validationKL: kl))
            }
            if badCurve { result[i] = .failure(.backend(impossible)); continue }
            guard checkpoints.contains(where: { $0.step == endStep }) else {
                result[i] = .failure(.backend("backend \(spec.name): no checkpoint of \(name) at step \(endStep)"))
                continue
            }
            result[i] = .success(
                BackendTrialResult(
                    trainLoss: trainLoss,
                    point: CurvePoint(
                        step: endStep, trainLoss: lastLoss, validation: validation,
                        validationKL: validationKL), curve: curve, steps: all,
                    peakMemoryBytes: peakMemory))
        }
        return result
    }
}
