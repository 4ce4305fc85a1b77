import COpenBLAS
import Foundation

/// Row-major single-precision matrix product through OpenBLAS:
/// `C (m×n) = alpha · op(A) · op(B) + beta · C`, with `op(A)` m×k and `op(B)` k×n.
/// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored (before any transpose).
/// Every matrix product in Topiary goes through this one function.
@inline(__always)
public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// How the engine spreads work over cores: OpenBLAS's own threads for large products, and
/// contiguous chunks on Dispatch's pool for the rest. Results depend only on ``threads``,
/// never on timing: each chunk's work and every reduction order are fixed by the chunking.
public enum Parallel {
    nonisolated(unsafe) private static var _threads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Worker count for element-wise kernels and OpenBLAS (default: all cores, or
    /// `TOPIARY_THREADS`).
    public static var threads: Int { _threads }

    /// Sets the worker count here and in OpenBLAS.
    public static func setThreads(_ n: Int) {
        _threads = max(1, n)
        openblas_set_num_threads(Int32(_threads))
    }

    /// Reads `TOPIARY_THREADS` once at start-up and hands the count to OpenBLAS.
    public static func configureFromEnvironment() {
        if let s = ProcessInfo.processInfo.environment["TOPIARY_THREADS"], let n = Int(s), n > 0 {
            setThreads(n)
        } else {
            setThreads(_threads)
        }
    }

    /// Calls `body(chunk, range)` for `threads` contiguous chunks of `0..<count`, concurrently.
    /// Chunk boundaries depend only on `count` and ``threads``.
    @inline(__always)
    public static func chunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Int, Range<Int>) -> Void) {
        let workers = min(threads, max(1, count / max(1, minimumPerChunk)))
        if workers <= 1 {
            if count > 0 { body(0, 0..<count) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let lo = count * w / workers, hi = count * (w + 1) / workers
            if lo < hi { body(w, lo..<hi) }
        }
    }

    /// Runs `body` with OpenBLAS held to one thread, for sections that call `gemm` from
    /// several of our own workers at once.
    @inline(__always)
    public static func singleThreadedBLAS<R>(_ body: () -> R) -> R {
        if threads > 1 { openblas_set_num_threads(1) }
        defer { if threads > 1 { openblas_set_num_threads(Int32(threads)) } }
        return body()
    }
}
