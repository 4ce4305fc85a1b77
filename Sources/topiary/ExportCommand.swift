import ArgumentParser
import Foundation
import Model
import Search

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract:
            "Write a study's best candidates for full distillation: pruned HF checkpoint, proxy-trained weights, distill.json."
    )

    @Argument(help: "Study name.") var study: String
    @Option(parsing: .unconditional, help: "How many winners.") var top = 3
    @Option(help: "Output directory (default: results/<study>/export).") var out: String?
    @Option(help: "Importance cache directory (default: <artifacts>/importance).") var importanceCache: String?
    @Option(
        help:
            "Artifacts folder the study's trial checkpoints are under (default: the spec's \"artifacts\", else results)."
    ) var artifacts: String?
    @Flag(help: "Replace <rank>-<hash> folders in --out even when they hold files an export does not write.")
    var force = false
    @Option(help: "Storage type of the pruned checkpoints: float32, bfloat16 or float16 (default: the teacher's).")
    var dtype: StorageType?
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1 (got \(top))") }
    }

    func run() throws {
        engine.apply()
        let st = try store.open(.write)
        let spec = try st.study(named: study).flatMap {
            try? parseSpec($0.spec, file: "\(st.location): study '\(study)'", students: 1)
        }
        let root = Artifacts.root(option: artifacts, spec: spec, fallback: "results")
        _ = try Exporter.export(
            store: st, study: study, top: top, out: directoryURL(out ?? "results/\(study)/export"),
            importanceCache: directoryURL(importanceCache ?? root + "/importance"), artifacts: directoryURL(root),
            force: force, type: dtype, warn: printWarning)
    }
}

struct BatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch",
        abstract:
            "Run every spec in a folder as its own study (finished ones skipped, unfinished resumed); print a summary.")

    @Argument(help: "Folder of search specs (*.json).") var directory: String
    @OptionGroup var options: RunnerOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        engine.apply()
        let st = try store.open(.create)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }
            .sorted()
        var rows: [[JSON]] = []
        var problems: [String] = []
        for f in files {
            let path = (directory as NSString).appendingPathComponent(f)
            let spec: SearchSpec
            do { spec = try loadSpec(path, students: options.studentsPerClaim) } catch {
                print("\(path): skipped: \(error)")
                problems.append("\(f): \(error)")
                rows.append([.string(f), "invalid spec", .null, .null, .null, .null])
                continue
            }
            let start = Date()
            // One study's failure does not stop the batch: it is reported and the next runs.
            do {
                if try st.study(named: spec.study)?.state != "complete" {
                    print("== \(spec.study) (\(f))")
                    _ = try options.runner(spec, st).run(worker: "batch-\(getpid())", extend: false)
                }
            } catch {
                print("\(spec.study) (\(f)) FAILED: \(error)")
                problems.append("\(spec.study): \(error)")
            }
            guard let row = try st.study(named: spec.study) else {
                rows.append([.string(spec.study), "failed", .null, .null, .null, JSON(Date().timeIntervalSince(start))])
                continue
            }
            let s = try st.summary(row)
            let best = try st.top(study: s.study.id, limit: 1).first
            let state =
                problems.last?.hasPrefix("\(spec.study): ") == true ? "failed (\(s.study.state))" : s.study.state
            rows.append([
                .string(spec.study), .string(state), .string(best?.trial.hash ?? "–"), s.best.map { JSON($0) } ?? .null,
                JSON(s.stepsRun), JSON(Date().timeIntervalSince(start))
            ])
        }
        printRows(["study", "state", "best", "score", "steps", "seconds"], rows, format: "table")
        if !problems.isEmpty {
            problems.forEach { printWarning($0) }
            throw ExitCode(1)
        }
    }
}
