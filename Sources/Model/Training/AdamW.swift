import CKernels
import Foundation

/// AdamW (Loshchilov & Hutter) with decoupled weight decay and global gradient-norm clipping,
/// as one loop over the flat buffers.
///
/// Per element, with g the (clipped) gradient and bias corrections b₁ = 1 − β₁ᵗ, b₂ = 1 − β₂ᵗ:
/// `m = β₁m + (1−β₁)g`, `v = β₂v + (1−β₂)g²`, `θ −= lr · (m/b₁ / (√(v/b₂) + ε) + λθ)`,
/// where λ is applied only to matrices (``ParameterEntry/decays``), not to norms or biases.
public final class AdamW {
    public struct Settings: Sendable, Equatable, Codable {
        public var beta1: Double = 0.9
        public var beta2: Double = 0.95
        public var epsilon: Double = 1e-8
        public var weightDecay: Double = 0.1
        /// Clip the global gradient L2 norm to this (nil: no clipping).
        public var gradientClip: Double? = 1.0
        public init() {}
        public init(
            beta1: Double = 0.9, beta2: Double = 0.95, epsilon: Double = 1e-8, weightDecay: Double = 0.1,
            gradientClip: Double? = 1.0
        ) {
            self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay;
            self.gradientClip = gradientClip
        }
    }

    public let settings: Settings
    public let m: FloatBuffer
    public let v: FloatBuffer
    /// Steps taken so far (the t of the bias correction).
    public var step: Int = 0
    /// Contiguous runs of the flat buffer and whether they decay.
    let segments: [(range: Range<Int>, decays: Bool)]

    public init(layout: ParameterLayout, settings: Settings = Settings()) {
        self.settings = settings
        m = FloatBuffer(count: layout.count)
        v = FloatBuffer(count: layout.count)
        var segs: [(Range<Int>, Bool)] = []
        for e in layout.entries {
            let r = e.offset..<(e.offset + e.count)
            if let last = segs.last, last.1 == e.decays, last.0.upperBound == r.lowerBound {
                segs[segs.count - 1].0 = last.0.lowerBound..<r.upperBound
            } else {
                segs.append((r, e.decays))
            }
        }
        segments = segs
    }

    /// The global L2 norm of `gradients` (Double sums per chunk, added in chunk order).
    public static func norm(_ gradients: FloatBuffer) -> Double {
        let workers = Parallel.threads
        var partial = [Double](repeating: 0, count: workers)
        partial.withUnsafeMutableBufferPointer { part in
            let part = part.baseAddress!
            Parallel.chunks(gradients.count, minimumPerChunk: 1 << 14) { w, range in
                var s = 0.0
                var i = range.lowerBound
                while i < range.upperBound {
                    let end = min(i + 4096, range.upperBound)
                    var f: Float = 0
                    for j in i..<end { let g = gradients.pointer[j]; f += g * g }
                    s += Double(f)
                    i = end
                }
                part[w] = s
            }
        }
        return partial.reduce(0, +).squareRoot()
    }

    /// Applies one update with learning rate `lr` and returns the gradient norm before clipping.
    /// - Throws: ``ModelError/nonFinite(step:what:)`` if the gradient norm is NaN or infinite;
    ///   the parameters are then left untouched.
    @discardableResult
    public func update(parameters: FloatBuffer, gradients: FloatBuffer, lr: Double) throws -> Double {
        let gnorm = AdamW.norm(gradients)
        guard gnorm.isFinite else { throw ModelError.nonFinite(step: step + 1, what: "gradient norm") }
        step += 1
        let s = settings
        let clip = s.gradientClip.map { gnorm > $0 ? Float($0 / gnorm) : 1 } ?? 1
        let (b1, b2) = (Float(s.beta1), Float(s.beta2))
        let c1 = Float(1 / (1 - pow(s.beta1, Double(step))))
        let c2 = Float(1 / (1 - pow(s.beta2, Double(step))))
        let (eps, lrf, wd) = (Float(s.epsilon), Float(lr), Float(s.weightDecay))
        let (P, G, M, Vv) = (parameters.pointer, gradients.pointer, m.pointer, v.pointer)
        let segments = segments
        Parallel.chunks(parameters.count, minimumPerChunk: 1 << 14) { _, range in
            for seg in segments {
                let lo = max(seg.range.lowerBound, range.lowerBound), hi = min(seg.range.upperBound, range.upperBound)
                guard lo < hi else { continue }
                let decay = seg.decays ? wd : 0
                // g = G·clip; m = β1·m + (1−β1)·g; v = β2·v + ((1−β2)·g)·g;
                // p −= lr·((m·c1)/(√(v·c2) + ε) + decay·p) — in C, vectorised, bit-identical to scalar.
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 8) { k in
                    (k[0], k[1], k[2], k[3]) = (clip, b1, b2, c1)
                    (k[4], k[5], k[6], k[7]) = (c2, eps, lrf, decay)
                    tp_adamw(P + lo, G + lo, M + lo, Vv + lo, hi - lo, k.baseAddress!)
                }
            }
        }
        return gnorm
    }
}
