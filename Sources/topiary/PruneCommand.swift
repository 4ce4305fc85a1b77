import ArgumentParser
import Foundation
import Model
import Proxy

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Prune a teacher to a target shape by keeping its most important units; writes an HF checkpoint.",
        discussion:
            "TARGET.json names any of num_hidden_layers, hidden_size, num_attention_heads, "
            + "num_key_value_heads, intermediate_size (and, for mixture teachers, num_local_experts and "
            + "num_experts_per_tok; intermediate_size is then the width of each expert; qwen3_moe names them "
            + "num_experts and moe_intermediate_size); the rest is the teacher's."
    )

    @Option(help: "Teacher checkpoint directory.") var teacher: String
    @Option(help: "Target shape (JSON).") var to: String
    @Option(help: "Output checkpoint directory (new, or replaced with --force; never an input).") var out: String
    @Flag(help: "Replace --out when it exists and is not empty.") var force = false
    @Option(help: "Prepared corpus for importance scores.") var data: String
    @Option(help: "Layer metric: block_importance or loss_rise.") var layerMetric = "block_importance"
    @Flag(help: "Remove the least important contiguous block of layers.") var contiguous = false
    @Option(help: "Mixtures: rank experts by gated_output_norm (router weight × output norm) or frequency.")
    var expertMetric = "gated_output_norm"
    @Option(
        help: "Storage type of the output: float32, bfloat16 or float16 (default: each tensor keeps the teacher's).")
    var dtype: StorageType?
    @OptionGroup var importance: ImportanceOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        guard LayerMetric(rawValue: layerMetric) != nil else {
            throw ValidationError("--layer-metric takes block_importance or loss_rise")
        }
        guard ExpertMetric(rawValue: expertMetric) != nil else {
            throw ValidationError("--expert-metric takes gated_output_norm or frequency")
        }
    }

    func run() throws {
        engine.apply()
        try OutputDirectory.check(
            directoryURL(out),
            inputs: [("--teacher", try checkpointURL(teacher)), ("--data", directoryURL(data)), ("--to", fileURL(to))],
            force: force)
        // The teacher stays in its files: only importance, when its scores are not cached, loads
        // it (in float32, released before pruning); the pruned model is cut a tensor at a time.
        let teacherURL = try checkpointURL(teacher)
        let weights = try CheckpointWeights(teacherURL)
        guard let data0 = try? Data(contentsOf: fileURL(to)), let json = JSON.parse(data0)?.object else {
            throw ModelError.invalidInput("\(to): not a JSON object")
        }
        let target = try Pruning.targetConfig(teacher: weights.config, target: json)
        try Pruning.validate(target: target, teacher: weights.config)
        let corpus = try TokenShards(directory: directoryURL(data))
        let scores = try importance.scores(
            teacherFingerprint: Fingerprint.of(weights), loadTeacher: { try Checkpoint.load(teacherURL) },
            corpus: corpus)
        var options = PruneOptions()
        options.layerMetric = LayerMetric(rawValue: layerMetric)!
        options.contiguousLayers = contiguous
        options.expertMetric = ExpertMetric(rawValue: expertMetric)!
        let plan = try Pruning.plan(teacher: weights.config, target: target, scores: scores, options: options)
        let planJSON: JSON = [
            "layers": .array(plan.layers.map { JSON($0) }), "key_value_groups": .array(plan.groups[0].map { JSON($0) }),
            "heads": .array(plan.heads.map { .array($0.map { JSON($0) }) }),
            "teacher": .string(teacher), "teacher_fingerprint": .string(scores.teacherFingerprint),
            "layer_metric": .string(layerMetric), "contiguous": .bool(contiguous),
            "experts": .array(plan.experts.map { .array($0.map { JSON($0) }) }),
            "attention_experts": .array(plan.attentionExperts.map { .array($0.map { JSON($0) }) }),
            "expert_metric": .string(expertMetric)
        ]
        try OutputDirectory.replace(directoryURL(out)) { folder in
            try Pruning.write(plan, teacher: weights, target: target, type: dtype, to: folder)
            try AtomicFile.write(planJSON.data(), to: folder.appendingPathComponent("prune_plan.json"))
        }
        print(
            "wrote \(out): \(target.parameterCount) parameters (teacher \(weights.config.parameterCount)) in "
                + "\((dtype ?? weights.storageType).rawValue); kept layers \(plan.layers)"
        )
    }
}
