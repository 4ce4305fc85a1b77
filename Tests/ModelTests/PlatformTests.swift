import CPlatform
import CTestSupport
import Foundation
import Model
import Testing

/// The OpenBLAS core policy (pure, on made-up CPUs) and the re-execution it drives (for real,
/// through the `topiary` binary that `swift test` builds beside the test bundle).
@Suite struct PlatformTests {
    static let avx512: Set<String> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512dq", "avx512bw", "avx512vl"]

    @Test func genericCoreOnAnAVX512CPUSwitches() {
        // The case issue 10 saw: OpenBLAS 0.3.21 does not know the Xeon model and runs Prescott.
        let d = RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Prescott", features: Self.avx512)
        #expect(d.decision == "switch" && d.target == "SkylakeX")
        let bf16 = RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: "auto", currentCore: "Prescott",
                                          features: Self.avx512.union(["avx512_bf16"]))
        #expect(bf16.decision == "switch" && bf16.target == "Cooperlake")
        // AVX2 cores below AVX-512 switch too; AMD's AVX2-only CPUs get Zen, Intel's Haswell.
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Zen", features: Self.avx512, vendor: "AuthenticAMD").target == "SkylakeX")
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Nehalem",
                                       features: ["sse3", "avx", "avx2", "fma"], vendor: "AuthenticAMD").target == "Zen")
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Unknown",
                                       features: ["sse3", "avx", "avx2", "fma"]).target == "Haswell")
    }

    @Test func neverOverridesTheUserOrABetterCore() {
        // OPENBLAS_CORETYPE set by the user wins, even when it is generic.
        #expect(RuntimePlatform.decide(openblasCoretype: "Prescott", topiaryBlasCore: nil, currentCore: "Prescott", features: Self.avx512).decision == "keep-user")
        #expect(RuntimePlatform.decide(openblasCoretype: "Haswell", topiaryBlasCore: "SkylakeX", currentCore: "Haswell", features: Self.avx512).decision == "keep-user")
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: "keep", currentCore: "Prescott", features: Self.avx512).decision == "keep-off")
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: "Bogus", currentCore: "Prescott", features: Self.avx512).decision == "keep-bad-name")
        // Already as good as the CPU allows, or nothing better to offer.
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "SkylakeX", features: Self.avx512).decision == "keep-best")
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Haswell", features: ["sse3", "avx", "avx2", "fma"]).decision == "keep-best")
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Prescott", features: ["sse3"]).decision == "keep-none")
        // AVX-512F alone (no BW/VL, e.g. Knights Landing) is not a SkylakeX CPU.
        #expect(RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: nil, currentCore: "Haswell", features: ["sse3", "avx", "avx2", "fma", "avx512f"]).decision == "keep-best")
        // A named core is applied (that is the user's choice, not Topiary's).
        let named = RuntimePlatform.decide(openblasCoretype: nil, topiaryBlasCore: "haswell", currentCore: "SkylakeX", features: Self.avx512)
        #expect(named.decision == "switch" && named.target == "haswell")
    }

    @Test func thisProcessRunsUnderThePolicy() {
        // The test binary applies the same choice as `topiary` (CTestSupport's constructor).
        #expect(tp_test_support_linked() == 1)
        let p = RuntimePlatform.current
        print("platform: \(p.summary)")
        #expect(!p.blasCore.isEmpty && p.blasLibrary == "OpenBLAS")
        #expect(RuntimePlatform.blasSelfCheck() < 1e-5)
        let env = ProcessInfo.processInfo.environment
        if let user = env["OPENBLAS_CORETYPE"], env["TOPIARY_BLAS_CHOSEN"] == nil {
            #expect(p.blasCore.lowercased() == user.lowercased(), "OPENBLAS_CORETYPE=\(user) must be respected")
        } else if env["TOPIARY_BLAS_CORE"] == nil, let best = p.bestCore {
            #expect(tp_core_tier(p.blasCore) >= tp_core_tier(best), "runs \(p.blasCore) where \(best) was available")
        }
    }

    /// Runs `topiary doctor --json` under a given environment and decodes its output.
    func doctor(_ changes: [String: String?]) throws -> [String: JSON] {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "swift test builds \(binary.path)")
        let process = Process()
        process.executableURL = binary
        process.arguments = ["doctor", "--json"]
        var env = ProcessInfo.processInfo.environment
        for key in ["OPENBLAS_CORETYPE", "TOPIARY_BLAS_CORE", "TOPIARY_BLAS_CHOSEN", "TOPIARY_TEST_ASSUME_CORE"] { env[key] = nil }
        for (key, value) in changes { env[key] = value }
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let decoded = try JSONDecoder().decode(JSON.self, from: data)
        guard case let .object(fields) = decoded else { Issue.record("doctor --json printed \(decoded)"); return [:] }
        return fields
    }

    @Test func reExecutesOnceWithTheChosenCore() throws {
        // TOPIARY_BLAS_CORE=Prescott: OpenBLAS loads with its own choice, Topiary runs itself again
        // on Prescott, and the second process does not fire again (it returns, with the marker).
        let forced = try doctor(["TOPIARY_BLAS_CORE": "Prescott"])
        #expect(forced["blas_core"] == .string("Prescott"))
        #expect(forced["blas_core_choice"]?.description.contains("set by TOPIARY_BLAS_CORE") == true)
        // Generic kernels on a CPU with better ones: a warning, unless the CPU has nothing better.
        if forced["blas_best_core"] != .null {
            #expect(forced["warnings"]?.description.contains("generic Prescott") == true)
        }
        // The user's OPENBLAS_CORETYPE is never overridden.
        let user = try doctor(["OPENBLAS_CORETYPE": "Prescott"])
        #expect(user["blas_core"] == .string("Prescott"))
        #expect(user["blas_core_choice"] == .string("set by OPENBLAS_CORETYPE"))
        // Automatic: whatever OpenBLAS picked, the result is at least the CPU's best tier.
        let auto = try doctor([:])
        if case let .string(best) = auto["blas_best_core"], case let .string(core) = auto["blas_core"] {
            #expect(tp_core_tier(core) >= tp_core_tier(best))
        }
        for key in ["cpu", "cpu_features", "blas", "blas_core"] { #expect(auto[key] != nil, "doctor --json has \(key)") }
        // The case of issue 10, end to end: OpenBLAS (as if) on its generic Prescott fallback on
        // this CPU → Topiary runs itself again on the best core, once, and says so.
        if case let .string(best) = auto["blas_best_core"], tp_core_tier(best) > tp_core_tier("Prescott") {
            let fallback = try doctor(["TOPIARY_TEST_ASSUME_CORE": "Prescott"])
            #expect(fallback["blas_core"] == .string(best), "\(fallback["blas_core"] ?? .null)")
            #expect(fallback["blas_core_choice"] == .string("chosen by Topiary (OpenBLAS picked Prescott)"))
            #expect(fallback["warnings"] == .array([]))
        }
        // A name OpenBLAS does not have: kept as it was, with a warning naming it.
        let bad = try doctor(["TOPIARY_BLAS_CORE": "Bogus"])
        #expect(bad["warnings"]?.description.contains("TOPIARY_BLAS_CORE=Bogus") == true)
    }
}
