import Foundation
import Model
import Proxy

extension TeacherReference {
    /// The teacher's size and its score under the study's objective on the proxy's validation
    /// windows, or nil (with a warning on standard error) when the teacher or corpus cannot be
    /// read here.
    public static func load(_ st: StudyStore, study name: String) -> TeacherReference? {
        do {
            guard let row = try st.study(named: name) else { return nil }
            let spec = try SearchSpec(
                json: row.spec, file: "\(st.path): study '\(name)'", teacherConfig: SearchSpec.teacherConfig)
            let teacher = try Checkpoint.load(URL(fileURLWithPath: spec.teacher, isDirectory: true))
            let corpus = try spec.openCorpus()
            let e = try Evaluation.validationLoss(
                model: teacher, shards: corpus, batch: spec.proxy.batch, sequence: spec.proxy.sequence,
                maxTokensPerLanguage: spec.proxy.evalTokens)
            return TeacherReference(
                parameters: teacher.config.parameterCount, activeParameters: teacher.config.activeParameterCount,
                score: spec.objective.value(e), perLanguage: e.perLanguage)
        } catch {
            FileHandle.standardError.write(Data("warning: the report leaves the teacher's score out: \(error)\n".utf8))
            return nil
        }
    }
}
