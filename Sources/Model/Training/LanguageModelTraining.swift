import Foundation

/// The recipe of a language-model training run (`topiary teacher train`). Everything that decides
/// the result is here, so that a resumed run can check it continues the same run.
public struct TrainingRecipe: Sendable, Equatable {
    public var steps: Int
    public var batch: Int = 16
    public var sequence: Int = 128
    public var learningRate: Double = 3e-3
    public var schedule: String = "cosine"
    public var warmup: Int = 100
    public var minRatio: Double = 0.1
    public var weightDecay: Double = 0.1
    public var gradientClip: Double = 1.0
    public var seed: UInt64 = 0
    /// Language sampling exponent α (q ∝ p^α); ignored when `unimaxEpochs` is set.
    public var alpha: Double = 0.3
    /// UniMax with this cap on epochs per language (budget = steps × batch × sequence).
    public var unimaxEpochs: Double? = nil
    public var evalEvery: Int = 200
    public var evalTokens: Int = 16384
    public var checkpointEvery: Int = 200
    /// Mixtures: router z-loss weight (the load-balancing weight is the config's coefficient).
    public var routerZLoss: Double = 0

    public init(steps: Int) { self.steps = steps }

    public var sampling: LanguageSampling {
        if let e = unimaxEpochs { return .unimax(budgetTokens: steps * batch * sequence, maxEpochs: e) }
        return .temperature(alpha)
    }

    public var json: JSON {
        [
            "steps": JSON(steps), "batch": JSON(batch), "sequence": JSON(sequence), "learning_rate": JSON(learningRate),
            "schedule": .string(schedule), "warmup": JSON(warmup), "min_ratio": JSON(minRatio),
            "weight_decay": JSON(weightDecay),
            "gradient_clip": JSON(gradientClip), "seed": JSON(Int(seed)), "alpha": JSON(alpha),
            "unimax_epochs": unimaxEpochs.map { JSON($0) } ?? .null, "eval_every": JSON(evalEvery),
            "eval_tokens": JSON(evalTokens),
            "checkpoint_every": JSON(checkpointEvery), "router_z_loss": JSON(routerZLoss)
        ]
    }
}

/// Trains a model from scratch on a prepared corpus, with per-language evaluation, atomic
/// checkpoints and exact resumption: batch k depends only on (seed, k), and a checkpoint holds
/// the weights, both AdamW moments and the step, so a run killed after checkpoint c and restarted
/// ends with the weights an uninterrupted run would have.
public enum LanguageModelTraining {
    public struct Outcome: Sendable {
        public var resumedFrom: Int?
        public var finalLoss: Double
        public var evaluation: EvaluationResult
        public var finished: Bool
    }

