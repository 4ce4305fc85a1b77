import Foundation
import Model

/// Distance between student and teacher hidden states, through a learned linear map.
public struct HiddenLoss: Sendable, Equatable, Codable {
    public enum Distance: String, Sendable, Codable { case cosine, mse }
    public var weight = 0.0
    public var distance = Distance.cosine
    /// Pairs [student residual index, teacher residual index]; residual l enters layer l and
    /// residual L leaves the last layer. Empty: the last hidden state of each.
    public var layers: [[Int]] = []
    public init() {}
}

/// The learned maps W (C_teacher × C_student) of a hidden-state loss, their AdamW state, and the
/// loss: for each pair, h' = h_s Wᵀ compared with h_t per token —
/// cosine: mean over tokens of 1 − cos(h', h_t); mse: mean over tokens and channels of (h' − h_t)².
/// Gradients flow to W and, through `residualGradients`, into the student's backward pass.
public final class HiddenProjector {
    public let loss: HiddenLoss
    let pairs: [(student: Int, teacher: Int)]
    let layout: ParameterLayout
    public let weights: FloatBuffer
    let gradients: FloatBuffer
    let optimizer: AdamW
    let Cs: Int, Ct: Int, N: Int
    let projected: FloatBuffer, dProjected: FloatBuffer, dStudent: FloatBuffer

    public init(loss: HiddenLoss, student: ModelConfig, teacher: ModelConfig, rows N: Int, seed: UInt64 = 7) throws {
        self.loss = loss
        let raw = loss.layers.isEmpty ? [[student.numHiddenLayers, teacher.numHiddenLayers]] : loss.layers
        let checked: [(student: Int, teacher: Int)] = try raw.enumerated().map { i, p in
            guard p.count == 2, (0...student.numHiddenLayers).contains(p[0]),
                (0...teacher.numHiddenLayers).contains(p[1])
            else {
                throw ProxyError.invalidOption(
                    field: "hidden.layers[\(i)]",
                    reason:
                        "\(p) is not a [student 0...\(student.numHiddenLayers), teacher 0...\(teacher.numHiddenLayers)] pair"
                )
            }
            return (p[0], p[1])
        }
        pairs = checked
        Cs = student.hiddenSize; Ct = teacher.hiddenSize; self.N = N
        let (cs, ct) = (student.hiddenSize, teacher.hiddenSize)
        layout = ParameterLayout(tensors: checked.indices.map { ("hidden_map.\($0)", [ct, cs]) })
        weights = FloatBuffer(count: layout.count)
        gradients = FloatBuffer(count: layout.count)
        optimizer = AdamW(layout: layout, settings: .init(weightDecay: 0, gradientClip: 1))
        var rng = SeededGenerator(seed: seed)
        let std = 1 / Double(Cs).squareRoot()
        for i in 0..<layout.count { weights[i] = Float(rng.normal() * std) }
        projected = FloatBuffer(count: N * Ct)
        dProjected = FloatBuffer(count: N * Ct)
        dStudent = FloatBuffer(count: checked.count * N * cs)
    }

    /// The loss (mean over pairs) for the current forward passes; fills the gradients of W and
    /// returns the student residual gradients (already scaled by the loss weight).
    public func evaluate(student: Activations, teacher: Activations, gradient: Bool) -> (
        loss: Double, residualGradients: [Int: UnsafePointer<Float>]
    ) {
        if gradient { gradients.zero() }
        var total = 0.0
        var residualGradients: [Int: UnsafePointer<Float>] = [:]
        let scale = Float(loss.weight) / Float(pairs.count)
        for (k, pair) in pairs.enumerated() {
            let hs = student.hidden(pair.student).baseAddress!, ht = teacher.hidden(pair.teacher).baseAddress!
            let W = weights.pointer + layout.entries[k].offset
            // h' (N, Ct) = h_s (N, Cs) · W (Ct, Cs)ᵀ
            gemm(transB: true, m: N, n: Ct, k: Cs, a: hs, lda: Cs, b: W, ldb: Cs, c: projected.pointer, ldc: Ct)
            var sum = 0.0
            let p = projected.pointer, d = dProjected.pointer
            for n in 0..<N {
                let a = p + n * Ct, b = ht + n * Ct, g = d + n * Ct
                switch loss.distance {
                case .mse:
                    var s: Float = 0
                    for c in 0..<Ct { let e = a[c] - b[c]; s += e * e; g[c] = 2 * e / Float(N * Ct) }
                    sum += Double(s) / Double(Ct)
                case .cosine:
                    var ab: Float = 0, aa: Float = 0, bb: Float = 0
                    for c in 0..<Ct { ab += a[c] * b[c]; aa += a[c] * a[c]; bb += b[c] * b[c] }
                    let na = max(aa.squareRoot(), 1e-12), nb = max(bb.squareRoot(), 1e-12)
                    let cos = ab / (na * nb)
                    sum += Double(1 - cos)
                    // d(1 − cos)/da = −(b/(|a||b|) − cos·a/|a|²), averaged over N tokens
                    for c in 0..<Ct { g[c] = -(b[c] / (na * nb) - cos * a[c] / (na * na)) / Float(N) }
                }
            }
            total += sum / Double(N)
            guard gradient else { continue }
            // dW (Ct, Cs) = w · dh'ᵀ (Ct, N) · h_s (N, Cs); dh_s (N, Cs) = w · dh' (N, Ct) · W (Ct, Cs)
            gemm(
                transA: true, m: Ct, n: Cs, k: N, alpha: scale, a: d, lda: Ct, b: hs, ldb: Cs, beta: 1,
                c: gradients.pointer + layout.entries[k].offset, ldc: Cs)
            let ds = dStudent.pointer + k * N * Cs
            gemm(m: N, n: Cs, k: Ct, alpha: scale, a: d, lda: Ct, b: W, ldb: Cs, c: ds, ldc: Cs)
            if let previous = residualGradients[pair.student] {
                // Two pairs on one student layer: add into the first buffer.
                let p0 = UnsafeMutablePointer(mutating: previous)
                for i in 0..<(N * Cs) { p0[i] += ds[i] }
            } else {
                residualGradients[pair.student] = UnsafePointer(ds)
            }
        }
        return (total / Double(pairs.count), residualGradients)
    }

    /// dLoss/dW of the last `evaluate(…, gradient: true)` (for tests).
    public var gradientsForTesting: [Float] { gradients.array }

    /// One AdamW step on the maps.
    public func update(lr: Double) throws {
        try optimizer.update(parameters: weights, gradients: gradients, lr: lr)
    }
}
