import ArgumentParser
import Foundation
import Model

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract:
            "What Topiary runs on: CPU and instruction sets, BLAS library and core (and how it was chosen), kernels, threads.",
        discussion: """
            OpenBLAS picks its kernels from the CPU model when it loads and falls back to generic SSE3 kernels for a \
            model it does not know. Topiary checks that at startup and, where the CPU supports a better core, runs \
            itself again with OPENBLAS_CORETYPE set. It never overrides OPENBLAS_CORETYPE when you set it; \
            TOPIARY_BLAS_CORE=NAME runs on core NAME, TOPIARY_BLAS_CORE=keep keeps OpenBLAS's own choice.
            """)

    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Also time a 512×512×512 sgemm on one thread, and a 2048×2048×2048 one on --threads (GFLOP/s).")
    var gemm = false
    @OptionGroup var engine: EngineOptions

    func run() throws {
        engine.apply()
        let p = RuntimePlatform.current
        let gflops = gemm ? measureGemm(size: 512) : nil
        let threaded = gemm ? measureGemm(size: 2048, threaded: true) : nil
        if json {
            var fields = p.json
            fields["topiary"] = .string(topiaryVersion)
            fields["threads"] = JSON(Parallel.threads)
            fields["sgemm_self_check_relative_error"] = JSON(RuntimePlatform.blasSelfCheck())
            if let gflops { fields["sgemm_512_gflops_one_thread"] = JSON(gflops) }
            if let threaded { fields["sgemm_2048_gflops_threads"] = JSON(threaded) }
            printJSON(.object(fields))
            return
        }
        print(
            """
            topiary        \(topiaryVersion)
            cpu            \(p.cpu) (\(p.vendor), family \(p.family) model \(p.model))
            features       \(p.features.joined(separator: " "))
            blas           \(p.blasLibrary) \(p.blasVersion) (\(p.blasPath))
            blas core      \(p.blasCore): \(p.coreChoice); best for this CPU: \(p.bestCore ?? "generic")
            sgemm check    relative error \(String(format: "%.1e", RuntimePlatform.blasSelfCheck())) against a double-precision reference
            kernels        element-wise C kernels: \(p.kernels)
            threads        \(Parallel.threads)
            """)
        if let gflops { print(String(format: "sgemm 512³     %.1f GFLOP/s on one thread", gflops)) }
        if let threaded {
            print(
                String(
                    format: "sgemm 2048³    %.1f GFLOP/s on %d threads (the peak training figures are quoted against)",
                    threaded, Parallel.threads))
        }
        p.notes.forEach { print("note: \($0)") }
        p.warnings.forEach { printWarning($0) }
    }

    /// The best of 10 timings of an n³ sgemm: on one thread, or through ``gemm`` on every thread.
    func measureGemm(size n: Int, threaded: Bool = false) -> Double {
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        let reps = 10
        var best = Double.infinity
        for _ in 0..<reps {
            let start = DispatchTime.now().uptimeNanoseconds
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    c.withUnsafeMutableBufferPointer { pc in
                        if threaded {
                            Model.gemm(
                                m: n, n: n, k: n, a: pa.baseAddress!, lda: n, b: pb.baseAddress!, ldb: n,
                                c: pc.baseAddress!, ldc: n)
                        } else {
                            sgemmOneThread(m: n, n: n, k: n, a: pa.baseAddress!, b: pb.baseAddress!, c: pc.baseAddress!)
                        }
                    }
                }
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return 2 * Double(n * n * n) / best / 1e9
    }
}
