#ifndef TOPIARY_KERNELS_H
#define TOPIARY_KERNELS_H

/// Element-wise kernels that Swift cannot vectorise well: exp, SwiGLU and its backward pass.
/// Each has an AVX-512F path and an AVX2+FMA path, the best the CPU has chosen once at run time,
/// and a portable scalar path (libm's expf) otherwise. The vector exp is Cephes' polynomial
/// (about 2 ulp), the same in both widths.

/// x[i] = exp(x[i] - shift) for i < n; returns the sum of the new values.
float tp_exp_shifted(float *x, long n, float shift);

/// Sum of exp(x[i] - shift) for i < n, without writing.
float tp_sum_exp_shifted(const float *x, long n, float shift);

/// SwiGLU over `rows` rows: pre is (rows, 2F) = [gate | up]; act (rows, F) = silu(gate) * up.
void tp_swiglu_forward(float *act, const float *pre, long rows, long F);

/// Backward of tp_swiglu_forward: with s = sigmoid(gate),
/// dgate = dact * up * s * (1 + gate * (1 - s)), dup = dact * gate * s; dpre is (rows, 2F).
void tp_swiglu_backward(float *dpre, const float *dact, const float *pre, long rows, long F);

/// 1 when a vector path (AVX2 or AVX-512) is in use (for benchmarks and tests).
int tp_kernels_vectorised(void);

/// The path in use: "avx512", "avx2" or "scalar".
const char *tp_kernels_path(void);

/// Uses path `level` (0 scalar, 1 AVX2, 2 AVX-512) or the best below it that the CPU has; a
/// negative level restores the best. Returns the level in use. For tests and benchmarks.
int tp_kernels_set_level(int level);

/// The best level this CPU has (2, 1 or 0).
int tp_kernels_best_level(void);

/// The kernels above on a given path (0 scalar, 1 AVX2, 2 AVX-512; the caller checks the CPU has
/// it), for tests that compare every path with the reference.
float tp_exp_shifted_on(int path, float *x, long n, float shift);
float tp_sum_exp_shifted_on(int path, const float *x, long n, float shift);
void tp_swiglu_forward_on(int path, float *act, const float *pre, long rows, long F);
void tp_swiglu_backward_on(int path, float *dpre, const float *dact, const float *pre, long rows, long F);

/// One AdamW step over n parameters, k = {clip, β1, β2, c1, c2, ε, lr, decay} with c1, c2 the bias
/// corrections 1/(1−β^t): g = grad·clip; m = β1·m + (1−β1)·g; v = β2·v + ((1−β2)·g)·g;
/// p −= lr·((m·c1)/(sqrt(v·c2) + ε) + decay·p). Every path computes exactly these operations in
/// this order, without fused multiply-adds: results are bit-identical across paths.
void tp_adamw(float *p, const float *grad, float *m, float *v, long n, const float *k);
void tp_adamw_on(int path, float *p, const float *grad, float *m, float *v, long n, const float *k);

/// Mamba2's selective scan for one sequence and one group g (mamba.c): x, B and C read from xbc
/// (rows of stride xs; x of head h at h·P, B at I + g·N, C at I + G·N + g·N), Δ from dt (stride
/// dts), y written (stride ys), the state at the start of every chunk of Q positions kept in
/// chunk_states ([chunk][head][P][N]).
void tp_mamba_scan_forward(long T, long H, long P, long G, long Ns, long Q, long g, const float *xbc, long xs, long I,
                           const float *dt, long dts, const float *A, const float *D, float *y, long ys,
                           float *chunk_states);
/// One position of one head, the step both the scan and decoding take: S (P × N) ← a·S + d·x ⊗ b,
/// y = S·c + Dh·x (a = exp(d·A)).
void tp_mamba_state_step(long P, long Ns, float *S, const float *x, const float *b, const float *c, float d, float a,
                         float Dh, float *y);
/// Its backward pass from dy: adds into dxbc, ddt, dA and dD (zeroed by the caller).
void tp_mamba_scan_backward(long T, long H, long P, long G, long Ns, long Q, long g, const float *xbc, long xs, long I,
                            const float *dt, long dts, const float *A, const float *D, const float *chunk_states,
                            const float *dy, long dys, float *dxbc, float *ddt, float *dA, float *dD);
/// Depthwise causal convolution of K taps over T positions of W channels (bias may be NULL), and
/// its backward pass (din written; dw, dbias added to).
void tp_causal_conv_forward(long T, long W, long K, const float *in, long is, const float *w, const float *bias,
                            float *out, long os);
void tp_causal_conv_backward(long T, long W, long K, const float *in, long is, const float *w, const float *dout,
                             long os, float *din, long ds, float *dw, float *dbias);

/// The gated delta rule for one sequence and one value head (deltanet.c): q and k (rows of stride
/// qks, already L2-normalised, q scaled by 1/√Dk), v (stride vs), the log decay g and the rate β
/// (stride gs); o written (stride os); the state (Dk × Dv) at the start of every chunk of Q
/// positions kept in chunk_states ([chunk][Dk][Dv]).
void tp_gdn_scan_forward(long T, long Dk, long Dv, long Q, const float *q, const float *k, long qks, const float *v,
                         long vs, const float *g, const float *beta, long gs, float *o, long os,
                         float *chunk_states);
/// One position, the step both the scan and decoding take: S ← a·S; δ = β·(v − Sᵀk); S += k ⊗ δ;
/// o = Sᵀq.
void tp_gdn_state_step(long Dk, long Dv, float *S, const float *q, const float *k, const float *v, float a,
                       float beta, float *o);
/// Its backward pass from do: writes dq, dk (stride dqks; this head's share), dv (stride dvs), dg
/// and dβ (stride dgs).
void tp_gdn_scan_backward(long T, long Dk, long Dv, long Q, const float *q, const float *k, long qks, const float *v,
                          long vs, const float *g, const float *beta, long gs, const float *chunk_states,
                          const float *dout, long dos, float *dq, float *dk, long dqks, float *dv, long dvs, float *dg,
                          float *dbeta, long dgs);

#endif
