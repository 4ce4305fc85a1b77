import Foundation

/// eˣ for eight floats at once: Cody–Waite reduction x = n·ln2 + r (|r| ≤ ln2/2) and Cephes'
/// degree-6 polynomial for eʳ, scaled by 2ⁿ built in the exponent bits. Relative error under
/// 3e-7 on [-87, 88]; inputs are clamped to that range (so −∞ gives about 1e-38, not 0).
@inline(__always)
func exp8(_ v: SIMD8<Float>) -> SIMD8<Float> {
    var x = v
    for i in 0..<8 { x[i] = min(max(v[i], -87), 88) }   // lane by lane: SIMD `clamped` is not inlined
    // Round x·log2(e) to the nearest integer with the 1.5·2²³ trick (plain float adds, which
    // vectorise; Swift's generic SIMD float→int conversion runs lane by lane through a slow path).
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let n = (x * 1.442_695_04 + magic) - magic
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    p = p * (r * r) + r + 1
    // 2ⁿ from the exponent bits, lane by lane with scalar conversions.
    var scale = SIMD8<Float>()
    for i in 0..<8 { scale[i] = Float(bitPattern: UInt32(truncatingIfNeeded: Int32(n[i]) &+ 127) &<< 23) }
    return p * scale
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
        var tail = SIMD8<Float>(repeating: shift)
        for j in i..<count { tail[j - i] = x[j] }
        let e = exp8(tail - s)
        for j in i..<count { x[j] = e[j - i]; sum += e[j - i] }
    }
    return sum
}

/// The maximum of `count` floats (count ≥ 1).
@inline(__always)
func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var r = x[0]
    for i in 1..<max(count, 1) where x[i] > r { r = x[i] }
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
