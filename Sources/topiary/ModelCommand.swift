import ArgumentParser

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Inspect checkpoints and compute logits and gradients.",
        subcommands: [ModelInfo.self, ModelLogits.self, ModelEval.self])
}
