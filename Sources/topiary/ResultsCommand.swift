import ArgumentParser
import Foundation
import Model
import Proxy
import Search

struct ResultsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "results", abstract: "Query the study store.",
        subcommands: [
            ResultsStudies.self, ResultsTop.self, ResultsShow.self, ResultsPareto.self, ResultsCompare.self,
            ResultsDelete.self
        ])
}

struct FormatOption: ParsableArguments {
    @Option(help: "table, csv or json (default: table on a terminal, csv otherwise).") var format: String?
    var resolved: String { format ?? (isatty(STDOUT_FILENO) != 0 ? "table" : "csv") }
    func validate() throws {
        if let format, !["table", "csv", "json"].contains(format) {
            throw ValidationError("--format takes table, csv or json")
        }
    }
}

/// Prints rows as an aligned table, CSV or a JSON array of objects.
func printRows(_ header: [String], _ rows: [[JSON]], format: String) {
    switch format {
    case "json":
        printJSON(.array(rows.map { .object(Dictionary(uniqueKeysWithValues: zip(header, $0).map { ($0, $1) })) }))
    case "csv":
        print(header.joined(separator: ","))
        for r in rows {
            print(
                r.map { v in
                    let s = v.string ?? v.description;
                    return s.contains(",") || s.contains("\"")
                        ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
                }.joined(separator: ","))
        }
    default:
        let cells = rows.map {
            $0.map { v -> String in
                if let d = v.double, v.int == nil { return String(format: "%.4f", d) }
                return v.string ?? v.description
            }
        }
        let widths = header.indices.map { i in max(header[i].count, cells.map { $0[i].count }.max() ?? 0) }
        print(zip(header, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        for r in cells {
            print(zip(r, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}

func requireStudy(_ st: StudyStore, _ name: String) throws -> StudyStore.StudyRow {
    guard let s = try st.study(named: name) else {
        let known = try st.studies().map(\.name)
        throw SearchError.store(
            "no study '\(name)'\(known.isEmpty ? "" : " (studies: \(known.joined(separator: ", ")))")")
    }
    return s
}

func architectureText(_ a: JSON) -> String { StudyReport.architectureText(a) }

struct ResultsStudies: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "studies", abstract: "Every study with its progress and best score.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var format: FormatOption
    func run() throws {
        let st = try store.open(.read)
        let rows = try st.studies().map { try st.summary($0) }.map { s -> [JSON] in
            [
                .string(s.study.name), .string(s.study.state), JSON(s.candidates), JSON(s.complete), JSON(s.pruned),
                JSON(s.running), JSON(s.waiting),
                JSON(s.failed), s.best.map { JSON($0) } ?? .null, JSON(s.stepsRun),
                .string(s.workers.joined(separator: " "))
            ]
        }
        printRows(
            [
                "study", "state", "candidates", "complete", "pruned", "running", "waiting", "failed", "best", "steps",
                "workers"
            ], rows, format: format.resolved)
    }
}

struct ResultsTop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top", abstract: "A study's candidates, best first (ties within --noise shown as ties).")
    @Argument(help: "Study name.") var study: String
    @Option(help: "Rank by this metric (default: the study's objective), e.g. val_loss/de.") var by: String?
    @Option(parsing: .unconditional, help: "Show at most K.") var limit: Int?
    @Option(parsing: .unconditional, help: "Scores closer than this are ties (nats).") var noise = 0.0
    @OptionGroup var store: StoreOptions
    @OptionGroup var format: FormatOption

    func validate() throws {
        if let limit { try requireRange("--limit", limit, 1...Int.max) }
        try requireRange("--noise", noise, 0...1e6, "nats")
    }

    func run() throws {
        let st = try store.open(.read)
        try Self.printTop(
            st, study: try requireStudy(st, study), metric: by, limit: limit, format: format.resolved, noise: noise)
    }

    /// The ranking with each score's 95% interval: `score ± half-width` in a table (t over
    /// replicates, marked with their count, or a bootstrap over validation windows), and
    /// `interval`, `interval_method`, `replicates`, `replicate_scores`, `tied_with_best` in JSON
    /// (interval columns in CSV), and the difference to the leader with its paired 95% interval
    /// (`difference`, `difference_interval`, `difference_method`, `tie_method`). "tied" marks a
    /// candidate whose paired interval contains 0 (or, for trials recorded without their
    /// windows, whose interval overlaps the leader's; the legend says which). Beside it, the
    /// score each candidate's learning curve predicts at the full-distillation length, with its
    /// interval (`predicted`, `predicted_interval`, `predicted_at_steps`).
    static func printTop(
        _ st: StudyStore, study row: StudyStore.StudyRow, metric: String?, limit: Int?, format: String, noise: Double
    ) throws {
        let study = row.id
        let ranked = try st.top(study: study, metric: metric, limit: limit, noise: noise)
        // The predicted ranking's τ is over the whole ranking: a limited one is not enough.
        let predictions = metric == nil ? try st.predictions(study: row, ranked: limit == nil ? ranked : nil) : nil
        func predicted(_ r: StudyStore.Ranked) -> LearningCurve.Prediction? {
            predictions?.longRun[r.trial.hash]?.prediction
        }
        let showPredicted = ranked.contains { predicted($0) != nil }
        func note(_ r: StudyStore.Ranked) -> String {
            var parts: [String] = []
            if r.trial.state == .pruned { parts.append("stopped") }
            if r.tiedWithBest { parts.append("tied") } else if r.tiedWithPrevious { parts.append("tie") }
            return parts.joined(separator: ", ")
        }
        let base = ["rank", "candidate", "architecture", "parameters", "active"]
        switch format {
        case "table":
            let rows = ranked.map { r -> [JSON] in
                var score = String(format: "%.4f", r.value)
                if let i = r.interval {
                    score += String(format: " ± %.4f", i.halfWidth) + (i.method == "t" ? " (n=\(i.samples))" : "")
                }
                var row: [JSON] = [
                    JSON(r.rank), .string(r.trial.hash), .string(architectureText(r.trial.architecture)),
                    JSON(r.trial.parameters),
                    JSON(r.trial.activeParameters), .string(score), .string(r.differenceText)
                ]
                if showPredicted { row.append(.string(predicted(r)?.text ?? "")) }
                return row + [JSON(r.trial.fidelity), .string(note(r))]
            }
            let longRun = predictions.map { "long run (\($0.steps) steps)" }
            printRows(
                base + ["score (95%)", "vs leader (paired 95%)"] + (showPredicted ? [longRun!] : []) + [
                    "steps", "note"
                ], rows, format: format)
            if ranked.contains(where: { $0.interval != nil }) {
                print(
                    "± is each score's own 95% interval: Student-t over replicate seeds (n=…), otherwise a "
                        + "bootstrap over the validation windows"
                )
            }
            if ranked.contains(where: { $0.tieMethod == "paired" }) {
                let seeds = ranked.contains { $0.differenceInterval?.method.contains("seeds") == true }
                print(
                    "vs leader: the difference to the leader with its 95% paired bootstrap interval over the "
                        + "validation windows both were scored on"
                        + (seeds ? " and the replicate seeds" : "") + "; tied: that interval contains 0")
            }
            if ranked.contains(where: { $0.tieMethod == "overlap" }) {
                print(
                    "tied (trials recorded without their validation windows, by an older Topiary): "
                        + "the two candidates' own intervals overlap — wider than a paired comparison")
            }
            if showPredicted, let predictions {
                print(
                    "long run: the score each candidate's learning curve (L(t) = a + b·t^-c, fitted to its validation points) predicts at "
                        + "\(predictions.steps) steps (export.full_distillation_steps), with a 95% residual-bootstrap interval"
                        + (predictions.tau.map {
                            String(format: "; Kendall τ between the proxy's ranking and the predicted one: %.2f", $0)
                        } ?? "")
                        + (predictions.withInterval > 0
                            ? "; predicted vs observed at the next rung: \(predictions.covered) of "
                                + "\(predictions.withInterval) inside the interval"
                            : ""))
            }
        default:
            let rows = ranked.map { r -> [JSON] in
                let interval: JSON = r.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null
                var row: [JSON] = [
                    JSON(r.rank), .string(r.trial.hash),
                    format == "json" ? r.trial.architecture : .string(architectureText(r.trial.architecture)),
                    JSON(r.trial.parameters), JSON(r.trial.activeParameters), JSON(r.value)
                ]
                row +=
                    format == "json"
                    ? [interval] : [r.interval.map { JSON($0.low) } ?? .null, r.interval.map { JSON($0.high) } ?? .null]
                row += [r.interval.map { .string($0.method) } ?? .null, JSON(r.replicateScores.count)]
                if format == "json" { row.append(.array(r.replicateScores.map { JSON($0) })) }
                row += [r.difference.map { JSON($0) } ?? .null]
                row +=
                    format == "json"
                    ? [r.differenceInterval.map { [JSON($0.low), JSON($0.high)] } ?? .null]
                    : [
                        r.differenceInterval.map { JSON($0.low) } ?? .null,
                        r.differenceInterval.map { JSON($0.high) } ?? .null
                    ]
                row += [
                    r.differenceInterval.map { .string($0.method) } ?? .null, r.tieMethod.map { .string($0) } ?? .null
                ]
                row += [.bool(r.tiedWithBest)]
                let p = predicted(r)
                row += [p.map { JSON($0.value) } ?? .null]
                row +=
                    format == "json"
                    ? [p?.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null]
                    : [p?.interval.map { JSON($0.low) } ?? .null, p?.interval.map { JSON($0.high) } ?? .null]
                row += [p == nil ? .null : JSON(predictions!.steps)]
                row += [JSON(r.trial.fidelity), .string(note(r))]
                return row
            }
            let intervalColumns = format == "json" ? ["interval"] : ["interval_low", "interval_high"]
            let replicateColumns = format == "json" ? ["replicates", "replicate_scores"] : ["replicates"]
            let differenceColumns =
                format == "json"
                ? ["difference", "difference_interval"] : ["difference", "difference_low", "difference_high"]
            let predictedColumns =
                format == "json"
                ? ["predicted", "predicted_interval"] : ["predicted", "predicted_low", "predicted_high"]
            printRows(
                base + ["score"] + intervalColumns + ["interval_method"] + replicateColumns + differenceColumns + [
                    "difference_method", "tie_method"
                ]
                    + ["tied_with_best"] + predictedColumns + ["predicted_at_steps", "steps", "note"], rows,
                format: format)
        }
    }
}

struct ResultsShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "One candidate: architecture, counts, every trial, curve and per-language scores.")
    @Argument(help: "Study name.") var study: String
    @Argument(help: "Candidate hash (a unique prefix is enough).") var candidate: String
    @OptionGroup var store: StoreOptions
    @OptionGroup var format: FormatOption

    func run() throws {
        let st = try store.open(.read)
        let s = try requireStudy(st, study)
        let trials = try st.trials(study: s.id).filter { $0.hash.hasPrefix(candidate) }
        guard let first = trials.first else {
            throw SearchError.store("no candidate '\(candidate)' in study '\(study)'")
        }
        guard Set(trials.map(\.hash)).count == 1 else {
            throw SearchError.store("'\(candidate)' matches several candidates; give more of the hash")
        }
        var out: [String: JSON] = [
            "candidate": .string(first.hash), "architecture": first.architecture, "parameters": JSON(first.parameters),
            "active_parameters": JSON(first.activeParameters)
        ]
        out["trials"] = .array(
            try trials.map { t in
                let m = try st.metrics(trial: t.id)
                return [
                    "rung": JSON(t.rung), "replicate": JSON(t.replicate), "steps": JSON(t.fidelity),
                    "state": .string(t.state.rawValue), "attempt": JSON(t.attempt),
                    "worker": t.worker.map { .string($0) } ?? .null,
                    "score": t.score.map { JSON($0) } ?? .null, "error": t.error.map { .string($0) } ?? .null,
                    "metrics": .array(
                        m.map { ["step": JSON($0.step), "name": .string($0.name), "value": JSON($0.value)] })
                ]
            })
        if format.resolved == "json" { printJSON(.object(out)); return }
        print(
            "candidate \(first.hash): \(architectureText(first.architecture)), \(first.parameters) parameters "
                + "(\(first.activeParameters) active)"
        )
        for t in trials {
            print(
                "rung \(t.rung)\(t.replicate > 0 ? " replicate \(t.replicate)" : ""): \(t.fidelity) steps, "
                    + "\(t.state)\(t.worker.map { " on \($0)" } ?? ""), attempt \(t.attempt), score "
                    + "\(t.score.map { String(format: "%.4f", $0) } ?? "–")\(t.error.map { ", error: \($0)" } ?? "")"
            )
            let m = try st.metrics(trial: t.id)
            let finals = m.filter { $0.name.hasPrefix("val") || $0.name == StudyStore.Metric.seconds.rawValue }.map {
                "\($0.name) \(String(format: "%.4f", $0.value))"
            }
            if !finals.isEmpty { print("  " + finals.joined(separator: ", ")) }
            let curve = m.filter { $0.name == StudyStore.Metric.trainLoss.rawValue }.map {
                "\($0.step):\(String(format: "%.3f", $0.value))"
            }
            if !curve.isEmpty { print("  train loss " + curve.joined(separator: " ")) }
        }
    }
}

struct ResultsPareto: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pareto",
        abstract: "Candidates no other beats on every given cost (default: parameters) and the score.",
        discussion:
            "--cost memory, kv_cache or decode_flops counts each candidate at the study's budget.workload "
            + "(docs/search.md, costs at a serving workload), from the teacher's config.json; --cost throughput "
            + "estimates its generated tokens/s at budget.throughput (the block table, else the roofline; "
            + "more is better) and marks an estimate with a part from the roofline by *. Several costs, "
            + "comma-separated (--cost memory,throughput), give the front over all of them and the score.")
    @Argument(help: "Study name.") var study: String
    @Option(help: "The costs, comma-separated: parameters, active, memory, kv_cache, decode_flops, throughput.")
    var cost = "parameters"
    @OptionGroup var store: StoreOptions
    @OptionGroup var format: FormatOption

    static let costs = ["parameters", "active", "memory", "kv_cache", "decode_flops", "throughput"]
    var names: [String] { cost.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        for n in names where !Self.costs.contains(n) {
            throw ValidationError("--cost: '\(n)' is not one of \(Self.costs.joined(separator: ", "))")
        }
        guard !names.isEmpty, Set(names).count == names.count else {
            throw ValidationError("--cost takes one or more distinct costs, comma-separated")
        }
    }

    func run() throws {
        let st = try store.open(.read)
        let row = try requireStudy(st, study)
        let ranked = try st.top(study: row.id)
        let serving = names.contains { ServingCosts.Cost(rawValue: $0) != nil }
        let costs = serving ? try ServingCosts.of(row, ranked: ranked) : nil
        // Per cost: what the front minimises and what a row shows.
        var minimised: [(StudyStore.Ranked) -> Double] = []
        var shown: [(StudyStore.Ranked) -> JSON] = []
        for n in names {
            switch n {
            case "parameters": minimised.append { Double($0.trial.parameters) }
            case "active": minimised.append { Double($0.trial.activeParameters) }
            default:
                let c = ServingCosts.Cost(rawValue: n)!
                guard let v = costs?.values[c] else {
                    throw SearchError.store(
                        "study '\(study)': its spec names no "
                            + (c == .throughput ? "budget.throughput to estimate" : "budget.workload to count")
                            + " --cost \(n) at")
                }
                minimised.append { c.higherIsBetter ? -(v[$0.trial.hash] ?? .nan) : (v[$0.trial.hash] ?? .nan) }
                if c == .throughput {
                    let estimated = costs?.estimated ?? [:]
                    shown.append { r in
                        guard let x = v[r.trial.hash] else { return .null }
                        // A number in csv and json; the table marks a rate with a roofline part.
                        return format.resolved != "table"
                            ? JSON((x * 10).rounded() / 10)
                            : .string(String(format: "%.0f", x) + (estimated[r.trial.hash] == true ? "*" : ""))
                    }
                } else {
                    shown.append { r in v[r.trial.hash].map { JSON(Int($0)) } ?? .null }
                }
            }
        }
        let extra = names.filter { !["parameters", "active"].contains($0) }
        let rows = StudyStore.pareto(ranked, costs: minimised).map { r -> [JSON] in
            [
                .string(r.trial.hash), .string(architectureText(r.trial.architecture)), JSON(r.trial.parameters),
                JSON(r.trial.activeParameters)
            ] + shown.map { $0(r) } + [JSON(r.trial.score ?? .nan)]
        }
        printRows(
            ["candidate", "architecture", "parameters", "active"] + extra + ["score"], rows, format: format.resolved)
    }
}

