#include "kernels.h"
#include <math.h>

// The scalar AdamW step (see adamw_avx512 below for the formula); no contraction into FMA.
static void adamw_scalar(float *p, const float *grad, float *m, float *v, long n, const float *k) {
#pragma clang fp contract(off)
    const float clip = k[0], b1 = k[1], b2 = k[2], c1 = k[3], c2 = k[4], eps = k[5], lr = k[6], decay = k[7];
    const float ob1 = 1.0f - b1, ob2 = 1.0f - b2;
    for (long i = 0; i < n; i++) {
        float g = grad[i] * clip;
        float mi = b1 * m[i] + ob1 * g;
        float vi = b2 * v[i] + ob2 * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * ((mi * c1) / (sqrtf(vi * c2) + eps) + decay * p[i]);
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define TP_AVX2 __attribute__((target("avx2,fma")))

// Cephes expf: e^x = 2^n · e^r with n = round(x / ln 2), |r| ≤ ln 2 / 2, and a degree-6 polynomial.
TP_AVX2 static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(n));
    return _mm256_andnot_ps(under, y);   // below the range: 0
}

TP_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

TP_AVX2 static float exp_shifted_avx2(float *x, long n, float shift) {
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum256(acc);
    for (; i < n; i++) { float e = expf(x[i] - shift); x[i] = e; sum += e; }
    return sum;
}

TP_AVX2 static float sum_exp_shifted_avx2(const float *x, long n, float shift) {
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    long i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
    float sum = hsum256(acc);
    for (; i < n; i++) sum += expf(x[i] - shift);
    return sum;
}

TP_AVX2 static inline __m256 sigmoid256(__m256 g) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

TP_AVX2 static void swiglu_forward_avx2(float *act, const float *pre, long rows, long F) {
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F;
        float *a = act + r * F;
        long i = 0;
        for (; i + 8 <= F; i += 8) {
            __m256 gv = _mm256_loadu_ps(g + i);
            _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_mul_ps(gv, sigmoid256(gv)), _mm256_loadu_ps(u + i)));
        }
        for (; i < F; i++) a[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

TP_AVX2 static void swiglu_backward_avx2(float *dpre, const float *dact, const float *pre, long rows, long F) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F, *da = dact + r * F;
        float *dg = dpre + r * 2 * F, *du = dg + F;
        long i = 0;
        for (; i + 8 <= F; i += 8) {
            __m256 gv = _mm256_loadu_ps(g + i), uv = _mm256_loadu_ps(u + i), dv = _mm256_loadu_ps(da + i);
            __m256 s = sigmoid256(gv);
            _mm256_storeu_ps(du + i, _mm256_mul_ps(dv, _mm256_mul_ps(gv, s)));
            __m256 t = _mm256_fmadd_ps(gv, _mm256_sub_ps(one, s), one);
            _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(dv, uv), _mm256_mul_ps(s, t)));
        }
        for (; i < F; i++) {
            float x = g[i], s = 1.0f / (1.0f + expf(-x));
            du[i] = da[i] * x * s;
            dg[i] = da[i] * u[i] * s * (1.0f + x * (1.0f - s));
        }
    }
}

#define TP_AVX512 __attribute__((target("avx512f,avx2,fma")))

// The same Cephes polynomial, 16 lanes wide.
TP_AVX512 static inline __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.3f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
    __m512 fx = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                     _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i n = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(n));
    return _mm512_maskz_mov_ps((__mmask16)~under, y);   // below the range: 0
}

// The last n % 16 elements run through masked loads and stores: every element of a row gets the
// same polynomial, whatever the row's length (short attention rows are all tail).
static inline __mmask16 tail_mask(long left) { return (__mmask16)((1u << left) - 1); }

TP_AVX512 static float exp_shifted_avx512(float *x, long n, float shift) {
    __m512 acc = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh));
        _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

TP_AVX512 static float sum_exp_shifted_avx512(const float *x, long n, float shift) {
    __m512 acc = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    long i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        acc = _mm512_mask_add_ps(acc, m, acc, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh)));
    }
    return _mm512_reduce_add_ps(acc);
}

TP_AVX512 static inline __m512 sigmoid512(__m512 g) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

