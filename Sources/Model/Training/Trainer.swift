import Foundation

/// One model, its activations for a fixed (B, T), an AdamW optimizer and a schedule: the
/// language-model training step every higher layer (teacher training, benchmarks) uses.
public final class Trainer {
    public let model: DecoderModel
    public let activations: Activations
    public let optimizer: AdamW
    public var schedule: LearningRateSchedule
    public var peakLearningRate: Double
    public var totalSteps: Int

    public init(model: DecoderModel, batch: Int, sequence: Int, settings: AdamW.Settings = .init(),
                schedule: LearningRateSchedule, peakLearningRate: Double, totalSteps: Int) {
        self.model = model
        activations = Activations(config: model.config, batch: batch, sequence: sequence)
        optimizer = AdamW(layout: model.layout, settings: settings)
        self.schedule = schedule
        self.peakLearningRate = peakLearningRate
        self.totalSteps = totalSteps
    }

    public struct StepResult: Sendable { public var loss: Double; public var gradientNorm: Double; public var learningRate: Double }

    /// zero gradients → forward → cross-entropy → backward → AdamW.
    /// - Throws: ``ModelError/nonFinite(step:what:)`` naming the step when the loss or the
    ///   gradient is NaN or infinite; the parameters are then left as they were.
    public func step(tokens: [Int32], targets: [Int32]) throws -> StepResult {
        let stepNumber = optimizer.step + 1
        model.zeroGradients()
        try model.forward(tokens: tokens, activations)
        let loss = try model.loss(activations, targets: targets, gradient: true)
        guard loss.isFinite else { throw ModelError.nonFinite(step: stepNumber, what: "training loss") }
        model.backward(activations)
        let lr = schedule.rate(step: stepNumber, total: totalSteps, peak: peakLearningRate)
        let norm = try optimizer.update(parameters: model.parameters, gradients: model.gradients, lr: lr)
        return StepResult(loss: loss, gradientNorm: norm, learningRate: lr)
    }
}
