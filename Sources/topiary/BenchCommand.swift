import ArgumentParser

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (use a release build: swift build -c release).",
        subcommands: [BenchTrain.self, BenchProxy.self, BenchStore.self, BenchThroughput.self])
}
