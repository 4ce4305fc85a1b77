import ArgumentParser
import Model

@main
struct Topiary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topiary",
        abstract: "Neural architecture search that prunes and distils a large language model into small ones.",
        subcommands: [ModelCommand.self, DataCommand.self, TokenizerCommand.self, TeacherCommand.self,
                      ImportanceCommand.self, PruneCommand.self, DistillCommand.self, RankingCommand.self, SpecCommand.self,
                      SearchCommand.self, WorkerCommand.self, ResultsCommand.self, ExportCommand.self, BatchCommand.self, BenchCommand.self])

    /// Runs once before any subcommand: thread count from `TOPIARY_THREADS`.
    static func prepare() { Parallel.configureFromEnvironment() }
}
