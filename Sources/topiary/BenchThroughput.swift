import ArgumentParser
import Foundation
import Model
import Proxy
import Search

/// `topiary bench throughput SPEC`: measures every block shape a spec's throughput budget needs on
/// the built-in engine and writes the table the spec reads.
struct BenchThroughput: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract:
            "Measures each block shape of a spec's candidates at its budget.throughput workload (built-in engine or torch).",
        discussion: """
            For every distinct block of the spec's candidates (a puzzle spec: of its block library) and what lies \
            outside the blocks, times the prefill of one prompt of `input` tokens (× batch) and a decode step of the \
            whole batch with a key/value cache at `input + 1` and `input + output − 1` positions, each the median of \
            --repeats runs, and this machine's roofline (a large product's FLOP/s, a large copy's bytes/s). Writes \
            them to budget.throughput.table (or --out). Each block is timed in a stack as deep as the model, each \
            layer with its own weights and cache, divided by the depth. Shapes already in that table, measured by \
            this engine on this machine at this workload and thread count, are kept, not measured again. \
            --check K then times the teacher and K candidates as whole models (every layer and the head in one \
            pass) and prints each one's measured tokens/s beside the sum of its blocks' times from the table.

            --backend torch times the same shapes with PyTorch on --device (a GPU: cuda), in the workload's dtype: \
            each block a stack of the model's depth of Llama-numerics layers with their own key/value caches, SDPA \
            attention, and a check that each decode step reproduces the prefill; the table records the device and \
            the torch version. The spec's backend (torch, its python and device) is the default.
            """)

    @Argument(help: "The search spec (JSON) with budget.throughput.") var spec: String
    @Option(help: "Where to write the table (default: the spec's budget.throughput.table).") var out: String?
    @Option(parsing: .unconditional, help: "Timed runs per phase (the median is kept).") var repeats = 5
    @Option(
        parsing: .unconditional,
        help: "Also time the teacher and this many candidates whole, against the sum of their blocks (0: none).")
    var check = 0
    @Option(help: "Who times the blocks: builtin (this CPU) or torch (default: the spec's backend).") var backend:
        String?
    @Option(help: "With --backend torch: the Python with torch (default: the spec's, or scripts/torch-venv.sh's).")
    var python: String?
    @Option(help: "With --backend torch: cpu, cuda, cuda:N (default: the spec's backend.device).") var device: String?
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try requireRange("--repeats", repeats, 1...1000)
        try requireRange("--check", check, 0...1000)
        if let backend, !["builtin", "torch"].contains(backend) {
            throw ValidationError("--backend takes builtin or torch")
        }
    }

    /// The external backend to time with, or nil for the built-in engine: --backend torch (its
    /// python and device from the options, else the spec's), else the spec's own external backend.
    func externalBackend(_ s: SearchSpec) throws -> BackendSpec? {
        if backend == "builtin" || (backend == nil && s.backend.isBuiltin) { return nil }
        let own = !s.backend.isBuiltin && (backend == nil || s.backend.name == "torch")
        if own && python == nil && device == nil { return s.backend }
        // torch, with the options' python and device (each checked as a spec's would be).
        var b = s.backend.name == "torch" ? s.backend : try SearchSpec.backend(["name": "torch"])
        if let device { b.device = try SearchSpec.backend(["name": "torch", "device": .string(device)]).device }
        if let python, case let .torch(_, script) = b.kind { b.kind = .torch(python: python, script: script) }
        return b
    }

    func run() throws {
        engine.apply()
        SearchSpec.measuringThroughput = true
        defer { SearchSpec.measuringThroughput = false }
        let s = try loadSpec(spec)
        guard let tp = s.budget.throughput else {
            throw SearchError.spec(file: spec, path: "budget.throughput", reason: "missing: nothing to measure")
        }
        guard let path = out ?? tp.tablePath else {
            throw ValidationError("give --out FILE or budget.throughput.table in \(spec)")
        }
        let teacher = try ModelConfig.load(directoryURL(s.teacher).appendingPathComponent("config.json"))
        // Every config whose blocks a candidate may take: the puzzle library's, or the space's
        // candidates under every bound but the throughput floor.
        var blocks: [(String, Block, ModelConfig)] = [], outside: [(String, ModelConfig)] = []
        // Whole models --check may time: the puzzle library's homogeneous choices, or the space's candidates.
        var models: [(String, ModelConfig)] = []
        func add(_ c: ModelConfig, _ b: Block) {
            let k = Throughput.key(b, in: c)
            if !blocks.contains(where: { $0.0 == k }) { blocks.append((k, b, c)) }
        }
        func addOutside(_ c: ModelConfig) {
            let k = Throughput.outsideKey(c)
            if !outside.contains(where: { $0.0 == k }) { outside.append((k, c)) }
        }
        if let puzzle = s.strategy.value as? Puzzle {
            for v in puzzle.library(teacher: teacher) {
                for l in 0..<teacher.numHiddenLayers {
                    add(teacher, teacher.block(v, window: teacher.window(layer: l)))
                }
                if v.keyValueGroups != nil || v.mlpWidth != nil {
                    let variants = Array(repeating: v, count: teacher.numHiddenLayers)
                    models.append(
                        (
                            variants.map(Puzzle.describe).joined(separator: " "),
                            HeterogeneousPruning.studentConfig(teacher: teacher, variants: variants)
                        ))
                }
            }
            // And as many seeded mixtures of the library's variants, layer by layer.
            let library = puzzle.library(teacher: teacher).filter { $0.keyValueGroups != nil || $0.mlpWidth != nil }
            var rng = SeededGenerator(seed: 7)
            for _ in 0..<models.count {
                let variants = (0..<teacher.numHiddenLayers).map { _ in library[Int(rng.next() % UInt64(library.count))]
                }
                models.append(
                    (
                        variants.map(Puzzle.describe).joined(separator: " "),
                        HeterogeneousPruning.studentConfig(teacher: teacher, variants: variants)
                    ))
            }
            addOutside(teacher)
        } else {
            var unbounded = s
            unbounded.budget.throughput = nil
            let e = Enumeration.of(unbounded, teacher: teacher)
            try e.requireWithinLimit(unbounded)
            for c in e.candidates {
                for b in c.config.blocks { add(c.config, b) }
                addOutside(c.config)
                models.append((c.hash, c.config))
            }
        }
        let w = tp.workload
        // --check: the teacher and `check` models of the list, timed whole.
        let whole = check > 0 ? [("teacher", teacher)] + Self.spread(models, count: check) : []
        if let external = try externalBackend(s) {
            let table = try measureOnBackend(external, blocks: blocks, outside: outside, whole: whole, at: w)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(table), to: fileURL(path))
            print("wrote \(path): \(table.blocks.count) blocks, \(table.outside.count) outside")
            return
        }
        let machine = RuntimePlatform.current.summary
        var table = ThroughputTable(
            machine: machine, engine: Throughput.engineDescription, threads: Parallel.threads, workload: tp.workload,
            roofline: nil)
        if let data = FileManager.default.contents(atPath: path),
            let old = try? JSONDecoder().decode(ThroughputTable.self, from: data),
            old.machine == machine, old.threads == table.threads, old.workload == tp.workload,
            old.engine == table.engine
        {
            table = old
        }
        print(
            "platform: \(machine); \(Parallel.threads) threads; batch \(w.batch) × (\(w.input) prompt + \(w.output) "
                + "generated) tokens")
        if table.roofline == nil {
            let r = Throughput.measureMachine()
            table.roofline = r
            print(String(format: "roofline: %.3g FLOP/s, %.3g bytes/s", r.flopsPerSecond, r.bytesPerSecond))
        }
        let todo = blocks.filter { table.blocks[$0.0] == nil }
        print("\(blocks.count) block shapes, \(blocks.count - todo.count) already measured")
        let start = Date()
        for (i, (key, block, config)) in todo.enumerated() {
            let t = try Throughput.measure(block, like: config, at: w, repeats: repeats)
            table.blocks[key] = t
            print(
                String(
                    format: "[%d/%d] %@: prefill %.5f s, decode step %.6f → %.6f s, %.4f s in all (%.0f s elapsed)",
                    i + 1, todo.count, key as NSString, t.prefill, t.decodeFirst, t.decodeLast,
                    t.seconds(output: w.output), Date().timeIntervalSince(start)))
            fflush(nil)
        }
        for (key, config) in outside where table.outside[key] == nil {
            table.outside[key] = try Throughput.measureOutside(like: config, at: w, repeats: repeats)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(table), to: fileURL(path))
        print("wrote \(path): \(table.blocks.count) blocks, \(table.outside.count) outside")
        try checkWhole(whole, table: table, at: w) { try Throughput.measureWhole($1, at: w, repeats: repeats) }
    }

    /// `count` of `models`, evenly spread over the list (first and last included).
    static func spread(_ models: [(String, ModelConfig)], count: Int) -> [(String, ModelConfig)] {
        guard models.count > count else { return models }
        if count == 1 { return [models[0]] }
        return (0..<count).map { models[$0 * (models.count - 1) / (count - 1)] }
    }

    /// Each model timed whole (`measure(name, config)`; nil: not timed) against the sum of its
    /// blocks' times in `table`; nothing without models.
    func checkWhole(
        _ models: [(String, ModelConfig)], table: ThroughputTable, at w: ServingWorkload,
        measure: (String, ModelConfig) throws -> PhaseTimes?
    ) throws {
        guard !models.isEmpty else { return }
        print("whole-model check: \(models.count) models, measured in one pass against the sum of their blocks")
        var ratios: [Double] = []
        for (name, config) in models {
            guard let sum = Throughput.estimate(config, at: w, table: table, roofline: nil),
                let whole = try measure(name, config)
            else { continue }
            let measured = Double(w.batch * w.output) / whole.seconds(output: w.output)
            ratios.append(measured / sum.tokensPerSecond)
            print(
                String(
                    format: "  %@: measured %.0f tokens/s, sum of blocks %.0f tokens/s, measured/sum %.3f",
                    name as NSString, measured, sum.tokensPerSecond, measured / sum.tokensPerSecond))
            fflush(nil)
        }
        if let lo = ratios.min(), let hi = ratios.max() {
            print(
                String(
                    format: "measured/sum over %d models: %.3f to %.3f, mean %.3f", ratios.count, lo, hi,
                    ratios.reduce(0, +) / Double(ratios.count)))
        }
    }

    /// Every shape timed by an external backend (and the `whole` models, for --check, against the
    /// sum of their blocks), as a table of its device.
    func measureOnBackend(
        _ torch: BackendSpec, blocks: [(String, Block, ModelConfig)], outside: [(String, ModelConfig)],
        whole: [(String, ModelConfig)], at w: ServingWorkload
    ) throws -> ThroughputTable {
        print(
            "\(torch.name) on \(torch.device): \(blocks.count) block shapes, batch \(w.batch) × (\(w.input) prompt + "
                + "\(w.output) generated) tokens in \(w.dtype.rawValue)")
        fflush(nil)
        let (table, times) = try BackendTiming.table(
            backend: torch, blocks: blocks.map { ($0.0, $0.1, $0.2) }, outside: outside.map { ($0.0, $0.1) },
            models: whole.map { ($0.0, $0.1) }, at: w, repeats: repeats,
            jobDirectory: FileManager.default.temporaryDirectory.appendingPathComponent(
                "topiary-throughput-\(getpid())")
        ) {
            print($0)
            fflush(nil)
        }
        print(
            String(
                format: "device: %@; roofline: %.3g FLOP/s, %.3g bytes/s", table.machine as NSString,
                table.roofline?.flopsPerSecond ?? .nan, table.roofline?.bytesPerSecond ?? .nan))
        try checkWhole(whole, table: table, at: w) { name, _ in times[name] }
        return table
    }
}
