import ArgumentParser
import Foundation
import Model
import Proxy
import Search

/// Distillation options shared by `distill` and the benchmarks.
struct DistillOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Steps.") var steps: Int?
    @Option(parsing: .unconditional, help: "Batch size.") var batch = 16
    @Option(parsing: .unconditional, help: "Sequence length.") var seq = 128
    @Option(parsing: .unconditional, help: "Peak learning rate.") var lr = 1e-3
    @Option(help: "Schedule: cosine, wsd or constant.") var schedule = "cosine"
    @Option(parsing: .unconditional, help: "Warmup steps.") var warmup = 10
    @Option(parsing: .unconditional, help: "Weight of KL(teacher ‖ student) on logits.") var kl = 1.0
    @Option(parsing: .unconditional, help: "Weight of the language-model loss on the data.") var lm = 0.0
    @Option(parsing: .unconditional, help: "Softmax temperature τ for the KL.") var temperature = 1.0
    @Flag(help: "Reverse KL(student ‖ teacher) instead of forward.") var reverse = false
    @Option(parsing: .unconditional, help: "Weight of the hidden-state loss (through a learned linear map).")
    var hidden = 0.0
    @Option(help: "Hidden-state distance: cosine or mse.") var hiddenDistance = "cosine"
    @Option(help: "Hidden-state pairs as STUDENT:TEACHER residual indices, comma-separated (default: last:last).")
    var hiddenLayers: String?
    @Option(parsing: .unconditional, help: "Record a curve point every K steps.") var evalEvery = 25
    @Option(parsing: .unconditional, help: "Validation tokens per language per curve point.") var evalTokens = 4096
    @Option(parsing: .unconditional, help: "Language sampling exponent α.") var alpha = 0.3
    @Option(parsing: .unconditional, help: "Seed for the data order.") var seed: UInt64 = 0

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if batch < 1 || seq < 2 || evalEvery < 1 {
            throw ValidationError("--steps, --batch, --eval-every ≥ 1 and --seq ≥ 2")
        }
        if temperature <= 0 { throw ValidationError("--temperature must be positive") }
        try requireRange("--lr", lr, 1e-12...10)
        try requireRange("--warmup", warmup, 0...Int.max)
        for (name, weight) in [("--kl", kl), ("--lm", lm), ("--hidden", hidden)] {
            try requireRange(name, weight, 0...1e6, "a loss weight")
        }
        try requireRange("--eval-tokens", evalTokens, 1...Int.max)
        try requireRange("--alpha", alpha, 0...10, "q ∝ p^α")
        if HiddenLoss.Distance(rawValue: hiddenDistance) == nil {
            throw ValidationError("--hidden-distance takes cosine or mse")
        }
        if hiddenLayers != nil && hiddenPairs == nil {
            throw ValidationError("--hidden-layers takes pairs like 3:5,6:10")
        }
    }

    var recipe: DistillationRecipe {
        var r = DistillationRecipe(steps: steps ?? 1)
        r.batch = batch; r.sequence = seq; r.learningRate = lr; r.schedule = schedule; r.warmup = warmup
        r.evalEvery = evalEvery; r.evalTokens = evalTokens; r.alpha = alpha; r.seed = seed
        r.loss.kl = kl; r.loss.lm = lm; r.loss.temperature = temperature;
        r.loss.direction = reverse ? .reverse : .forward
        r.loss.hidden.weight = hidden
        r.loss.hidden.distance = HiddenLoss.Distance(rawValue: hiddenDistance) ?? .cosine
        r.loss.hidden.layers = hiddenPairs ?? []
        return r
    }

    var hiddenPairs: [[Int]]? {
        guard let hiddenLayers else { return [] }
        let pairs = hiddenLayers.split(separator: ",").map { $0.split(separator: ":").compactMap { Int($0) } }
        return pairs.allSatisfy { $0.count == 2 } ? pairs : nil
    }
}

