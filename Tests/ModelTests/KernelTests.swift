import CKernels
import Foundation
import Model
import Testing

/// The C element-wise kernels against libm, on every path this CPU has (AVX-512, AVX2, scalar).
@Suite struct KernelTests {
    static let paths = Array((0...Int(tp_kernels_best_level())).reversed()).map { Int32($0) }
    static func name(_ path: Int32) -> String { ["scalar", "AVX2", "AVX-512"][Int(path)] }

    @Test(arguments: paths) func expMatchesLibm(path: Int32) {
        var rng = SeededGenerator(seed: 11)
        // A sweep every 0.001 over the whole useful range, against libm.
        let sweep = (0..<110_000).map { Float(-90 + Double($0) * 0.001) }
        var swept = sweep
        _ = swept.withUnsafeMutableBufferPointer { tp_exp_shifted_on(path, $0.baseAddress!, sweep.count, 0) }
        var worst: Float = 0
        for (x, y) in zip(sweep, swept) where x > -87 { worst = max(worst, abs(y - expf(x)) / expf(x)) }
        #expect(worst <= 4e-7, "worst relative error over the sweep \(worst)")
        print("exp kernel (\(Self.name(path))): worst relative error against libm over [-87, 20] \(worst)")
        // Lengths that exercise the 8- and 16-wide bodies and the scalar tail; values across the float range.
        for n in [1, 7, 8, 9, 15, 16, 17, 31, 33, 257] {
            let x = (0..<n).map { _ in Float.random(in: -100...20, using: &rng) }
            var y = x
            let sum = y.withUnsafeMutableBufferPointer { tp_exp_shifted_on(path, $0.baseAddress!, n, 1.5) }
            let reference = x.map { expf($0 - 1.5) }
            for i in 0..<n {
                let err = abs(y[i] - reference[i])
                #expect(err <= 4e-7 * reference[i] || err < 1e-37, "exp(\(x[i]) - 1.5): \(y[i]) vs \(reference[i])")
            }
            let total = reference.reduce(0, +)
            #expect(abs(sum - total) <= 1e-6 * total)
            #expect(abs(x.withUnsafeBufferPointer { tp_sum_exp_shifted_on(path, $0.baseAddress!, n, 1.5) } - total) <= 1e-6 * total)
        }
        // Far below the range the result is 0, not a denormal or garbage.
        var tiny: [Float] = [-200, -1000, -.infinity, -90, -88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -300]
        let tinyCount = tiny.count
        _ = tiny.withUnsafeMutableBufferPointer { tp_exp_shifted_on(path, $0.baseAddress!, tinyCount, 0) }
        #expect(tiny[0] == 0 && tiny[1] == 0 && tiny[2] == 0 && tiny[5] == 1 && tiny[15] == 1 && tiny[16] == 0)
    }

    @Test(arguments: paths) func swigluMatchesItsDefinition(path: Int32) {
        let (rows, F) = (3, 37)   // two 16-wide blocks (or four 8-wide) and a tail
        var rng = SeededGenerator(seed: 12)
        let pre = (0..<(rows * 2 * F)).map { _ in Float.random(in: -12...12, using: &rng) }
        let dact = (0..<(rows * F)).map { _ in Float.random(in: -1...1, using: &rng) }
        var act = [Float](repeating: 0, count: rows * F), dpre = [Float](repeating: 0, count: rows * 2 * F)
        act.withUnsafeMutableBufferPointer { tp_swiglu_forward_on(path, $0.baseAddress!, pre, rows, F) }
        dpre.withUnsafeMutableBufferPointer { tp_swiglu_backward_on(path, $0.baseAddress!, dact, pre, rows, F) }
        for r in 0..<rows {
            for i in 0..<F {
                let g = Double(pre[r * 2 * F + i]), u = Double(pre[r * 2 * F + F + i]), d = Double(dact[r * F + i])
                let s = 1 / (1 + exp(-g))
                func close(_ a: Float, _ b: Double) -> Bool { abs(Double(a) - b) <= 1e-5 * max(1, abs(b)) }
                #expect(close(act[r * F + i], g * s * u))
                #expect(close(dpre[r * 2 * F + F + i], d * g * s))
                #expect(close(dpre[r * 2 * F + i], d * u * s * (1 + g * (1 - s))))
            }
        }
        print("element-wise kernels: \(Self.name(path)) path checked; in use: \(String(cString: tp_kernels_path()))")
    }
}

extension KernelTests {
    /// AdamW on every path is bit-identical to the scalar formula written out in Swift (the
    /// loop the C kernel replaced), tails included.
    @Test(arguments: paths) func adamwIsBitIdenticalOnEveryPath(path: Int32) {
        var rng = SeededGenerator(seed: 31)
        for n in [1, 7, 8, 15, 16, 17, 100, 1000] {
            let grad = (0..<n).map { _ in Float.random(in: -3...3, using: &rng) }
            var p = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) }
            var m = (0..<n).map { _ in Float.random(in: -0.1...0.1, using: &rng) }
            var v = (0..<n).map { _ in Float.random(in: 0...0.01, using: &rng) }
            let (clip, b1, b2, c1, c2, eps, lr, decay): (Float, Float, Float, Float, Float, Float, Float, Float) = (0.7, 0.9, 0.95, 1.9, 1.3, 1e-8, 3e-3, 0.1)
            var (pr, mr, vr) = (p, m, v)
            for i in 0..<n {
                let g = grad[i] * clip
                let mi = b1 * mr[i] + (1 - b1) * g
                let vi = b2 * vr[i] + (1 - b2) * g * g
                mr[i] = mi
                vr[i] = vi
                pr[i] -= lr * ((mi * c1) / ((vi * c2).squareRoot() + eps) + decay * pr[i])
            }
            let k: [Float] = [clip, b1, b2, c1, c2, eps, lr, decay]
            p.withUnsafeMutableBufferPointer { pp in m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
                tp_adamw_on(path, pp.baseAddress!, grad, mp.baseAddress!, vp.baseAddress!, n, k)
            } } }
            #expect(p.map(\.bitPattern) == pr.map(\.bitPattern) && m.map(\.bitPattern) == mr.map(\.bitPattern) && v.map(\.bitPattern) == vr.map(\.bitPattern),
                    "\(Self.name(path)) n=\(n)")
        }
    }
}