    /// - Throws: ``ModelError`` for a mismatched vocabulary, a checkpoint from another recipe, a
    ///   non-finite loss (naming the step; no checkpoint with NaN weights is written), or I/O.
    /// - Parameter stopAfter: end the process's work after this step, as a kill would (for tests
    ///   of resumption); the run is then unfinished and `Outcome.finished` is false.
    public static func run(
        config: ModelConfig, corpus: TokenShards, recipe: TrainingRecipe, output: URL,
        stopAfter: Int? = nil, log: (String) -> Void = { print($0) }
    ) throws -> Outcome {
        guard config.vocabSize >= corpus.vocabularySize else {
            throw ModelError.invalidConfig(
                file: "config", key: "vocab_size",
                reason: "\(config.vocabSize) is smaller than the corpus tokenizer's \(corpus.vocabularySize) ids")
        }
        guard
            let schedule = LearningRateSchedule.named(recipe.schedule, warmup: recipe.warmup, minRatio: recipe.minRatio)
        else {
            throw ModelError.invalidInput("unknown schedule '\(recipe.schedule)' (cosine, wsd, constant)")
        }
        let model = DecoderModel(config: config)
        model.initialize(seed: recipe.seed)
        model.routerLossWeights.zLoss = recipe.routerZLoss
        let trainer = Trainer(
            model: model, batch: recipe.batch, sequence: recipe.sequence,
            settings: .init(weightDecay: recipe.weightDecay, gradientClip: recipe.gradientClip),
            schedule: schedule, peakLearningRate: recipe.learningRate, totalSteps: recipe.steps)
        let sampler = try BatchSampler(
            shards: corpus, batch: recipe.batch, sequence: recipe.sequence,
            sampling: recipe.sampling, seed: recipe.seed)
        let checkpoints = output.appendingPathComponent("checkpoints")
        let runJSON: JSON = ["config": config.json, "recipe": recipe.json, "corpus": .string(corpus.directory.path)]
        var resumedFrom: Int? = nil
        if let last = try TrainingCheckpoint.latest(in: checkpoints) {
            let state = try TrainingCheckpoint.load(last, model: model, optimizer: trainer.optimizer)
            guard state["run"]?["config"] == runJSON["config"], state["run"]?["recipe"] == runJSON["recipe"] else {
                throw ModelError.io(
                    path: last.path,
                    reason: "checkpoint was written by a different config or recipe; use another --out or delete it")
            }
            resumedFrom = trainer.optimizer.step
            log("resuming from \(last.lastPathComponent) (step \(trainer.optimizer.step))")
        }
        let logURL = output.appendingPathComponent("log.jsonl")
        var logLines =
            (try? String(contentsOf: logURL, encoding: .utf8))?.split(separator: "\n").map(String.init)
            .filter { (JSON.parse(Data($0.utf8))?["step"]?.int ?? Int.max) <= trainer.optimizer.step } ?? []
        func appendLog(_ entry: JSON) throws {
            logLines.append(entry.description)
            try AtomicFile.write(Data((logLines.joined(separator: "\n") + "\n").utf8), to: logURL)
        }
        let evalActs = Activations(config: config, batch: recipe.batch, sequence: recipe.sequence)
        func evaluate(_ step: Int) throws -> EvaluationResult {
            try Evaluation.validationLoss(
                model: model, shards: corpus, batch: recipe.batch, sequence: recipe.sequence,
                maxTokensPerLanguage: recipe.evalTokens, step: step, activations: evalActs)
        }
        let start = trainer.optimizer.step
        let progress = ProgressReporter(
            label: "train", total: recipe.steps, firstStep: start, every: max(1, recipe.evalEvery / 4))
        var loss = Double.nan
        var tokens = 0
        if start < recipe.steps {
            for step in (start + 1)...recipe.steps {
                let b = sampler.batch(step: step)
                let r = try trainer.step(tokens: b.tokens, targets: b.targets)
                loss = r.loss
                tokens += recipe.batch * recipe.sequence
                progress.update(
                    step: step, tokens: tokens,
                    fields: [("loss", String(format: "%.4f", r.loss)), ("lr", String(format: "%.2e", r.learningRate))])
                var entry: [String: JSON] = [
                    "step": JSON(step), "loss": JSON(r.loss), "lr": JSON(r.learningRate),
                    "grad_norm": JSON(r.gradientNorm)
                ]
                if step % recipe.evalEvery == 0 || step == recipe.steps {
                    let e = try evaluate(step)
                    entry["validation"] = e.json
                    progress.note(
                        "step \(step): validation loss \(String(format: "%.4f", e.overall)) (language mean "
                            + "\(String(format: "%.4f", e.languageMean))) "
                            + e.perLanguage.sorted { $0.key < $1.key }.map {
                                "\($0.key) \(String(format: "%.3f", $0.value))"
                            }.joined(separator: " "))
                }
                if step % 10 == 0 || entry["validation"] != nil { try appendLog(.object(entry)) }
                if step % recipe.checkpointEvery == 0 || step == recipe.steps {
                    try TrainingCheckpoint.save(
                        model: model, optimizer: trainer.optimizer, run: runJSON, in: checkpoints)
                }
                if let stopAfter, step >= stopAfter {
                    return Outcome(
                        resumedFrom: resumedFrom, finalLoss: loss, evaluation: try evaluate(step), finished: false)
                }
            }
        }
        let final = try evaluate(recipe.steps)
        try Checkpoint.save(model, to: output)
        return Outcome(resumedFrom: resumedFrom, finalLoss: loss, evaluation: final, finished: true)
    }
}