struct DistillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distil one or more students from a teacher on the same batches (one teacher pass per batch).",
        discussion: """
            With one --student the result goes to OUT; with several, to OUT/<student directory name>. Each gets\
             config.json,             model.safetensors and curve.jsonl.

            With --recipe EXPORT/<rank>-<hash>/distill.json (what `topiary export` writes) it runs that recipe to\
             completion             from the pruned init beside it: --tokens (default: the recipe's suggested\
             full-distillation budget), a training             checkpoint every --checkpoint-every steps (written\
             atomically, with a curve point per language), on the built-in             engine or --backend torch;\
             rerunning the same command after an interruption (kill -9 too) resumes from the newest            \
             checkpoint with the losses of an uninterrupted run. At the end: OUT/final (the student), OUT/eval.json\
             (student             and teacher per language). OUT defaults to EXPORT/<rank>-<hash>/distilled.
            """)

    @Option(help: "Teacher checkpoint directory.") var teacher: String?
    @Option(help: "Student checkpoint directory (repeat for several).") var student: [String] = []
    @Option(help: "Prepared corpus.") var data: String?
    @Option(help: "Output directory.") var out: String?
    @Option(help: "An exported distill.json to run to completion (the recipe, teacher, data and student come from it).")
    var recipe: String?
    @Option(
        parsing: .unconditional,
        help: "With --recipe: tokens to distil (default: the recipe's suggested full-distillation budget).") var tokens:
        Int?
    @Option(
        parsing: .unconditional,
        help: "With --recipe: steps between checkpoints (and curve points; default: a tenth of the run).")
    var checkpointEvery: Int?
    @Option(help: "With --recipe: builtin or torch.") var backend = "builtin"
    @Option(
        help: ArgumentHelp(
            "With --backend torch: the Python with torch and transformers (default: TOPIARY_PYTHON, "
                + ".venv/bin/python, or scripts/torch-venv.sh's).")
    ) var python: String?
    @Option(help: "With --backend torch: cpu, cuda, cuda:N.") var device = "cpu"
    @Option(help: "With --backend torch: float32, or bfloat16 on a GPU.") var dtype = "float32"
    @Flag(help: "With --recipe: distil even from a teacher whose fingerprint differs from the recipe's.") var force =
        false
    @OptionGroup var options: DistillOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if recipe != nil {
            if teacher != nil || !student.isEmpty || data != nil || options.steps != nil {
                throw ValidationError(
                    "--recipe brings its teacher, student, data and steps: drop --teacher, --student, --data and --steps (use --tokens)"
                )
            }
            if let tokens { try requireRange("--tokens", tokens, 1...Int.max, "tokens") }
            if let checkpointEvery { try requireRange("--checkpoint-every", checkpointEvery, 1...Int.max, "steps") }
            guard ["builtin", "torch"].contains(backend) else {
                throw ValidationError("--backend takes builtin or torch")
            }
        } else {
            guard teacher != nil, !student.isEmpty, data != nil, out != nil, options.steps != nil else {
                throw ValidationError(
                    "give --teacher, --student, --data, --out and --steps, or --recipe EXPORT/<rank>-<hash>/distill.json"
                )
            }
        }
    }

    func run() throws {
        engine.apply()
        if let recipe {
            var o = FullDistillation.Options()
            o.tokens = tokens
            o.out = out.map(directoryURL)
            o.checkpointEvery = checkpointEvery
            o.evalTokens = options.evalTokens
            o.force = force
            var b = BackendSpec()
            if backend == "torch" {
                var o: [String: JSON] = ["name": "torch", "device": .string(device), "dtype": .string(dtype)]
                if let python { o["python"] = .string(python) }
                b = try SearchSpec.backend(o)
            }
            let plan = try FullDistillation.plan(recipe: URL(fileURLWithPath: recipe), options: o)
            try FullDistillation.run(plan, backend: b) {
                print($0); fflush(nil)
            }
            return
        }
        let (teacher, data, out) = (teacher!, data!, out!)
        let t = try Checkpoint.load(try checkpointURL(teacher))
        let corpus = try TokenShards(directory: directoryURL(data))
        let students = try student.map { path -> (String, DecoderModel) in
            // load() checks the headers
            let config = try ModelConfig.load(directoryURL(path).appendingPathComponent("config.json"))
            try MemoryBudget.checkTraining(
                config, batch: options.batch, sequence: options.seq, what: "distilling into \(path)")
            return (directoryURL(path).lastPathComponent, try Checkpoint.load(directoryURL(path)))
        }
        let outputs =
            student.count == 1 ? [directoryURL(out)] : students.map { directoryURL(out).appendingPathComponent($0.0) }
        var curves = [[String]](repeating: [], count: students.count)
        let (outcome, _) = try DistillationRun.run(
            teacher: t, students: students, corpus: corpus, recipe: options.recipe,
            onPoint: { i, point in
                curves[i].append(point.json.description)
                try AtomicFile.write(
                    Data((curves[i].joined(separator: "\n") + "\n").utf8),
                    to: outputs[i].appendingPathComponent("curve.jsonl"))
                print(
                    "\(students[i].0) step \(point.step): validation "
                        + "\(String(format: "%.4f", point.validation.overall)) (language mean "
                        + "\(String(format: "%.4f", point.validation.languageMean))), KL to teacher "
                        + "\(String(format: "%.4f", point.validationKL))"
                )
            })
        for (i, (name, model)) in students.enumerated() {
            if let failure = outcome.failures[i] { print("\(name): FAILED: \(failure)"); continue }
            try Checkpoint.save(model, to: outputs[i])
            print("wrote \(outputs[i].path)")
        }
        if outcome.failures.count == students.count { throw outcome.failures.values.first! }
    }
}
