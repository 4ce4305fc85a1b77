import ArgumentParser
import Foundation
import Model

@main
struct Topiary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topiary",
        abstract: "Neural architecture search that prunes and distils a large language model into small ones.",
        version: "topiary \(topiaryVersion)\n\(RuntimePlatform.current.summary)",
        subcommands: [
            ModelCommand.self, DataCommand.self, StoreCommand.self, TokenizerCommand.self, TeacherCommand.self,
            ImportanceCommand.self, PruneCommand.self, DistillCommand.self, RankingCommand.self, SpecCommand.self,
            PlanCommand.self,
            SearchCommand.self, WorkerCommand.self, SlurmCommand.self, ResultsCommand.self, ExportCommand.self,
            BatchCommand.self,
            BenchCommand.self, DoctorCommand.self, ReportCommand.self, ServeCommand.self
        ])

    /// Chooses the OpenBLAS core before anything else runs (it may start this process once more
    /// with `OPENBLAS_CORETYPE` set; see `RuntimePlatform`), then parses and runs the command.
    static func main() {
        RuntimePlatform.selectBLASCore(argv: CommandLine.unsafeArgv)
        // Every line is written when it ends, to a terminal, a file or a pipe (as under Slurm),
        // not when a block of them fills.
        RuntimePlatform.lineBufferStandardOutput()
        Self.main(nil)
    }
}

let topiaryVersion = "0.9.0"
