import Foundation

// Point-wise parts of the MLPs. The projections are `gemm` calls in the model.

/// SwiGLU (llama): pre is (N, 2F) = [gate | up]; `act = silu(gate) · up`, act is (N, F).
func swigluForward(_ act: UnsafeMutablePointer<Float>, _ pre: UnsafePointer<Float>, N: Int, F: Int) {
    Parallel.chunks(N, minimumPerChunk: max(16, 16384 / F)) { _, rows in
        for n in rows {
            let g = pre + n * 2 * F, u = g + F, a = act + n * F
            var i = 0
            while i + 8 <= F {
                let x = load8(g + i)
                store8(x * sigmoid8(x) * load8(u + i), a + i)
                i += 8
            }
            while i < F { let x = g[i]; a[i] = x / (1 + expf(-x)) * u[i]; i += 1 }
        }
    }
}

/// Backward of ``swigluForward``: with s = σ(gate),
/// `d gate = dact · up · s · (1 + gate·(1 − s))`, `d up = dact · gate · s`.
func swigluBackward(_ dpre: UnsafeMutablePointer<Float>, _ dact: UnsafePointer<Float>,
                    _ pre: UnsafePointer<Float>, N: Int, F: Int) {
    Parallel.chunks(N, minimumPerChunk: max(16, 16384 / F)) { _, rows in
        for n in rows {
            let g = pre + n * 2 * F, u = g + F, da = dact + n * F
            let dg = dpre + n * 2 * F, du = dg + F
            var i = 0
            while i + 8 <= F {
                let x = load8(g + i), d = load8(da + i)
                let sg = sigmoid8(x)
                store8(d * x * sg, du + i)
                store8(d * load8(u + i) * sg * (1 + x * (1 - sg)), dg + i)
                i += 8
            }
            while i < F {
                let x = g[i]
                let sg = 1 / (1 + expf(-x))
                du[i] = da[i] * x * sg
                dg[i] = da[i] * u[i] * sg * (1 + x * (1 - sg))
                i += 1
            }
        }
    }
}

/// Squared ReLU (nemotron's `relu2`): `act = max(up, 0)²`; pre and act are (N, F).
func relu2Forward(_ act: UnsafeMutablePointer<Float>, _ pre: UnsafePointer<Float>, count: Int) {
    Parallel.chunks(count, minimumPerChunk: 16384) { _, range in
        for i in range { let r = max(pre[i], 0); act[i] = r * r }
    }
}

/// Backward of ``relu2Forward``: `dpre = dact · 2·max(pre, 0)`.
func relu2Backward(_ dpre: UnsafeMutablePointer<Float>, _ dact: UnsafePointer<Float>,
                   _ pre: UnsafePointer<Float>, count: Int) {
    Parallel.chunks(count, minimumPerChunk: 16384) { _, range in
        for i in range { dpre[i] = dact[i] * 2 * max(pre[i], 0) }
    }
}

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) }
