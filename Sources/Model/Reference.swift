import Foundation

/// What `topiary model logits` computes, in the shape outside checks compare with transformers.
public struct LogitsReport {
    /// (B, T, V), row-major.
    public var logits: [Float]
    public var batch: Int, sequence: Int, vocabulary: Int
    /// Mean next-token cross-entropy with labels = input_ids (HF shift).
    public var loss: Float
    /// Mixture families: the unweighted load-balancing loss (nil for dense models).
    public var auxLoss: Float?
    /// dLoss/dθ per HF tensor name (empty unless asked for). For a mixture whose config sets
    /// `output_router_logits`, the gradient of loss + coef × auxLoss, as transformers'
    /// `loss.backward()` gives it.
    public var gradients: [(name: String, shape: [Int], values: [Float])]

    /// Computes logits, the causal-LM loss and, when asked, every parameter's gradient for rows
    /// of equal length.
    /// - Throws: ``ModelError/invalidInput(_:)`` for ragged or out-of-vocabulary rows.
    public init(model: DecoderModel, inputIDs: [[Int]], gradients wantGradients: Bool) throws {
        guard let T = inputIDs.first?.count, T > 0, inputIDs.allSatisfy({ $0.count == T }) else {
            throw ModelError.invalidInput("input_ids must be a non-empty list of rows of equal, non-zero length")
        }
        let B = inputIDs.count, V = model.config.vocabSize
        let tokens = inputIDs.flatMap { $0.map { Int32(clamping: $0) } }
        let acts = Activations(config: model.config, batch: B, sequence: T)
        try model.forward(tokens: tokens, acts)
        logits = Array(acts.logits)
        batch = B; sequence = T; vocabulary = V
        let targets = DecoderModel.shiftedTargets(tokens, batch: B, sequence: T)
        loss = Float(try model.loss(acts, targets: targets, gradient: wantGradients))
        // transformers' sigmoid-routed Nemotron-H has no load-balancing loss.
        if model.config.isMixture, !model.config.family.definition.routesBySigmoid {
            auxLoss = Float(model.routerLosses(acts).loadBalancing)
        }
        gradients = []
        if wantGradients {
            let saved = model.routerLossWeights
            defer { model.routerLossWeights = saved }
            model.routerLossWeights = RouterLossWeights(
                loadBalancing: model.config.outputRouterLogits ? model.config.routerAuxLossCoef : 0, zLoss: 0)
            model.zeroGradients()
            model.backward(acts)
            // Buffers (Nemotron-H's router correction bias) are not parameters: no gradient.
            gradients = model.layout.entries.filter { $0.role?.isBuffer != true }.map {
                (
                    $0.name, $0.shape,
                    Array(UnsafeBufferPointer(start: model.gradients.pointer + $0.offset, count: $0.count))
                )
            }
        }
    }

    /// Writes `logits`, `loss` and `grad:<name>` tensors to a safetensors file.
    public func write(to url: URL) throws {
        var storage: [(String, [Int], [Float])] = [
            ("logits", [batch, sequence, vocabulary], logits), ("loss", [1], [loss])
        ]
        if let auxLoss { storage.append(("aux_loss", [1], [auxLoss])) }
        storage += gradients.map { ("grad:" + $0.name, $0.shape, $0.values) }
        try withSlices(storage, []) { try SafeTensorsWriter.write($0, to: url) }
    }
}

/// Hands `[TensorSlice]` views of arrays to `body` (the arrays stay alive throughout).
func withSlices(
    _ rest: ArraySlice<(String, [Int], [Float])>, _ done: [TensorSlice], _ body: ([TensorSlice]) throws -> Void
) throws {
    guard let first = rest.first else { return try body(done) }
    try first.2.withUnsafeBufferPointer { buffer in
        try withSlices(rest.dropFirst(), done + [TensorSlice(name: first.0, shape: first.1, values: buffer)], body)
    }
}

func withSlices(_ all: [(String, [Int], [Float])], _ done: [TensorSlice], _ body: ([TensorSlice]) throws -> Void) throws
{
    try withSlices(all[...], done, body)
}
