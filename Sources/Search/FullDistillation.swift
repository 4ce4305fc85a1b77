import Foundation
import Model
import Proxy

/// `topiary distill --recipe EXPORT/<rank>-<hash>/distill.json`: the exported recipe run to
/// completion from the pruned init beside it, on either backend, in segments that each end with
/// an atomic training checkpoint (weights + AdamW moments + step) and a curve point per
/// language; rerunning the same command after any interruption (kill -9 included) resumes from the
/// newest checkpoint and gives the losses an uninterrupted run gives. At the end the student and
/// the teacher are evaluated on the validation split, per language.
public enum FullDistillation {
    public struct Options: Sendable {
        public var tokens: Int?
        public var out: URL?
        public var checkpointEvery: Int?
        public var evalTokens = 4096
        public var backend = BackendSpec()
        /// Run even when the teacher's fingerprint differs from the recipe's.
        public var force = false
        public init() {}
    }

    public struct Plan: Sendable {
        public var recipe: DistillationRecipe
        public var teacher: String, data: String, student: URL, out: URL
        public var steps: Int, checkpointEvery: Int
        public var name: String
        /// The fingerprint of the teacher the study ran with (nil in recipes without one).
        public var teacherFingerprint: String? = nil
        public var force = false
    }

    /// Reads distill.json (paths in it relative to the working folder, as the study's spec had them).
    public static func plan(recipe file: URL, options: Options) throws -> Plan {
        guard let data = try? Data(contentsOf: file) else {
            throw SearchError.store("\(file.path): cannot read the recipe")
        }
        guard let j = JSON.parse(data)?.object else {
            throw SearchError.spec(file: file.path, path: "", reason: "not a JSON object")
        }
        func need<T>(_ path: String, _ value: T?) throws -> T {
            guard let value else {
                throw SearchError.spec(
                    file: file.path, path: path,
                    reason: "missing or of the wrong type (a distill.json written by `topiary export`)")
            }
            return value
        }
        let recipeFile = try DistillFile.decode(data, file: file.path)
        var r = recipeFile.recipe
        let losses = recipeFile.losses
        if let hidden = losses.hidden, hidden != 0 {
            throw SearchError.spec(
                file: file.path, path: "losses.hidden",
                reason:
                    "\(hidden): the proxy used a hidden-state loss, which `distill --recipe` does not carry "
                    + "yet (its layer pairs are in the study's spec, not here); set it to 0 to distil on the logits alone"
            )
        }
        r.evalTokens = options.evalTokens
        // As strict as a spec: every value inside the range a training run can use.
        func require(_ ok: Bool, _ path: String, _ value: Any, _ rule: String) throws {
            if !ok { throw SearchError.spec(file: file.path, path: path, reason: "\(value): \(rule)") }
        }
        try require((1...65_536).contains(r.batch), "schedule.batch_size", r.batch, "must be in 1...65536")
        try require(
            (2...1 << 20).contains(r.sequence), "schedule.sequence_length", r.sequence, "must be in 2...1048576")
        try require(
            r.learningRate > 0 && r.learningRate <= 1 && r.learningRate.isFinite, "schedule.peak_learning_rate",
            r.learningRate, "must be in (0, 1]")
        try require(r.warmup >= 0, "schedule.warmup_steps", r.warmup, "must be non-negative")
        try require(r.minRatio >= 0 && r.minRatio <= 1, "schedule.min_ratio", r.minRatio, "must be in [0, 1]")
        try require(
            LearningRateSchedule.named(r.schedule, warmup: r.warmup) != nil, "schedule.name", r.schedule,
            "must be cosine, wsd or constant")
        try require(r.alpha >= 0 && r.alpha.isFinite, "language_sampling_alpha", r.alpha, "must be non-negative")
        try require(r.loss.kl >= 0 && r.loss.kl.isFinite, "losses.logits_kl", r.loss.kl, "must be non-negative")
        try require(r.loss.lm >= 0 && r.loss.lm.isFinite, "losses.lm", r.loss.lm, "must be non-negative")
        try require(
            r.loss.kl + r.loss.lm > 0, "losses", "logits_kl \(r.loss.kl), lm \(r.loss.lm)",
            "at least one weight must be positive")
        if let d = losses.klDirection {
            try require(d == "forward" || d == "reverse", "losses.kl_direction", d, "must be forward or reverse")
        }
        try require(
            r.loss.temperature > 0 && r.loss.temperature.isFinite, "temperature", r.loss.temperature, "must be positive"
        )
        let suggested = recipeFile.tokenBudget?.suggestedFullDistillationTokens
        let tokens = try options.tokens ?? need("token_budget.suggested_full_distillation_tokens", suggested)
        let perStep = r.batch * r.sequence
        guard tokens >= perStep else {
            throw SearchError.spec(
                file: file.path, path: "--tokens", reason: "\(tokens) tokens is less than one step (\(perStep))")
        }
        r.steps = tokens / perStep
        r.evalEvery = Int.max / 2
        let dir = file.deletingLastPathComponent()
        let every = max(1, options.checkpointEvery ?? max(1, r.steps / 10))
        return Plan(
            recipe: r, teacher: try need("teacher", j["teacher"]?.string), data: try need("data", j["data"]?.string),
            student: dir,
            out: options.out ?? dir.appendingPathComponent("distilled"), steps: r.steps, checkpointEvery: every,
            name: j["candidate"]?.string ?? dir.lastPathComponent,
            teacherFingerprint: j["teacher_fingerprint"]?.string, force: options.force)
    }

