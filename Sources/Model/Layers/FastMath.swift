import Foundation

/// eˣ for eight floats at once: Cody–Waite reduction x = n·ln2 + r (|r| ≤ ln2/2) and Cephes'
/// degree-6 polynomial for eʳ, scaled by 2ⁿ built in the exponent bits. Relative error under
/// 3e-7 on [-87, 88]; inputs are clamped to that range (so −∞ gives about 1e-38, not 0).
@inline(__always)
func exp8(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let x = v.clamped(lowerBound: SIMD8(repeating: -87.0), upperBound: SIMD8(repeating: 88.0))
    let n = (x * 1.442_695_04).rounded(.toNearestOrEven)
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    p = p * (r * r) + r + 1
    let bits = (SIMD8<Int32>(n, rounding: .towardZero) &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

/// `x[i] = exp(x[i] − shift)` for i < count; returns the sum of the new values (Float, summed
/// eight lanes at a time, then the tail).
@inline(__always)
func expShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
    var i = 0
    var acc = SIMD8<Float>(repeating: 0)
    let s = SIMD8<Float>(repeating: shift)
    let raw = UnsafeMutableRawPointer(x)
    while i + 8 <= count {
        let e = exp8(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - s)
        raw.storeBytes(of: e, toByteOffset: i * 4, as: SIMD8<Float>.self)
        acc += e
        i += 8
    }
    var sum = acc.sum()
    if i < count {
        var tail = SIMD8<Float>(repeating: -.infinity)
        for j in i..<count { tail[j - i] = x[j] }
        let e = exp8(tail - s)
        for j in i..<count { x[j] = e[j - i]; sum += e[j - i] }
    }
    return sum
}

/// The maximum of `count` floats (count ≥ 1).
@inline(__always)
func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var i = 0
    var m = SIMD8<Float>(repeating: -.infinity)
    let raw = UnsafeRawPointer(x)
    while i + 8 <= count { m = pointwiseMax(m, raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)); i += 8 }
    var r = m.max()
    while i < count { r = max(r, x[i]); i += 1 }
    return r
}

/// Exposed for tests: `exp8` on one value.
public func _fastExp(_ x: Float) -> Float { exp8(SIMD8(repeating: x))[0] }

/// Σ exp(x[i] − shift) for i < count, without writing.
@inline(__always)
func sumExpShifted(_ x: UnsafePointer<Float>, count: Int, shift: Float) -> Float {
    var i = 0
    var acc = SIMD8<Float>(repeating: 0)
    let s = SIMD8<Float>(repeating: shift)
    let raw = UnsafeRawPointer(x)
    while i + 8 <= count { acc += exp8(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - s); i += 8 }
    var sum = acc.sum()
    while i < count { sum += exp8(SIMD8(repeating: x[i] - shift))[0]; i += 1 }
    return sum
}

/// Logistic sigmoid of eight floats: 1 / (1 + e^(−x)).
@inline(__always)
func sigmoid8(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 / (1 + exp8(-x)) }
