import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 13: trials run by an external backend. The PyTorch backend (backends/torch) against the
/// built-in engine on the same batches — it needs a Python with torch and transformers
/// (TOPIARY_TEST_PYTHON, else .venv/bin/python; scripts/setup.sh --torch makes one); without it
/// those tests say SKIPPED (under TOPIARY_CI they fail). The bad-backend tests need nothing.
@Suite(.serialized) struct BackendTests {
    static func python(_ test: String) -> String? {
        let env = ProcessInfo.processInfo.environment
        let candidate = env["TOPIARY_TEST_PYTHON"] ?? FileManager.default.currentDirectoryPath + "/.venv/bin/python"
        if FileManager.default.isExecutableFile(atPath: candidate),
           let r = try? Services.run(candidate, ["-c", "import torch, transformers, safetensors"]), r.status == 0 {
            return candidate
        }
        if env["TOPIARY_CI"] != nil { Issue.record("no Python with torch and transformers at \(candidate) under TOPIARY_CI (scripts/setup.sh --torch)") }
        print("SKIPPED \(test): no Python with torch and transformers at \(candidate) (set TOPIARY_TEST_PYTHON, or run scripts/setup.sh --torch)")
        return nil
    }

    static func spec(_ f: Fixture, steps: Int = 20, backend: JSON? = nil, strategy: JSON? = nil) throws -> SearchSpec {
        // Below the teacher's size: a student equal to its teacher has a zero gradient, which
        // AdamW turns into steps of the rounding noise's sign — a degenerate case, not a candidate.
        var extra: [String: JSON] = ["budget": ["min": 15000, "max": JSON(f.config.parameterCount * 95 / 100)],
                                     "proxy": ["steps": JSON(steps), "batch_size": 4, "sequence_length": 16, "eval_tokens": 64, "learning_rate": 2e-3, "warmup": 3]]
        if let backend { extra["backend"] = backend }
        if let strategy { extra["strategy"] = strategy }
        return try f.parse(f.spec(extra))
    }