TP_AVX512 static void swiglu_forward_avx512(float *act, const float *pre, long rows, long F) {
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F;
        float *a = act + r * F;
        for (long i = 0; i < F; i += 16) {
            __mmask16 m = F - i >= 16 ? (__mmask16)0xffff : tail_mask(F - i);
            __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
            _mm512_mask_storeu_ps(a + i, m, _mm512_mul_ps(_mm512_mul_ps(gv, sigmoid512(gv)), _mm512_maskz_loadu_ps(m, u + i)));
        }
    }
}

TP_AVX512 static void swiglu_backward_avx512(float *dpre, const float *dact, const float *pre, long rows, long F) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F, *da = dact + r * F;
        float *dg = dpre + r * 2 * F, *du = dg + F;
        for (long i = 0; i < F; i += 16) {
            __mmask16 m = F - i >= 16 ? (__mmask16)0xffff : tail_mask(F - i);
            __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i), dv = _mm512_maskz_loadu_ps(m, da + i);
            __m512 s = sigmoid512(gv);
            _mm512_mask_storeu_ps(du + i, m, _mm512_mul_ps(dv, _mm512_mul_ps(gv, s)));
            __m512 t = _mm512_fmadd_ps(gv, _mm512_sub_ps(one, s), one);
            _mm512_mask_storeu_ps(dg + i, m, _mm512_mul_ps(_mm512_mul_ps(dv, uv), _mm512_mul_ps(s, t)));
        }
    }
}

// AdamW, element by element in the same order of operations as the scalar loop, with no fused
// multiply-add (each intrinsic is one IEEE operation; sqrt and division are correctly rounded), so
// every path gives bit-identical results:
//   g = grad·clip; m = b1·m + (1−b1)·g; v = b2·v + ((1−b2)·g)·g; p −= lr·((m·c1)/(sqrt(v·c2) + eps) + decay·p)
TP_AVX512 static void adamw_avx512(float *p, const float *grad, float *m, float *v, long n, const float *k) {
    const __m512 clip = _mm512_set1_ps(k[0]), b1 = _mm512_set1_ps(k[1]), ob1 = _mm512_set1_ps(1.0f - k[1]);
    const __m512 b2 = _mm512_set1_ps(k[2]), ob2 = _mm512_set1_ps(1.0f - k[2]), c1 = _mm512_set1_ps(k[3]), c2 = _mm512_set1_ps(k[4]);
    const __m512 eps = _mm512_set1_ps(k[5]), lr = _mm512_set1_ps(k[6]), decay = _mm512_set1_ps(k[7]);
    for (long i = 0; i < n; i += 16) {
        __mmask16 mask = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, grad + i), clip);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(mask, m + i)), _mm512_mul_ps(ob1, g));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(mask, v + i)), _mm512_mul_ps(_mm512_mul_ps(ob2, g), g));
        _mm512_mask_storeu_ps(m + i, mask, mi);
        _mm512_mask_storeu_ps(v + i, mask, vi);
        __m512 pi = _mm512_maskz_loadu_ps(mask, p + i);
        __m512 step = _mm512_add_ps(_mm512_div_ps(_mm512_mul_ps(mi, c1), _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, c2)), eps)),
                                    _mm512_mul_ps(decay, pi));
        _mm512_mask_storeu_ps(p + i, mask, _mm512_sub_ps(pi, _mm512_mul_ps(lr, step)));
    }
}

TP_AVX2 static void adamw_avx2(float *p, const float *grad, float *m, float *v, long n, const float *k) {
    const __m256 clip = _mm256_set1_ps(k[0]), b1 = _mm256_set1_ps(k[1]), ob1 = _mm256_set1_ps(1.0f - k[1]);
    const __m256 b2 = _mm256_set1_ps(k[2]), ob2 = _mm256_set1_ps(1.0f - k[2]), c1 = _mm256_set1_ps(k[3]), c2 = _mm256_set1_ps(k[4]);
    const __m256 eps = _mm256_set1_ps(k[5]), lr = _mm256_set1_ps(k[6]), decay = _mm256_set1_ps(k[7]);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad + i), clip);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(ob1, g));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(ob2, g), g));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 pi = _mm256_loadu_ps(p + i);
        __m256 step = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(mi, c1), _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, c2)), eps)),
                                    _mm256_mul_ps(decay, pi));
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(lr, step)));
    }
    adamw_scalar(p + i, grad + i, m + i, v + i, n - i, k);
}

