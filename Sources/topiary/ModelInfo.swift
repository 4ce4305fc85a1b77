import ArgumentParser
import Foundation
import Model

struct ModelInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Family, shapes, parameter counts, FLOPs per token and training memory of a checkpoint or config.")

    @Argument(help: "Checkpoint directory, a Hugging Face repo id in the local cache, or a config.json file.") var path:
        String
    @Option(parsing: .unconditional, help: "Sequence length for FLOPs and memory.") var seq = 256
    @Option(parsing: .unconditional, help: "Batch size for training memory.") var batch = 16
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try requireRange("--seq", seq, 1...1 << 30)
        try requireRange("--batch", batch, 1...1 << 30)
    }

    func run() throws {
        var isDirectory: ObjCBool = false
        let path = try checkpointURL(self.path).path
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError.io(path: path, reason: "does not exist")
        }
        let configURL = isDirectory.boolValue ? directoryURL(path).appendingPathComponent("config.json") : fileURL(path)
        // A checkpoint directory: its weights' headers must match the config (no tensor data read).
        let hasWeights = ["model.safetensors", "model.safetensors.index.json"].contains {
            FileManager.default.fileExists(atPath: directoryURL(path).appendingPathComponent($0).path)
        }
        let c =
            isDirectory.boolValue && hasWeights
            ? try Checkpoint.verify(directoryURL(path)) : try ModelConfig.load(configURL)
        let flops = c.forwardFLOPsPerToken(sequence: seq)
        let memory = c.trainingMemory(batch: batch, sequence: seq)
        if json {
            printJSON([
                "family": .string(c.family.rawValue), "config": c.json,
                "parameters": JSON(c.parameterCount), "non_embedding_parameters": JSON(c.nonEmbeddingParameterCount),
                "active_parameters": JSON(c.activeParameterCount),
                "active_non_embedding_parameters": JSON(c.activeNonEmbeddingParameterCount),
                "forward_flops_per_token": JSON(flops), "sequence_length": JSON(seq), "batch_size": JSON(batch),
                "training_memory_bytes": [
                    "parameters_gradients_adam": JSON(memory.state), "activations": JSON(memory.activations),
                    "total": JSON(memory.state + memory.activations)
                ],
                "platform": .object(RuntimePlatform.current.json)
            ])
            return
        }
        let mlpKind = c.family.isGated ? "SwiGLU" : "squared ReLU"
        let mlp =
            c.isMixture
            ? "\(c.numLocalExperts) experts of \(c.expertWidth) (\(mlpKind)), top \(c.numExpertsPerTok) per token"
                + (c.family.definition.hasNormTopKProbKey
                    ? (c.normTopKProb ? ", gates renormalised" : ", gates not renormalised") : "")
                + (c.family.definition.hasSharedExpertGate
                    ? ", gates renormalised; a shared expert of \(c.sharedExpertWidth) behind a sigmoid gate" : "")
                + (c.family.definition.routesBySigmoid
                    ? "; sigmoid router, \(c.routerTopKGroups) of \(c.routerGroups) expert groups, gates "
                        + (c.normTopKProb ? "renormalised" : "not renormalised")
                        + " × \(c.routedScalingFactor)"
                        + (c.moeLatentSize.map { "; experts in a latent width of \($0)" } ?? "")
                        + "; a shared expert of \(c.sharedExpertWidth)"
                    : "")
                + (c.denseMLPLayers.isEmpty
                    ? ""
                    : "; dense \(c.intermediateSize) on layers \(c.denseMLPLayers.map(String.init).joined(separator: ","))")
                + (c.family.hasAttentionExperts
                    ? "; attention: \(c.numLocalExperts) experts of \(c.numKeyValueHeads) query heads each" : "")
            : "\(c.intermediateSize) (\(mlpKind))"
        var attentionExtras: [String] = []
        if c.family.hasQKVBias { attentionExtras.append("q/k/v biases") }
        if c.family.hasQKNorm { attentionExtras.append("q/k RMSNorm") }
        if let w = c.slidingWindow {
            attentionExtras.append(
                "sliding window \(w) on "
                    + (c.slidingLayers.count == c.numHiddenLayers
                        ? "every layer" : "layers \(c.slidingLayers.map(String.init).joined(separator: ","))"))
        }
        let extras = attentionExtras.isEmpty ? "" : "; " + attentionExtras.joined(separator: ", ")
        let active =
            c.isMixture
            ? "\nactive/token      \(c.activeParameterCount) (\(formatCount(c.activeParameterCount))), "
                + "non-embedding \(c.activeNonEmbeddingParameterCount) (\(formatCount(c.activeNonEmbeddingParameterCount)))"
            : ""
        var layers = "\(c.numHiddenLayers)"
        if let types = c.hybridLayers {
            let kinds = [
                (HybridLayer.mamba, "Mamba2"), (.deltaNet, "Gated DeltaNet"), (.attention, "attention"), (.mlp, "MLP"),
                (.moe, "mixture of experts")
            ]
            let counts = kinds.compactMap {
                t, name in
                let n = types.filter { $0 == t }.count
                return n > 0 ? "\(n) \(name)" : nil
            }
            layers += " (\(String(types.map(\.letter))): \(counts.joined(separator: ", ")))"
            if let m = c.mamba {
                layers +=
                    "\nmamba2            \(m.heads) heads × \(m.headDim) in \(m.groups) groups, state \(m.stateSize), "
                    + "conv \(m.convKernel)\(c.mambaConvBias ? "" : " (no bias)"), Δ in [\(c.mambaTimeStepLimit.lower), "
                    + "\(c.mambaTimeStepLimit.upper.isFinite ? "\(c.mambaTimeStepLimit.upper)]" : "∞)"), "
                    + "chunk \(c.mambaChunkSize)"
            }
            if let d = c.deltaNet {
                layers +=
                    "\ndeltanet          \(d.keyHeads) key heads × \(d.keyDim), \(d.valueHeads) value heads × "
                    + "\(d.valueDim), conv \(d.convKernel); each layer then "
                    + (c.isMixture ? "a mixture of experts" : "a SwiGLU MLP")
            }
        }
        print(
            """
            family            \(c.family.rawValue) (\(c.family.architecture))
            layers            \(layers)
            hidden            \(c.hiddenSize)
            heads             \(c.numAttentionHeads) query, \(c.numKeyValueHeads) key/value, head_dim \(c.headDim),\
             rotary dims \(c.rotaryDim)\(extras)
            mlp               \(mlp)
            vocabulary        \(c.vocabSize)\(c.tieWordEmbeddings ? " (tied embeddings)" : "")
            parameters        \(c.parameterCount) (\(formatCount(c.parameterCount))), non-embedding\
             \(c.nonEmbeddingParameterCount) (\(formatCount(c.nonEmbeddingParameterCount)))\(active)
            FLOPs/token       \(flops) forward at sequence \(seq) (training ≈ 3×)
            training memory   \(formatBytes(memory.state + memory.activations)) at batch \(batch) × sequence \(seq):\
             \(formatBytes(memory.state)) parameters+gradients+AdamW, \(formatBytes(memory.activations)) activations
            runs on           \(RuntimePlatform.current.summary)
            """)
        RuntimePlatform.current.warnings.forEach { printWarning($0) }
    }
}
