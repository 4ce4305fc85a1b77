#include "kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Mamba2's selective scan for one sequence and one group g of B and C (heads g·H/G ..< (g+1)·H/G),
// in float32, position by position: for head h with a = exp(Δ_t·A_h),
//   S_t = a·S_{t−1} + Δ_t · x_t ⊗ B_t      (S is P × N)
//   y_t = S_t · C_t + D_h · x_t
// This is the recurrence transformers' chunked form (`torch_chunk_scan` / SSD) computes in another
// order; its cost is linear in T. The state at the start of every chunk of Q positions is kept
// for the backward pass, which recomputes the states inside one chunk at a time.

// The state's update and the readout over N are sums in float32: reassociating them (so that the
// compiler vectorises the loops over N) changes results by rounding only.
#pragma clang fp reassociate(on)

#define X(t, h) (xbc + (t) * xs + (h) * P)
#define BV(t) (xbc + (t) * xs + I + g * Ns)
#define CV(t) (xbc + (t) * xs + I + G * Ns + g * Ns)

void tp_mamba_scan_forward(long T, long H, long P, long G, long Ns, long Q, long g, const float *xbc, long xs, long I,
                           const float *dt, long dts, const float *A, const float *D, float *y, long ys,
                           float *chunk_states) {
    long per = H / G;
    float *S = malloc(sizeof(float) * P * Ns);
    for (long h = g * per; h < (g + 1) * per; h++) {
        memset(S, 0, sizeof(float) * P * Ns);
        for (long t = 0; t < T; t++) {
            if (t % Q == 0) memcpy(chunk_states + ((t / Q) * H + h) * P * Ns, S, sizeof(float) * P * Ns);
            float d = dt[t * dts + h];
            tp_mamba_state_step(P, Ns, S, X(t, h), BV(t), CV(t), d, expf(d * A[h]), D[h], y + t * ys + h * P);
        }
    }
    free(S);
}

void tp_mamba_state_step(long P, long Ns, float *S, const float *x, const float *b, const float *c, float d, float a,
                         float Dh, float *y) {
    for (long p = 0; p < P; p++) {
        float *restrict s = S + p * Ns, dx = d * x[p], acc = 0;
        const float *restrict br = b, *restrict cr = c;
        for (long n = 0; n < Ns; n++) {
            s[n] = a * s[n] + dx * br[n];
            acc += s[n] * cr[n];
        }
        y[p] = acc + Dh * x[p];
    }
}