struct ResultsCompare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare", abstract: "Two studies side by side: progress, compute and their best candidates.")
    @Argument(help: "First study.") var a: String
    @Argument(help: "Second study.") var b: String
    @OptionGroup var store: StoreOptions
    @OptionGroup var format: FormatOption
    func run() throws {
        let st = try store.open(.read)
        let studies = try [a, b].map { try requireStudy(st, $0) }
        let bests = try studies.map { try st.top(study: $0.id, limit: 1).first }
        // The second best against the first, paired over the validation windows both were scored
        // on (the same corpus and evaluation settings give the same windows), under the first
        // study's objective; none when their windows differ.
        let objective = Objective(rawValue: studies[0].spec["objective"]?["languages"]?.string ?? "mean") ?? .mean
        var difference: (value: Double, interval: Noise.Interval)?
        if let x = bests[0]?.trial, let y = bests[1]?.trial {
            let w = try st.windows(trials: [x.id, y.id])
            if let wx = w[x.id], let wy = w[y.id], wx.windows.mapValues(\.count) == wy.windows.mapValues(\.count),
                let d = Noise.pairedDifference(
                    [wy], [wx], seed: Noise.seed(x.hash, y.hash, "compare"), score: objective.value)
            {
                difference = (objective.value(wy) - objective.value(wx), d)
            }
        }
        let rows = zip(studies, bests).enumerated().map { i, pair -> [JSON] in
            let (s, best) = pair
            let sum = (try? st.summary(s))
            var row: [JSON] = [
                .string(s.name), JSON(sum?.candidates ?? 0), JSON(sum?.stepsRun ?? 0), .string(best?.trial.hash ?? "–"),
                .string(best.map { architectureText($0.trial.architecture) } ?? "–"),
                best?.trial.score.map { JSON($0) } ?? .null
            ]
            if i == 1, let d = difference {
                row += [JSON(d.value), JSON(d.interval.low), JSON(d.interval.high)]
            } else {
                row += [.null, .null, .null]
            }
            return row
        }
        printRows(
            [
                "study", "candidates", "distillation steps", "best", "architecture", "score",
                "difference to the first", "difference low (paired 95%)", "difference high"
            ], rows, format: format.resolved)
    }
}

struct ResultsDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete a study and everything it recorded from the store (to rerun it from scratch).",
        discussion:
            "Trial checkpoints on disk (results/<study>/trials) are left; delete them by hand if you want the space.")
    @Argument(help: "Study name.") var study: String
    @Flag(help: "Delete even if trials are running (their workers will fail to record).") var force = false
    @OptionGroup var store: StoreOptions
    func run() throws {
        let st = try store.open(.write)
        _ = try requireStudy(st, study)
        let trials = try st.deleteStudy(named: study, evenIfRunning: force)
        print("deleted study \(study) and its \(trials) trials")
    }
}