/// Training checkpoints: `checkpoints/step-NNNNNNNN/` holding the weights, AdamW moments and
/// `state.json`, written to a temporary directory and renamed; `checkpoints/latest` names the
/// newest and is replaced atomically; older ones are then removed.
public enum TrainingCheckpoint {
    public static func latest(in directory: URL) throws -> URL? {
        guard let name = try? String(contentsOf: directory.appendingPathComponent("latest"), encoding: .utf8) else {
            return nil
        }
        let url = directory.appendingPathComponent(name.trimmingCharacters(in: .whitespacesAndNewlines))
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ModelError.io(path: url.path, reason: "named by checkpoints/latest but missing")
        }
        return url
    }

    public static func save(model: DecoderModel, optimizer: AdamW, run: JSON, in directory: URL) throws {
        let fm = FileManager.default
        let name = String(format: "step-%08d", optimizer.step)
        let temporary = directory.appendingPathComponent(".\(name).tmp-\(getpid())")
        try? fm.removeItem(at: temporary)
        try FileIO.requireFreeSpace(
            saturating(model.layout.count, times: 12), in: directory,
            for: "writing a training checkpoint (weights and AdamW moments)")
        try Checkpoint.save(model, to: temporary)
        let slices = model.layout.entries.flatMap { e in
            [
                TensorSlice(
                    name: "m:" + e.name, shape: e.shape,
                    values: UnsafeBufferPointer(start: optimizer.m.pointer + e.offset, count: e.count)),
                TensorSlice(
                    name: "v:" + e.name, shape: e.shape,
                    values: UnsafeBufferPointer(start: optimizer.v.pointer + e.offset, count: e.count))
            ]
        }
        try SafeTensorsWriter.write(slices, to: temporary.appendingPathComponent("optimizer.safetensors"))
        try AtomicFile.write(
            (["step": JSON(optimizer.step), "run": run] as JSON).data(),
            to: temporary.appendingPathComponent("state.json"))
        try publish(temporary, as: name, in: directory)
    }

    /// Makes `folder` (a whole checkpoint written elsewhere on the same file system) the newest
    /// checkpoint `name` of `directory`: renamed in, then `latest` replaced atomically, then older
    /// steps removed. A crash at any point leaves `latest` naming a whole checkpoint.
    public static func publish(_ folder: URL, as name: String, in directory: URL) throws {
        let fm = FileManager.default
        let final = directory.appendingPathComponent(name)
        try? fm.removeItem(at: final)
        try fm.moveItem(at: folder, to: final)
        try AtomicFile.write(Data(name.utf8), to: directory.appendingPathComponent("latest"))
        for old in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
        where old.hasPrefix("step-") && old != name {
            try? fm.removeItem(at: directory.appendingPathComponent(old))
        }
    }

    /// The step a checkpoint folder was saved at (its `state.json`), or nil when it has none
    /// readable.
    public static func step(of url: URL) -> Int? {
        (try? Data(contentsOf: url.appendingPathComponent("state.json"))).flatMap(JSON.parse)?["step"]?.int
    }

    /// Loads weights and optimizer state; returns `state.json`.
    public static func load(_ url: URL, model: DecoderModel, optimizer: AdamW) throws -> JSON {
        try Checkpoint.loadWeights(into: model, from: url)
        let opt = try SafeTensorsFile(url: url.appendingPathComponent("optimizer.safetensors"))
        for e in model.layout.entries {
            for (prefix, buffer) in [("m:", optimizer.m), ("v:", optimizer.v)] {
                guard try opt.info(prefix + e.name).shape == e.shape else {
                    throw ModelError.checkpoint(
                        path: opt.path, tensor: prefix + e.name, reason: "shape does not match the model")
                }
                try opt.read(prefix + e.name, into: buffer.pointer + e.offset)
            }
        }
        guard let data = try? Data(contentsOf: url.appendingPathComponent("state.json")), let state = JSON.parse(data),
            let step = state["step"]?.int
        else {
            throw ModelError.io(path: url.appendingPathComponent("state.json").path, reason: "missing or malformed")
        }
        optimizer.step = step
        return state
    }
}