// 2: AVX-512F, 1: AVX2+FMA, 0: scalar. Chosen once from the CPU (and the OS's register state);
// tp_kernels_set_level lowers it for tests and benchmarks.
static int level = -1;
static int detected_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
}
static inline int kernel_level(void) {
    if (level < 0) level = detected_level();
    return level;
}
int tp_kernels_set_level(int wanted) {
    int best = detected_level();
    level = wanted < 0 || wanted > best ? best : wanted;
    return level;
}
#else
static inline int kernel_level(void) { return 0; }
int tp_kernels_set_level(int wanted) { (void)wanted; return 0; }
#endif

int tp_kernels_vectorised(void) { return kernel_level() > 0; }

const char *tp_kernels_path(void) { return kernel_level() == 2 ? "avx512" : kernel_level() == 1 ? "avx2" : "scalar"; }


float tp_exp_shifted_on(int path, float *x, long n, float shift) {
#if defined(__x86_64__)
    if (path == 2) return exp_shifted_avx512(x, n, shift);
    if (path == 1) return exp_shifted_avx2(x, n, shift);
#endif
    float sum = 0;
    for (long i = 0; i < n; i++) { float e = expf(x[i] - shift); x[i] = e; sum += e; }
    return sum;
}

float tp_sum_exp_shifted_on(int path, const float *x, long n, float shift) {
#if defined(__x86_64__)
    if (path == 2) return sum_exp_shifted_avx512(x, n, shift);
    if (path == 1) return sum_exp_shifted_avx2(x, n, shift);
#endif
    float sum = 0;
    for (long i = 0; i < n; i++) sum += expf(x[i] - shift);
    return sum;
}

void tp_swiglu_forward_on(int path, float *act, const float *pre, long rows, long F) {
#if defined(__x86_64__)
    if (path == 2) { swiglu_forward_avx512(act, pre, rows, F); return; }
    if (path == 1) { swiglu_forward_avx2(act, pre, rows, F); return; }
#endif
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F;
        float *a = act + r * F;
        for (long i = 0; i < F; i++) a[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

void tp_swiglu_backward_on(int path, float *dpre, const float *dact, const float *pre, long rows, long F) {
#if defined(__x86_64__)
    if (path == 2) { swiglu_backward_avx512(dpre, dact, pre, rows, F); return; }
    if (path == 1) { swiglu_backward_avx2(dpre, dact, pre, rows, F); return; }
#endif
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F, *da = dact + r * F;
        float *dg = dpre + r * 2 * F, *du = dg + F;
        for (long i = 0; i < F; i++) {
            float x = g[i], s = 1.0f / (1.0f + expf(-x));
            du[i] = da[i] * x * s;
            dg[i] = da[i] * u[i] * s * (1.0f + x * (1.0f - s));
        }
    }
}

int tp_kernels_best_level(void) {
#if defined(__x86_64__)
    return detected_level();
#else
    return 0;
#endif
}

float tp_exp_shifted(float *x, long n, float shift) { return tp_exp_shifted_on(kernel_level(), x, n, shift); }
float tp_sum_exp_shifted(const float *x, long n, float shift) { return tp_sum_exp_shifted_on(kernel_level(), x, n, shift); }
void tp_swiglu_forward(float *act, const float *pre, long rows, long F) { tp_swiglu_forward_on(kernel_level(), act, pre, rows, F); }
void tp_swiglu_backward(float *dpre, const float *dact, const float *pre, long rows, long F) {
    tp_swiglu_backward_on(kernel_level(), dpre, dact, pre, rows, F);
}

void tp_adamw_on(int path, float *p, const float *grad, float *m, float *v, long n, const float *k) {
#if defined(__x86_64__)
    if (path == 2) { adamw_avx512(p, grad, m, v, n, k); return; }
    if (path == 1) { adamw_avx2(p, grad, m, v, n, k); return; }
#endif
    adamw_scalar(p, grad, m, v, n, k);
}

void tp_adamw(float *p, const float *grad, float *m, float *v, long n, const float *k) { tp_adamw_on(kernel_level(), p, grad, m, v, n, k); }