// The backward pass of tp_mamba_scan_forward for the same sequence and group, given dy. It adds
// into dxbc (x, B and C of the group), ddt (one per position and head), dA and dD (one per head):
// the caller zeroes them. With gS = dLoss/dS_t flowing from t = T−1 down:
//   gS += dy_t ⊗ C_t;  dC_t += S_tᵀ·dy_t;  dD += dy_t·x_t;  dx_t += D·dy_t
//   dΔ_t += x_tᵀ·gS·B_t + (gS : S_{t−1})·a·A;  dx_t += Δ_t·gS·B_t;  dB_t += Δ_t·gSᵀ·x_t
//   dA += (gS : S_{t−1})·a·Δ_t;  then gS ← a·gS (to S_{t−1}).
void tp_mamba_scan_backward(long T, long H, long P, long G, long Ns, long Q, long g, const float *xbc, long xs, long I,
                            const float *dt, long dts, const float *A, const float *D, const float *chunk_states,
                            const float *dy, long dys, float *dxbc, float *ddt, float *dA, float *dD) {
    long per = H / G, chunks = (T + Q - 1) / Q;
    float *gS = malloc(sizeof(float) * P * Ns);
    // States of one chunk: buf[0] the state before its first position, buf[i+1] after position i.
    float *buf = malloc(sizeof(float) * (Q + 1) * P * Ns);
    for (long h = g * per; h < (g + 1) * per; h++) {
        memset(gS, 0, sizeof(float) * P * Ns);
        for (long k = chunks - 1; k >= 0; k--) {
            long t0 = k * Q, t1 = t0 + Q < T ? t0 + Q : T;
            memcpy(buf, chunk_states + (k * H + h) * P * Ns, sizeof(float) * P * Ns);
            for (long t = t0; t < t1; t++) {
                float d = dt[t * dts + h], a = expf(d * A[h]);
                const float *x = X(t, h), *b = BV(t);
                const float *prev = buf + (t - t0) * P * Ns;
                float *cur = buf + (t - t0 + 1) * P * Ns;
                for (long p = 0; p < P; p++) {
                    float dx = d * x[p], *restrict cr = cur + p * Ns;
                    const float *restrict pr = prev + p * Ns, *restrict br = b;
                    for (long n = 0; n < Ns; n++) cr[n] = a * pr[n] + dx * br[n];
                }
            }
            for (long t = t1 - 1; t >= t0; t--) {
                float d = dt[t * dts + h], a = expf(d * A[h]);
                const float *x = X(t, h), *b = BV(t), *c = CV(t), *gy = dy + t * dys + h * P;
                const float *prev = buf + (t - t0) * P * Ns, *cur = buf + (t - t0 + 1) * P * Ns;
                float *gx = dxbc + t * xs + h * P, *gb = dxbc + t * xs + I + g * Ns;
                float *gc = dxbc + t * xs + I + G * Ns + g * Ns;
                float dd = 0, ga = 0, gdt = 0;
                for (long p = 0; p < P; p++) {
                    float g = gy[p], sb = 0, gap = 0;
                    dd += g * x[p];
                    gx[p] += D[h] * g;
                    // Distinct arrays (the state, its gradient, B, C and dC): restrict lets the
                    // loop vectorise without run-time overlap checks.
                    float *restrict gs = gS + p * Ns, *restrict gcr = gc;
                    const float *restrict sc = cur + p * Ns, *restrict sp = prev + p * Ns;
                    const float *restrict cr = c, *restrict br = b;
                    for (long n = 0; n < Ns; n++) {
                        gcr[n] += sc[n] * g;
                        float v = gs[n] + g * cr[n];
                        gs[n] = v;
                        gap += v * sp[n];
                        sb += v * br[n];
                    }
                    ga += gap;
                    gdt += x[p] * sb;
                    gx[p] += d * sb;
                }
                for (long p = 0; p < P; p++) {
                    float *restrict gs = gS + p * Ns, *restrict gbr = gb, dx = d * x[p];
                    for (long n = 0; n < Ns; n++) {
                        gbr[n] += dx * gs[n];
                        gs[n] *= a;
                    }
                }
                dD[h] += dd;
                gdt += ga * a * A[h];
                dA[h] += ga * a * d;
                ddt[t * dts + h] += gdt;
            }
        }
    }
    free(buf);
    free(gS);
}

// Depthwise causal convolution over T positions of W channels (row stride is, os): out[t, c] =
// bias[c] + Σ_k w[c, k] · in[t − (K−1) + k, c], taps before the sequence being 0 (PyTorch's conv1d
// with padding K−1, its first T outputs).
void tp_causal_conv_forward(long T, long W, long K, const float *in, long is, const float *w, const float *bias,
                            float *out, long os) {
    for (long t = 0; t < T; t++) {
        float *o = out + t * os;
        for (long c = 0; c < W; c++) o[c] = bias ? bias[c] : 0;
        for (long k = 0; k < K; k++) {
            long s = t - (K - 1) + k;
            if (s < 0) continue;
            const float *x = in + s * is;
            for (long c = 0; c < W; c++) o[c] += w[c * K + k] * x[c];
        }
    }
}

// Its backward pass: din (written), dw and dbias (added to).
void tp_causal_conv_backward(long T, long W, long K, const float *in, long is, const float *w, const float *dout,
                             long os, float *din, long ds, float *dw, float *dbias) {
    for (long t = 0; t < T; t++) memset(din + t * ds, 0, sizeof(float) * W);
    for (long t = 0; t < T; t++) {
        const float *g = dout + t * os;
        if (dbias)
            for (long c = 0; c < W; c++) dbias[c] += g[c];
        for (long k = 0; k < K; k++) {
            long s = t - (K - 1) + k;
            if (s < 0) continue;
            const float *x = in + s * is;
            float *dx = din + s * ds;
            for (long c = 0; c < W; c++) {
                dw[c * K + k] += g[c] * x[c];
                dx[c] += w[c * K + k] * g[c];
            }
        }
    }
}
