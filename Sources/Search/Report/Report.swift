import Foundation
import Model
import Proxy

/// The teacher's own numbers, drawn beside the candidates when the report can evaluate it.
public struct TeacherReference: Sendable {
    public var parameters: Int
    public var activeParameters: Int
    /// The study's objective on the proxy's validation windows.
    public var score: Double
    public var perLanguage: [String: Double]
    public init(parameters: Int, activeParameters: Int, score: Double, perLanguage: [String: Double]) {
        self.parameters = parameters; self.activeParameters = activeParameters; self.score = score;
        self.perLanguage = perLanguage
    }
}

/// A study as HTML pages with inline SVG plots (no scripts, no external files): the report that
/// `topiary report` writes and `topiary serve` serves. Built from the store alone (plus the
/// teacher's numbers when given).
public struct StudyReport {
    public let study: StudyStore.StudyRow
    public let summary: StudyStore.StudySummary
    public let trials: [StudyStore.TrialRow]
    public let ranked: [StudyStore.Ranked]
    public let pareto: [StudyStore.Ranked]
    public let candidates: [StudyStore.CandidateRow]
    public let metrics: [Int64: [(step: Int, name: String, value: Double)]]
    public let importance: ImportanceScores?
    public let teacher: TeacherReference?
    /// The long run predicted from the learning curves, and the check at each next rung.
    public let predictions: StudyStore.Predictions
    /// The `topiary ranking` runs recorded for this study's teacher (τ against proxy length).
    public let rankings: [StudyStore.RankingRow]
    /// Counted parameters of the budget ("total", "active" or "non_embedding").
    let budgetCount: String
    let objective: String
    /// The candidates' serving costs at the study's workloads (nil when its teacher's config
    /// cannot be read here); each has its own front in the report.
    let servingCosts: ServingCosts?

    public init(store: StudyStore, study name: String, teacher: TeacherReference? = nil) throws {
        guard let s = try store.study(named: name) else { throw SearchError.store("no study '\(name)'") }
        study = s
        summary = try store.summary(s)
        trials = try store.trials(study: s.id)
        ranked = try store.top(study: s.id)
        pareto = StudyStore.pareto(ranked)
        candidates = try store.candidates(study: s.id)
        var m: [Int64: [(step: Int, name: String, value: Double)]] = [:]
        for t in trials where t.state.isScored { m[t.id] = try store.metrics(trial: t.id) }
        metrics = m
        importance = try store.latestImportance(teacherFingerprint: s.teacherFingerprint)
        self.teacher = teacher
        predictions = try store.predictions(study: s, ranked: ranked, trials: trials, metrics: m)
        rankings = try store.rankings(teacherFingerprint: s.teacherFingerprint)
        budgetCount = s.spec["budget"]?["count"]?.string ?? "total"
        objective = s.spec["objective"]?["languages"]?.string ?? "mean"
        servingCosts = try? ServingCosts.of(s, ranked: ranked)
    }

    func counted(_ r: StudyStore.Ranked) -> Int {
        budgetCount == "active" ? r.trial.activeParameters : r.trial.parameters
    }
    func countedLabel() -> String {
        budgetCount == "active"
            ? "active parameters per token" : (budgetCount == "non_embedding" ? "parameters" : "parameters (total)")
    }
    var scoreLabel: String { "validation loss, \(objective) over languages (nats/token)" }
    var topRung: Int { ranked.first?.trial.rung ?? 0 }

    // MARK: pages

    public static let style = """
        body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
        h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
        table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
        th{background:#f3f3f3}td.l,th.l{text-align:left}
        .caption{color:#444;font-size:.9em;max-width:640px}
        svg.plot{background:#fff;display:block}
        .frame{fill:none;stroke:#888}.grid{stroke:#eee}.tick{stroke:#888}\
        .tick-label{font-size:11px;fill:#444}.axis-label{font-size:12px;fill:#222}
        .point{fill:#1f77b4;fill-opacity:.85}.point.stopped{fill:#aaa;fill-opacity:.6}.point.winner{fill:#d62728;stroke:#000}
        .teacher{fill:#2ca02c;stroke:#000}.teacher-line{stroke:#2ca02c;stroke-dasharray:4 3}.marker-label{font-size:11px;fill:#2ca02c}
        .errorbar{stroke:#1f77b4;stroke-width:1.5}.front{fill:none;stroke:#d62728;stroke-width:1.5}
        .curve{fill:none;stroke:#1f77b4;stroke-width:1.5}.curve.stopped{stroke:#bbb;stroke-width:1}.rung-point{fill:#1f77b4}
        .rank-line{fill:none;stroke:#1f77b4;stroke-width:1.5}.bar-block{fill:#1f77b4}.bar-rise{fill:#ff7f0e}
        .cell{stroke:#fff}.cell.worst{stroke:#000;stroke-width:2}.train{fill:none;stroke:#1f77b4}
        .state-failed{color:#b00}.tied{color:#a60}.diagonal{fill:none;stroke:#888;stroke-dasharray:4 3}.point.missed{fill:#ff7f0e}
        .tau-all{fill:none;stroke:#1f77b4;stroke-width:1.5}.tau-separated{fill:none;stroke:#ff7f0e;stroke-width:1.5}\
        .tau-predicted{fill:none;stroke:#2ca02c;stroke-width:1.5}
        .tau-all-point{fill:#1f77b4}.tau-separated-point{fill:#ff7f0e}.tau-predicted-point{fill:#2ca02c}
        """

