import CKernels
import CPlatform
import Foundation

/// What this process computes on: the CPU and the instruction sets it offers, the BLAS library,
/// the OpenBLAS core (kernel set) it runs and how that core was chosen, and the path of the
/// element-wise C kernels. `topiary doctor`, `--version`, `model info` and `bench … --json` print it.
///
/// OpenBLAS picks its core once, when it loads, from the CPU model; for a model it does not know it
/// falls back to generic SSE3 kernels (`Prescott`) — 4–9× slower matrix products on an AVX-512
/// CPU. ``selectBLASCore(argv:)`` corrects that at startup by running the process once more with
/// `OPENBLAS_CORETYPE` set. It never touches a core the user chose (`OPENBLAS_CORETYPE`, or
/// `TOPIARY_BLAS_CORE=NAME|keep`), never fires twice, and falls back to OpenBLAS's own choice when
/// the new core fails a small sgemm self-check.
public struct RuntimePlatform: Sendable {
    /// The CPU's brand string ("AMD EPYC", "Intel(R) Xeon(R) …"), vendor, family and model.
    public let cpu: String
    public let vendor: String
    public let family: Int
    public let model: Int
    /// Instruction sets that matter for the kernels, in cpuid's lower-case names (OS support checked).
    public let features: [String]
    /// The best OpenBLAS core for this CPU, or nil where only generic kernels apply.
    public let bestCore: String?
    /// "OpenBLAS", its version ("0.3.21"), its configuration line and the loaded library's path.
    public let blasLibrary: String
    public let blasVersion: String
    public let blasConfig: String
    public let blasPath: String
    /// The core OpenBLAS runs ("SkylakeX", "Haswell", …) and how it came to run it.
    public let blasCore: String
    public let coreChoice: String
    /// "avx512", "avx2" or "scalar": the path the element-wise C kernels take now.
    public var kernels: String { String(cString: tp_kernels_path()) }
    /// Problems worth a user's attention (a generic BLAS core that could not be fixed).
    public let warnings: [String]
    /// Facts short of a problem (a user-set core below the CPU's best).
    public let notes: [String]

    /// The platform of this process, read once.
    public static let current = RuntimePlatform()

    /// Applies the core policy before anything else runs (call first thing in `main`); may
    /// replace the process with itself, started again with `OPENBLAS_CORETYPE` set.
    /// Standard output line-buffered wherever it goes, so that log lines appear as they are
    /// written under Slurm, in a pipe or a file (the C library buffers blocks there otherwise).
    public static func lineBufferStandardOutput() { tp_line_buffer_stdout() }

    public static func selectBLASCore(argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) {
        tp_blas_select(argv)
    }

