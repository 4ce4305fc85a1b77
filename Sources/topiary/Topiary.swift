import ArgumentParser
import Model

@main
struct Topiary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topiary",
        abstract: "Neural architecture search that prunes and distils a large language model into small ones.",
        subcommands: [])
}
