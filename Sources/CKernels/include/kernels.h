#ifndef TOPIARY_KERNELS_H
#define TOPIARY_KERNELS_H

/// Element-wise kernels that Swift cannot vectorise well: exp, SwiGLU and its backward pass.
/// Each has an AVX2+FMA path, chosen once at run time when the CPU has those instructions, and a
/// portable scalar path (libm's expf) otherwise. The AVX2 exp is Cephes' polynomial (about 2 ulp).

/// x[i] = exp(x[i] - shift) for i < n; returns the sum of the new values.
float tp_exp_shifted(float *x, long n, float shift);

/// Sum of exp(x[i] - shift) for i < n, without writing.
float tp_sum_exp_shifted(const float *x, long n, float shift);

/// SwiGLU over `rows` rows: pre is (rows, 2F) = [gate | up]; act (rows, F) = silu(gate) * up.
void tp_swiglu_forward(float *act, const float *pre, long rows, long F);

/// Backward of tp_swiglu_forward: with s = sigmoid(gate),
/// dgate = dact * up * s * (1 + gate * (1 - s)), dup = dact * gate * s; dpre is (rows, 2F).
void tp_swiglu_backward(float *dpre, const float *dact, const float *pre, long rows, long F);

/// 1 when the AVX2 path is in use (for benchmarks and tests).
int tp_kernels_vectorised(void);

/// The path in use: "avx512", "avx2" or "scalar".
const char *tp_kernels_path(void);

#endif