    func page(title: String, body: String, refresh: Int? = nil) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(htmlEscape(title))</title>
        \(refresh.map { "<meta http-equiv=\"refresh\" content=\"\($0)\">" } ?? "")<style>\(Self.style)</style></head>
        <body>\(body)</body></html>
        """
    }

    /// The study's page. `live`: refresh every few seconds while the study runs, and show progress
    /// per rung, an ETA and failed trials (the dashboard).
    public func indexHTML(live: Bool = false, home: String? = nil) -> String {
        var b = ""
        if let home { b += "<p><a href=\"\(htmlEscape(home))\">all studies</a></p>" }
        b += "<h1>Study \(htmlEscape(study.name))</h1>"
        b +=
            "<p>\(htmlEscape(study.state)); \(summary.candidates) candidates, trials: \(summary.complete) "
            + "complete, \(summary.pruned) stopped early, "
            + "\(summary.running) running, \(summary.waiting) waiting, \(summary.failed) failed; \(summary.stepsRun) distillation steps run"
            + (summary.best.map { String(format: "; best %.4f", $0) } ?? "")
            + ". Teacher <code>\(htmlEscape(study.spec["teacher"]?.string ?? "?"))</code>"
            + (teacher.map {
                String(format: ": %d parameters (%d active), score %.4f", $0.parameters, $0.activeParameters, $0.score)
            } ?? "") + ".</p>"
        if live || study.state != "complete" { b += progressHTML() }
        b += rankingHTML()
        b += section(
            "Pareto front", paretoSVG(),
            "Each point is a candidate: its \(countedLabel()) against its proxy score (lower is better). Blue "
                + "points reached the last rung; grey ones were stopped earlier, at fewer steps, so their "
                + "scores are not comparable. Bars are 95% intervals (Student-t over replicate seeds, or a "
                + "bootstrap over validation windows). The red line joins the candidates no other beats on "
                + "both axes; the red point is the winner (click a point for its page). "
                + (teacher == nil
                    ? ""
                    : "The dashed green line is the teacher's score (its size is in the label: the candidates are a fraction of it).")
        )
        for c in ServingCosts.Cost.allCases {
            guard let values = servingCosts?.values[c] else { continue }
            b += section(
                "Pareto front against \(c.label)",
                paretoSVG(
                    id: "pareto-\(c.rawValue)", xLabel: c.label, x: { values[$0.trial.hash] },
                    front: servingCosts!.front(ranked, c), teacherMarker: false),
                "The same candidates against their \(c.label) (spec budget."
                    + (c == .throughput ? "throughput" : "workload") + "): "
                    + (c.higherIsBetter ? "right is faster. " : "left is cheaper. ")
                    + "The red line joins the candidates no other beats on both this cost and the score.")
        }
        b += section(
            "Successive-halving curves", curvesSVG(),
            "Proxy score after each rung's distillation steps, one line per candidate. Candidates stopped "
                + "early are grey: read how quickly the field separates and whether the survivors were already ahead at the first rung."
        )
        b += predictionHTML()
        b += section("Predicted against observed at the next rung", nextRungSVG(), nextRungCaption())
        b += section("Ranking against proxy length", proxyLengthSVG(), proxyLengthCaption())
        b += section(
            "Per-language loss of the finalists", heatmapSVG(),
            "Validation loss per language of the candidates at the last "
                + "rung\(teacher == nil ? "" : " minus the teacher's") (darker is worse); the outlined cell "
                + "is each candidate's worst language. Read which languages pruning hurts most."
        )
        b += section(
            "Rank stability across rungs", ranksSVG(),
            "Rank of each candidate that reached several rungs, at every rung (1 = best). Crossing lines are "
                + "rankings the longer proxy changed. "
                + rungTauText())
        b += section(
            "Teacher layer importance", layersSVG(),
            "Block importance (1 − cosine of a layer's input and output, blue) and the validation-loss rise "
                + "when the layer is skipped (orange), per teacher layer: depth pruning drops the layers with the lowest values."
        )
        b += section(
            "Teacher head importance", headsSVG(),
            "Each layer's query heads, shaded by their importance relative to the layer's most important head "
                + "(darker = more important): width pruning keeps the darkest heads of each group."
        )
        b += neuronsHTML()
        b += "<h2>Candidates and exact counts</h2>" + countsHTML()
        b += "<h2>Spec</h2><pre>\(htmlEscape(study.spec.description))</pre>"
        return page(title: "Topiary study \(study.name)", body: b, refresh: live && study.state != "complete" ? 5 : nil)
    }

    func section(_ title: String, _ svg: String, _ caption: String) -> String {
        "<h2>\(htmlEscape(title))</h2>\(svg)<p class=\"caption\">\(htmlEscape(caption))</p>"
    }

    func rankingHTML() -> String {
        var rows = ""
        for r in ranked.prefix(20) {
            let interval =
                r.interval.map {
                    String(format: " ± %.4f", $0.halfWidth) + ($0.method == "t" ? " (n=\($0.samples))" : "")
                } ?? ""
            let note = (r.trial.state == .pruned ? "stopped" : "") + (r.tiedWithBest ? " tied with the leader" : "")
            rows +=
                "<tr><td>\(r.rank)</td><td class=\"l\"><a href=\"candidates/\(r.trial.hash).html\">\(r.trial.hash)</a></td>"
                + "<td class=\"l\">\(htmlEscape(Self.architectureText(r.trial.architecture)))</td><td>\(r.trial.parameters)</td><td>"
                + "\(r.trial.activeParameters)</td>"
                + String(format: "<td>%.4f%@</td>", r.value, interval as NSString)
                + "<td class=\"difference\">\(r.differenceText)</td>"
                + "<td class=\"predicted\">\(predictions.longRun[r.trial.hash]?.prediction.text ?? "")</td>"
                + "<td>\(r.trial.fidelity)</td><td class=\"l \(r.tiedWithBest ? "tied" : "")\">\(note)</td></tr>"
        }
        let legend =
            ranked.contains { $0.tieMethod == "paired" }
            ? "<p class=\"caption\">vs leader: the difference to the leader with its 95% paired bootstrap "
                + "interval over the validation windows "
                + "both were scored on (and the replicate seeds, where there are some); tied: that interval contains 0.</p>"
            : ranked.contains { $0.tieMethod == "overlap" }
                ? "<p class=\"caption\">tied: the two candidates' own intervals overlap (these trials were "
                    + "recorded without their validation "
                    + "windows, so no paired comparison).</p>" : ""
        let header = [
            "rank", "candidate", "architecture", "parameters", "active", "score (95%)", "vs leader (paired 95%)",
            "long run, \(predictions.steps) steps (95%)", "steps", "note"
        ]
        .map { ["candidate", "architecture", "note"].contains($0) ? "<th class=\"l\">\($0)</th>" : "<th>\($0)</th>" }
        .joined()
        return "<h2>Ranking</h2><table id=\"ranking\"><tr>\(header)</tr>\(rows)</table>" + legend
            + (ranked.count > 20 ? "<p>… \(ranked.count - 20) more.</p>" : "")
    }

    /// The proxy ranking of the leader's rung beside the ranking the learning curves predict for
    /// the full distillation.
    func predictionHTML() -> String {
        let rows = ranked.filter { $0.trial.rung == topRung && $0.value.isFinite }.prefix(20)
        let predicted = rows.compactMap { r in predictions.longRun[r.trial.hash].map { (r, $0) } }
        guard !predicted.isEmpty else {
            return "<h2>Predicted long run</h2>"
                + empty(
                    "prediction",
                    "No candidate has the validation points a learning curve needs yet "
                        + "(three for at least one candidate, two for the others).")
        }
        let order = predicted.sorted { ($0.1.prediction.value, $0.0.rank) < ($1.1.prediction.value, $1.0.rank) }.map(
            \.0.trial.hash)
        var html =
            "<h2>Predicted long run</h2><table id=\"prediction\"><tr><th>proxy rank</th><th class=\"l\">candidate</th>"
            + "<th>proxy score</th><th>predicted at \(predictions.steps) steps (95%)</th><th>predicted rank</th><th>curve points</th></tr>"
        for (r, p) in predicted {
            html +=
                "<tr><td>\(r.rank)</td><td class=\"l\"><a href=\"candidates/\(r.trial.hash).html\">\(r.trial.hash)</a></td>"
                + String(format: "<td>%.4f</td>", r.value) + "<td>\(p.prediction.text)</td>"
                + "<td>\(order.firstIndex(of: r.trial.hash)! + 1)</td><td>\(p.points)</td></tr>"
        }
        html += "</table>"
        let tau = predictions.tau.map { String(format: " Kendall τ between the two rankings: %.2f.", $0) } ?? ""
        let caption =
            "Each candidate's validation curve L(t) = a + b·t^−c (one exponent c shared by the study's candidates, "
            + "weighted towards the later points) fitted to its proxy points and extrapolated to the full distillation's "
            + "\(predictions.steps) steps (export.full_distillation_steps); the interval is a residual bootstrap, which covers the "
            + "points' scatter and the exponent's uncertainty, not a curve whose form changes later (the next plot checks it)."
        return html + "<p class=\"caption\">" + htmlEscape(caption + tau) + "</p>"
    }

    func nextRungSVG() -> String {
        let checks = predictions.nextRung
        guard !checks.isEmpty else {
            return empty("next-rung", "No candidate has been predicted and then run at a next rung yet.")
        }
        let values = checks.flatMap { c in
            [c.observed, c.predicted.value] + (c.predicted.interval.map { [$0.low, $0.high] } ?? [])
        }
        let range = values.min()!...values.max()!
        var plot = SVGPlot(
            id: "next-rung", x: range, y: range, xLabel: "observed score at the next rung (\(scoreLabel))",
            yLabel: "predicted from the rung before")
        plot.line(
            [(range.lowerBound, range.lowerBound), (range.upperBound, range.upperBound)], cls: "diagonal",
            title: "predicted = observed")
        for c in checks {
            let inside = c.predicted.interval?.contains(c.observed) ?? false
            let title = String(
                format: "%@: predicted %@ at %d steps from %d, observed %.4f", c.hash, c.predicted.text, c.steps,
                c.fromSteps, c.observed)
            plot.point(
                c.observed, c.predicted.value, radius: 4, cls: inside ? "point" : "point missed", title: title,
                link: "candidates/\(c.hash).html", errorBar: c.predicted.interval.map { ($0.low, $0.high) },
                data: ["candidate": c.hash, "rung": "\(c.rung + 1)"])
        }
        return plot.render()
    }

    func nextRungCaption() -> String {
        let checks = predictions.nextRung
        var text =
            "Each point is a candidate promoted to a next rung: the score it reached there against the score its learning "
            + "curve predicted from the points up to the rung before (bars: the predicted 95% interval; on the diagonal, the "
            + "prediction was exact)."
        if predictions.withInterval > 0 {
            let errors = checks.map { abs($0.predicted.value - $0.observed) }.sorted()
            text += String(
                format: " %d of %d observed scores fell inside their interval; median absolute error %.4f nats.",
                predictions.covered, predictions.withInterval, errors[errors.count / 2])
        }
        return text
    }

    /// τ against proxy length from the `topiary ranking` runs of this teacher.
    func proxyLengthSVG() -> String {
        guard let run = rankings.last, let steps = run.result["checkpoints"]?.array?.compactMap(\.int), steps.count > 1
        else {
            return empty(
                "proxy-length",
                "No `topiary ranking` run of this teacher is recorded in the store "
                    + "(run `topiary ranking SPEC --db` with this store).")
        }
        func series(_ key: String) -> [(Double, Double)] {
            zip(steps, run.result[key]?.array ?? []).compactMap { s, v in v.double.map { (Double(s), $0) } }
        }
        let all = series("kendall_tau"), separated = series("kendall_tau_separated"),
            predicted = series("kendall_tau_predicted")
        let ys = (all + separated + predicted).map(\.1) + [1]
        var plot = SVGPlot(
            id: "proxy-length", x: 0...Double(steps.last!), y: min(0, ys.min()!)...1,
            xLabel: "proxy length (distillation steps; 0 = pruning alone)",
            yLabel: "Kendall τ against \(steps.last!) steps")
        plot.horizontalMarker(0.9, label: "τ = 0.9", cls: "teacher-line")
        for (points, cls, title) in [
            (all, "tau-all", "all pairs"), (separated, "tau-separated", "noise-separated pairs"),
            (predicted, "tau-predicted", "learning-curve prediction")
        ] where !points.isEmpty {
            plot.line(points, cls: cls, title: title)
            for p in points {
                plot.point(
                    p.0, p.1, radius: 3, cls: cls + "-point",
                    title: String(format: "%@ at %.0f steps: τ %.3f", title, p.0, p.1))
            }
        }
        return plot.render(xTicks: steps.map(Double.init), xTickLabels: steps.map(String.init))
    }

    func proxyLengthCaption() -> String {
        guard let run = rankings.last else {
            return
                "How the candidates' ranking settles as the proxy grows: `topiary ranking` measures it for a teacher."
        }
        let recommended = run.result["recommended_proxy_steps"]?.int
        let pairs = run.result["separated_pairs"]?.int
        let length =
            recommended.map {
                $0 == 0
                    ? "Pruning alone already reaches τ ≥ 0.9 over the separated pairs."
                    : "Recommended proxy length: \($0) steps, the shortest at which τ over the separated pairs reaches 0.9."
            } ?? "No shorter length reaches τ ≥ 0.9 over the separated pairs: use the longest you can afford."
        return
            "From `topiary ranking` run \"\(run.name)\" of this teacher (\(rankings.count) recorded): Kendall τ of the ranking "
            + "after each proxy length against the longest, over all pairs (blue), over the \(pairs.map(String.init) ?? "?") pairs "
            + "the longest run separates beyond the noise (orange), and of the learning-curve prediction made at that length (green). "
            + length
            + (run.result["recommended_proxy_steps_predicted"]?.int.map {
                " With the learning-curve prediction: \($0) steps."
            } ?? "")
    }

    public static func architectureText(_ a: JSON) -> String {
        let o = a.object ?? [:]
        // A heterogeneous candidate (the puzzle strategy): how many layers keep attention (with
        // which key/value groups) and an MLP (of which widths).
        if let layers = Candidate.layerVariants(a) {
            let groups = Set(layers.compactMap(\.keyValueGroups)).sorted(by: >), widths = layers.compactMap(\.mlpWidth)
            let attention = layers.filter { $0.keyValueGroups != nil }.count
            let mlp =
                widths.isEmpty
                ? "0" : "\(widths.count) F\(widths.min()!)" + (widths.min() == widths.max() ? "" : "–\(widths.max()!)")
            return
                "L\(layers.count) C\(o["hidden_size"]?.int ?? 0) H\(o["num_attention_heads"]?.int ?? 0) het: attn "
                + "\(attention)" + (groups.isEmpty ? "" : " kv\(groups.map(String.init).joined(separator: ","))")
                + " mlp \(mlp)"
        }
        // A hybrid candidate: its layers per type, the Mamba2 heads × head width, attention, MLP,
        // and mixture layers × experts, top-k, expert width + shared expert width.
        if let mamba = o["num_mamba_layers"]?.int {
            func v(_ key: String) -> Int { o[key]?.int ?? 0 }
            let moe = o["num_moe_layers"]?.int ?? 0
            return
                "C\(v("hidden_size")) M\(mamba)×\(v("mamba_num_heads"))x\(v("mamba_head_dim")) "
                + "A\(v("num_attention_layers"))×H\(v("num_attention_heads"))/\(v("num_key_value_heads"))"
                + (moe == 0 || v("num_mlp_layers") > 0 ? " F\(v("num_mlp_layers"))×\(v("intermediate_size"))" : "")
                + (moe > 0
                    ? " E\(moe)×\(v("n_routed_experts"))k\(v("num_experts_per_tok"))x\(v("moe_intermediate_size"))"
                        + "+\(v("moe_shared_expert_intermediate_size"))" : "")
        }
        // Qwen3.5: its Gated DeltaNet layers × value heads, attention layers × heads, MLP width
        // (Qwen3.5-MoE: experts, top-k, expert width + shared expert width).
        if let delta = o["num_deltanet_layers"]?.int {
            func v(_ key: String) -> Int { o[key]?.int ?? 0 }
            let mlp =
                o["num_experts"] != nil
                ? "E\(v("num_experts"))k\(v("num_experts_per_tok"))x\(v("moe_intermediate_size"))"
                    + "+\(v("shared_expert_intermediate_size"))"
                : "F\(v("intermediate_size"))"
            return
                "C\(v("hidden_size")) G\(delta)×V\(v("linear_num_value_heads")) "
                + "A\(v("num_attention_layers"))×H\(v("num_attention_heads"))/\(v("num_key_value_heads")) \(mlp)"
        }
        let experts =
            (o["num_local_experts"] ?? o["num_experts"])?.int.map { " E\($0)k\(o["num_experts_per_tok"]?.int ?? 0)" }
            ?? ""
        let width = (o["moe_intermediate_size"] ?? o["intermediate_size"])?.int ?? 0
        return
            "L\(o["num_hidden_layers"]?.int ?? 0) C\(o["hidden_size"]?.int ?? 0) "
            + "H\(o["num_attention_heads"]?.int ?? 0)/\(o["num_key_value_heads"]?.int ?? 0) F\(width)\(experts)"
    }

    // MARK: progress (dashboard)

    /// Seconds per distillation step, from the completed trials' `seconds` metric.
    var secondsPerStep: Double? {
        var total = 0.0, steps = 0
        for t in trials where t.state.isScored {
            guard let s = metrics[t.id]?.first(where: { $0.name == StudyStore.Metric.seconds.rawValue })?.value else {
                continue
            }
            let parent = t.parentTrialID.flatMap { p in trials.first { $0.id == p }?.fidelity } ?? 0
            total += s
            steps += t.fidelity - parent
        }
        return steps > 0 ? total / Double(steps) : nil
    }

    /// Steps the waiting and running trials still need.
    var remainingSteps: Int {
        trials.filter { $0.state == .waiting || $0.state == .running }.reduce(0) { sum, t in
            sum + t.fidelity - (t.parentTrialID.flatMap { p in trials.first { $0.id == p }?.fidelity } ?? 0)
        }
    }

    public var progressJSON: JSON {
        var rungs: [JSON] = []
        for rung in Set(trials.map(\.rung)).sorted() {
            let here = trials.filter { $0.rung == rung }
            func n(_ s: StudyStore.TrialState) -> Int { here.filter { $0.state == s }.count }
            rungs.append([
                "rung": JSON(rung), "steps": JSON(here.map(\.fidelity).max() ?? 0), "waiting": JSON(n(.waiting)),
                "running": JSON(n(.running)),
                "complete": JSON(n(.complete)), "stopped": JSON(n(.pruned)), "failed": JSON(n(.failed))
            ])
        }
        let eta = secondsPerStep.map { JSON($0 * Double(remainingSteps)) } ?? .null
        let failed: [JSON] = trials.filter { $0.state == .failed || ($0.error != nil && $0.state == .waiting) }.map {
            [
                "candidate": .string($0.hash), "rung": JSON($0.rung), "state": .string($0.state.rawValue),
                "attempt": JSON($0.attempt), "error": .string($0.error ?? "")
            ]
        }
        return [
            "study": .string(study.name), "state": .string(study.state), "rungs": .array(rungs),
            "remaining_steps": JSON(remainingSteps),
            "eta_seconds": eta, "errors": .array(failed)
        ]
    }

    func progressHTML() -> String {
        let p = progressJSON
        var rows = ""
        for r in p["rungs"]?.array ?? [] {
            rows +=
                "<tr>"
                + ["rung", "steps", "waiting", "running", "complete", "stopped", "failed"].map {
                    "<td>\(r[$0]?.int ?? 0)</td>"
                }.joined() + "</tr>"
        }
        var s =
            "<h2>Progress</h2><table id=\"progress\"><tr><th>rung</th><th>steps</th><th>waiting</th><th>running</th><th>complete</th>"
            + "<th>stopped</th><th>failed</th></tr>\(rows)</table>"
        if let eta = p["eta_seconds"]?.double, study.state != "complete" {
            s += String(
                format:
                    "<p id=\"eta\">%d steps to go; about %.0f s at the %.3f s/step measured so far (one worker).</p>",
                remainingSteps, eta, secondsPerStep ?? 0)
        }
        let errors = p["errors"]?.array ?? []
        if !errors.isEmpty {
            s +=
                "<h3>Failed trials</h3><table id=\"errors\"><tr><th "
                + "class=\"l\">candidate</th><th>rung</th><th class=\"l\">state</th><th>attempt</th><th class=\"l\">error</th></tr>"
            for e in errors {
                s +=
                    "<tr class=\"state-failed\"><td "
                    + "class=\"l\">\(e["candidate"]?.string ?? "")</td><td>\(e["rung"]?.int ?? 0)</td><td "
                    + "class=\"l\">\(e["state"]?.string ?? "")</td>"
                    + "<td>\(e["attempt"]?.int ?? 0)</td><td class=\"l\">\(htmlEscape(e["error"]?.string ?? ""))</td></tr>"
            }
            s += "</table>"
        }
        return s
    }

    // MARK: plots

    func empty(_ id: String, _ why: String) -> String { "<p id=\"\(id)\" class=\"empty\">\(htmlEscape(why))</p>" }

    func paretoSVG() -> String {
        paretoSVG(id: "pareto", xLabel: countedLabel(), x: { Double(counted($0)) }, front: pareto, teacherMarker: true)
    }

    /// Score against a cost `x`, every scored candidate a point, the `front` joined.
    func paretoSVG(
        id: String, xLabel: String, x: (StudyStore.Ranked) -> Double?, front: [StudyStore.Ranked], teacherMarker: Bool
    ) -> String {
        let scored = ranked.filter { $0.value.isFinite && x($0)?.isFinite == true }
        guard !scored.isEmpty else { return empty(id, "No candidate has been scored yet.") }
        let xs = scored.map { x($0)! }
        var ys = scored.flatMap { r in [r.value] + (r.interval.map { [$0.low, $0.high] } ?? []) }
        if teacherMarker, let t = teacher { ys.append(t.score) }
        var plot = SVGPlot(
            id: id, x: xs.min()!...xs.max()!, y: ys.min()!...ys.max()!, xLabel: xLabel, yLabel: scoreLabel
        )
        let line = front.filter { $0.value.isFinite && x($0)?.isFinite == true }.sorted { x($0)! < x($1)! }
        plot.line(line.map { (x($0)!, $0.value) }, cls: "front", title: "Pareto front")
        for r in scored {
            let finalist = r.trial.rung == topRung
            let cls = r.trial.id == ranked.first?.trial.id ? "point winner" : (finalist ? "point" : "point stopped")
            plot.point(
                x(r)!, r.value, radius: finalist ? 5 : 3.5, cls: cls,
                title: String(
                    format: "%@ %@: %.4f after %d steps", r.trial.hash, Self.architectureText(r.trial.architecture),
                    r.value, r.trial.fidelity),
                link: "candidates/\(r.trial.hash).html", errorBar: r.interval.map { ($0.low, $0.high) },
                data: ["candidate": r.trial.hash])
        }
        if teacherMarker, let t = teacher {
            let size = budgetCount == "active" ? t.activeParameters : t.parameters
            plot.horizontalMarker(
                t.score,
                label: String(
                    format: "teacher (%@ parameters%@): %.4f", SVGPlot.format(Double(size)),
                    budgetCount == "active" ? " active" : "", t.score), cls: "teacher-line")
        }
        return plot.render()
    }

    /// Each candidate's (steps, score) at every rung it completed.
    var curves: [(hash: String, finalist: Bool, points: [(Double, Double)])] {
        var byCandidate: [String: [StudyStore.TrialRow]] = [:]
        for t in trials where (t.state.isScored) && t.replicate == 0 && t.score != nil {
            byCandidate[t.hash, default: []].append(t)
        }
        return byCandidate.keys.sorted().map { h in
            let ts = byCandidate[h]!.sorted { $0.rung < $1.rung }
            return (h, ts.last!.rung == topRung, ts.map { (Double($0.fidelity), $0.score!) })
        }
    }

    func curvesSVG() -> String {
        let c = curves
        guard !c.isEmpty else { return empty("curves", "No candidate has been scored yet.") }
        let xs = c.flatMap { $0.points.map(\.0) }, ys = c.flatMap { $0.points.map(\.1) }
        var plot = SVGPlot(
            id: "curves", x: 0...xs.max()!, y: ys.min()!...ys.max()!, xLabel: "distillation steps", yLabel: scoreLabel)
        for (h, finalist, points) in c.sorted(by: { !$0.finalist && $1.finalist }) {
            plot.line(
                points.count == 1 ? [points[0], points[0]] : points, cls: finalist ? "curve" : "curve stopped",
                title: h, data: ["candidate": h])
            for p in points {
                plot.point(
                    p.0, p.1, radius: 2.5, cls: "rung-point",
                    title: String(format: "%@: %.4f at %.0f steps", h, p.1, p.0))
            }
        }
        return plot.render()
    }

    func heatmapSVG() -> String {
        let finalists = ranked.filter { $0.trial.rung == topRung && $0.value.isFinite }.prefix(12)
        let perLanguage: [(String, [String: Double])] = finalists.map { r in
            let values = Dictionary(
                r.metrics.filter { StudyStore.Metric.isLanguage($0.key) }
                    .map { (StudyStore.Metric.languageCode($0.key), $0.value) }, uniquingKeysWith: { a, _ in a })
            return (r.trial.hash, values)
        }
        let languages = Array(Set(perLanguage.flatMap { $0.1.keys })).sorted()
        guard !languages.isEmpty else { return empty("languages", "No per-language scores yet.") }
        let cell = 40.0, labelWidth = 110.0, header = 30.0
        let rows = perLanguage.map { row -> (String, [Double?]) in
            (row.0, languages.map { l in row.1[l].map { $0 - (teacher?.perLanguage[l] ?? 0) } })
        }
        let values = rows.flatMap { $0.1.compactMap { $0 } }
        let (lo, hi) = (values.min() ?? 0, values.max() ?? 1)
        let width = labelWidth + cell * Double(languages.count) + 20, height = header + cell * Double(rows.count) + 40
        var s = String(
            format:
                "<svg id=\"languages\" class=\"plot\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
                + "height=\"%.0f\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
            width, height, width, height)
        for (j, l) in languages.enumerated() {
            s +=
                String(
                    format: "<text class=\"tick-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
                    labelWidth + cell * (Double(j) + 0.5), header - 8) + htmlEscape(l) + "</text>"
        }
        for (i, row) in rows.enumerated() {
            let y = header + cell * Double(i)
            s +=
                String(
                    format: "<text class=\"tick-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", labelWidth - 6,
                    y + cell / 2 + 4) + row.0 + "</text>"
            let worst = row.1.enumerated().compactMap { j, v in v.map { (j, $0) } }.max { $0.1 < $1.1 }?.0
            for (j, v) in row.1.enumerated() {
                guard let v else { continue }
                let t = hi > lo ? (v - lo) / (hi - lo) : 0.5
                let shade = Int(245 - 200 * t)
                s += String(
                    format:
                        "<rect class=\"cell%@\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                        + "fill=\"rgb(%d,%d,255)\"><title>%@ %@: %.4f</title></rect>",
                    j == worst ? " worst" : "", labelWidth + cell * Double(j), y, cell, cell, shade, shade,
                    row.0, htmlEscape(languages[j]), v)
            }
        }
        s += String(
            format: "<text class=\"axis-label\" x=\"%.1f\" y=\"%.1f\">%@</text>", labelWidth, height - 12,
            htmlEscape(
                teacher == nil
                    ? "validation loss (nats/token), light \(SVGPlot.format(lo)) to dark \(SVGPlot.format(hi))"
                    : "loss above the teacher's (nats/token), light \(SVGPlot.format(lo)) to dark \(SVGPlot.format(hi))"
            ))
        return s + "</svg>"
    }

    /// Rank of each candidate among those scored at each rung.
    var rungRanks: [Int: [String: Int]] {
        var out: [Int: [String: Int]] = [:]
        for rung in Set(trials.map(\.rung)) {
            let scored = trials.filter {
                $0.rung == rung && $0.replicate == 0 && $0.score != nil && ($0.state.isScored)
            }
            .sorted { ($0.score!, $0.id) < ($1.score!, $1.id) }
            out[rung] = Dictionary(uniqueKeysWithValues: scored.enumerated().map { ($1.hash, $0 + 1) })
        }
        return out
    }

    func rungTauText() -> String {
        let rungs = Set(trials.map(\.rung)).sorted()
        guard rungs.count > 1 else { return "The study has a single rung." }
        var parts: [String] = []
        for (a, b) in zip(rungs, rungs.dropFirst()) {
            let both = trials.filter { $0.rung == b && $0.replicate == 0 && $0.score != nil }.map(\.hash)
            func score(_ h: String, _ r: Int) -> Double? {
                trials.first { $0.hash == h && $0.rung == r && $0.replicate == 0 }?.score
            }
            let pairs = both.compactMap { h in score(h, a).flatMap { x in score(h, b).map { (x, $0) } } }
            if let tau = RankStatistics.kendallTau(pairs.map(\.0), pairs.map(\.1)) {
                parts.append(
                    String(
                        format: "Kendall τ between rungs %d and %d over the %d candidates in both: %.2f", a, b,
                        pairs.count, tau))
            }
        }
        return parts.isEmpty ? "" : parts.joined(separator: "; ") + "."
    }

    func ranksSVG() -> String {
        let ranks = rungRanks, rungs = ranks.keys.sorted()
        let multi = Set(trials.filter { $0.rung > 0 && $0.replicate == 0 }.map(\.hash)).sorted()
        guard rungs.count > 1, !multi.isEmpty else {
            return empty("ranks", "Rank stability needs candidates scored at two rungs or more.")
        }
        let maxRank = ranks.values.flatMap(\.values).max() ?? 1
        let steps = rungs.map { r in Double(trials.filter { $0.rung == r }.map(\.fidelity).max() ?? 0) }
        var plot = SVGPlot(
            id: "ranks", x: 0...Double(rungs.count - 1), y: 1...Double(maxRank), xLabel: "rung (distillation steps)",
            yLabel: "rank (1 = best, at the top)")
        plot.invertY = true
        plot.integerY = true
        for h in multi {
            let pts = rungs.enumerated().compactMap { i, r in ranks[r]?[h].map { (Double(i), Double($0)) } }
            plot.line(pts, cls: "rank-line", title: h, data: ["candidate": h])
        }
        return plot.render(
            xTicks: rungs.indices.map(Double.init),
            xTickLabels: rungs.indices.map { "\(rungs[$0]) (\(Int(steps[$0])))" })
    }

    func layersSVG() -> String {
        guard let imp = importance, !imp.blockImportance.isEmpty else {
            return empty("layers", "No importance scores are recorded for this teacher.")
        }
        let L = imp.blockImportance.count
        let ys = imp.blockImportance + imp.layerLossRise
        var plot = SVGPlot(
            id: "layers", x: -0.5...(Double(L) - 0.5), y: min(0, ys.min()!)...ys.max()!, xLabel: "teacher layer",
            yLabel: "block importance / loss rise (nats)", pad: 0)
        for l in 0..<L {
            plot.bar(
                x0: Double(l) - 0.4, x1: Double(l), y: imp.blockImportance[l], cls: "bar-block",
                title: String(format: "layer %d: block importance %.4f", l, imp.blockImportance[l]))
            // The loss rise is computed only when depth is searched.
            if imp.layerLossRise.count == L {
                plot.bar(
                    x0: Double(l), x1: Double(l) + 0.4, y: imp.layerLossRise[l], cls: "bar-rise",
                    title: String(format: "layer %d: loss rise %.4f", l, imp.layerLossRise[l]))
            }
        }
        return plot.render(xTicks: (0..<L).map(Double.init), xTickLabels: (0..<L).map(String.init))
    }

    func headsSVG() -> String {
        guard let imp = importance, !imp.heads.isEmpty, !imp.heads[0].isEmpty else {
            return empty("heads", "No head importance is recorded for this teacher.")
        }
        let L = imp.heads.count, H = imp.heads[0].count, cell = 28.0, left = 70.0, top = 24.0
        let width = left + cell * Double(H) + 20, height = top + cell * Double(L) + 30
        var s = String(
            format:
                "<svg id=\"heads\" class=\"plot\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" "
                + "role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
            width, height, width, height)
        for h in 0..<H {
            s += String(
                format: "<text class=\"tick-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>",
                left + cell * (Double(h) + 0.5), top - 8, h)
        }
        for l in 0..<L {
            let row = imp.heads[l], m = row.max() ?? 1
            s += String(
                format: "<text class=\"tick-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">layer %d</text>",
                left - 6, top + cell * (Double(l) + 0.5) + 4, l)
            for h in 0..<row.count {
                let t = m > 0 ? row[h] / m : 0, shade = Int(245 - 200 * t)
                s += String(
                    format:
                        "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                        + "fill=\"rgb(%d,%d,255)\"><title>layer %d head %d: %.4g</title></rect>",
                    left + cell * Double(h), top + cell * Double(l), cell, cell, shade, shade, l, h, row[h])
            }
        }
        s += String(format: "<text class=\"axis-label\" x=\"%.1f\" y=\"%.1f\">query head</text>", left, height - 8)
        return s + "</svg>"
    }

    func neuronsHTML() -> String {
        guard let imp = importance, !imp.neurons.isEmpty else { return "" }
        var rows = ""
        for (l, n) in imp.neurons.enumerated() where !n.isEmpty {
            let s = n.sorted()
            func q(_ p: Double) -> Double { s[min(s.count - 1, Int(p * Double(s.count - 1)))] }
            rows += String(
                format:
                    "<tr><td>%d</td><td>%d</td><td>%.4g</td><td>%.4g</td><td>%.4g</td><td>%.4g</td><td>%.4g</td></tr>",
                l, s.count, q(0), q(0.1), q(0.5), q(0.9), q(1))
        }
        return
            "<h2>Teacher neuron importance</h2><table "
            + "id=\"neurons\"><tr><th>layer</th><th>neurons</th><th>min</th><th>10%</th><th>median</th><th>90%</th><th>max</th></tr>"
            + "\(rows)</table>"
            + "<p class=\"caption\">Quantiles of the MLP neurons' importance per layer (for mixtures, every "
            + "expert's neurons): a long low tail is width that prunes cheaply.</p>"
    }

    func countsHTML() -> String {
        let byHash = Dictionary(uniqueKeysWithValues: candidates.map { ($0.hash, $0) })
        var rows = ""
        for r in ranked.prefix(20) {
            guard let c = byHash[r.trial.hash] else { continue }
            rows +=
                "<tr><td class=\"l\"><a href=\"candidates/\(c.hash).html\">\(c.hash)</a></td><td "
                + "class=\"l\">\(htmlEscape(Self.architectureText(c.architecture)))</td>"
                + "<td>\(c.parameters)</td><td>\(c.nonEmbeddingParameters)</td><td>\(c.activeParameters)</td><td>"
                + "\(c.flopsPerToken)</td></tr>"
        }
        return
            "<table id=\"counts\"><tr><th class=\"l\">candidate</th><th "
            + "class=\"l\">architecture</th><th>parameters</th><th>non-embedding</th><th>active</th><th>FLOPs/token</th></tr>"
            + "\(rows)</table>"
    }

    // MARK: candidate pages

    /// One candidate's page: architecture, exact counts, every trial with its interval, the
    /// per-language losses of its best trial and its training-loss curve. Nil for an unknown hash.
    public func candidateHTML(_ hash: String, live: Bool = false) -> String? {
        guard let c = candidates.first(where: { $0.hash == hash }) else { return nil }
        let ts = trials.filter { $0.hash == hash }
        var b = "<p><a href=\"../index.html\">study \(htmlEscape(study.name))</a></p><h1>Candidate \(hash)</h1>"
        b +=
            "<p>\(htmlEscape(Self.architectureText(c.architecture))): \(c.parameters) parameters, "
            + "\(c.nonEmbeddingParameters) non-embedding, \(c.activeParameters) active, \(c.flopsPerToken) FLOPs/token.</p>"
        if let r = ranked.first(where: { $0.trial.hash == hash }) {
            b +=
                String(format: "<p id=\"score\">Rank %d, score %.4f", r.rank, r.value)
                + (r.interval.map {
                    String(
                        format: " (95%% interval %.4f–%.4f, %@)", $0.low, $0.high,
                        $0.method == "t" ? "Student-t over \($0.samples) seeds" : "bootstrap over validation windows")
                } ?? "")
                + (r.tiedWithBest ? ", tied with the leader" : "") + ".</p>"
        }
        b +=
            "<h2>Trials</h2><table id=\"trials\"><tr><th>rung</th><th>replicate</th><th>steps</th><th "
            + "class=\"l\">state</th><th>attempt</th><th class=\"l\">worker</th><th>score</th><th class=\"l\">error</th></tr>"
        for t in ts {
            b +=
                "<tr class=\"state-\(t.state)\"><td>\(t.rung)</td><td>\(t.replicate)</td><td>\(t.fidelity)</td><td "
                + "class=\"l\">\(t.state)</td><td>\(t.attempt)</td>"
                + "<td class=\"l\">\(htmlEscape(t.worker ?? "–"))</td>"
                + "<td>\(t.score.map { String(format: "%.4f", $0) } ?? "–")</td><td class=\"l\">\(htmlEscape(t.error ?? ""))</td></tr>"
        }
        b += "</table>"
        if let best = ts.filter({ $0.replicate == 0 && $0.score != nil }).max(by: { $0.rung < $1.rung }),
            let m = metrics[best.id]
        {
            let langs = m.filter { StudyStore.Metric.isLanguage($0.name) }
            if !langs.isEmpty {
                b +=
                    "<h2>Per-language validation loss (rung \(best.rung), \(best.fidelity) steps)</h2><table "
                    + "id=\"per-language\"><tr><th class=\"l\">language</th><th>loss</th>\(teacher == nil ? "" : "<th>teacher</th>")</tr>"
                for x in langs {
                    let lang = StudyStore.Metric.languageCode(x.name)
                    b +=
                        String(format: "<tr><td class=\"l\">%@</td><td>%.4f</td>", lang, x.value)
                        + (teacher?.perLanguage[lang].map { String(format: "<td>%.4f</td>", $0) } ?? "") + "</tr>"
                }
                b += "</table>"
            }
            var curve: [(Double, Double)] = []
            for t in ts.filter({ $0.replicate == 0 }).sorted(by: { $0.rung < $1.rung }) {
                curve += (metrics[t.id] ?? []).filter { $0.name == StudyStore.Metric.trainLoss.rawValue }.map {
                    (Double($0.step), $0.value)
                }
            }
            if curve.count > 1 {
                var plot = SVGPlot(
                    id: "train", x: 0...curve.map(\.0).max()!, y: curve.map(\.1).min()!...curve.map(\.1).max()!,
                    xLabel: "distillation step", yLabel: "training loss (distillation objective)")
                plot.line(curve, cls: "train", title: "training loss")
                b +=
                    "<h2>Training curve</h2>" + plot.render()
                    + "<p class=\"caption\">The distillation loss during the proxy run, every 10 steps, "
                    + "across the rungs this candidate reached.</p>"
            }
        }
        b += "<h2>Architecture</h2><pre>\(htmlEscape(c.architecture.description))</pre>"
        return page(title: "Topiary candidate \(hash)", body: b, refresh: live && study.state != "complete" ? 5 : nil)
    }

    /// Writes `dir/index.html` and `dir/candidates/<hash>.html` for every candidate, atomically.
    public func write(to dir: URL) throws -> URL {
        let pages = dir.appendingPathComponent("candidates")
        try FileManager.default.createDirectory(at: pages, withIntermediateDirectories: true)
        for c in candidates {
            if let html = candidateHTML(c.hash) {
                try AtomicFile.write(Data(html.utf8), to: pages.appendingPathComponent("\(c.hash).html"))
            }
        }
        let index = dir.appendingPathComponent("index.html")
        try AtomicFile.write(Data(indexHTML().utf8), to: index)
        return index
    }
}

/// The page listing every study of a store (the dashboard's home).
public func studiesHTML(_ store: StudyStore) throws -> String {
    var rows = ""
    for s in try store.studies() {
        let sum = try store.summary(s)
        let link = htmlEscape(s.name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? s.name)
        rows +=
            "<tr><td class=\"l\"><a href=\"studies/\(link)/\">\(htmlEscape(s.name))</a></td>"
            + "<td class=\"l\">\(s.state)</td><td>\(sum.candidates)</td><td>\(sum.complete)</td><td>\(sum.pruned)</td><td>"
            + "\(sum.running)</td><td>\(sum.waiting)</td><td>\(sum.failed)</td>"
            + "<td>\(sum.best.map { String(format: "%.4f", $0) } ?? "–")</td></tr>"
    }
    let body =
        "<h1>Topiary studies</h1><p><code>\(htmlEscape(StudyStore.redacted(store.path)))</code></p><table "
        + "id=\"studies\"><tr><th class=\"l\">study</th><th "
        + "class=\"l\">state</th><th>candidates</th><th>complete</th><th>stopped</th><th>running</th><th>waiting</th><th>failed</th>"
        + "<th>best</th></tr>\(rows)</table>"
    return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Topiary studies</title><meta http-equiv="refresh"\
         content="10"><style>\(StudyReport.style)</style></head>
        <body>\(body)</body></html>
        """
}
