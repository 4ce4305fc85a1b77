import Foundation

// Row helpers for softmax and cross-entropy. They call libm's `expf`: an 8-wide polynomial
// written with Swift's SIMD8 types was measured 1.3× slower per training step (Swift lowers
// SIMD8 float→int conversion and clamping lane by lane without AVX), so it was removed.

/// `x[i] = exp(x[i] − shift)` for i < count; returns the sum of the new values.
@inline(__always)
func expShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
    var sum: Float = 0
    for i in 0..<count { let e = expf(x[i] - shift); x[i] = e; sum += e }
    return sum
}

/// Σ exp(x[i] − shift) for i < count, without writing.
@inline(__always)
func sumExpShifted(_ x: UnsafePointer<Float>, count: Int, shift: Float) -> Float {
    var sum: Float = 0
    for i in 0..<count { sum += expf(x[i] - shift) }
    return sum
}

/// The maximum of `count` floats (count ≥ 1).
@inline(__always)
func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var r = x[0]
    for i in 1..<max(count, 1) where x[i] > r { r = x[i] }
    return r
}