    init() {
        var c = tp_cpu()
        tp_cpu_read(&c)
        func text<T>(_ tuple: T) -> String {
            withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        vendor = text(c.vendor)
        let brand = text(c.brand)
        cpu = brand.isEmpty ? vendor : brand
        family = Int(c.family)
        model = Int(c.model)
        let flags: [(String, Int32)] = [
            ("sse3", c.sse3), ("ssse3", c.ssse3), ("sse4_1", c.sse41), ("sse4_2", c.sse42), ("avx", c.avx),
            ("avx2", c.avx2), ("fma", c.fma), ("f16c", c.f16c), ("avx512f", c.avx512f), ("avx512cd", c.avx512cd),
            ("avx512dq", c.avx512dq), ("avx512bw", c.avx512bw), ("avx512vl", c.avx512vl),
            ("avx512_vnni", c.avx512_vnni), ("avx512_bf16", c.avx512_bf16), ("avx512_fp16", c.avx512_fp16)
        ]
        features = flags.filter { $0.1 != 0 }.map(\.0)
        bestCore = tp_best_core(&c).map { String(cString: $0) }
        blasConfig = String(cString: tp_blas_config())
        let words = blasConfig.split(separator: " ")
        blasLibrary = words.first.map(String.init) ?? "OpenBLAS"
        blasVersion = words.count > 1 ? String(words[1]) : "unknown"
        blasPath = String(cString: tp_blas_library_path())
        blasCore = String(cString: tp_blas_core())

        let env = ProcessInfo.processInfo.environment
        let chosen = env["TOPIARY_BLAS_CHOSEN"].map { $0.split(separator: ":").map(String.init) } ?? []
        let userCore = env["TOPIARY_BLAS_CORE"].flatMap {
            ["", "auto", "keep"].contains($0.lowercased()) || tp_core_tier($0) == 0 ? nil : $0
        }
        let note = String(cString: tp_blas_select_note())
        var warnings: [String] = [], notes: [String] = []
        if chosen.count == 3, chosen[1] == "rejected" {
            coreChoice = "OpenBLAS's choice (\(chosen[2]) failed Topiary's sgemm self-check)"
            warnings.append(
                "OpenBLAS's \(chosen[2]) kernels computed a matrix product wrongly on this CPU; running \(blasCore) instead"
            )
        } else if chosen.count == 2, userCore != nil {
            coreChoice = "set by TOPIARY_BLAS_CORE (OpenBLAS picked \(chosen[0]))"
        } else if chosen.count == 2 {
            coreChoice = "chosen by Topiary (OpenBLAS picked \(chosen[0]))"
        } else if env["OPENBLAS_CORETYPE"].map({ !$0.isEmpty }) ?? false {
            coreChoice = "set by OPENBLAS_CORETYPE"
        } else if env["TOPIARY_BLAS_CORE"]?.lowercased() == "keep" {
            coreChoice = "OpenBLAS's choice (TOPIARY_BLAS_CORE=keep)"
        } else {
            coreChoice = "OpenBLAS's choice"
        }
        if !note.isEmpty { warnings.append(note) }
        let coreTier = tp_core_tier(blasCore), cpuTier = tp_cpu_tier(&c)
        if coreTier < cpuTier, let best = bestCore {
            let generic = coreTier <= Int32(TP_TIER_SSE.rawValue)
            let text =
                "OpenBLAS runs \(generic ? "generic " : "")\(blasCore) kernels (\(coreChoice)) although this CPU supports \(best)"
                + (coreChoice.hasPrefix("set by")
                    ? "; unset \(userCore != nil ? "TOPIARY_BLAS_CORE" : "OPENBLAS_CORETYPE") to let Topiary choose"
                    : "")
            if generic { warnings.append(text) } else { notes.append(text) }
        }
        self.warnings = warnings
        self.notes = notes
    }

    /// One line: `CPU "AMD EPYC" (family 26 model 2, AVX-512); OpenBLAS 0.3.21, core Haswell (set by OPENBLAS_CORETYPE); kernels avx512`.
    public var summary: String {
        let isa =
            features.contains("avx512f")
            ? "AVX-512" : features.contains("avx2") ? "AVX2" : features.contains("avx") ? "AVX" : "SSE"
        return
            "CPU \"\(cpu)\" (family \(family) model \(model), \(isa)); \(blasLibrary) \(blasVersion), core "
            + "\(blasCore) (\(coreChoice)); element-wise kernels \(kernels)"
    }

    /// The fields `bench … --json` and `doctor --json` add.
    public var json: [String: JSON] {
        [
            "cpu": JSON.string(cpu), "cpu_vendor": .string(vendor), "cpu_family": JSON(family),
            "cpu_model": JSON(model),
            "cpu_features": .array(features.map { .string($0) }),
            "blas": .string("\(blasLibrary) \(blasVersion)"), "blas_config": .string(blasConfig),
            "blas_path": .string(blasPath),
            "blas_core": .string(blasCore), "blas_core_choice": .string(coreChoice),
            "blas_best_core": bestCore.map { .string($0) } ?? .null, "kernels": .string(kernels),
            "warnings": .array(warnings.map { .string($0) }), "notes": .array(notes.map { .string($0) })
        ]
    }
}

extension RuntimePlatform {
    /// The worst relative error of two small sgemm products against a double-precision reference
    /// (about 1e-7 on a correct core; the startup check rejects a new core above 1e-4).
    public static func blasSelfCheck() -> Double { tp_blas_self_check() }

    /// The pure core policy, for tests: what Topiary does given the environment, OpenBLAS's core and a CPU.
    public static func decide(
        openblasCoretype: String?, topiaryBlasCore: String?, currentCore: String,
        features: Set<String>, vendor: String = "GenuineIntel"
    ) -> (decision: String, target: String?) {
        var c = tp_cpu()
        withUnsafeMutableBytes(of: &c.vendor) { buffer in
            for (i, byte) in vendor.utf8.prefix(15).enumerated() { buffer[i] = byte }
        }
        func flag(_ name: String) -> Int32 { features.contains(name) ? 1 : 0 }
        c.sse3 = flag("sse3"); c.avx = flag("avx"); c.avx2 = flag("avx2"); c.fma = flag("fma")
        c.avx512f = flag("avx512f"); c.avx512cd = flag("avx512cd"); c.avx512dq = flag("avx512dq")
        c.avx512bw = flag("avx512bw"); c.avx512vl = flag("avx512vl"); c.avx512_bf16 = flag("avx512_bf16")
        var target: UnsafePointer<CChar>?
        let d = tp_blas_decide(openblasCoretype, topiaryBlasCore, currentCore, &c, &target)
        let names = [
            TP_BLAS_KEEP_USER: "keep-user", TP_BLAS_KEEP_BEST: "keep-best", TP_BLAS_KEEP_OFF: "keep-off",
            TP_BLAS_KEEP_NONE: "keep-none", TP_BLAS_SWITCH: "switch", TP_BLAS_KEEP_BAD_NAME: "keep-bad-name"
        ]
        return (names[tp_blas_decision(rawValue: UInt32(d))] ?? "unknown", target.map { String(cString: $0) })
    }
}

/// One single-threaded sgemm straight into OpenBLAS (C = A·B, all n-strided), for `doctor --gemm`.
public func sgemmOneThread(
    m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>
) {
    sgemmDirect(false, false, m, n, k, 1, a, k, b, n, 0, c, n)
}
