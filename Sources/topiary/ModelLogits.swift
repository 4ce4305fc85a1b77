import ArgumentParser
import Foundation
import Model

struct ModelLogits: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Logits, causal-LM loss and (optionally) every parameter's gradient, as safetensors.",
        discussion: """
            IDS.json is {"input_ids": [[...], ...]} (B rows of equal length T). OUT.safetensors holds \
            `logits` [B, T, V], `loss` [1] (mean next-token cross-entropy with labels = input_ids) and, with \
            --grads, `grad:<HF tensor name>` for every parameter.
            """)

    @Argument(help: "Checkpoint directory (config.json + safetensors).") var directory: String
    @Option(name: .customLong("input-ids"), help: "JSON file with {\"input_ids\": [[...], ...]}.") var inputIDs: String
    @Option(help: "Output safetensors file.") var out: String
    @Flag(help: "Also write the gradient of the loss for every parameter.") var grads = false
    @OptionGroup var engine: EngineOptions

    func run() throws {
        engine.apply()
        let model = try Checkpoint.load(try checkpointURL(directory))
        let data: Data
        do { data = try FileIO.read(fileURL(inputIDs), what: "input ids file") } catch {
            throw error
        }
        guard let rows = JSON.parse(data)?["input_ids"]?.array else {
            throw ModelError.invalidInput("\(inputIDs): expected {\"input_ids\": [[...], ...]}")
        }
        let ids: [[Int]] = try rows.enumerated().map { i, row in
            guard let values = row.array?.compactMap(\.int), values.count == row.array?.count else {
                throw ModelError.invalidInput("\(inputIDs): input_ids[\(i)] is not a list of integers")
            }
            return values
        }
        let report = try LogitsReport(model: model, inputIDs: ids, gradients: grads)
        try report.write(to: fileURL(out))
        print(
            "wrote \(out): logits [\(report.batch), \(report.sequence), \(report.vocabulary)], loss "
                + "\(report.loss)\(grads ? ", \(report.gradients.count) gradients" : "")"
        )
    }
}
