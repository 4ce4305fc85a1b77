import CKernels
import Foundation

// Point-wise parts of the MLPs. The projections are `gemm` calls in the model.

/// SwiGLU (llama): pre is (N, 2F) = [gate | up]; `act = silu(gate) · up`, act is (N, F).
func swigluForward(_ act: UnsafeMutablePointer<Float>, _ pre: UnsafePointer<Float>, N: Int, F: Int) {
    Parallel.chunks(N, minimumPerChunk: max(16, 16384 / F)) { _, rows in
        tp_swiglu_forward(act + rows.lowerBound * F, pre + rows.lowerBound * 2 * F, rows.count, F)
    }
}

/// Backward of ``swigluForward``: with s = σ(gate),
/// `d gate = dact · up · s · (1 + gate·(1 − s))`, `d up = dact · gate · s`.
func swigluBackward(
    _ dpre: UnsafeMutablePointer<Float>, _ dact: UnsafePointer<Float>,
    _ pre: UnsafePointer<Float>, N: Int, F: Int
) {
    Parallel.chunks(N, minimumPerChunk: max(16, 16384 / F)) { _, rows in
        tp_swiglu_backward(
            dpre + rows.lowerBound * 2 * F, dact + rows.lowerBound * F, pre + rows.lowerBound * 2 * F, rows.count, F)
    }
}

/// Squared ReLU (nemotron's `relu2`): `act = max(up, 0)²`; pre and act are (N, F).
func relu2Forward(_ act: UnsafeMutablePointer<Float>, _ pre: UnsafePointer<Float>, count: Int) {
    Parallel.chunks(count, minimumPerChunk: 16384) { _, range in
        for i in range { let r = max(pre[i], 0); act[i] = r * r }
    }
}

/// Backward of ``relu2Forward``: `dpre = dact · 2·max(pre, 0)`.
func relu2Backward(
    _ dpre: UnsafeMutablePointer<Float>, _ dact: UnsafePointer<Float>,
    _ pre: UnsafePointer<Float>, count: Int
) {
    Parallel.chunks(count, minimumPerChunk: 16384) { _, range in
        for i in range { dpre[i] = dact[i] * 2 * max(pre[i], 0) }
    }
}