    /// Moves the newest checkpoint of `staging` into `checkpoints` as TrainingCheckpoint.save
    /// would have written it.
    static func promote(from staging: URL, to checkpoints: URL) throws {
        guard let source = try TrainingCheckpoint.latest(in: staging) else {
            throw SearchError.backend("the backend wrote no checkpoint in \(staging.path)")
        }
        try TrainingCheckpoint.publish(source, as: source.lastPathComponent, in: checkpoints)
        try? FileManager.default.removeItem(at: staging)
    }

    /// Runs (or resumes) the plan. Returns the final evaluation (student and teacher).
    @discardableResult
    public static func run(_ plan: Plan, backend: BackendSpec, log: @escaping (String) -> Void) throws -> JSON {
        let fm = FileManager.default
        let checkpoints = plan.out.appendingPathComponent("checkpoints")
        // The teacher stays in its files until the built-in engine needs it in float32 (its
        // training, the final evaluation); the fingerprint streams.
        let teacherWeights = try CheckpointWeights(URL(fileURLWithPath: plan.teacher, isDirectory: true))
        var loaded: DecoderModel?
        func teacher() throws -> DecoderModel {
            if let loaded { return loaded }
            let t = try Checkpoint.load(teacherWeights.directory)
            loaded = t
            return t
        }
        if let expected = plan.teacherFingerprint, !plan.force {
            let actual = try Fingerprint.of(teacherWeights)
            guard actual == expected else {
                throw SearchError.store(
                    "the teacher at \(plan.teacher) is not the one the recipe was made with (fingerprint "
                        + "\(actual), the recipe's \(expected)); pass --force to distil from it anyway"
                )
            }
        }
        try fm.createDirectory(at: checkpoints, withIntermediateDirectories: true)
        let corpus = try TokenShards(directory: URL(fileURLWithPath: plan.data, isDirectory: true))
        let init_ = try StudentInit.folder(plan.student)
        let curveFile = plan.out.appendingPathComponent("curve.jsonl")
        var resumeURL = try TrainingCheckpoint.latest(in: checkpoints)
        var step = try resumeURL.map { try SearchRunner.checkpointStep($0) } ?? 0
        // The curve as far as the checkpoint it resumes from (a killed run may have written later points).
        var curve: [String] = ((try? String(contentsOf: curveFile, encoding: .utf8)) ?? "").split(separator: "\n").map(
            String.init
        )
        .filter { (JSON.parse(Data($0.utf8))?["step"]?.int ?? .max) <= step }
        if step > 0 {
            log("resuming \(plan.name) from \(resumeURL!.path) (step \(step) of \(plan.steps))")
        } else {
            log(
                "distilling \(plan.name): \(plan.steps) steps of \(plan.recipe.batch)×\(plan.recipe.sequence) "
                    + "tokens on the \(backend.name) backend, a checkpoint every \(plan.checkpointEvery)"
            )
        }
        // One resident backend for every segment (the teacher loaded once), ended with the run.
        let resident = ResidentBackend()
        defer { resident.close() }
        while step < plan.steps {
            let end = min(plan.steps, (step / plan.checkpointEvery + 1) * plan.checkpointEvery)
            // The curve point is written before the checkpoint is: a run killed between the two
            // resumes from the previous checkpoint, drops the point, and makes it again.
            let segmentStart = Date()
            func record(_ point: CurvePoint) throws {
                curve.append(point.json.description)
                try AtomicFile.write(Data((curve.joined(separator: "\n") + "\n").utf8), to: curveFile)
                let seconds = Date().timeIntervalSince(segmentStart)
                log(
                    String(
                        format:
                            "step %d/%d: validation %.4f (language mean %.4f, worst %.4f), KL to teacher "
                            + "%.4f; %d steps in %.1f s (%.0f tokens/s, %@ backend, evaluation included)",
                        end, plan.steps, point.validation.overall, point.validation.languageMean,
                        point.validation.worst, point.validationKL,
                        end - step, seconds, Double((end - step) * plan.recipe.batch * plan.recipe.sequence) / seconds,
                        backend.name))
            }
            if backend.isBuiltin {
                var last: CurvePoint?
                let (outcome, distiller) = try DistillationRun.run(
                    teacher: try teacher(), students: [(plan.name, try Checkpoint.load(plan.student))], corpus: corpus,
                    recipe: plan.recipe, endStep: end, resume: resumeURL.map { [0: $0] } ?? [:],
                    evaluateAt: [end], progressLabel: "distill", onPoint: { _, p in last = p })
                if let failure = outcome.failures[0] { throw failure }
                try record(last!)
                let t = distiller.students[0].trainer
                try TrainingCheckpoint.save(
                    model: t.model, optimizer: t.optimizer, run: ["recipe": .string(plan.name)], in: checkpoints)
            } else {
                // The backend writes into a staging folder; its checkpoint joins checkpoints/ after
                // the curve point is recorded.
                let staging = plan.out.appendingPathComponent("staging")
                try? fm.removeItem(at: staging)
                let result = try ExternalBackend(
                    spec: backend, log: log, resident: backend.protocolVersion == 2 ? resident : nil
                ).distill(
                    teacherPath: plan.teacher, students: [(plan.name, init_, resumeURL, staging)], corpus: corpus,
                    recipe: plan.recipe,
                    startStep: step, endStep: end, jobDirectory: plan.out.appendingPathComponent("job"),
                    run: ["recipe": .string(plan.name)])
                try record(try result[0]!.get().point)
                try promote(from: staging, to: checkpoints)
            }
            resumeURL = try TrainingCheckpoint.latest(in: checkpoints)
            step = end
        }
        // The final student beside its checkpoints, and its evaluation against the teacher.
        let finalDir = plan.out.appendingPathComponent("final")
        let student = try Checkpoint.load(resumeURL!)
        try Checkpoint.save(student, to: finalDir)
        let tokens = plan.recipe.evalTokens
        let s = try Evaluation.validationLoss(
            model: student, shards: corpus, batch: plan.recipe.batch, sequence: plan.recipe.sequence,
            maxTokensPerLanguage: tokens)
        let t = try Evaluation.validationLoss(
            model: try teacher(), shards: corpus, batch: plan.recipe.batch, sequence: plan.recipe.sequence,
            maxTokensPerLanguage: tokens)
        var languages: [String: JSON] = [:]
        for lang in s.perLanguage.keys.sorted() {
            languages[lang] = [
                "student": JSON(s.perLanguage[lang]!), "teacher": JSON(t.perLanguage[lang] ?? .nan),
                "gap": JSON(s.perLanguage[lang]! - (t.perLanguage[lang] ?? .nan))
            ]
        }
        let eval: JSON = [
            "steps": JSON(plan.steps), "tokens": JSON(plan.steps * plan.recipe.batch * plan.recipe.sequence),
            "backend": .string(backend.name),
            "student": s.json, "teacher": t.json, "per_language": .object(languages), "final": .string(finalDir.path)
        ]
        try AtomicFile.write(eval.data(), to: plan.out.appendingPathComponent("eval.json"))
        log(
            String(
                format:
                    "done: student %.4f vs teacher %.4f validation loss (language mean %.4f vs %.4f); worst "
                    + "language gap %.4f; wrote %@ and eval.json",
                s.overall, t.overall, s.languageMean, t.languageMean,
                s.perLanguage.map { $0.value - (t.perLanguage[$0.key] ?? 0) }.max() ?? 0, finalDir.path))
        return eval
    }
}
