import CKernels
import Foundation

// Row helpers for softmax and cross-entropy. The exponentials run in C (`Sources/CKernels`):
// an AVX2+FMA polynomial chosen at run time, libm's `expf` otherwise. (An 8-wide polynomial
// written with Swift's SIMD8 types was measured 1.3× slower per step than plain `expf`: without
// AVX in Swift's code generation it lowers float→int conversion and clamping lane by lane.)

/// `x[i] = exp(x[i] − shift)` for i < count; returns the sum of the new values.
@inline(__always)
func expShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
    tp_exp_shifted(x, count, shift)
}

/// Σ exp(x[i] − shift) for i < count, without writing.
@inline(__always)
func sumExpShifted(_ x: UnsafePointer<Float>, count: Int, shift: Float) -> Float {
    tp_sum_exp_shifted(x, count, shift)
}

/// Whether the element-wise kernels use a vector path (AVX2 or AVX-512) on this CPU.
public var vectorisedKernels: Bool { tp_kernels_vectorised() != 0 }

/// The element-wise kernels' paths, best first; ``useElementwiseKernels(_:)`` picks one (for
/// benchmarks and tests; the default is the best the CPU has).
public let elementwiseKernelPaths = ["avx512", "avx2", "scalar"]

/// Runs the element-wise kernels on `path` ("avx512", "avx2", "scalar"), or on the best path
/// below it that this CPU has; returns the path in use.
@discardableResult
public func useElementwiseKernels(_ path: String) -> String {
    let level = ["scalar": 0, "avx2": 1, "avx512": 2][path] ?? -1
    tp_kernels_set_level(Int32(level))
    return String(cString: tp_kernels_path())
}

/// The maximum of `count` floats (count ≥ 1).
@inline(__always)
func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var r = x[0]
    for i in 1..<max(count, 1) where x[i] > r { r = x[i] }
    return r
}
