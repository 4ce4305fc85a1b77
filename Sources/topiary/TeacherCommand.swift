import ArgumentParser
import Foundation
import Model

struct TeacherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher", abstract: "Train a teacher model from scratch.", subcommands: [TeacherTrain.self])
}

struct TeacherTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model from scratch on a prepared corpus; resumes from its last checkpoint.",
        discussion:
            "Rerunning the same command after an interruption continues from OUT/checkpoints with the same data order and optimizer state."
    )

    @Option(help: "config.json of the model to train (any supported family).") var config: String
    @Option(help: "Prepared corpus directory (topiary data prepare).") var data: String
    @Option(help: "Output directory: final checkpoint, log.jsonl, checkpoints/.") var out: String
    @Option(parsing: .unconditional, help: "Training steps.") var steps: Int
    @Option(parsing: .unconditional, help: "Batch size.") var batch = 16
    @Option(parsing: .unconditional, help: "Sequence length.") var seq = 128
    @Option(parsing: .unconditional, help: "Peak learning rate.") var lr = 3e-3
    @Option(help: "Schedule: cosine, wsd or constant.") var schedule = "cosine"
    @Option(parsing: .unconditional, help: "Warmup steps.") var warmup = 100
    @Option(parsing: .unconditional, help: "Final learning rate as a fraction of the peak.") var minRatio = 0.1
    @Option(parsing: .unconditional, help: "AdamW weight decay (matrices only).") var weightDecay = 0.1
    @Option(parsing: .unconditional, help: "Gradient-norm clip.") var clip = 1.0
    @Option(parsing: .unconditional, help: "Language sampling exponent α: q ∝ p^α (1 natural, 0 uniform).") var alpha =
        0.3
    @Option(parsing: .unconditional, help: "Use UniMax with this cap on epochs per language instead of α.")
    var unimaxEpochs: Double?
    @Option(parsing: .unconditional, help: "Evaluate every K steps.") var evalEvery = 200
    @Option(parsing: .unconditional, help: "Validation tokens per language per evaluation.") var evalTokens = 16384
    @Option(parsing: .unconditional, help: "Checkpoint every K steps.") var checkpointEvery = 200
    @Option(parsing: .unconditional, help: "Seed (initialisation and data order).") var seed: UInt64 = 0
    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Mixture-of-experts: router z-loss weight (JetMoE trained with 0.001). The load-balancing weight "
                + "is the config's router_aux_loss_coef / aux_loss_coef.")
    ) var routerZLoss = 0.0
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if steps < 1 || batch < 1 || seq < 2 || evalEvery < 1 || checkpointEvery < 1 {
            throw ValidationError("steps, batch, eval-every and checkpoint-every must be ≥ 1, seq ≥ 2")
        }
        if LearningRateSchedule.named(schedule, warmup: 0) == nil {
            throw ValidationError("--schedule must be cosine, wsd or constant")
        }
        try requireRange("--lr", lr, 1e-12...10)
        try requireRange("--warmup", warmup, 0...Int.max)
        try requireRange("--min-ratio", minRatio, 0...1, "of the peak learning rate")
        try requireRange("--weight-decay", weightDecay, 0...10)
        try requireRange("--clip", clip, 1e-12...1e12, "a gradient norm")
        try requireRange("--alpha", alpha, 0...10, "q ∝ p^α")
        if let unimaxEpochs { try requireRange("--unimax-epochs", unimaxEpochs, 1e-6...1e6) }
        try requireRange("--eval-tokens", evalTokens, 1...Int.max)
        try requireRange("--router-z-loss", routerZLoss, 0...1e6)
    }

    func run() throws {
        engine.apply()
        let c = try ModelConfig.load(fileURL(config))
        try MemoryBudget.checkTraining(c, batch: batch, sequence: seq, what: "training \(config)")
        let corpus = try TokenShards(directory: directoryURL(data))
        var recipe = TrainingRecipe(steps: steps)
        recipe.batch = batch; recipe.sequence = seq; recipe.learningRate = lr; recipe.schedule = schedule
        recipe.warmup = warmup; recipe.minRatio = minRatio; recipe.weightDecay = weightDecay; recipe.gradientClip = clip
        recipe.alpha = alpha; recipe.unimaxEpochs = unimaxEpochs; recipe.evalEvery = evalEvery;
        recipe.evalTokens = evalTokens
        recipe.checkpointEvery = checkpointEvery; recipe.seed = seed; recipe.routerZLoss = routerZLoss
        print(
            "training \(c.family.rawValue) with \(c.parameterCount) parameters on "
                + "\(corpus.tokenCount("train")) tokens, \(steps) steps of \(batch)×\(seq)"
        )
        let outcome = try LanguageModelTraining.run(
            config: c, corpus: corpus, recipe: recipe, output: directoryURL(out))
        let unigram = Evaluation.unigramLoss(shards: corpus, maxTokensPerLanguage: evalTokens)
        print("language  validation  unigram")
        for (lang, loss) in outcome.evaluation.perLanguage.sorted(by: { $0.key < $1.key }) {
            print(String(format: "%-9@ %10.4f %8.4f", lang as NSString, loss, unigram[lang] ?? .nan))
        }
        print(
            String(
                format: "overall   %10.4f   (language mean %.4f, worst %.4f)", outcome.evaluation.overall,
                outcome.evaluation.languageMean, outcome.evaluation.worst))
        let summary: JSON = [
            "config": c.json, "recipe": recipe.json, "data": .string(data),
            "validation": outcome.evaluation.json, "unigram": .object(unigram.mapValues { JSON($0) }),
            "final_train_loss": JSON(outcome.finalLoss)
        ]
        try AtomicFile.write(summary.data(), to: directoryURL(out).appendingPathComponent("training.json"))
        print("wrote \(out)")
    }
}
