import COpenBLAS
import Foundation

/// Row-major single-precision matrix product through OpenBLAS:
/// `C (m×n) = alpha · op(A) · op(B) + beta · C`, with `op(A)` m×k and `op(B)` k×n.
/// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored (before any transpose).
/// Every matrix product in Topiary goes through this one function.
///
/// OpenBLAS itself runs single-threaded; large products are split by rows of C across
/// ``Parallel/threads`` workers here. (OpenBLAS's own pool spins in `sched_yield` between calls
/// and stole a core from the element-wise kernels: 15% of a training step's samples.)
/// Row blocks are fixed by the thread count, so results are deterministic per thread count.
@inline(__always)
public func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    let workers = Parallel.inWorker ? 1 : min(Parallel.threads, m / 32)
    if workers <= 1 || m * n * k < 1 << 20 {
        sgemmDirect(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    }
    Parallel.chunks(workers, minimumPerChunk: 1) { _, range in
        for w in range {
            // Rows in multiples of 16 so that every block but the last is kernel-aligned.
            let lo = (m * w / workers) & ~15, hi = w == workers - 1 ? m : (m * (w + 1) / workers) & ~15
            guard lo < hi else { continue }
            let aBlock = transA ? a + lo : a + lo * lda
            sgemmDirect(transA, transB, hi - lo, n, k, alpha, aBlock, lda, b, ldb, beta, c + lo * ldc, ldc)
        }
    }
}

@inline(__always)
func sgemmDirect(
    _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
) {
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
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

    /// Sets the worker count. OpenBLAS is held to one thread; ``gemm`` splits large products.
    public static func setThreads(_ n: Int) {
        _threads = max(1, n)
        openblas_set_num_threads(1)
    }

    /// Reads `TOPIARY_THREADS` (default: all cores).
    public static func configureFromEnvironment() {
        if let s = ProcessInfo.processInfo.environment["TOPIARY_THREADS"], let n = Int(s), n > 0 {
            setThreads(n)
        } else {
            setThreads(_threads)
        }
    }

    /// True on a thread running a ``chunks(_:minimumPerChunk:_:)`` body: nested work runs inline.
    static var inWorker: Bool { workerFlag.pointee != 0 }
    static let workerKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
    static var workerFlag: UnsafeMutablePointer<Int> {
        if let p = pthread_getspecific(workerKey) { return p.assumingMemoryBound(to: Int.self) }
        let p = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        p.pointee = 0
        pthread_setspecific(workerKey, p)
        return p
    }

    /// Calls `body(chunk, range)` for up to ``threads`` contiguous chunks of `0..<count`,
    /// concurrently. Chunk boundaries depend only on `count`, `minimumPerChunk` and ``threads``.
    /// Called from inside a chunk, it runs inline on one chunk.
    @inline(__always)
    public static func chunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Int, Range<Int>) -> Void) {
        let workers = inWorker ? 1 : min(threads, max(1, count / max(1, minimumPerChunk)))
        if workers <= 1 {
            if count > 0 { body(0, 0..<count) }
            return
        }
        // The chunks touch disjoint ranges and `concurrentPerform` returns only when every chunk
        // is done, so `body` never outlives this call nor races with itself on the same data.
        withoutActuallyEscaping(body) { escapable in
            let shared = UncheckedSendable(escapable)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let flag = workerFlag
                flag.pointee = 1
                defer { flag.pointee = 0 }
                let lo = count * w / workers, hi = count * (w + 1) / workers
                if lo < hi { shared.value(w, lo..<hi) }
            }
        }
    }
}

/// A value handed to concurrent workers whose safety the caller guarantees (disjoint writes,
/// joined before return); see ``Parallel/chunks(_:minimumPerChunk:_:)``.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
