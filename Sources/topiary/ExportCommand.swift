import ArgumentParser
import Foundation
import Model
import Search

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a study's best candidates for full distillation: pruned HF checkpoint, proxy-trained weights, distill.json.")

    @Argument(help: "Study name.") var study: String
    @Option(help: "How many winners.") var top = 3
    @Option(help: "Output directory (default: results/<study>/export).") var out: String?
    @Option(help: "Importance cache directory.") var importanceCache = "results/importance"
    @Flag(help: "Replace <rank>-<hash> folders in --out even when they hold files an export does not write.") var force = false
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1 (got \(top))") }
    }

    func run() throws {
        engine.apply()
        let st = try store.open()
        _ = try Exporter.export(store: st, study: study, top: top, out: directoryURL(out ?? "results/\(study)/export"),
                                importanceCache: directoryURL(importanceCache), force: force, warn: printWarning)
    }
}

struct BatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch", abstract: "Run every spec in a folder as its own study (finished ones skipped, unfinished resumed); print a summary.")

    @Argument(help: "Folder of search specs (*.json).") var directory: String
    @OptionGroup var options: RunnerOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        engine.apply()
        let st = try store.open()
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        var rows: [[JSON]] = []
        for f in files {
            let path = (directory as NSString).appendingPathComponent(f)
            let spec: SearchSpec
            do { spec = try loadSpec(path) } catch { print("\(path): skipped: \(error)"); rows.append([.string(f), "invalid", .null, .null, .null]); continue }
            let start = Date()
            if try st.study(named: spec.study)?.state != "complete" {
                print("== \(spec.study) (\(f))")
                _ = try options.runner(spec, st).run(worker: "batch-\(getpid())", extend: false)
            }
            let s = try st.summary(try st.study(named: spec.study)!)
            let best = try st.top(study: s.study.id, limit: 1).first
            rows.append([.string(spec.study), .string(s.study.state), .string(best?.trial.hash ?? "–"), s.best.map { JSON($0) } ?? .null,
                         JSON(s.stepsRun), JSON(Date().timeIntervalSince(start))])
        }
        printRows(["study", "state", "best", "score", "steps", "seconds"], rows, format: "table")
    }
}
