#include "kernels.h"
#include <math.h>

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

static int use_avx2 = -1;
static inline int avx2(void) {
    if (use_avx2 < 0) {
        __builtin_cpu_init();
        use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return use_avx2;
}
#else
static inline int avx2(void) { return 0; }
#endif

int tp_kernels_vectorised(void) { return avx2(); }

const char *tp_kernels_path(void) { return avx2() ? "avx2" : "scalar"; }

float tp_exp_shifted(float *x, long n, float shift) {
#if defined(__x86_64__)
    if (avx2()) return exp_shifted_avx2(x, n, shift);
#endif
    float sum = 0;
    for (long i = 0; i < n; i++) { float e = expf(x[i] - shift); x[i] = e; sum += e; }
    return sum;
}

float tp_sum_exp_shifted(const float *x, long n, float shift) {
#if defined(__x86_64__)
    if (avx2()) return sum_exp_shifted_avx2(x, n, shift);
#endif
    float sum = 0;
    for (long i = 0; i < n; i++) sum += expf(x[i] - shift);
    return sum;
}

void tp_swiglu_forward(float *act, const float *pre, long rows, long F) {
#if defined(__x86_64__)
    if (avx2()) { swiglu_forward_avx2(act, pre, rows, F); return; }
#endif
    for (long r = 0; r < rows; r++) {
        const float *g = pre + r * 2 * F, *u = g + F;
        float *a = act + r * F;
        for (long i = 0; i < F; i++) a[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

void tp_swiglu_backward(float *dpre, const float *dact, const float *pre, long rows, long F) {
#if defined(__x86_64__)
    if (avx2()) { swiglu_backward_avx2(dpre, dact, pre, rows, F); return; }
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
