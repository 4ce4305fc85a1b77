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

/// The teacher's reference score of a study (``TeacherReference/load(_:study:)``).
func teacherReference(_ st: StudyStore, study name: String) -> TeacherReference? {
    TeacherReference.load(st, study: name)
}
