import ArgumentParser
import Foundation
import Model

struct ModelEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Validation loss of a checkpoint per language and overall, beside a unigram baseline.")

    @Argument(help: "Checkpoint directory.") var directory: String
    @Option(help: "Prepared corpus directory.") var data: String
    @Option(parsing: .unconditional, help: "Sequence length.") var seq = 128
    @Option(parsing: .unconditional, help: "Batch size.") var batch = 16
    @Option(parsing: .unconditional, help: "Validation tokens per language.") var tokens = 65536
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try requireRange("--seq", seq, 2...1 << 20)
        try requireRange("--batch", batch, 1...1 << 16)
        try requireRange("--tokens", tokens, 1...Int.max)
    }

    func run() throws {
        engine.apply()
        let model = try Checkpoint.load(try checkpointURL(directory))
        let corpus = try TokenShards(directory: directoryURL(data))
        guard model.config.vocabSize >= corpus.vocabularySize else {
            throw ModelError.invalidConfig(
                file: directory + "/config.json", key: "vocab_size",
                reason: "\(model.config.vocabSize) is smaller than the corpus tokenizer's \(corpus.vocabularySize)")
        }
        let e = try Evaluation.validationLoss(
            model: model, shards: corpus, batch: batch, sequence: seq, maxTokensPerLanguage: tokens)
        let unigram = Evaluation.unigramLoss(shards: corpus, maxTokensPerLanguage: tokens)
        if json {
            printJSON(["validation": e.json, "unigram": .object(unigram.mapValues { JSON($0) })])
            return
        }
        print("language    tokens  validation   unigram")
        for (lang, loss) in e.perLanguage.sorted(by: { $0.key < $1.key }) {
            print(
                String(
                    format: "%-9@ %8d %11.4f %9.4f", lang as NSString, e.tokens[lang] ?? 0, loss, unigram[lang] ?? .nan)
            )
        }
        print(
            String(
                format: "overall   %8d %11.4f   (language mean %.4f, worst %.4f; nats per token)",
                e.tokens.values.reduce(0, +), e.overall, e.languageMean, e.worst))
    }
}
