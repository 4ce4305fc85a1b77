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

    /// The gated delta rule's chunked form (the forward pass of training) against the recurrence
    /// (the reference, and what decoding runs): outputs and every chunk-start state within 1e-5
    /// relative, over sequences that end inside a chunk, heads interleaved in their rows, decays
    /// from none to strong. (T, chunk, Dk, Dv.)
    @Test(arguments: [(70, 64, 8, 6), (37, 8, 16, 16), (5, 64, 4, 3), (128, 64, 32, 32)])
    func chunkedDeltaRuleEqualsTheRecurrence(_ T: Int, _ chunk: Int, _ Dk: Int, _ Dv: Int) {
        var rng = SeededGenerator(seed: UInt64(T * 131 + Dk))
        // Two heads per row, this one second: strides are those of the engine's buffers.
        let (qks, vs, gs) = (2 * Dk, 2 * Dv + 3, 2)
        func random(_ n: Int, _ scale: Double = 1) -> [Float] { (0..<n).map { _ in Float(rng.normal() * scale) } }
        func unit(_ x: [Float], stride: Int) -> [Float] {
            var y = x
            for t in 0..<T {
                let r = t * stride + Dk
                let norm = (0..<Dk).map { y[r + $0] * y[r + $0] }.reduce(0, +).squareRoot()
                for d in 0..<Dk { y[r + d] /= norm }
            }
            return y
        }
        let q = unit(random(T * qks), stride: qks).map { $0 / Float(Dk).squareRoot() }, k = unit(random(T * qks), stride: qks)
        let v = random(T * vs)
        let g = (0..<(T * gs)).map { i in Float(-rng.uniform() * (i % 7 == 0 ? 4 : 0.2)) }
        let beta = (0..<(T * gs)).map { _ in Float(rng.uniform()) }
        let chunks = (T + chunk - 1) / chunk
        var (o1, o2) = ([Float](repeating: 0, count: T * Dv), [Float](repeating: 0, count: T * Dv))
        var (s1, s2) = ([Float](repeating: 0, count: chunks * Dk * Dv), [Float](repeating: 0, count: chunks * Dk * Dv))
        q.withUnsafeBufferPointer { q in
            k.withUnsafeBufferPointer { k in
                v.withUnsafeBufferPointer { v in
                    g.withUnsafeBufferPointer { g in
                        beta.withUnsafeBufferPointer { b in
                            let (qp, kp, vp) = (q.baseAddress! + Dk, k.baseAddress! + Dk, v.baseAddress! + Dv)
                            let (gp, bp) = (g.baseAddress! + 1, b.baseAddress! + 1)
                            tp_gdn_scan_forward(T, Dk, Dv, chunk, qp, kp, qks, vp, vs, gp, bp, gs, &o1, Dv, &s1)
                            deltaRuleChunkedForward(
                                T: T, Dk: Dk, Dv: Dv, chunk: chunk, q: qp, k: kp, qks: qks, v: vp, vs: vs, g: gp, beta: bp,
                                gs: gs, o: &o2, os: Dv, states: &s2)
                        }
                    }
                }
            }
        }
        #expect(relativeError(o2, o1) < 1e-5, "outputs: \(relativeError(o2, o1))")
        #expect(relativeError(s2, s1) < 1e-5, "chunk-start states: \(relativeError(s2, s1))")
        #expect(o1.contains { $0 != 0 } && (chunks == 1 || s1.contains { $0 != 0 }))
    }

    /// Mamba2's chunked (SSD) scan against the recurrence: outputs and chunk-start states within
    /// 1e-5 relative, for a group of two heads among four in two groups, sequences ending inside a
    /// chunk, time steps small to large. (T, chunk, P, N.)
    @Test(arguments: [(11, 4, 6, 5), (70, 64, 8, 16), (9, 64, 4, 3), (130, 64, 16, 32)])
    func chunkedMambaScanEqualsTheRecurrence(_ T: Int, _ chunk: Int, _ P: Int, _ N: Int) {
        var rng = SeededGenerator(seed: UInt64(T * 17 + P))
        let (H, G, g) = (4, 2, 1), I = H * P, xs = I + 2 * G * N + 3
        let xbc = (0..<(T * xs)).map { _ in Float(rng.normal()) }
        let dt = (0..<(T * H)).map { i in Float(rng.uniform() * (i % 5 == 0 ? 2 : 0.1)) }
        let A = (0..<H).map { -Float($0 + 1) * 0.5 }, D = (0..<H).map { Float($0) * 0.3 - 0.2 }
        let chunks = (T + chunk - 1) / chunk
        var (y1, y2) = ([Float](repeating: 0, count: T * I), [Float](repeating: 0, count: T * I))
        var (s1, s2) = ([Float](repeating: 0, count: chunks * H * P * N), [Float](repeating: 0, count: chunks * H * P * N))
        tp_mamba_scan_forward(T, H, P, G, N, chunk, g, xbc, xs, I, dt, H, A, D, &y1, I, &s1)
        mambaScanChunkedForward(
            T: T, H: H, P: P, G: G, N: N, chunk: chunk, group: g, xbc: xbc, xs: xs, I: I, dt: dt, dts: H, A: A, D: D,
            y: &y2, ys: I, states: &s2)
        // Only this group's heads (2 and 3) are written.
        #expect(y1[..<(2 * P)].allSatisfy { $0 == 0 } && y1.contains { $0 != 0 })
        #expect(relativeError(y2, y1) < 1e-5, "outputs: \(relativeError(y2, y1))")
        #expect(relativeError(s2, s1) < 1e-5 || chunks == 1, "chunk-start states: \(relativeError(s2, s1))")
    }
}
