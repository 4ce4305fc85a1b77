import ArgumentParser
import Foundation
import Model
import Proxy
import Search

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract:
            "Write a study's report: a self-contained HTML page with inline SVG plots (Pareto front with "
            + "intervals, successive-halving curves, per-language heat map, rank stability, teacher importance) and a page per candidate."
    )

    @Argument(help: "Study name.") var study: String
    @Option(help: "Output folder (default: results/<study>/report).") var out: String?
    @Flag(help: "Do not load the teacher to draw its score (faster; the teacher's size is still marked when known).")
    var noTeacher = false
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        engine.apply()
        let st = try store.open(.read)
        _ = try requireStudy(st, study)
        let teacher = noTeacher ? nil : teacherReference(st, study: study)
        let report = try StudyReport(store: st, study: study, teacher: teacher)
        if out == nil, let problem = SearchSpec.studyNameProblem(study) {
            throw ValidationError("study name \(problem): it cannot name a folder under results/ (pass --out)")
        }
        let dir = directoryURL(out ?? "results/\(study)/report")
        let index = try report.write(to: dir)
        print("wrote \(index.path) (\(report.candidates.count) candidate pages)")
    }
}

/// The teacher's size and its score under the study's objective on the proxy's validation
/// windows, or nil (with a warning) when the teacher or corpus cannot be read here.
func teacherReference(_ st: StudyStore, study name: String) -> TeacherReference? {
    do {
        guard let row = try st.study(named: name) else { return nil }
        let spec = try parseSpec(row.spec, file: "\(st.path): study '\(name)'", students: 1)
        let teacher = try Checkpoint.load(URL(fileURLWithPath: spec.teacher, isDirectory: true))
        let corpus = try spec.openCorpus()
        let e = try Evaluation.validationLoss(
            model: teacher, shards: corpus, batch: spec.proxy.batch, sequence: spec.proxy.sequence,
            maxTokensPerLanguage: spec.proxy.evalTokens)
        return TeacherReference(
            parameters: teacher.config.parameterCount, activeParameters: teacher.config.activeParameterCount,
            score: spec.objective.value(e), perLanguage: e.perLanguage)
    } catch {
        printWarning("the report leaves the teacher's score out: \(error)")
        return nil
    }
}
