#ifndef TOPIARY_PLATFORM_H
#define TOPIARY_PLATFORM_H

/// What Topiary runs on, and the choice of OpenBLAS core.
///
/// OpenBLAS (a DYNAMIC_ARCH build, as Debian ships it) picks its kernels once, when the library
/// loads, from the CPU model — and falls back to generic SSE3 kernels (`Prescott`) for a model it
/// does not know, although the CPU has AVX-512. It reads `OPENBLAS_CORETYPE` at that moment only,
/// so the only way to change the choice is to run the process again with the variable set:
/// `tp_blas_select` does that once, at startup, before any thread exists.

/// Instruction-set tiers, as far as OpenBLAS kernels go.
enum tp_tier { TP_TIER_UNKNOWN = 0, TP_TIER_SSE = 1, TP_TIER_AVX = 2, TP_TIER_AVX2 = 3, TP_TIER_AVX512 = 4 };

/// The CPU's features that matter for kernel choice (from cpuid, with the OS's register state).
typedef struct {
    char vendor[16];      ///< "GenuineIntel", "AuthenticAMD", …
    char brand[64];       ///< the brand string, e.g. "Intel(R) Xeon(R) Platinum 8581C CPU"
    int family, model, stepping;
    int sse3, ssse3, sse41, sse42, avx, avx2, fma, f16c;
    int avx512f, avx512cd, avx512dq, avx512bw, avx512vl, avx512_bf16, avx512_fp16, avx512_vnni;
} tp_cpu;

/// Reads cpuid into `cpu` (zeroes on other architectures).
void tp_cpu_read(tp_cpu *cpu);

/// The CPU's tier: AVX-512 needs F, CD, DQ, BW and VL (OpenBLAS's SkylakeX kernels use them).
int tp_cpu_tier(const tp_cpu *cpu);

/// The tier of an OpenBLAS core name (case-insensitive); TP_TIER_UNKNOWN for a name it does not list.
int tp_core_tier(const char *core);

/// The best OpenBLAS 0.3.x core for this CPU: Cooperlake (AVX-512 with BF16) or SkylakeX for
/// AVX-512, Zen (AMD) or Haswell for AVX2+FMA, Sandybridge for AVX; NULL below that.
const char *tp_best_core(const tp_cpu *cpu);

/// What `tp_blas_decide` concluded.
enum tp_blas_decision {
    TP_BLAS_KEEP_USER = 0,     ///< OPENBLAS_CORETYPE was set by the user: never touched
    TP_BLAS_KEEP_BEST = 1,     ///< OpenBLAS already runs the best core for this CPU (or better)
    TP_BLAS_KEEP_OFF = 2,      ///< TOPIARY_BLAS_CORE=keep: the user asked for OpenBLAS's own choice
    TP_BLAS_KEEP_NONE = 3,     ///< the CPU has nothing better to offer
    TP_BLAS_SWITCH = 4,        ///< run again with OPENBLAS_CORETYPE = target
    TP_BLAS_KEEP_BAD_NAME = 5, ///< TOPIARY_BLAS_CORE names no core OpenBLAS knows: kept, with a warning
};

/// The policy, free of side effects (tested on made-up CPUs): given OPENBLAS_CORETYPE and
/// TOPIARY_BLAS_CORE as found in the environment (NULL when unset), the core OpenBLAS chose and
/// the CPU, decide; on TP_BLAS_SWITCH `*target` names the core to run with.
/// TOPIARY_BLAS_CORE: unset or "auto" — choose; "keep" — never switch; a core name — run with it.
int tp_blas_decide(const char *openblas_coretype, const char *topiary_blas_core,
                   const char *current_core, const tp_cpu *cpu, const char **target);

/// Applies the policy once at process start: on TP_BLAS_SWITCH it sets OPENBLAS_CORETYPE and
/// TOPIARY_BLAS_CHOSEN ("<OpenBLAS's core>:<target>") and re-executes /proc/self/exe with `argv`.
/// In the re-executed process OPENBLAS_CORETYPE is set, so it never fires twice; there it checks
/// a small sgemm against a double-precision reference, and if the new core computes it wrongly,
/// runs once more on OpenBLAS's own choice (TOPIARY_BLAS_CHOSEN = "<core>:rejected:<target>").
/// Returns only when the process keeps running as it is.
void tp_blas_select(char **argv);

/// The core OpenBLAS runs ("Haswell", "SkylakeX", …) and its configuration line
/// ("OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH …").
const char *tp_blas_core(void);
const char *tp_blas_config(void);

/// The path of the loaded OpenBLAS library, or "" when unknown.
const char *tp_blas_library_path(void);

/// Why the process runs on its core: "" when nothing happened, otherwise a short sentence
/// (set by tp_blas_select, e.g. that re-executing failed).
const char *tp_blas_select_note(void);

/// Max |C - C_ref| / max|C_ref| of a 48×40×56 sgemm against a double reference (the self-check).
double tp_blas_self_check(void);

/// Makes standard output line-buffered, whatever it is (terminal, file, pipe): every log line
/// is written when it ends.
void tp_line_buffer_stdout(void);

/// 1 when child `pid` has exited and awaits reaping, with its exit status or signal in `code` and
/// `signaled` 1 for a signal; 0 otherwise — without reaping it (`waitid(…, WEXITED | WNOHANG | WNOWAIT)`). Foundation's Process learns of an exit only once
/// every copy of a descriptor it gave the child is closed, which a grandchild the child left behind
/// may hold open for ever.
int tp_child_exited(int pid, int *code, int *signaled);

#endif
