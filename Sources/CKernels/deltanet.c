#include "kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// The gated delta rule (Gated DeltaNet, Qwen3.5's linear_attention layers) for one sequence and one
// value head, in float32, position by position. With the state S (Dk × Dv), the decay a_t =
// exp(g_t), the normalised and scaled query q_t and key k_t, the value v_t and the rate β_t:
//   S' = a_t·S_{t−1};  δ_t = β_t·(v_t − S'ᵀk_t);  S_t = S' + k_t ⊗ δ_t;  o_t = S_tᵀq_t
// This is the recurrence transformers' chunked form (`torch_chunk_gated_delta_rule`, its UT
// transform over chunks of 64) computes in another order; its cost is linear in T. The state at
// the start of every chunk of Q positions is kept for the backward pass, which recomputes the
// states inside one chunk at a time.

// Sums over the key dimension in float32: reassociating them lets the loops over Dv vectorise;
// results change by rounding only.
#pragma clang fp reassociate(on)

void tp_gdn_state_step(long Dk, long Dv, float *S, const float *q, const float *k, const float *v, float a,
                       float beta, float *o) {
    float delta[Dv];
    float *restrict d = delta;
    for (long j = 0; j < Dv; j++) d[j] = 0;
    for (long i = 0; i < Dk; i++) {
        float *restrict s = S + i * Dv, ki = k[i];
        for (long j = 0; j < Dv; j++) {
            s[j] *= a;
            d[j] += s[j] * ki;
        }
    }
    for (long j = 0; j < Dv; j++) d[j] = beta * (v[j] - d[j]);
    float *restrict out = o;
    for (long j = 0; j < Dv; j++) out[j] = 0;
    for (long i = 0; i < Dk; i++) {
        float *restrict s = S + i * Dv, ki = k[i], qi = q[i];
        for (long j = 0; j < Dv; j++) {
            s[j] += ki * d[j];
            out[j] += s[j] * qi;
        }
    }
}

void tp_gdn_scan_forward(long T, long Dk, long Dv, long Q, const float *q, const float *k, long qks, const float *v,
                         long vs, const float *g, const float *beta, long gs, float *o, long os,
                         float *chunk_states) {
    long size = Dk * Dv;
    float *S = calloc(size, sizeof(float));
    for (long t = 0; t < T; t++) {
        if (t % Q == 0) memcpy(chunk_states + (t / Q) * size, S, sizeof(float) * size);
        tp_gdn_state_step(Dk, Dv, S, q + t * qks, k + t * qks, v + t * vs, expf(g[t * gs]), beta[t * gs], o + t * os);
    }
    free(S);
}

// The backward pass of tp_gdn_scan_forward for the same sequence and head, given do. It writes dq,
// dk (this head's share: heads that share a key head are summed by the caller), dv, dg and dβ.
// With gS = dLoss/dS_t flowing from t = T−1 down:
//   dq_t = S_t·do_t;  gS += q_t ⊗ do_t;  dδ = gSᵀk_t;  dk_t = gS·δ_t
//   dβ_t = dδ·(v_t − S'ᵀk_t);  dv_t = β_t·dδ;  gS' = gS − β_t·k_t ⊗ dδ;  dk_t −= β_t·S'·dδ
//   dg_t = a_t·(gS' : S_{t−1});  then gS ← a_t·gS' (to S_{t−1}).
void tp_gdn_scan_backward(long T, long Dk, long Dv, long Q, const float *q, const float *k, long qks, const float *v,
                          long vs, const float *g, const float *beta, long gs, const float *chunk_states,
                          const float *dout, long dos, float *dq, float *dk, long dqks, float *dv, long dvs, float *dg,
                          float *dbeta, long dgs) {
    long size = Dk * Dv, chunks = (T + Q - 1) / Q;
    float *gS = calloc(size, sizeof(float));
    // States of one chunk: buf[0] the state before its first position, buf[i+1] after position i;
    // and each position's δ and S'ᵀk.
    float *buf = malloc(sizeof(float) * (Q + 1) * size);
    float *deltas = malloc(sizeof(float) * Q * Dv), *reads = malloc(sizeof(float) * Q * Dv);
    float ddelta[Dv];
    for (long c = chunks - 1; c >= 0; c--) {
        long t0 = c * Q, t1 = t0 + Q < T ? t0 + Q : T;
        memcpy(buf, chunk_states + c * size, sizeof(float) * size);
        for (long t = t0; t < t1; t++) {
            const float *kt = k + t * qks, *vt = v + t * vs;
            float a = expf(g[t * gs]), b = beta[t * gs];
            const float *prev = buf + (t - t0) * size;
            float *cur = buf + (t - t0 + 1) * size;
            float *restrict rd = reads + (t - t0) * Dv, *restrict de = deltas + (t - t0) * Dv;
            for (long j = 0; j < Dv; j++) rd[j] = 0;
            for (long i = 0; i < Dk; i++) {
                const float *restrict sp = prev + i * Dv;
                float ki = kt[i] * a;
                for (long j = 0; j < Dv; j++) rd[j] += sp[j] * ki;
            }
            for (long j = 0; j < Dv; j++) de[j] = b * (vt[j] - rd[j]);
            for (long i = 0; i < Dk; i++) {
                const float *restrict sp = prev + i * Dv;
                float *restrict sc = cur + i * Dv, ki = kt[i];
                for (long j = 0; j < Dv; j++) sc[j] = a * sp[j] + ki * de[j];
            }
        }
        for (long t = t1 - 1; t >= t0; t--) {
            const float *qt = q + t * qks, *kt = k + t * qks, *vt = v + t * vs, *go = dout + t * dos;
            float a = expf(g[t * gs]), b = beta[t * gs];
            const float *prev = buf + (t - t0) * size, *cur = buf + (t - t0 + 1) * size;
            const float *rd = reads + (t - t0) * Dv, *de = deltas + (t - t0) * Dv;
            float *gq = dq + t * dqks, *gk = dk + t * dqks;
            float *restrict dd = ddelta;
            for (long j = 0; j < Dv; j++) dd[j] = 0;
            for (long i = 0; i < Dk; i++) {
                float *restrict s = gS + i * Dv;
                const float *restrict sc = cur + i * Dv, *restrict o = go, *restrict dl = de;
                float qi = qt[i], ki = kt[i], accq = 0, acck = 0;
                for (long j = 0; j < Dv; j++) {
                    accq += sc[j] * o[j];
                    float x = s[j] + qi * o[j];
                    s[j] = x;
                    dd[j] += x * ki;
                    acck += x * dl[j];
                }
                gq[i] = accq;
                gk[i] = acck;
            }
            float db = 0;
            for (long j = 0; j < Dv; j++) db += dd[j] * (vt[j] - rd[j]);
            for (long j = 0; j < Dv; j++) {
                dv[t * dvs + j] = b * dd[j];
                dd[j] *= -b;  // dLoss/d(S'ᵀk)
            }
            float ga = 0;
            for (long i = 0; i < Dk; i++) {
                float *restrict s = gS + i * Dv;
                const float *restrict sp = prev + i * Dv;
                float ki = kt[i], acc = 0, gap = 0;
                for (long j = 0; j < Dv; j++) {
                    acc += sp[j] * dd[j];
                    float x = s[j] + ki * dd[j];
                    gap += x * sp[j];
                    s[j] = a * x;
                }
                gk[i] += a * acc;
                ga += gap;
            }
            dg[t * dgs] = a * ga;
            dbeta[t * dgs] = db;
        }
    }
    free(reads);
    free(deltas);
    free(buf);
    free(gS);
}