    static func relative(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-12) }

    /// 20 distillation steps of two pruned candidates on the same batches: every step's loss
    /// within 1e-3 relative, the validation loss and KL too; then steps 11–20 resumed by torch
    /// from the built-in engine's checkpoint at step 10 (weights and AdamW moments) give the same.
    @Test func torchDistillsTwentyStepsAsTheBuiltinEngine() throws {
        guard let python = Self.python("torchDistillsTwentyStepsAsTheBuiltinEngine") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let run = try SideBySide(f, spec: try Self.spec(f), python: python)
        let (builtin, outcome, distiller, result) = try run.twentySteps()
        let (runner, recipe, backend, students) = (run.runner, run.recipe, run.backend, run.students)
        var worst = 0.0
        for i in 0..<2 {
            let r = try result[i]!.get()
            #expect(r.steps.map(\.0) == Array(1...20))
            worst = max(worst, SideBySide.worstStepDifference(r, builtin[i]!, "student \(i)"))
            let b = outcome.curves[i].last!
            #expect(Self.relative(r.point.validation.overall, b.validation.overall) <= 1e-3, "validation \(r.point.validation.overall) vs \(b.validation.overall)")
            #expect(Self.relative(r.point.validationKL, b.validationKL) <= 1e-2, "val_kl \(r.point.validationKL) vs \(b.validationKL)")
            for (lang, v) in b.validation.perLanguage { #expect(Self.relative(r.point.validation.perLanguage[lang] ?? .nan, v) <= 1e-3) }
        }
        print(String(format: "torch vs built-in, 20 steps of 2 students: worst relative step-loss difference %.2e", worst))

        // Resume across engines: the built-in engine's checkpoint at step 10, continued by torch.
        let (_, first) = try DistillationRun.run(teacher: runner.teacher, students: try students(), corpus: runner.corpus, recipe: recipe,
                                                 endStep: 10, progressLabel: "builtin")
        var resume: [URL] = []
        for i in 0..<2 {
            let dir = f.root.appendingPathComponent("swift-\(i)")
            try TrainingCheckpoint.save(model: first.students[i].trainer.model, optimizer: first.students[i].trainer.optimizer, run: [:], in: dir)
            resume.append(try TrainingCheckpoint.latest(in: dir)!)
        }
        let continued = try backend.distill(teacherPath: f.teacher.path,
                                            students: try students().enumerated().map { ($1.0, $1.1, resume[$0], f.root.appendingPathComponent("resumed-\($0)")) },
                                            corpus: runner.corpus, recipe: recipe, startStep: 10, endStep: 20,
                                            jobDirectory: f.root.appendingPathComponent("job2"), run: [:])
        for i in 0..<2 {
            let r = try continued[i]!.get()
            #expect(r.steps.map(\.0) == Array(11...20))
            _ = SideBySide.worstStepDifference(r, builtin[i]!, "resumed student \(i)")
            // And the built-in engine reads torch's checkpoint back.
            let ck = try TrainingCheckpoint.latest(in: f.root.appendingPathComponent("resumed-\(i)"))!
            let model = try Checkpoint.load(ck)
            #expect(model.config == distiller.students[i].trainer.model.config)
        }
    }

    /// Qwen3-MoE, Mixtral and Qwen3.5-MoE students (router, top-k experts, Qwen3.5-MoE's shared expert
    /// and DeltaNet, the load-balancing loss in the gradient): 20 steps within 1e-3 relative of the
    /// built-in engine's, as for dense students.
    @Test(arguments: [Family.qwen3Moe, .mixtral, .qwen35Moe])
    func torchDistillsMixtureStudentsAsTheBuiltinEngine(family: Family) throws {
        guard let python = Self.python("torchDistillsMixtureStudentsAsTheBuiltinEngine") else { return }
        let f = try Fixture(family: family)
        defer { f.cleanup() }
        let space: JSON =
            family == .qwen3Moe
            ? ["num_experts": [2, 3], "num_experts_per_tok": [1, 2], "moe_intermediate_size": [8, 16]]
            : family == .qwen35Moe
                ? ["num_experts": [2, 3], "moe_intermediate_size": [8, 16], "shared_expert_intermediate_size": [16, 32]]
                : ["num_local_experts": [2, 3], "num_experts_per_tok": [1, 2], "intermediate_size": [8, 16]]
        // Qwen3.5-MoE's two trajectories agree to 1e-6 at step 1 and then part by about ×3 a step
        // (1e-4 by step 8, 1e-2 by step 20, both students): growth from float32 rounding that
        // training amplifies, where an error in the gradient would show from step 2 (the fixtures
        // hold the gradients to transformers' within 9e-5). Steps 1–8 are gated.
        try Self.twoStudentsSideBySide(
            f, space: space, python: python, label: family.rawValue, gated: family == .qwen35Moe ? 8 : 20)
    }

    /// Issue 26, item 5: two pruned Nemotron-H students (Mamba2 heads and head width cut)
    /// distilled 20 steps by torch (transformers' NemotronHForCausalLM) and by the built-in
    /// engine on the same batches: every step's loss within 1e-3 relative.
    @Test func torchDistillsNemotronHStudentsAsTheBuiltinEngine() throws {
        guard let python = Self.python("torchDistillsNemotronHStudentsAsTheBuiltinEngine") else { return }
        let f = try Fixture(family: .nemotronH)
        defer { f.cleanup() }
        try Self.twoStudentsSideBySide(
            f, space: ["mamba_num_heads": [2, 4], "mamba_head_dim": [4], "intermediate_size": [16, 32]], python: python,
            label: "nemotron_h")
    }

    /// Nemotron-H students with mixture layers (experts, their width and the shared expert's cut;
    /// the sigmoid router, squared-ReLU experts): 20 steps by torch and by the built-in engine.
    @Test func torchDistillsNemotronHMixtureStudentsAsTheBuiltinEngine() throws {
        guard let python = Self.python("torchDistillsNemotronHMixtureStudentsAsTheBuiltinEngine") else { return }
        let f = try Fixture(family: .nemotronH, hybridMixture: true)
        defer { f.cleanup() }
        try Self.twoStudentsSideBySide(
            f, space: ["n_routed_experts": [2, 4], "moe_intermediate_size": [8, 16], "moe_shared_expert_intermediate_size": [8]],
            python: python, label: "nemotron_h (mixture)")
    }

    /// Qwen3.5 students (Gated DeltaNet, gated attention; value heads and MLP width pruned): the
    /// torch backend runs transformers' own Qwen3_5ForCausalLM (its chunked form) and the
    /// built-in engine the recurrence.
    @Test func torchDistillsQwen35StudentsAsTheBuiltinEngine() throws {
        guard let python = Self.python("torchDistillsQwen35StudentsAsTheBuiltinEngine") else { return }
        let f = try Fixture(family: .qwen35)
        defer { f.cleanup() }
        try Self.twoStudentsSideBySide(
            f, space: ["linear_num_value_heads": [2, 4], "intermediate_size": [16, 32]], python: python, label: "qwen3_5_text")
    }

    /// Issue 27: Puzzle's heterogeneous students — nemotron-nas checkpoints that transformers
    /// loads through the modeling file Topiary writes beside them (trust_remote_code) — with a
    /// layer without attention, merged key/value groups, narrower MLPs and a layer without an MLP:
    /// 20 steps by torch and by the built-in engine on the same batches, every step's loss within
    /// 1e-3 relative; then the same through SDPA attention and gradient checkpointing.
    @Test func torchDistillsHeterogeneousStudentsAsTheBuiltinEngine() throws {
        guard let python = Self.python("torchDistillsHeterogeneousStudentsAsTheBuiltinEngine") else { return }
        let (f, teacher) = try PuzzleTests.fixture()
        defer { f.cleanup() }
        var worst = 0.0
        for sdpa in [false, true] {
            var run = try Self.heterogeneousSideBySide(f, teacher: teacher, python: python)
            var torch = run.backend.spec
            torch.execution.attention = sdpa ? "sdpa" : "eager"
            torch.execution.activationCheckpointing = sdpa
            run.backend = ExternalBackend(spec: torch, log: { print($0) })
            let (builtin, _, _, result) = try run.twentySteps()
            for i in 0..<2 {
                let r = try result[i]!.get()
                #expect(r.steps.count == 20)
                worst = max(worst, SideBySide.worstStepDifference(r, builtin[i]!, "heterogeneous student \(i) (sdpa \(sdpa))"))
            }
        }
        print(String(format: "torch vs built-in, 20 steps of 2 heterogeneous (nemotron-nas) students, eager and SDPA with "
                     + "checkpointing: worst relative step-loss difference %.2e", worst))
    }

    /// Two heterogeneous students of ``PuzzleTests/fixture()``'s teacher (a layer without
    /// attention, merged groups, narrower MLPs, a layer without an MLP), side by side.
    static func heterogeneousSideBySide(_ f: Fixture, teacher: URL, python: String) throws -> SideBySide {
        let choices: [[LayerVariant]] = [
            [LayerVariant(keyValueGroups: nil, mlpWidth: 512), LayerVariant(keyValueGroups: 1, mlpWidth: 256),
             LayerVariant(keyValueGroups: 2, mlpWidth: nil)],
            [LayerVariant(keyValueGroups: 1, mlpWidth: 256), LayerVariant(keyValueGroups: 2, mlpWidth: 512),
             LayerVariant(keyValueGroups: nil, mlpWidth: 256)],
        ]
        var json = f.spec(["strategy": ["name": "puzzle", "intermediate_size": [512, 256], "num_key_value_heads": [2, 1]],
                           "space": [:], "budget": ["max": 1_000_000],
                           "proxy": ["steps": 20, "batch_size": 4, "sequence_length": 16, "eval_tokens": 64,
                                     "learning_rate": 2e-3, "warmup": 3]])
        json = .object(json.object!.merging(["teacher": .string(teacher.path)]) { $1 })
        return try SideBySide(f, spec: try f.parse(json), python: python) { runner, scores in
            try choices.enumerated().map { i, variants in
                ("hetero-\(i)", try HeterogeneousPruning.prune(teacher: runner.teacher, variants: variants, scores: scores))
            }
        }
    }

    /// The first and last candidates of `space` (below 95% of the teacher), pruned and distilled
    /// 20 steps by torch and by the built-in engine on the same batches: 20 steps each, every
    /// step's loss within 1e-3 relative (``SideBySide/worstStepDifference(_:_:_:)``).
    /// `gated`: the last step held to 1e-3 (all 20 by default).
    static func twoStudentsSideBySide(_ f: Fixture, space: JSON, python: String, label: String, gated: Int = 20) throws {
        let proxy: JSON = ["steps": 20, "batch_size": 4, "sequence_length": 16, "eval_tokens": 64, "learning_rate": 2e-3,
                           "warmup": 3]
        let spec = try f.parse(f.spec(["space": space, "budget": ["min": 1, "max": JSON(f.config.parameterCount * 95 / 100)],
                                       "proxy": proxy]))
        let (builtin, _, _, result) = try SideBySide(f, spec: spec, python: python).twentySteps()
        var worst = 0.0
        for i in 0..<2 {
            let r = try result[i]!.get()
            #expect(r.steps.count == 20)
            worst = max(worst, SideBySide.worstStepDifference(r, builtin[i]!, "\(label) student \(i)", gated: gated))
        }
        print(String(format: "torch vs built-in, %d steps of 2 %@ students: worst relative step-loss difference %.2e", min(gated, 20),
                     label, worst))
    }

    /// Importance by the torch backend against the built-in engine on the same calibration set:
    /// every head, neuron and channel score and the block importance within 1e-4 relative, the
    /// layer-skip loss rises within 1e-4 of the base loss, for two aggregation settings; for the
    /// hybrid teachers (Nemotron-H, Qwen3.5) the Mamba2 channel and DeltaNet value-head scores too.
    @Test(arguments: [Family.llama, .nemotronH, .qwen35])
    func torchImportanceEqualsTheBuiltinEngine(family: Family) throws {
        guard let python = Self.python("torchImportanceEqualsTheBuiltinEngine") else { return }
        let f = try Fixture(family: family)
        defer { f.cleanup() }
        let teacher = try Checkpoint.load(f.teacher)
        let corpus = try TokenShards(directory: f.corpus)
        var torch = BackendSpec()
        torch.kind = .torch(python: python, script: nil)
        var worst = 0.0
        for (batch, sequence) in [(Aggregation.l2, Aggregation.mean), (.mean, .l2)] {
            var settings = ImportanceSettings()
            settings.samples = 12
            settings.sequence = 16
            settings.lossTokensPerLanguage = 64
            settings.batchAggregation = batch
            settings.sequenceAggregation = sequence
            let (_, calibration) = try Importance.key(teacher: teacher, corpus: corpus, settings: settings)
            let builtin = try Importance.compute(teacher: teacher, corpus: corpus, calibration: calibration, settings: settings, batch: 4)
            let other = try ExternalBackend(spec: torch, log: { print($0) }).importance(
                teacherPath: f.teacher.path, teacher: teacher, corpus: corpus, calibration: calibration, settings: settings, batch: 4,
                jobDirectory: f.root.appendingPathComponent("importance-job"))
            func check(_ what: String, _ a: [Double], _ b: [Double]) {
                #expect(a.count == b.count, "\(what): \(a.count) vs \(b.count) scores")
                for (i, (x, y)) in zip(a, b).enumerated() {
                    let d = Self.relative(x, y)
                    worst = max(worst, d)
                    #expect(d <= 1e-4, "\(what)[\(i)] (\(batch)/\(sequence)): torch \(x) vs built-in \(y)")
                }
            }
            check("heads", other.heads.flatMap { $0 }, builtin.heads.flatMap { $0 })
            check("neurons", other.neurons.flatMap { $0 }, builtin.neurons.flatMap { $0 })
            check("channels", other.channels, builtin.channels)
            check("block importance", other.blockImportance, builtin.blockImportance)
            #expect((other.mambaChannels == nil) == (builtin.mambaChannels == nil || family != .nemotronH))
            #expect((other.deltaNetHeads == nil) == (builtin.deltaNetHeads == nil || family != .qwen35))
            if family == .nemotronH {
                check("mamba channels", other.mambaChannels?.flatMap { $0 } ?? [], builtin.mambaChannels!.flatMap { $0 })
                #expect(other.mambaChannels?.map(\.count) == builtin.mambaChannels?.map(\.count))
            }
            if family == .qwen35 {
                check("deltanet heads", other.deltaNetHeads?.flatMap { $0 } ?? [], builtin.deltaNetHeads!.flatMap { $0 })
                check("deltanet channels", other.deltaNetChannels?.flatMap { $0 } ?? [], builtin.deltaNetChannels!.flatMap { $0 })
                #expect(other.deltaNetHeads?.map(\.count) == builtin.deltaNetHeads?.map(\.count))
            }
            #expect(Self.relative(other.baseValidationLoss, builtin.baseValidationLoss) <= 1e-4)
            for (x, y) in zip(other.layerLossRise, builtin.layerLossRise) {
                #expect(abs(x - y) <= 1e-4 * builtin.baseValidationLoss, "loss rise \(x) vs \(y)")
            }
            #expect(other.calibrationFingerprint == builtin.calibrationFingerprint && other.teacherFingerprint == builtin.teacherFingerprint)
        }
        print(String(format: "torch vs built-in importance (%@): worst relative difference %.2e", family.rawValue, worst))
    }

    /// The quick start's strategy on the fixture with `"backend": {"name": "torch", "device": "cpu"}`
    /// — importance and every trial computed by torch (separate stores and caches) — the same
    /// winner and ranking as the built-in engine, every score within 1e-3 relative.
    @Test func successiveHalvingWithTheTorchBackendPicksTheSameWinner() throws {
        guard let python = Self.python("successiveHalvingWithTheTorchBackendPicksTheSameWinner") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let strategy: JSON = ["name": "successive_halving", "min_steps": 4, "eta": 3]
        func run(_ backend: JSON?, _ name: String) throws -> ([StudyStore.Ranked], [String: [LearningCurve.Point]]) {
            let store = try StudyStore(path: f.root.appendingPathComponent("\(name).sqlite").path)
            let runner = try SearchRunner(spec: try Self.spec(f, steps: 36, backend: backend, strategy: strategy), store: store,
                                          results: f.root.appendingPathComponent("artifacts-\(name)"), importanceCache: f.root.appendingPathComponent("importance-\(name)"))
            runner.log = { _ in }
            let id = try runner.run(worker: name, extend: false)
            let trials = try store.trials(study: id)
            #expect(trials.allSatisfy { $0.state == "complete" || $0.state == "pruned" }, "\(name): every trial finished")
            return (try store.top(study: id), try store.curves(study: try store.study(named: "tiny")!, trials: trials))
        }
        let (builtin, builtinCurves) = try run(nil, "builtin")
        let (torch, torchCurves) = try run(["name": "torch", "python": .string(python), "device": "cpu"], "torch")
        #expect(torch.first?.trial.hash == builtin.first?.trial.hash, "winner \(torch.first?.trial.hash ?? "-") vs \(builtin.first?.trial.hash ?? "-")")
        #expect(torch.map(\.trial.hash) == builtin.map(\.trial.hash), "the same ranking")
        for (a, b) in zip(torch, builtin) { #expect(Self.relative(a.value, b.value) <= 1e-3, "\(a.trial.hash): \(a.value) vs \(b.value)") }
        // The curve points inside each trial's steps (proxy.curve_points, the job's evaluate_at) too.
        #expect(torchCurves.mapValues { $0.map(\.step) } == builtinCurves.mapValues { $0.map(\.step) })
        #expect(builtinCurves.values.contains { $0.count >= 5 }, "\(builtinCurves)")
        for (h, points) in builtinCurves {
            for (a, b) in zip(torchCurves[h] ?? [], points) { #expect(Self.relative(a.loss, b.loss) <= 1e-3, "\(h) at \(b.step): \(a.loss) vs \(b.loss)") }
        }
    }

    /// A spec's backend is checked like the rest of the spec: each mistake names its key.
    static let badBackendSpecs: [(JSON, String)] = [
        (["name": "tensorflow"], "backend.name"), (["name": "torch", "device": "tpu"], "backend.device"),
        (["name": "torch", "dtype": "bfloat16"], "backend.dtype"), (["command": []], "backend.command"),
        (["name": "torch", "pyhton": "x"], "backend.pyhton"), (["name": "builtin", "device": "cuda"], "backend"),
        ("torch", "backend"), (["name": "torch", "heartbeat_timeout": 0], "backend.heartbeat_timeout"),
    ]

    @Test(arguments: badBackendSpecs)
    func badBackendSpecsNameTheirKey(backend: JSON, path: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        #expect { _ = try f.parse(f.spec(["backend": backend])) } throws: { error in
            guard case let SearchError.spec(_, p, _) = error else { return false }
            return p == path
        }
    }

    /// A backend (Python's standard library only) that speaks the protocol but lies about its
    /// checkpoints: MODE none reports one and writes no `latest`; etc names `/etc`; escape names
    /// `../../..`; missing names a step folder that is not there.
    static let lyingBackend = #"""
        import json, os, shutil, struct, subprocess, sys
        mode = sys.argv[1]; job = json.load(open(sys.argv[-1]))
        def emit(**f): print(json.dumps(f), flush=True)
        with open(job["validation"]["file"], "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]; header = json.loads(fh.read(n))
        windows = header["language"]["shape"][0]
        emit(event="start", protocol=1, backend="liar")
        last = job["batches"]["to"]
        for s in job["students"]:
            for step in range(job["batches"]["from"] + 1, last + 1):
                emit(event="step", student=s["name"], step=step, train_loss=1.0)
            row = {"zero": [0.0, 0, 0.0], "negative": [-12.5, 4, 0.1]}.get(mode, [1.0, 4, 0.1])
            if mode == "late":
                emit(event="step", student=s["name"], step=1020, train_loss=0.5)
            emit(event="eval", student=s["name"], step=last, windows=[row] * windows, val_loss=0.25, val_kl=0.1)
            os.makedirs(s["out"], exist_ok=True)
            name = {"none": None, "etc": "/etc", "escape": "../../../../../../etc", "missing": "step-99999999"}.get(mode, "step")
            if mode in ("honest", "orphan"):
                # A checkpoint in Topiary's layout (the pruned init's weights stand for the moments).
                name = "step-%08d" % last
                folder = os.path.join(s["out"], name)
                os.makedirs(folder, exist_ok=True)
                for f in ("config.json", "model.safetensors"):
                    shutil.copy(os.path.join(s["init"], f), folder)
                shutil.copy(os.path.join(s["init"], "model.safetensors"), os.path.join(folder, "optimizer.safetensors"))
                json.dump({"step": last, "run": {}}, open(os.path.join(folder, "state.json"), "w"))
            if name is not None:
                open(os.path.join(s["out"], "latest"), "w").write(name)
            emit(event="checkpoint", student=s["name"], step=last, path=os.path.join(s["out"], name or "step"))
        if mode == "orphan":
            # Exits 0 leaving a child that holds stdout open (and every other descriptor, as a
            # shell's `sleep 600 &` would); its pid is recorded in argv[2].
            child = subprocess.Popen(["sleep", "600"], close_fds=False)
            open(os.path.join(sys.argv[2], str(child.pid)), "w").write(str(child.pid))
        emit(event="done", failed=[])
        """#

    /// Issue 22, item 7: implausible events are refused against the job — evaluation rows of zero
    /// tokens (they scored 0.0000 and ranked first), a negative loss sum (−3.1250), a train_loss at
    /// step 1020 of a 6-step trial: each fails its trial with a message.
    @Test(arguments: [("zero", "impossible evaluation row"), ("negative", "impossible evaluation row"), ("late", "outside the job's steps")])
    func implausibleEventsFailTheirTrials(mode: String, message: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let (_, trials) = try Self.studyWithLyingBackend(f, mode: mode)
        #expect(!trials.isEmpty && trials.allSatisfy { $0.state == "failed" && $0.score == nil && ($0.error ?? "").contains(message) },
                "\(trials.map { $0.error ?? "-" })")
    }

    /// Runs the fixture's study on ``lyingBackend`` in `mode` (the built-in engine's importance
    /// scores cached first); returns the store and the study's trials.
    static func studyWithLyingBackend(_ f: Fixture, mode: String, arguments: [String] = []) throws -> (StudyStore, [StudyStore.TrialRow]) {
        let script = f.root.appendingPathComponent("liar.py")
        try lyingBackend.write(to: script, atomically: true, encoding: .utf8)
        let backend: JSON = ["command": .array((["/usr/bin/env", "python3", script.path, mode] + arguments).map { .string($0) }), "heartbeat_timeout": 10]
        let spec = try Self.spec(f, steps: 6, backend: backend)
        let cache = f.root.appendingPathComponent("importance")
        _ = try Importance.cached(teacher: try Checkpoint.load(f.teacher), corpus: try TokenShards(directory: f.corpus),
                                  settings: spec.importance, cache: cache)
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("artifacts"), importanceCache: cache)
        runner.log = { _ in }
        let id = try runner.run(worker: "w", extend: false)
        return (store, try store.trials(study: id))
    }

    /// Issue 22, item 6: a backend that says `done` and exits 0 leaving a child that holds its
    /// stdout: the work counts (it used to wait for the pipe and call it a heartbeat timeout), and
    /// the child is killed with the backend's process group.
    @Test func finishedWorkCountsAndLeftoverChildrenAreKilled() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let pids = f.root.appendingPathComponent("orphans")
        try FileManager.default.createDirectory(at: pids, withIntermediateDirectories: true)
        let start = Date()
        let (_, trials) = try Self.studyWithLyingBackend(f, mode: "orphan", arguments: [pids.path])
        #expect(!trials.isEmpty && trials.allSatisfy { $0.state == "complete" || $0.state == "pruned" }, "\(trials.map { $0.error ?? $0.state.rawValue })")
        #expect(trials.contains { $0.score == 0.25 }, "scored from the evaluation rows")
        let orphans = try FileManager.default.contentsOfDirectory(atPath: pids.path).compactMap { pid_t($0) }
        #expect(!orphans.isEmpty)
        for pid in orphans { #expect(!SignalTests.running(pid), "the child \(pid) the backend left is killed") }
        print("orphan backend: \(trials.count) trials in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }

    /// Issue 25, item 1: a worker on an external backend cuts its students' inits from the
    /// teacher's files: a bf16 teacher's inits are bf16, each value the teacher's (equal to pruning
    /// the float32-loaded teacher in memory), and the worker never loads the teacher in float32.
    @Test func externalBackendInitsStreamInTheTeachersDtype() throws {
        let f = try Fixture(storage: .bfloat16)
        defer { f.cleanup() }
        let script = f.root.appendingPathComponent("liar.py")
        try Self.lyingBackend.write(to: script, atomically: true, encoding: .utf8)
        let command = ["/usr/bin/env", "python3", script.path, "honest"]
        let backend: JSON = ["command": .array(command.map { .string($0) }), "heartbeat_timeout": 10]
        let spec = try Self.spec(f, steps: 6, backend: backend)
        let cache = f.root.appendingPathComponent("importance")
        let loaded = try Checkpoint.load(f.teacher)
        let scores = try Importance.cached(teacher: loaded, corpus: try TokenShards(directory: f.corpus),
                                           settings: spec.importance, cache: cache).0
        let store = try StudyStore(path: f.db)
        let results = f.root.appendingPathComponent("artifacts")
        let runner = try SearchRunner(spec: spec, store: store, results: results, importanceCache: cache)
        runner.log = { _ in }
        let id = try runner.run(worker: "w", extend: false)
        #expect(runner.loadedTeacher == nil, "the worker loaded the teacher in float32")
        let byHash = Dictionary(uniqueKeysWithValues: runner.enumeration.candidates.map { ($0.hash, $0) })
        let trials = try store.trials(study: id).filter { $0.rung == 0 }
        #expect(!trials.isEmpty && trials.allSatisfy { $0.state == "complete" || $0.state == "pruned" },
                "\(trials.map { $0.error ?? $0.state.rawValue })")
        for t in trials {
            // The honest liar's checkpoint holds its init's weights, copied.
            let ck = Artifacts.resolve(try #require(t.checkpoint), root: results)
            let file = try SafeTensorsFile(url: ck.appendingPathComponent("model.safetensors"))
            let expected = try Pruning.prune(teacher: loaded, to: byHash[t.hash]!.config, scores: scores, options: spec.prune)
            for e in expected.layout.entries {
                #expect(try file.info(e.name).dtype == .BF16, "\(t.hash) \(e.name)")
                let want = Array(UnsafeBufferPointer(start: expected.parameters.pointer + e.offset, count: e.count))
                #expect(try file.floats(e.name) == want, "\(t.hash) \(e.name)")
            }
        }
    }

    /// Issue 22, item 4: everything a backend says is untrusted. A checkpoint it reports but does
    /// not write, or one named outside the trial's folder, fails that trial with a message; the
    /// coordinator neither crashes (it used to trap on a nil, leaving trials running) nor exits.
    @Test(arguments: ["none", "etc", "escape", "missing"])
    func lyingCheckpointsFailTheirTrialsNotTheProcess(mode: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let (store, trials) = try Self.studyWithLyingBackend(f, mode: mode)
        #expect(!trials.isEmpty && trials.allSatisfy { $0.state == "failed" && ($0.error ?? "").contains("checkpoint") },
                "\(trials.map { $0.error ?? "-" })")
        #expect(try store.study(named: "tiny")?.state == "complete", "the study ran to its end")
    }

    /// A backend that is missing, exits non-zero, prints malformed lines or a NaN, or hangs: each
    /// ends its trials as failed with its message kept, and the study carries on to its end; asked
    /// for the importance scores instead, the same failure stops the study with that message.
    @Test(arguments: [
        (["/nonexistent/bin/python"], "is missing or not executable"),
        (["/bin/sh", "-c", "echo 'CUDA out of memory' >&2; exit 7", "sh"], "exited with status 7: CUDA out of memory"),
        (["/bin/sh", "-c", "echo 'loading model…'", "sh"], "malformed line"),
        (["/bin/sh", "-c", "echo '{\"event\": \"step\", \"step\": 1, \"loss\": NaN}'", "sh"], "non-finite number"),
        (["/bin/sh", "-c", "echo '{\"event\": \"start\"}'; sleep 30", "sh"], "said nothing for 1 s (heartbeat timeout)"),
        // Issue 22, item 6: bounds. Lines forever (they grew Topiary to 1.6 GB in 40 s), a 40 MB line
        // (read in quadratic time, then reported as silence), an exit without the `done` line.
        (["/bin/sh", "-c", "yes '{\"event\": \"heartbeat\"}'", "sh"], "lines without a step of progress"),
        (["/bin/sh", "-c", "head -c 40000000 /dev/zero | tr '\\0' x", "sh"], "printed a line longer than 16 MiB"),
        (["/bin/sh", "-c", "echo '{\"event\": \"start\"}'", "sh"], "exited with status 0 without its done line"),
    ])
    func badBackendsFailTheirTrialsAndTheStudyCarriesOn(command: [String], message: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let backend: JSON = ["command": .array(command.map { .string($0) }), "heartbeat_timeout": 1]
        let spec = try Self.spec(f, steps: 6, backend: backend)
        // Without importance scores the backend is asked for them first: its failure stops the
        // study before anything is written, with its message.
        let bareStore = try StudyStore(path: f.root.appendingPathComponent("bare.sqlite").path)
        let bare = try SearchRunner(spec: spec, store: bareStore, results: f.root.appendingPathComponent("artifacts"),
                                    importanceCache: f.root.appendingPathComponent("bare-importance"))
        bare.log = { _ in }
        #expect { _ = try bare.run(worker: "w", extend: false) } throws: { "\($0)".contains(message) }
        // Nothing lost: the claimed trials went back to waiting with the message, for a rerun.
        let waiting = try bareStore.trials(study: try bareStore.study(named: "tiny")!.id)
        #expect(!waiting.isEmpty && waiting.allSatisfy { $0.state == "waiting" || ($0.error ?? "").contains(message) }, "\(waiting.map(\.state))")
        // With the scores at hand (the built-in engine's, cached), the trials meet the backend.
        let cache = f.root.appendingPathComponent("importance")
        _ = try Importance.cached(teacher: try Checkpoint.load(f.teacher), corpus: try TokenShards(directory: f.corpus), settings: spec.importance, cache: cache)
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("artifacts"), importanceCache: cache)
        runner.log = { _ in }
        let start = Date()
        let id = try runner.run(worker: "w", extend: false)
        #expect(Date().timeIntervalSince(start) < 60)
        let trials = try store.trials(study: id)
        #expect(!trials.isEmpty && trials.allSatisfy { $0.state == "failed" && ($0.error ?? "").contains(message) }, "\(trials.map { $0.error ?? "-" })")
        #expect(try store.study(named: "tiny")?.state == "complete", "the study ran to its end")
        let jobs = f.root.appendingPathComponent("artifacts/tiny/jobs").path
        let left = (try? FileManager.default.contentsOfDirectory(atPath: jobs)) ?? []
        #expect(left.isEmpty, "job files removed: \(left)")
    }
}

/// Issue 13, item 4: `topiary distill --recipe EXPORT/1-<hash>/distill.json` runs to completion
/// with periodic checkpoints; killed with SIGKILL after its first checkpoint and run again, it
/// ends with the curve and evaluation of an uninterrupted run — on the built-in engine and on the
/// torch backend.
@Suite(.serialized) struct DistillRecipeTests {
    static func exported(_ f: Fixture) throws -> String {
        let spec = try f.parse(f.spec(["budget": ["min": 15000, "max": JSON(f.config.parameterCount * 95 / 100)],
                                       "proxy": ["steps": 6, "batch_size": 8, "sequence_length": 32, "eval_tokens": 64, "learning_rate": 2e-3]]))
        let store = try StudyStore(path: f.db)
        let artifacts = f.root.appendingPathComponent("artifacts"), cache = f.root.appendingPathComponent("importance")
        let runner = try SearchRunner(spec: spec, store: store, results: artifacts, importanceCache: cache)
        runner.log = { _ in }
        _ = try runner.run(worker: "w", extend: false)
        let dirs = try Exporter.export(store: store, study: "tiny", top: 1, out: f.root.appendingPathComponent("export"), importanceCache: cache,
                                       artifacts: artifacts, log: { _ in })
        return dirs[0].appendingPathComponent("distill.json").path
    }

    static func curve(_ dir: URL) throws -> [JSON] {
        try String(contentsOf: dir.appendingPathComponent("curve.jsonl"), encoding: .utf8).split(separator: "\n").map { JSON.parse(Data($0.utf8))! }
    }

    /// `steps` in segments of 20: each torch segment is a Python process (start-up and model
    /// loads, seconds), so the torch run is kept to 3 segments.
    func killedAndResumedEqualsUninterrupted(_ extra: [String], steps: Int, tolerance: Double) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let recipe = try Self.exported(f)
        let common = ["distill", "--recipe", recipe, "--tokens", String(8 * 32 * steps), "--checkpoint-every", "20", "--eval-tokens", "64", "--threads", "1"] + extra
        let a = f.root.appendingPathComponent("uninterrupted"), b = f.root.appendingPathComponent("killed")
        let whole = try topiary(common + ["--out", a.path])
        #expect(whole.status == 0, "\(whole.err)")
        #expect(whole.out.contains("done: student"), "\(whole.out)")
        // Start, wait for the first checkpoint, kill -9, run again.
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary")
        let p = Process()
        p.executableURL = binary
        p.arguments = common + ["--out", b.path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let latest = b.appendingPathComponent("checkpoints/latest")
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: latest.path) && p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.002) }
        kill(p.processIdentifier, SIGKILL)
        while p.isRunning { Thread.sleep(forTimeInterval: 0.01) }
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("eval.json").path), "killed before it finished")
        let killedAt = (try? Self.curve(b).count) ?? 0
        let resumed = try topiary(common + ["--out", b.path])
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.out.contains("resuming"), "\(resumed.out)")
        let ca = try Self.curve(a), cb = try Self.curve(b)
        #expect(ca.count == steps / 20 && cb.count == ca.count, "\(ca.count) and \(cb.count) curve points (killed after \(killedAt))")
        for (x, y) in zip(ca, cb) {
            #expect(x["step"] == y["step"])
            for path in [["train_loss"], ["validation", "overall"], ["validation_kl"]] {
                let u = path.reduce(Optional(x)) { $0?[$1] }?.double ?? .nan, v = path.reduce(Optional(y)) { $0?[$1] }?.double ?? .nan
                #expect(abs(u - v) <= tolerance * max(1, abs(u)), "step \(x["step"]?.int ?? -1) \(path): \(u) uninterrupted vs \(v) resumed")
            }
            #expect(x["validation"]?["per_language"]?.object?.keys.sorted() == ["en", "ga"], "a curve point per language")
        }
        let ea = JSON.parse(try Data(contentsOf: a.appendingPathComponent("eval.json")))!, eb = JSON.parse(try Data(contentsOf: b.appendingPathComponent("eval.json")))!
        let sa = ea["student"]?["overall"]?.double ?? .nan, sb = eb["student"]?["overall"]?.double ?? .nan
        #expect(abs(sa - sb) <= tolerance * abs(sa), "final \(sa) vs \(sb)")
        #expect(ea["teacher"]?["overall"]?.double != nil && ea["per_language"]?["ga"]?["gap"]?.double != nil)
        #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("final/model.safetensors").path))
    }

    @Test func builtinResumesExactlyAfterKillNine() throws {
        try killedAndResumedEqualsUninterrupted([], steps: 240, tolerance: 0)
    }

    @Test func torchResumesExactlyAfterKillNine() throws {
        guard let python = BackendTests.python("torchResumesExactlyAfterKillNine") else { return }
        try killedAndResumedEqualsUninterrupted(["--backend", "torch", "--python", python], steps: 60, tolerance: 1e-9)
    }
}

/// Two pruned candidates of a fixture's study, distilled on the same batches by the built-in
/// engine and by the torch backend.
struct SideBySide {
    let runner: SearchRunner
    let recipe: DistillationRecipe
    var backend: ExternalBackend
    let students: () throws -> [(String, DecoderModel)]
    let f: Fixture

    /// `make`: the students from the runner and its importance scores (default: the first and last
    /// candidates of the space, pruned).
    init(_ f: Fixture, spec: SearchSpec, python: String,
         make: ((SearchRunner, ImportanceScores) throws -> [(String, DecoderModel)])? = nil) throws {
        self.f = f
        let runner = try SearchRunner(spec: spec, store: try StudyStore(path: f.db), results: f.root.appendingPathComponent("artifacts"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
        runner.log = { _ in }
        let scores = try runner.importance()
        if let make {
            students = { try make(runner, scores) }
        } else {
            let chosen = [runner.enumeration.candidates.first!, runner.enumeration.candidates.last!]
            students = {
                try chosen.map { ($0.hash, try Pruning.prune(teacher: runner.teacher, to: $0.config, scores: scores, options: spec.prune)) }
            }
        }
        var recipe = spec.proxy
        recipe.evalEvery = Int.max / 2
        var torch = BackendSpec()
        torch.kind = .torch(python: python, script: nil)
        (self.runner, self.recipe, backend) = (runner, recipe, ExternalBackend(spec: torch, log: { print($0) }))
    }

    /// Steps 1–20 on both engines: the built-in engine's loss per student and step, its outcome and
    /// distiller, and torch's results.
    func twentySteps() throws -> ([Int: [Int: Double]], DistillationRun.Outcome, Distiller, [Int: Result<BackendTrialResult, SearchError>]) {
        var builtin: [Int: [Int: Double]] = [:]
        let (outcome, distiller) = try DistillationRun.run(teacher: runner.teacher, students: try students(), corpus: runner.corpus, recipe: recipe,
                                                           endStep: 20, progressLabel: "builtin") { step, losses in
            for (i, l) in losses { builtin[i, default: [:]][step] = l }
        }
        let result = try backend.distill(teacherPath: runner.spec.teacher,
                                         students: try students().enumerated().map { ($1.0, $1.1, nil, f.root.appendingPathComponent("torch-\($0)")) },
                                         corpus: runner.corpus, recipe: recipe, startStep: 0, endStep: 20,
                                         jobDirectory: f.root.appendingPathComponent("job"), run: [:])
        return (builtin, outcome, distiller, result)
    }

    /// Expects every step's torch loss (up to step `gated`) within 1e-3 relative of the built-in one;
    /// returns the worst over the steps gated.
    static func worstStepDifference(
        _ r: BackendTrialResult, _ builtin: [Int: Double], _ label: String, gated: Int = .max
    ) -> Double {
        var worst = 0.0
        for (step, loss) in r.steps where step <= gated {
            let d = BackendTests.relative(loss, builtin[step]!)
            worst = max(worst, d)
            #expect(d <= 1e-3, "\(label) step \(step): torch \(loss) vs built-in \(builtin[step]!)")
        }
        return worst
    }
}
