/* Fused CPU kernels (gradnet_core/_fused.py), float32, d = 2: mGradNet-M's softmax blocks, which the image
 * KDE's log-sum-exp reuses, the epsilon-scaling loop of the Sinkhorn divergence, and (at any d, last in this file)
 * mGradNet-C's cascade.
 *
 * Softmax blocks. For every block b and sample i: u_j = A[b, j, :] . x_i (x_i ends with a 1, so A's last column is the
 * bias), p = softmax(u) over the block's h units, out[b, i, :] = sum_j p_j R[b, j, :]. The backward pass
 * recomputes p from x and the saved log-normaliser lse[b, i] instead of storing the (B, n, h) matrix:
 * with s_i = <G[b, i], out[b, i]>, dL/du_j = p_j (<G[b, i], R[b, j]> - s_i), and
 *   grad_A[b, j, :] = sum_i dL/du_ij x_i,  grad_R[b, j, :] = sum_i p_ij G[b, i, :].
 * The forward pass processes samples in tiles of TILE; every inner loop runs over the samples of a tile, so it
 * vectorises without reassociating anyone's sums (no -ffast-math: each lane is one sample). The backward pass runs
 * each unit over all the samples, its gradient sums reduced across the lanes once. mGradNet-M's blocks come in
 * pairs with inputs u and -u, which one pass takes together where |u| is small enough ("Paired blocks" below).
 * float32.
 *
 * mGradNet-M combines its blocks' outputs, v_b = out[b, :, :2] and, with the Jacobian, s_b = out[b, :, 2:5]:
 *   T = sum_b sg[b] v_b,   P = sum_b wt[b] (s_b - sq(v_b)),   sq(v) = (v0 v0, v0 v1, v1 v1),
 * T(x) and the packed Jacobian (networks.MGradNetM). Given sg and wt the kernels form T and P in the same pass,
 * and the backward pass takes their gradients dT, dP and forms G on the fly: G[b] = (sg[b] dT - wt[b] dsq(v_b)^T dP,
 * wt[b] dP), with grad_sg[b] = sum_i <dT_i, v_bi> and grad_wt[b] = sum_i <dP_i, s_bi - sq(v_bi)>. The entry points
 * (gradnet_mgradnet_forward, _backward) take the network's parameters and form the blocks from them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TILE 128
#define MAX_K 4          /* columns of x: d + 1 */
#define MAX_C 8          /* columns of R: d, or d + d(d + 1) / 2 with the Jacobian */

/* x = r ln 2 + f with r = round(x / ln 2), returned (an integer as a float), and f in [-0.35, 0.35]; r ln 2 taken in
 * two parts (Cody and Waite) so that f keeps its precision when |x| is large. */
static inline float reduce_ln2(float x, float *f) {
    float r = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* rounded to an integer */
    float g = x - r * 0.693145751953125f;                               /* ln 2, its leading bits */
    *f = g - r * 1.42860682030941723e-6f;                                /* and the rest */
    return r;
}

/* (e^f - 1) / f = sum f^k / (k + 1)!, k <= 6, for f in [-0.35, 0.35]. */
static inline float exp_series(float f) {
    float p = 1.9841270e-4f;
    p = p * f + 1.3888889e-3f;
    p = p * f + 8.3333333e-3f;
    p = p * f + 4.1666667e-2f;
    p = p * f + 1.6666667e-1f;
    p = p * f + 0.5f;
    return p * f + 1.0f;
}

/* 2^r for an integer r in [-126, 127]. */
static inline float pow2(float r) {
    int32_t bits = ((int32_t)r + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

/* e^x = 2^r e^f, relative error below 2e-7; arguments below -87 are raised to -87 (terms that far below the row's
 * largest weigh under 1e-37 of it; CPU exp of results below the smallest normal float is slow). */
static inline float exp_clamped(float x) {
    float f, r = reduce_ln2(x < -87.0f ? -87.0f : x, &f);
    return (exp_series(f) * f + 1.0f) * pow2(r);
}

/* Two libraries from this file: the default one (mGradNet-M's blocks, the KDE, the Sinkhorn loop), and with
 * -DGRADNET_CASCADE mGradNet-C's cascade alone, built the first time an mGradNet-C runs on the CPU, so that the
 * default networks do not wait for its compilation (gradnet_core/_fused.py). */
#ifndef GRADNET_CASCADE

/* u[i] = A_j . x_i for the tile's samples; xt is the tile of x transposed, (k, TILE). */
static inline void unit_inputs(float *restrict u, const float *restrict a, const float (*restrict xt)[TILE],
                               int k, int tn) {
#pragma omp simd
    for (int i = 0; i < tn; i++) {
        float v = a[k - 1];
        for (int c = 0; c < k - 1; c++) v += a[c] * xt[c][i];
        u[i] = v;
    }
}

static void load_tile(float (*restrict xt)[TILE], const float *restrict x, int k, int i0, int tn) {
    for (int i = 0; i < tn; i++)
        for (int c = 0; c < k - 1; c++) xt[c][i] = x[(int64_t)(i0 + i) * k + c];
}

/* A block's rows of the tile from their sums: out = acc / sum and lse = top + log sum (top NULL: 0), and its part of the
 * tile's T and P, tt and pt, with its output scale sb and Jacobian weight wb (both 0 for none). */
static inline __attribute__((always_inline)) void finish_block(int64_t n, int64_t b, int64_t i0, int tn, const int C,
                                                               const float *top, const float *sum,
                                                               const float (*acc)[TILE], float *out, float *lse,
                                                               const float sb, const float wb, float (*tt)[TILE],
                                                               float (*pt)[TILE]) {
    float *o = out + (b * n + i0) * C;
    for (int i = 0; i < tn; i++) {
        float inv = 1.0f / sum[i];
        for (int c = 0; c < C; c++) o[i * C + c] = acc[c][i] * inv;
        lse[b * n + i0 + i] = (top ? top[i] : 0.0f) + logf(sum[i]);
    }
    for (int i = 0; i < tn; i++) {
        const float v0 = o[i * C], v1 = o[i * C + 1];
        tt[0][i] += sb * v0;
        tt[1][i] += sb * v1;
        if (C == 5) {
            pt[0][i] += wb * (o[i * C + 2] - v0 * v0);
            pt[1][i] += wb * (o[i * C + 3] - v0 * v1);
            pt[2][i] += wb * (o[i * C + 4] - v1 * v1);
        }
    }
}

static void store_tile(int64_t i0, int tn, const int C, const float (*tt)[TILE], const float (*pt)[TILE], float *T,
                       float *P) {
    for (int i = 0; i < tn; i++) {
        T[2 * (i0 + i)] = tt[0][i];
        T[2 * (i0 + i) + 1] = tt[1][i];
        if (C == 5)
            for (int c = 0; c < 3; c++) P[3 * (i0 + i) + c] = pt[c][i];
    }
}

/* Block b of A: (B, h, k), R: (B, h, C) at the tile xt of tn samples from i0: its rows of out and lse, and its part
 * of the tile's T and P (finish_block). Each row's largest input is subtracted before the exponentials. */
static inline __attribute__((always_inline)) void block_tile(int64_t n, int64_t b, int64_t h, const int k,
                                                             const int C, const float (*xt)[TILE], int64_t i0,
                                                             int tn, const float *A, const float *R, float *out,
                                                             float *lse, const float sb, const float wb,
                                                             float (*tt)[TILE], float (*pt)[TILE]) {
    float u[TILE], top[TILE], sum[TILE], acc[MAX_C][TILE];
    const float *a = A + b * h * k, *r = R + b * h * C;
    for (int i = 0; i < tn; i++) top[i] = -INFINITY;
    for (int64_t j = 0; j < h; j++) {
        unit_inputs(u, a + j * k, xt, k, tn);
#pragma omp simd
        for (int i = 0; i < tn; i++) top[i] = u[i] > top[i] ? u[i] : top[i];
    }
    for (int i = 0; i < tn; i++) sum[i] = 0.0f;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < tn; i++) acc[c][i] = 0.0f;
    for (int64_t j = 0; j < h; j++) {
        unit_inputs(u, a + j * k, xt, k, tn);
        const float *rj = r + j * C;
#pragma omp simd
        for (int i = 0; i < tn; i++) {
            float e = exp_clamped(u[i] - top[i]);
            sum[i] += e;
            for (int c = 0; c < C; c++) acc[c][i] += e * rj[c];
        }
    }
    finish_block(n, b, i0, tn, C, top, sum, acc, out, lse, sb, wb, tt, pt);
}

/* x: (n, k) with its last column all ones; A: (B, h, k); R: (B, h, C); out: (B, n, C); lse: (B, n).
 * Inlined into one copy per (k, C) below, so that the loops over them unroll and the sample loops vectorise. */
static inline __attribute__((always_inline)) void forward(int64_t n, int64_t blocks, int64_t h, const int k,
                                                          const int C, const float *x, const float *A,
                                                          const float *R, float *out, float *lse, const float *sg,
                                                          const float *wt, float *T, float *P) {
    float xt[MAX_K][TILE], tt[2][TILE], pt[3][TILE];
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        load_tile(xt, x, k, (int)i0, tn);
        for (int i = 0; i < tn; i++) tt[0][i] = tt[1][i] = pt[0][i] = pt[1][i] = pt[2][i] = 0.0f;
        for (int64_t b = 0; b < blocks; b++)
            block_tile(n, b, h, k, C, xt, i0, tn, A, R, out, lse, T ? sg[b] : 0.0f, T ? wt[b] : 0.0f, tt, pt);
        if (T) store_tile(i0, tn, C, tt, pt, T, P);
    }
}

/* Paired blocks. mGradNet-M's module b gives block b with A and block K + b with -A, both with the same R, so their
 * unit inputs are u and -u: one pass takes both blocks, with e^u and e^-u from one argument reduction (e^-u =
 * cosh - sinh where e^u = cosh + sinh) and without the pass for each row's largest input. That needs every |u| at
 * most PAIR_LIMIT, so that e^{+-u} stay normal floats and a row's sum of h of them finite: checked module by module
 * over the box that holds the call's samples (pair_applies, once per call in blocks_of); beyond it, the module's two blocks run one by one
 * with each row's largest input subtracted first, which any inputs allow. Both ways store the same out and lse. */
#define PAIR_LIMIT 80.0f

/* e^x and e^-x for |x| <= 88: x = r ln 2 + f, e^{+-f} = c +- s with c = cosh f and s = sinh f to f^7 (f in
 * [-0.35, 0.35]: the next terms are below 6e-9), e^{+-x} = 2^{+-r} e^{+-f}. Relative error below 3e-7. */
static inline void exp_pair(float x, float *plus, float *minus) {
    float f, r = reduce_ln2(x, &f);
    const float f2 = f * f;
    const float c = 1.0f + f2 * (0.5f + f2 * (4.1666667e-2f + f2 * 1.3888889e-3f));
    const float s = f * (1.0f + f2 * (1.6666667e-1f + f2 * (8.3333333e-3f + f2 * 1.9841270e-4f)));
    *plus = (c + s) * pow2(r);
    *minus = (c - s) * pow2(-r);
}

/* The box that holds the samples x~: (n, 3), as its centre and half-widths (m0, m1, w0, w1). */
static void box_of(int64_t n, const float *x, float box[4]) {
    float lo0 = INFINITY, hi0 = -INFINITY, lo1 = INFINITY, hi1 = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const float v0 = x[3 * i], v1 = x[3 * i + 1];
        lo0 = v0 < lo0 ? v0 : lo0, hi0 = v0 > hi0 ? v0 : hi0;
        lo1 = v1 < lo1 ? v1 : lo1, hi1 = v1 > hi1 ? v1 : hi1;
    }
    box[0] = 0.5f * (lo0 + hi0), box[1] = 0.5f * (lo1 + hi1), box[2] = 0.5f * (hi0 - lo0), box[3] = 0.5f * (hi1 - lo1);
}

/* Whether the h units a: (h, 3) have |u| <= PAIR_LIMIT everywhere in the box (the largest |u| over a box is at a
 * corner), and h of them e^{+-u} sum to a finite float. NaN anywhere answers no. */
static int pair_applies(int64_t h, const float *a, const float box[4]) {
    if (!(PAIR_LIMIT + logf((float)h) <= 86.0f)) return 0;
    for (int64_t j = 0; j < h; j++) {
        const float *aj = a + 3 * j;
        const float bound = fabsf(aj[2] + aj[0] * box[0] + aj[1] * box[1]) + fabsf(aj[0]) * box[2] +
                            fabsf(aj[1]) * box[3];
        if (!(bound <= PAIR_LIMIT)) return 0;
    }
    return 1;
}

/* forward for mGradNet-M's K pairs of blocks (b, K + b) of A: (2K, h, 3) and R: (2K, h, C) at x~: (n, 3), with T
 * and P; each pair in one pass where paired[b] (pair_applies, 1 or 0), else by block_tile. */
static inline __attribute__((always_inline)) void forward_pairs(int64_t n, int64_t K, int64_t h, const int C,
                                                                const float *x, const float *A, const float *R,
                                                                const float *paired, float *out, float *lse,
                                                                const float *sg, const float *wt, float *T,
                                                                float *P) {
    float xt[MAX_K][TILE], u[TILE], sum[2][TILE], acc[2][MAX_C][TILE], tt[2][TILE], pt[3][TILE];
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        load_tile(xt, x, 3, (int)i0, tn);
        for (int i = 0; i < tn; i++) tt[0][i] = tt[1][i] = pt[0][i] = pt[1][i] = pt[2][i] = 0.0f;
        for (int64_t b = 0; b < K; b++) {
            const float *a = A + b * h * 3, *r = R + b * h * C;
            if (!paired[b]) {
                block_tile(n, b, h, 3, C, xt, i0, tn, A, R, out, lse, sg[b], wt[b], tt, pt);
                block_tile(n, K + b, h, 3, C, xt, i0, tn, A, R, out, lse, sg[K + b], wt[K + b], tt, pt);
                continue;
            }
            for (int s = 0; s < 2; s++) {
                for (int i = 0; i < tn; i++) sum[s][i] = 0.0f;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < tn; i++) acc[s][c][i] = 0.0f;
            }
            for (int64_t j = 0; j < h; j++) {
                unit_inputs(u, a + j * 3, xt, 3, tn);
                const float *rj = r + j * C;
#pragma omp simd
                for (int i = 0; i < tn; i++) {
                    float e, f;
                    exp_pair(u[i], &e, &f);
                    sum[0][i] += e;
                    sum[1][i] += f;
                    for (int c = 0; c < C; c++) {
                        acc[0][c][i] += e * rj[c];
                        acc[1][c][i] += f * rj[c];
                    }
                }
            }
            finish_block(n, b, i0, tn, C, NULL, sum[0], acc[0], out, lse, sg[b], wt[b], tt, pt);
            finish_block(n, K + b, i0, tn, C, NULL, sum[1], acc[1], out, lse, sg[K + b], wt[K + b], tt, pt);
        }
        store_tile(i0, tn, C, tt, pt, T, P);
    }
}

/* Per sample of block b, from dT: (n, 2) and dP: (n, 3) (q, its columns; unread when C = 2): the block's G = dL/dM
 * (g0, g1 and, with the Jacobian, wt[b] dP), s = <G, out>, and e^-lse; the block's grad_sg and grad_wt. */
static inline __attribute__((always_inline)) void block_rows(int64_t n, int64_t b, const int C, const float *out,
                                                             const float *lse, const float *sg, const float *wt,
                                                             const float *dT, float *const q[3], float *g0s,
                                                             float *g1s, float *ss, float *scale, float *grad_sg,
                                                             float *grad_wt) {
    const float *o = out + b * n * C, sb = sg[b], wb = wt[b];
    float to_sg = 0.0f, to_wt = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float v0 = o[i * C], v1 = o[i * C + 1], d0 = dT[2 * i], d1 = dT[2 * i + 1];
        float g0 = sb * d0, g1 = sb * d1, dot = 0.0f;
        to_sg += d0 * v0 + d1 * v1;
        if (C == 5) {
            const float p0 = q[0][i], p1 = q[1][i], p2 = q[2][i];
            g0 -= wb * (2.0f * v0 * p0 + v1 * p1);
            g1 -= wb * (v0 * p1 + 2.0f * v1 * p2);
            dot = wb * (p0 * o[i * C + 2] + p1 * o[i * C + 3] + p2 * o[i * C + 4]);
            to_wt += p0 * (o[i * C + 2] - v0 * v0) + p1 * (o[i * C + 3] - v0 * v1) + p2 * (o[i * C + 4] - v1 * v1);
        }
        g0s[i] = g0;
        g1s[i] = g1;
        ss[i] = dot + g0 * v0 + g1 * v1;
        scale[i] = exp_clamped(-lse[b * n + i]);
    }
    grad_sg[b] = to_sg;
    grad_wt[b] = to_wt;
}

/* dT: (n, 2) and dP: (n, 3) (unread when C = 2), the gradients of the combined T and P of forward_pairs's K pairs;
 * grad_sg, grad_wt: (2K), grad_A: (2K, h, 3) and grad_R: (2K, h, C), overwritten. Module by module: first each
 * sample's G, s and e^-lse for both blocks (block_rows), then unit by unit over all the samples, so that each unit's
 * gradient sums stay in vector registers from the first sample to the last and are reduced across lanes once. A
 * pair with paired_of[b] (as forward_pairs's paired) takes both blocks in one pass, e^{u - lse} as e^u e^-lse, and stores the pair's gradients in
 * block b's rows, zeros in block K + b's: grad_A[b] = sum_i (du_b - du_{K+b}) x~_i, which the parameters' gradients
 * read as grad_A[b] - grad_A[K + b] (the blocks' A being a and -a), and grad_R[b] = both blocks' sums, read as
 * grad_R[b] + grad_R[K + b]. Otherwise each block alone, its exponentials e^{u - lse} directly. Returns 2 when
 * memory runs out. */
static inline __attribute__((always_inline)) int backward(int64_t n, int64_t K, int64_t h, const int C,
                                                          const float *x, const float *A, const float *R,
                                                          const float *paired_of, const float *out,
                                                          const float *lse, const float *sg,
                                                          const float *wt, const float *dT, const float *dP,
                                                          float *grad_sg, float *grad_wt, float *grad_A,
                                                          float *grad_R) {
    /* per sample: x (2), dP (3), and for each block of the pair g0, g1, s, e^-lse (4) */
    float *work = malloc((size_t)(13 * n) * sizeof(float));
    if (!work) return 2;
    float *x0 = work, *x1 = x0 + n, *q[3] = {x1 + n, x1 + 2 * n, x1 + 3 * n}, *per[2][4];
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 4; c++) per[s][c] = work + (5 + 4 * s + c) * n;
    for (int64_t i = 0; i < n; i++) {
        x0[i] = x[3 * i];
        x1[i] = x[3 * i + 1];
        for (int c = 0; c < 3; c++) q[c][i] = C == 5 ? dP[3 * i + c] : 0.0f;
    }
    for (int64_t b = 0; b < K; b++) {
        const int paired = paired_of[b] != 0.0f;
        for (int s = 0; s < 2; s++)
            block_rows(n, b + s * K, C, out, lse, sg, wt, dT, q, per[s][0], per[s][1], per[s][2], per[s][3], grad_sg,
                       grad_wt);
        for (int s = 0; s < (paired ? 1 : 2); s++) {
            const int64_t bs = b + s * K;
            const float *ab = A + bs * h * 3, *r = R + bs * h * C, wp = wt[bs], wm = wt[K + b];
            const float *gp0 = per[s][0], *gp1 = per[s][1], *sp = per[s][2], *cp = per[s][3];
            const float *gm0 = per[1][0], *gm1 = per[1][1], *sm = per[1][2], *cm = per[1][3];
            for (int64_t j = 0; j < h; j++) {
                const float *aj = ab + j * 3, *rj = r + j * C;
                const float rq0 = C == 5 ? rj[2] : 0.0f, rq1 = C == 5 ? rj[3] : 0.0f, rq2 = C == 5 ? rj[4] : 0.0f;
                float r0 = 0.0f, r1 = 0.0f, r2 = 0.0f, r3 = 0.0f, r4 = 0.0f, a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
                if (paired) {
#pragma omp simd reduction(+ : r0, r1, r2, r3, r4, a0, a1, a2)
                    for (int64_t i = 0; i < n; i++) {
                        float e, f;
                        exp_pair(aj[0] * x0[i] + aj[1] * x1[i] + aj[2], &e, &f);
                        e *= cp[i];
                        f *= cm[i];
                        float gp = gp0[i] * rj[0] + gp1[i] * rj[1], gm = gm0[i] * rj[0] + gm1[i] * rj[1];
                        if (C == 5) {
                            const float t = q[0][i] * rq0 + q[1][i] * rq1 + q[2][i] * rq2;
                            gp += wp * t;
                            gm += wm * t;
                            const float w = wp * e + wm * f;
                            r2 += w * q[0][i];
                            r3 += w * q[1][i];
                            r4 += w * q[2][i];
                        }
                        const float du = e * (gp - sp[i]) - f * (gm - sm[i]);
                        r0 += e * gp0[i] + f * gm0[i];
                        r1 += e * gp1[i] + f * gm1[i];
                        a0 += du * x0[i];
                        a1 += du * x1[i];
                        a2 += du;
                    }
                } else {
#pragma omp simd reduction(+ : r0, r1, r2, r3, r4, a0, a1, a2)
                    for (int64_t i = 0; i < n; i++) {
                        const float e = exp_clamped(aj[0] * x0[i] + aj[1] * x1[i] + aj[2] - lse[bs * n + i]);
                        float gp = gp0[i] * rj[0] + gp1[i] * rj[1];
                        if (C == 5) {
                            gp += wp * (q[0][i] * rq0 + q[1][i] * rq1 + q[2][i] * rq2);
                            r2 += wp * e * q[0][i];
                            r3 += wp * e * q[1][i];
                            r4 += wp * e * q[2][i];
                        }
                        const float du = e * (gp - sp[i]);
                        r0 += e * gp0[i];
                        r1 += e * gp1[i];
                        a0 += du * x0[i];
                        a1 += du * x1[i];
                        a2 += du;
                    }
                }
                float *ga = grad_A + (bs * h + j) * 3, *gr = grad_R + (bs * h + j) * C;
                gr[0] = r0, gr[1] = r1;
                if (C == 5) gr[2] = r2, gr[3] = r3, gr[4] = r4;
                ga[0] = a0, ga[1] = a1, ga[2] = a2;
            }
        }
        if (paired) {
            memset(grad_A + (K + b) * h * 3, 0, (size_t)(h * 3) * sizeof(float));
            memset(grad_R + (K + b) * h * C, 0, (size_t)(h * C) * sizeof(float));
        }
    }
    free(work);
    return 0;
}

/* mGradNet-M itself (networks.MGradNetM) from its parameters, at d = 2: W (K, h, 2), bias (K, h), alpha, beta,
 * softmax_a, softmax_b (K) and out_bias (2). With sp the softplus, scale_k = sp(beta_k), g_k = sp(alpha_k)
 * sp(softmax_a_k) and g'_k = sp(alpha_k) sp(softmax_b_k), module k gives two blocks: k with A = scale_k [W_k, b_k],
 * sg = g_k, wt = scale_k g_k, and K + k with -A, sg = -g'_k, wt = scale_k g'_k; both with R = [W_k, sq(W_k)] (or W_k
 * alone without the Jacobian). T gets out_bias. The backward pass takes the blocks' gradients back through these
 * transforms to the parameters' (torch ran them as some sixty small operations a step, forward and back). */
typedef struct {
    const float *W, *bias, *alpha, *beta, *softmax_a, *softmax_b;
} Module;

/* softplus and its derivative as torch has them (beta 1, threshold 20). */
static inline float softplus(float z) { return z > 20.0f ? z : log1pf(expf(z)); }
static inline float softplus_slope(float z) { return z > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-z)); }

typedef struct {
    float *A, *R, *sg, *wt, *x, *paired;
} Blocks;

/* The blocks of the parameters, x with its column of ones, and for each module whether its two blocks take one pass
 * (1 or 0: pair_applies over the box of x), in one allocation (NULL when memory runs out). */
static float *blocks_of(int64_t n, int64_t K, int64_t h, int C, Module p, const float *x, Blocks *b) {
    float *memory = malloc((size_t)(2 * K * h * (3 + C) + 5 * K + 3 * n) * sizeof(float));
    if (!memory) return NULL;
    b->A = memory;
    b->R = b->A + 2 * K * h * 3;
    b->sg = b->R + 2 * K * h * C;
    b->wt = b->sg + 2 * K;
    b->paired = b->wt + 2 * K;
    b->x = b->paired + K;
    for (int64_t k = 0; k < K; k++) {
        const float scale = softplus(p.beta[k]), out = softplus(p.alpha[k]);
        const float ga = out * softplus(p.softmax_a[k]), gb = out * softplus(p.softmax_b[k]);
        b->sg[k] = ga;
        b->sg[K + k] = -gb;
        b->wt[k] = scale * ga;
        b->wt[K + k] = scale * gb;
        for (int64_t j = 0; j < h; j++) {
            const float w0 = p.W[(k * h + j) * 2], w1 = p.W[(k * h + j) * 2 + 1], c = p.bias[k * h + j];
            float *a = b->A + (k * h + j) * 3, *a_neg = b->A + ((K + k) * h + j) * 3;
            float *r = b->R + (k * h + j) * C, *r_neg = b->R + ((K + k) * h + j) * C;
            a[0] = scale * w0, a[1] = scale * w1, a[2] = scale * c;
            a_neg[0] = -a[0], a_neg[1] = -a[1], a_neg[2] = -a[2];
            r[0] = w0, r[1] = w1;
            if (C == 5) r[2] = w0 * w0, r[3] = w0 * w1, r[4] = w1 * w1;
            for (int c2 = 0; c2 < C; c2++) r_neg[c2] = r[c2];
        }
    }
    for (int64_t i = 0; i < n; i++) {
        b->x[3 * i] = x[2 * i];
        b->x[3 * i + 1] = x[2 * i + 1];
        b->x[3 * i + 2] = 1.0f;
    }
    float box[4];
    box_of(n, b->x, box);
    for (int64_t k = 0; k < K; k++) b->paired[k] = (float)pair_applies(h, b->A + k * h * 3, box);
    return memory;
}

/* x: (n, 2); C = 5 with the Jacobian, 2 without. out: (2K, n, C) and lse: (2K, n), which the backward pass reads;
 * T: (n, 2), P: (n, 3) (unwritten when C = 2). Returns 1 for another C, 2 when memory runs out. */
int gradnet_mgradnet_forward(int64_t n, int64_t K, int64_t h, int C, const float *x, const float *W,
                             const float *bias, const float *alpha, const float *beta, const float *softmax_a,
                             const float *softmax_b, const float *out_bias, float *out, float *lse, float *T,
                             float *P) {
    if (C != 5 && C != 2) return 1;
    Module p = {W, bias, alpha, beta, softmax_a, softmax_b};
    Blocks b;
    float *memory = blocks_of(n, K, h, C, p, x, &b);
    if (!memory) return 2;
    if (C == 5) forward_pairs(n, K, h, 5, b.x, b.A, b.R, b.paired, out, lse, b.sg, b.wt, T, P);
    else forward_pairs(n, K, h, 2, b.x, b.A, b.R, b.paired, out, lse, b.sg, b.wt, T, P);
    for (int64_t i = 0; i < n; i++) {
        T[2 * i] += out_bias[0];
        T[2 * i + 1] += out_bias[1];
    }
    free(memory);
    return 0;
}

/* dT: (n, 2), dP: (n, 3) (unread when C = 2); the parameters' gradients are overwritten. */
int gradnet_mgradnet_backward(int64_t n, int64_t K, int64_t h, int C, const float *x, const float *W,
                              const float *bias, const float *alpha, const float *beta, const float *softmax_a,
                              const float *softmax_b, const float *out, const float *lse, const float *dT,
                              const float *dP, float *grad_W, float *grad_bias, float *grad_alpha, float *grad_beta,
                              float *grad_softmax_a, float *grad_softmax_b, float *grad_out_bias) {
    if (C != 5 && C != 2) return 1;
    Module p = {W, bias, alpha, beta, softmax_a, softmax_b};
    Blocks b;
    float *memory = blocks_of(n, K, h, C, p, x, &b);
    float *grads = malloc((size_t)(2 * K * h * (3 + C) + 4 * K) * sizeof(float));
    if (!memory || !grads) {
        free(memory);
        free(grads);
        return 2;
    }
    float *gA = grads, *gR = gA + 2 * K * h * 3, *gsg = gR + 2 * K * h * C, *gwt = gsg + 2 * K;
    const int done = C == 5 ? backward(n, K, h, 5, b.x, b.A, b.R, b.paired, out, lse, b.sg, b.wt, dT, dP, gsg, gwt,
                                       gA, gR)
                            : backward(n, K, h, 2, b.x, b.A, b.R, b.paired, out, lse, b.sg, b.wt, dT, dP, gsg, gwt,
                                       gA, gR);
    if (done != 0) {
        free(memory);
        free(grads);
        return done;
    }
    for (int64_t k = 0; k < K; k++) {
        const float scale = softplus(p.beta[k]), out_scale = softplus(p.alpha[k]);
        const float pa = softplus(p.softmax_a[k]), pb = softplus(p.softmax_b[k]);
        const float ga = out_scale * pa, gb = out_scale * pb;
        float grad_scale = ga * gwt[k] + gb * gwt[K + k];
        for (int64_t j = 0; j < h; j++) {
            const int64_t o = k * h + j;
            const float w0 = W[2 * o], w1 = W[2 * o + 1];
            const float *a = gA + o * 3, *a_neg = gA + ((K + k) * h + j) * 3;
            const float *r = gR + o * C, *r_neg = gR + ((K + k) * h + j) * C;
            const float g0 = a[0] - a_neg[0], g1 = a[1] - a_neg[1], g2 = a[2] - a_neg[2];
            grad_scale += g0 * w0 + g1 * w1 + g2 * bias[o];
            float gw0 = scale * g0 + (r[0] + r_neg[0]), gw1 = scale * g1 + (r[1] + r_neg[1]);
            if (C == 5) {
                const float s0 = r[2] + r_neg[2], s1 = r[3] + r_neg[3], s2 = r[4] + r_neg[4];
                gw0 += 2.0f * w0 * s0 + w1 * s1;
                gw1 += w0 * s1 + 2.0f * w1 * s2;
            }
            grad_W[2 * o] = gw0;
            grad_W[2 * o + 1] = gw1;
            grad_bias[o] = scale * g2;
        }
        const float grad_ga = gsg[k] + scale * gwt[k], grad_gb = scale * gwt[K + k] - gsg[K + k];
        grad_alpha[k] = (pa * grad_ga + pb * grad_gb) * softplus_slope(p.alpha[k]);
        grad_beta[k] = grad_scale * softplus_slope(p.beta[k]);
        grad_softmax_a[k] = out_scale * grad_ga * softplus_slope(p.softmax_a[k]);
        grad_softmax_b[k] = out_scale * grad_gb * softplus_slope(p.softmax_b[k]);
    }
    float t0 = 0.0f, t1 = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        t0 += dT[2 * i];
        t1 += dT[2 * i + 1];
    }
    grad_out_bias[0] = t0;
    grad_out_bias[1] = t1;
    free(memory);
    free(grads);
    return 0;
}

/* Image KDE (densities.ImageDensity): log p(x_i) = log sum_j w_j N(x_i; g_j, s I) for x: (n, 2) and the pixels
 * g: (m, 2), log w: (m), and hh = 1 / 2s, by the forward pass above with one block of m units: with u = x - 1/2 and
 * v_j = g_j - 1/2, -|u - v_j|^2 hh = (2 hh v_j) . u + (log w_j - hh |v_j|^2) - hh |u|^2. The same pass gives
 * the kernel-weighted mean mu(u) of the v_j, so the score 2 hh (mu(u) - u) goes to slope (n, 2) when it is not
 * NULL. log_norm = -log(2 pi s). Outside the shared pass each product is rounded as torch rounds it on its own path
 * (ImageDensity._log_prob), whose results these equal bit for bit: no fused multiply-adds there. */
__attribute__((noinline, optimize("fp-contract=off")))
static void kde_inputs(int64_t n, int64_t m, const float *x, const float *g, const float *log_w, double hh,
                       float *rows, float *v, float *u) {
    const float h = (float)hh, h2 = (float)(2.0 * hh);
    for (int64_t j = 0; j < m; j++) {
        const float v0 = g[2 * j] - 0.5f, v1 = g[2 * j + 1] - 0.5f;
        const float sq0 = v0 * v0, sq1 = v1 * v1, size = h * (sq0 + sq1);
        v[2 * j] = v0;
        v[2 * j + 1] = v1;
        rows[3 * j] = h2 * v0;
        rows[3 * j + 1] = h2 * v1;
        rows[3 * j + 2] = log_w[j] - size;
    }
    for (int64_t i = 0; i < n; i++) {
        u[3 * i] = x[2 * i] - 0.5f;
        u[3 * i + 1] = x[2 * i + 1] - 0.5f;
        u[3 * i + 2] = 1.0f;
    }
}

__attribute__((noinline, optimize("fp-contract=off")))
static void kde_outputs(int64_t n, const float *u, const float *mean, const float *lse, double hh, double log_norm,
                        float *logp, float *slope) {
    const float h = (float)hh, h2 = (float)(2.0 * hh), norm = (float)log_norm;
    for (int64_t i = 0; i < n; i++) {
        const float u0 = u[3 * i], u1 = u[3 * i + 1], sq0 = u0 * u0, sq1 = u1 * u1, size = h * (sq0 + sq1);
        const float centred = lse[i] - size;
        logp[i] = centred + norm;
        if (slope) {
            slope[2 * i] = h2 * (mean[2 * i] - u0);
            slope[2 * i + 1] = h2 * (mean[2 * i + 1] - u1);
        }
    }
}

/* Returns 2 when memory runs out. */
int gradnet_kde(int64_t n, int64_t m, const float *x, const float *g, const float *log_w, double hh, double log_norm,
                float *logp, float *slope) {
    float *rows = malloc((size_t)(5 * m + 6 * n) * sizeof(float));
    if (!rows) return 2;
    float *v = rows + 3 * m, *u = v + 2 * m, *mean = u + 3 * n, *lse = mean + 2 * n;
    kde_inputs(n, m, x, g, log_w, hh, rows, v, u);
    forward(n, 1, m, 3, 2, u, rows, v, mean, lse, NULL, NULL, NULL, NULL);
    kde_outputs(n, u, mean, lse, hh, log_norm, logp, slope);
    free(rows);
    return 0;
}

/* Sinkhorn. The softmin out_i = -eps log sum_j exp(h_j - |p_i - q_j|^2 / eps) for p: (n, 2), q: (m, 2),
 * h: (m), per tile of p (one lane per point). Each exponent is taken less a shift: the row's largest exponent,
 * found in a first pass over q, or, given guess (n), -guess_i / eps, a softmin of the same rows from the loop's
 * last update: one pass instead of two. The Sinkhorn loop's guesses lie within 7 of the row's largest exponent
 * (digits, 500 points, every eps of the schedule); a tile where one lane's sum comes out of [1e-26, 1e30] (its
 * largest term lost below e^-60 or near float32's top) is taken again from its rows' largest exponents. With
 * bary (n, 2), the pass also gives the softmin's weighted mean of q: out_i's gradient in p_i is 2 (p_i - bary_i)
 * (sample_losses._PointSoftmin). */
static inline __attribute__((always_inline)) void softmin_sums(int64_t m, const float *q, const float *h, float inv,
                                                               int tn, const float *p0, const float *p1,
                                                               const float *top, float *sum, float *m0, float *m1,
                                                               const int with_bary) {
    for (int i = 0; i < tn; i++) sum[i] = m0[i] = m1[i] = 0.0f;
    for (int64_t j = 0; j < m; j++) {
        const float q0 = q[2 * j], q1 = q[2 * j + 1], hj = h[j];
#pragma omp simd
        for (int i = 0; i < tn; i++) {
            float d0 = p0[i] - q0, d1 = p1[i] - q1;
            float e = exp_clamped(hj - (d0 * d0 + d1 * d1) * inv - top[i]);
            sum[i] += e;
            if (with_bary) {
                m0[i] += e * q0;
                m1[i] += e * q1;
            }
        }
    }
}

static inline __attribute__((always_inline)) void softmin_pass(int64_t n, int64_t m, const float *p, const float *q,
                                                               const float *h, float eps, const float *guess,
                                                               float *out, float *bary, const int with_bary) {
    const float inv = 1.0f / eps;
    float p0[TILE], p1[TILE], top[TILE], sum[TILE], m0[TILE], m1[TILE];
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE), ok = 0;
        for (int i = 0; i < tn; i++) {
            p0[i] = p[2 * (i0 + i)];
            p1[i] = p[2 * (i0 + i) + 1];
        }
        if (guess) {
            for (int i = 0; i < tn; i++) top[i] = -guess[i0 + i] * inv;
            softmin_sums(m, q, h, inv, tn, p0, p1, top, sum, m0, m1, with_bary);
            ok = 1;
            for (int i = 0; i < tn; i++) ok &= sum[i] >= 1e-26f && sum[i] <= 1e30f;
        }
        if (!ok) {
            for (int i = 0; i < tn; i++) top[i] = -INFINITY;
            for (int64_t j = 0; j < m; j++) {
                const float q0 = q[2 * j], q1 = q[2 * j + 1], hj = h[j];
#pragma omp simd
                for (int i = 0; i < tn; i++) {
                    float d0 = p0[i] - q0, d1 = p1[i] - q1, z = hj - (d0 * d0 + d1 * d1) * inv;
                    top[i] = z > top[i] ? z : top[i];
                }
            }
            softmin_sums(m, q, h, inv, tn, p0, p1, top, sum, m0, m1, with_bary);
        }
        for (int i = 0; i < tn; i++) {
            out[i0 + i] = -eps * (top[i] + logf(sum[i]));
            if (with_bary) {
                bary[2 * (i0 + i)] = m0[i] / sum[i];
                bary[2 * (i0 + i) + 1] = m1[i] / sum[i];
            }
        }
    }
}

static void softmin(int64_t n, int64_t m, const float *p, const float *q, const float *h, float eps,
                    const float *guess, float *out) {
    softmin_pass(n, m, p, q, h, eps, guess, out, NULL, 0);
}

/* guess: (n) or NULL (see softmin_pass). */
int gradnet_softmin_barycentre(int64_t n, int64_t m, const float *p, const float *q, const float *h, float eps,
                               const float *guess, float *out, float *bary) {
    softmin_pass(n, m, p, q, h, eps, guess, out, bary, 1);
    return 0;
}

/* h = log_weight + f / eps for the softmin's next update. */
static void offsets(float *h, int64_t m, float log_weight, const float *f, float eps) {
    for (int64_t j = 0; j < m; j++) h[j] = log_weight + f[j] / eps;
}

static void average(float *f, const float *update, int64_t n) {
    for (int64_t i = 0; i < n; i++) f[i] = 0.5f * (f[i] + update[i]);
}

/* The dual potentials of OT_eps(x, y) (and of OT_eps(x, x), OT_eps(y, y) when debias) between uniform
 * clouds x: (n, 2) and y: (m, 2) under epsilon-scaling: the loop of sample_losses._sinkhorn_potentials,
 * update for update. schedule: the eps of each step; the self terms start at step self_from. Returns 2 when
 * memory runs out. */
int gradnet_sinkhorn_potentials(int64_t n, int64_t m, const float *x, const float *y, const float *schedule,
                                int steps, int debias, int self_from, float *f_ba, float *g_ab, float *f_aa,
                                float *g_bb) {
    int64_t most = n > m ? n : m;
    float *h = malloc(3 * most * sizeof(float));
    if (!h) return 2;
    float *ft = h + most, *gt = ft + most;
    const float a_log = -logf((float)n), b_log = -logf((float)m);
    float eps = schedule[0], eps_self = schedule[self_from];
    for (int64_t j = 0; j < m; j++) h[j] = b_log;
    softmin(n, m, x, y, h, eps, NULL, f_ba);
    if (debias) softmin(m, m, y, y, h, eps_self, NULL, g_bb);
    for (int64_t i = 0; i < n; i++) h[i] = a_log;
    softmin(m, n, y, x, h, eps, NULL, g_ab);
    if (debias) softmin(n, n, x, x, h, eps_self, NULL, f_aa);
    for (int k = 0; k < steps; k++) {
        eps = schedule[k];
        /* Symmetric updates, each averaged with the last (see the Python loop). */
        offsets(h, m, b_log, g_ab, eps);
        softmin(n, m, x, y, h, eps, f_ba, ft);
        offsets(h, n, a_log, f_ba, eps);
        softmin(m, n, y, x, h, eps, g_ab, gt);
        average(f_ba, ft, n);
        average(g_ab, gt, m);
        if (debias && k >= self_from) {
            offsets(h, n, a_log, f_aa, eps);
            softmin(n, n, x, x, h, eps, f_aa, ft);
            average(f_aa, ft, n);
            offsets(h, m, b_log, g_bb, eps);
            softmin(m, m, y, y, h, eps, g_bb, gt);
            average(g_bb, gt, m);
        }
    }
    free(h);
    return 0;
}

#endif /* not GRADNET_CASCADE */

#ifdef GRADNET_CASCADE
/* ------------------------------------------------------------------------------------------------------------
 * mGradNet-C's cascade (networks.MGradNetC), every unit j on its own given w = (Wx)_j: for layers l = 0 .. L-1,
 *   z_0 = sb_0 (w + c_0),   z_l = sb_l (w + c_l) + sa_{l-1} s_{l-1},   s_l = s(z_l; a_l, b_l),
 *   chain_0 = sb_0,         chain_l = sb_l + sa_{l-1} s'(z_{l-1}) chain_{l-1},
 * and the outputs S = sa_{L-1} s_{L-1} (T = W^T S + c_L) and delta = sa_{L-1} s'(z_{L-1}) chain_{L-1}
 * (J = W^T diag(delta) W). The backward pass recomputes one sample's cascade and runs it back, s'' included (delta
 * depends on z through s'). The unit loops vectorise, one lane per unit; every parameter gradient is summed over the
 * samples in order within its lane. The activation: the weighted tanh s = (a - b) t + b z, t = tanh z
 * (s' = a + (b - a) t^2); tanh is its case a = 1, b = 0, which the d = 2 kernels also have as a variant of their
 * own ("plain", the paper's activation, with no scales' gradients to sum). One variant per activation and none per
 * Jacobian or not (without it the packed part is not stored, or its gradient is zero): eight variants had made this
 * file take 11.5 s to compile instead of 2.2 s. Built as a library of its own (-DGRADNET_CASCADE, about 3 s, once
 * per machine), so the default networks' library still takes about 2.4 s. At d = 2 the kernels also form w = W x, T and the packed Jacobian
 * P = sum_j delta_j (W_j0^2, W_j0 W_j1, W_j1^2), and take W's gradient, so the network is one call each way.
 * ------------------------------------------------------------------------------------------------------------ */

/* tanh z from e^{2z} - 1 = 2^r (q + 1) - 1 = 2^r q + (2^r - 1), q = e^f - 1 = f exp_series(f): no cancellation near
 * 0, relative error a few 1e-7. |z| above 9 gives +-1 (tanh 9 rounds to 1 in float32). */
static inline float tanh_small(float z) {
    float f, r = reduce_ln2(2.0f * (z > 9.0f ? 9.0f : (z < -9.0f ? -9.0f : z)), &f);
    float scale = pow2(r), em1 = scale * (exp_series(f) * f) + (scale - 1.0f);
    return em1 / (em1 + 2.0f);
}

/* The layers' positive scales and biases, each (L, h), and their gradients. tanh is the weighted tanh with a = 1,
 * b = 0 (the caller passes those), so one activation serves both. */
typedef struct { const float *sb, *c, *sa, *aa, *ab; } Layers;
typedef struct { float *sb, *c, *sa, *aa, *ab; } LayerGrads;

/* s(z) = (a - b) t + b z and s'(z) = a + (b - a) t^2 at unit o of the layers, given t = tanh z. */
static inline __attribute__((always_inline)) void activation(Layers p, int64_t o, float z, float t, float *s,
                                                             float *ds) {
    *s = p.ab[o] * z + (p.aa[o] - p.ab[o]) * t;
    *ds = p.aa[o] + (p.ab[o] - p.aa[o]) * (t * t);
}

/* The same for one unit of the d = 2 kernels, its scales a, b read once before the loop over the samples (read in the
 * loop, through the Layers pointers, they made the backward pass 2.6 times slower: 0.50 against 0.19 ms at 1000
 * samples, 32 units, 4 layers), or with ``plain`` (a compile-time constant) tanh itself: s = t, s' = 1 - t^2. */
static inline __attribute__((always_inline)) void activation2(const int plain, float a, float b, float z, float t,
                                                              float *s, float *ds) {
    if (plain) {
        *s = t;
        *ds = 1.0f - t * t;
    } else {
        *s = b * z + (a - b) * t;
        *ds = a + (b - a) * (t * t);
    }
}

/* One sample's cascade from w (h): z, t = tanh z and chain, each (L, h), and the outputs S, delta (h). */
static inline __attribute__((always_inline)) void cascade_one(int64_t h, int64_t L, const float *restrict w, Layers p,
                                                              float *restrict z, float *restrict t,
                                                              float *restrict chain, float *restrict S,
                                                              float *restrict delta) {
#pragma omp simd
    for (int64_t j = 0; j < h; j++) {
        z[j] = p.sb[j] * (w[j] + p.c[j]);
        chain[j] = p.sb[j];
        t[j] = tanh_small(z[j]);
    }
    for (int64_t l = 1; l < L; l++) {
        const int64_t o = l * h, q = o - h;
#pragma omp simd
        for (int64_t j = 0; j < h; j++) {
            float s, ds;
            activation(p, q + j, z[q + j], t[q + j], &s, &ds);
            chain[o + j] = p.sb[o + j] + p.sa[q + j] * ds * chain[q + j];
            z[o + j] = p.sb[o + j] * (w[j] + p.c[o + j]) + p.sa[q + j] * s;
            t[o + j] = tanh_small(z[o + j]);
        }
    }
    const int64_t q = (L - 1) * h;
#pragma omp simd
    for (int64_t j = 0; j < h; j++) {
        float s, ds;
        activation(p, q + j, z[q + j], t[q + j], &s, &ds);
        S[j] = p.sa[q + j] * s;
        delta[j] = p.sa[q + j] * ds * chain[q + j];
    }
}

/* One sample's cascade run back, after cascade_one: given gS and gdelta (h), gw = dL/dw (h) and the parameters'
 * gradients added to g. gs, gd, gchain: scratch (h each). */
static inline __attribute__((always_inline)) void cascade_back_one(int64_t h, int64_t L, const float *restrict w,
                                                                   Layers p, const float *restrict z,
                                                                   const float *restrict t,
                                                                   const float *restrict chain,
                                                                   const float *restrict gS,
                                                                   const float *restrict gdelta, float *restrict gw,
                                                                   LayerGrads g, float *restrict gs,
                                                                   float *restrict gd, float *restrict gchain) {
    /* The outputs: S = sa s(z), delta = sa s'(z) chain, at the last layer. */
    const int64_t last = (L - 1) * h;
#pragma omp simd
    for (int64_t j = 0; j < h; j++) {
        float s, ds;
        activation(p, last + j, z[last + j], t[last + j], &s, &ds);
        g.sa[last + j] += gS[j] * s + gdelta[j] * ds * chain[last + j];
        gs[j] = gS[j] * p.sa[last + j];
        gd[j] = gdelta[j] * p.sa[last + j] * chain[last + j];
        gchain[j] = gdelta[j] * p.sa[last + j] * ds;
        gw[j] = 0.0f;
    }
    for (int64_t l = L - 1; l >= 0; l--) {
        const int64_t o = l * h;
#pragma omp simd
        for (int64_t j = 0; j < h; j++) {
            /* Through s(z_l) and s'(z_l): dL/dz_l and the activation's parameters; s'' = 2 (b - a) t (1 - t^2). */
            float tt = t[o + j], u = 1.0f - tt * tt, a = p.aa[o + j], b = p.ab[o + j];
            float gz = gs[j] * (a + (b - a) * (tt * tt)) + gd[j] * (2.0f * (b - a) * tt * u);
            g.aa[o + j] += gs[j] * tt + gd[j] * u;
            g.ab[o + j] += gs[j] * (z[o + j] - tt) + gd[j] * (tt * tt);
            /* z_l = sb_l (w + c_l) + sa_{l-1} s_{l-1};  chain_l = sb_l + sa_{l-1} s'_{l-1} chain_{l-1}. */
            g.sb[o + j] += gz * (w[j] + p.c[o + j]) + gchain[j];
            g.c[o + j] += gz * p.sb[o + j];
            gw[j] += gz * p.sb[o + j];
            if (l > 0) {
                const int64_t q = o - h;
                float s, ds;
                activation(p, q + j, z[q + j], t[q + j], &s, &ds);
                g.sa[q + j] += gz * s + gchain[j] * ds * chain[q + j];
                gs[j] = gz * p.sa[q + j];
                gd[j] = gchain[j] * p.sa[q + j] * chain[q + j];
                gchain[j] = gchain[j] * p.sa[q + j] * ds;
            }
        }
    }
}

static void zero_grads(LayerGrads g, int64_t size) {
    memset(g.sb, 0, sizeof(float) * (size_t)size);
    memset(g.c, 0, sizeof(float) * (size_t)size);
    memset(g.sa, 0, sizeof(float) * (size_t)size);
    memset(g.aa, 0, sizeof(float) * (size_t)size);
    memset(g.ab, 0, sizeof(float) * (size_t)size);
}

/* The general kernels, sample by sample with a lane per unit: wx (n, h) in, S and delta (n, h) out (delta NULL: not
 * stored); backward gS, gdelta (n, h) in, g_wx (n, h) out. */
static int cascade_forward(int64_t n, int64_t h, int64_t L, const float *wx, Layers p, float *S, float *delta) {
    float *work = malloc(sizeof(float) * (size_t)(3 * L * h + h));
    if (!work) return 2;
    for (int64_t i = 0; i < n; i++)
        cascade_one(h, L, wx + i * h, p, work, work + L * h, work + 2 * L * h, S + i * h,
                    delta ? delta + i * h : work + 3 * L * h);
    free(work);
    return 0;
}

static int cascade_backward(int64_t n, int64_t h, int64_t L, const float *wx, Layers p, const float *gS,
                            const float *gdelta, float *g_wx, LayerGrads g) {
    float *work = malloc(sizeof(float) * (size_t)(3 * L * h + 5 * h));
    if (!work) return 2;
    float *z = work, *t = z + L * h, *chain = t + L * h, *gs = chain + L * h, *gd = gs + h, *gchain = gd + h;
    float *S = gchain + h, *delta = S + h;
    zero_grads(g, L * h);
    for (int64_t i = 0; i < n; i++) {
        cascade_one(h, L, wx + i * h, p, z, t, chain, S, delta);
        cascade_back_one(h, L, wx + i * h, p, z, t, chain, gS + i * h, gdelta + i * h, g_wx + i * h, g, gs, gd,
                         gchain);
    }
    free(work);
    return 0;
}

/* At d = 2, tiles of TILE samples with a lane per sample, unit after unit: w = W_j x, the cascade of unit j over the
 * tile's samples, and its share of T = sum_j S_j W_j and P = sum_j delta_j sq(W_j) added to the tile's. The backward
 * pass recomputes unit j's cascade over the tile (z, t, chain per layer), runs it back and sums the parameters'
 * gradients over the tile's samples. x: (n, 2), W: (h, 2); T: (n, 2) (without c_L), P: (n, 3) (NULL: not stored). */
static inline __attribute__((always_inline)) void unit_forward(const int plain, int tn, int64_t L, Layers p, int64_t j,
                                                               int64_t h,
                                                               const float *w, float (*restrict z)[TILE],
                                                               float (*restrict t)[TILE],
                                                               float (*restrict chain)[TILE], float *restrict S,
                                                               float *restrict delta) {
    const float sb0 = p.sb[j], c0 = p.c[j];
#pragma omp simd
    for (int i = 0; i < tn; i++) {
        z[0][i] = sb0 * (w[i] + c0);
        t[0][i] = tanh_small(z[0][i]);
        chain[0][i] = sb0;
    }
    for (int64_t l = 1; l < L; l++) {
        const int64_t o = l * h + j, q = o - h;
        const float sb = p.sb[o], c = p.c[o], sa = p.sa[q], a = plain ? 1.0f : p.aa[q], b = plain ? 0.0f : p.ab[q];
#pragma omp simd
        for (int i = 0; i < tn; i++) {
            float s, ds;
            activation2(plain, a, b, z[l - 1][i], t[l - 1][i], &s, &ds);
            chain[l][i] = sb + sa * ds * chain[l - 1][i];
            z[l][i] = sb * (w[i] + c) + sa * s;
            t[l][i] = tanh_small(z[l][i]);
        }
    }
    const int64_t q = (L - 1) * h + j;
    const float sa = p.sa[q], a = plain ? 1.0f : p.aa[q], b = plain ? 0.0f : p.ab[q];
#pragma omp simd
    for (int i = 0; i < tn; i++) {
        float s, ds;
        activation2(plain, a, b, z[L - 1][i], t[L - 1][i], &s, &ds);
        S[i] = sa * s;
        delta[i] = sa * ds * chain[L - 1][i];
    }
}

static inline __attribute__((always_inline)) int cascade2_forward(const int plain, int64_t n, int64_t h, int64_t L,
                                                                  const float *x, const float *W, Layers p, float *T,
                                                                  float *P, float *ld) {
    float *work = malloc(sizeof(float) * (size_t)(3 * L * TILE));
    if (!work) return 2;
    float (*z)[TILE] = (float (*)[TILE])work, (*t)[TILE] = z + L, (*chain)[TILE] = t + L;
    float x0[TILE], x1[TILE], w[TILE], S[TILE], delta[TILE], acc[5][TILE];
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        for (int i = 0; i < tn; i++) {
            x0[i] = x[2 * (i0 + i)], x1[i] = x[2 * (i0 + i) + 1];
            acc[0][i] = acc[1][i] = acc[2][i] = acc[3][i] = acc[4][i] = 0.0f;
        }
        for (int64_t j = 0; j < h; j++) {
            const float W0 = W[2 * j], W1 = W[2 * j + 1], W00 = W0 * W0, W01 = W0 * W1, W11 = W1 * W1;
#pragma omp simd
            for (int i = 0; i < tn; i++) w[i] = W0 * x0[i] + W1 * x1[i];
            unit_forward(plain, tn, L, p, j, h, w, z, t, chain, S, delta);
#pragma omp simd
            for (int i = 0; i < tn; i++) {
                acc[0][i] += S[i] * W0;
                acc[1][i] += S[i] * W1;
                acc[2][i] += delta[i] * W00;
                acc[3][i] += delta[i] * W01;
                acc[4][i] += delta[i] * W11;
            }
        }
        for (int i = 0; i < tn; i++) {
            T[2 * (i0 + i)] = acc[0][i], T[2 * (i0 + i) + 1] = acc[1][i];
            if (P) P[3 * (i0 + i)] = acc[2][i], P[3 * (i0 + i) + 1] = acc[3][i], P[3 * (i0 + i) + 2] = acc[4][i];
            if (ld) ld[i0 + i] = logf(acc[2][i] * acc[4][i] - acc[3][i] * acc[3][i]);
        }
    }
    free(work);
    return 0;
}

static inline __attribute__((always_inline)) int cascade2_backward(const int plain, int64_t n, int64_t h, int64_t L,
                                                                   const float *x, const float *W, Layers p,
                                                                   const float *gT, const float *gP, const float *P,
                                                                   const float *gld, float *gW, LayerGrads g) {
    float *work = malloc(sizeof(float) * (size_t)(3 * L * TILE));
    if (!work) return 2;
    float (*z)[TILE] = (float (*)[TILE])work, (*t)[TILE] = z + L, (*chain)[TILE] = t + L;
    float x0[TILE], x1[TILE], gt[2][TILE], gp[3][TILE], w[TILE], S[TILE], delta[TILE];
    float gs[TILE], gd[TILE], gchain[TILE], gw[TILE];
    zero_grads(g, L * h);
    for (int64_t j = 0; j < 2 * h; j++) gW[j] = 0.0f;
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        for (int i = 0; i < tn; i++) {
            x0[i] = x[2 * (i0 + i)], x1[i] = x[2 * (i0 + i) + 1];
            gt[0][i] = gT[2 * (i0 + i)], gt[1][i] = gT[2 * (i0 + i) + 1];
            if (gld) {      /* d log(ac - b^2) / d(a, b, c) = (c, -2 b, a) / (ac - b^2) */
                const float a = P[3 * (i0 + i)], b = P[3 * (i0 + i) + 1], c = P[3 * (i0 + i) + 2];
                const float q = gld[i0 + i] / (a * c - b * b);
                gp[0][i] = q * c, gp[1][i] = -2.0f * q * b, gp[2][i] = q * a;
            } else {
                gp[0][i] = gP[3 * (i0 + i)], gp[1][i] = gP[3 * (i0 + i) + 1], gp[2][i] = gP[3 * (i0 + i) + 2];
            }
        }
        for (int64_t j = 0; j < h; j++) {
            const float W0 = W[2 * j], W1 = W[2 * j + 1], W00 = W0 * W0, W01 = W0 * W1, W11 = W1 * W1;
#pragma omp simd
            for (int i = 0; i < tn; i++) w[i] = W0 * x0[i] + W1 * x1[i];
            unit_forward(plain, tn, L, p, j, h, w, z, t, chain, S, delta);
            /* The outputs: S = sa s(z), delta = sa s'(z) chain, at the last layer; gS = <gT, W_j>, gdelta = <gP, sq(W_j)>. */
            const int64_t last = (L - 1) * h + j;
            const float sa = p.sa[last], a_last = plain ? 1.0f : p.aa[last], b_last = plain ? 0.0f : p.ab[last];
            float gsa = 0.0f;
#pragma omp simd reduction(+ : gsa)
            for (int i = 0; i < tn; i++) {
                float s, ds;
                activation2(plain, a_last, b_last, z[L - 1][i], t[L - 1][i], &s, &ds);
                float gS = gt[0][i] * W0 + gt[1][i] * W1;
                float gdelta = gp[0][i] * W00 + gp[1][i] * W01 + gp[2][i] * W11;
                gsa += gS * s + gdelta * ds * chain[L - 1][i];
                gs[i] = gS * sa;
                gd[i] = gdelta * sa * chain[L - 1][i];
                gchain[i] = gdelta * sa * ds;
                gw[i] = 0.0f;
            }
            g.sa[last] += gsa;
            for (int64_t l = L - 1; l >= 0; l--) {
                const int64_t o = l * h + j;
                const float sb = p.sb[o], c = p.c[o], a = plain ? 1.0f : p.aa[o], b = plain ? 0.0f : p.ab[o];
                const float sa_prev = l > 0 ? p.sa[o - h] : 0.0f;
                const float a_prev = l > 0 && !plain ? p.aa[o - h] : 1.0f;
                const float b_prev = l > 0 && !plain ? p.ab[o - h] : 0.0f;
                float ga = 0.0f, gb = 0.0f, gsb = 0.0f, gc = 0.0f, gsa_prev = 0.0f;
#pragma omp simd reduction(+ : ga, gb, gsb, gc, gsa_prev)
                for (int i = 0; i < tn; i++) {
                    /* Through s(z_l) and s'(z_l): dL/dz_l and the activation's parameters; s'' = 2 (b - a) t (1 - t^2). */
                    float tt = t[l][i], u = 1.0f - tt * tt;
                    float gz = gs[i] * (a + (b - a) * (tt * tt)) + gd[i] * (2.0f * (b - a) * tt * u);
                    if (!plain) {
                        ga += gs[i] * tt + gd[i] * u;
                        gb += gs[i] * (z[l][i] - tt) + gd[i] * (tt * tt);
                    }
                    /* z_l = sb_l (w + c_l) + sa_{l-1} s_{l-1};  chain_l = sb_l + sa_{l-1} s'_{l-1} chain_{l-1}. */
                    gsb += gz * (w[i] + c) + gchain[i];
                    gc += gz * sb;
                    gw[i] += gz * sb;
                    if (l > 0) {
                        float s, ds;
                        activation2(plain, a_prev, b_prev, z[l - 1][i], t[l - 1][i], &s, &ds);
                        gsa_prev += gz * s + gchain[i] * ds * chain[l - 1][i];
                        gs[i] = gz * sa_prev;
                        gd[i] = gchain[i] * sa_prev * chain[l - 1][i];
                        gchain[i] = gchain[i] * sa_prev * ds;
                    }
                }
                if (!plain) g.aa[o] += ga, g.ab[o] += gb;
                g.sb[o] += gsb;
                g.c[o] += gc;
                if (l > 0) g.sa[o - h] += gsa_prev;
            }
            /* W enters through w = W x, T = W^T S and P = sum_j delta_j sq(W_j). */
            float g0 = 0.0f, g1 = 0.0f;
#pragma omp simd reduction(+ : g0, g1)
            for (int i = 0; i < tn; i++) {
                g0 += gw[i] * x0[i] + S[i] * gt[0][i] + delta[i] * (2.0f * gp[0][i] * W0 + gp[1][i] * W1);
                g1 += gw[i] * x1[i] + S[i] * gt[1][i] + delta[i] * (gp[1][i] * W0 + 2.0f * gp[2][i] * W1);
            }
            gW[2 * j] += g0;
            gW[2 * j + 1] += g1;
        }
    }
    free(work);
    return 0;
}

/* d: 0 for the general kernel (in = wx (n, h); out = S, packed = delta, (n, h)), 2 for d = 2 (in = x (n, 2),
 * W (h, 2); out = T (n, 2) without c_L, packed = P (n, 3)). packed NULL: the Jacobian's part is not stored.
 * logdet (d = 2, with packed; else NULL): log det J = log(P_0 P_2 - P_1^2) (n) as well.
 * Layers sb, c, sa, aa, ab: (L, h). */
int gradnet_cascade_forward(int64_t n, int64_t h, int64_t L, int d, int plain, const float *in, const float *W,
                            const float *sb, const float *c, const float *sa, const float *aa, const float *ab,
                            float *out, float *packed, float *logdet) {
    if (L < 1 || h < 1 || (d != 0 && d != 2) || (logdet && (d != 2 || !packed))) return 1;
    Layers p = {sb, c, sa, aa, ab};
    if (d != 2) return cascade_forward(n, h, L, in, p, out, packed);
    return plain ? cascade2_forward(1, n, h, L, in, W, p, out, packed, logdet)
                 : cascade2_forward(0, n, h, L, in, W, p, out, packed, logdet);
}

/* g_out, g_packed: the gradients of forward's out and packed (zeros where it stored no packed); or, at d = 2, with
 * g_logdet that of forward's logdet and packed forward's P (g_packed unread); g_in: that of in (general) or of W
 * (d = 2); the layers' gradients, overwritten. */
int gradnet_cascade_backward(int64_t n, int64_t h, int64_t L, int d, int plain, const float *in, const float *W,
                             const float *sb, const float *c, const float *sa, const float *aa, const float *ab,
                             const float *g_out, const float *g_packed, const float *packed, const float *g_logdet,
                             float *g_in, float *g_sb, float *g_c, float *g_sa, float *g_aa, float *g_ab) {
    if (L < 1 || h < 1 || (d != 0 && d != 2) || (g_logdet && (d != 2 || !packed))) return 1;
    Layers p = {sb, c, sa, aa, ab};
    LayerGrads g = {g_sb, g_c, g_sa, g_aa, g_ab};
    if (d != 2) return cascade_backward(n, h, L, in, p, g_out, g_packed, g_in, g);
    return plain ? cascade2_backward(1, n, h, L, in, W, p, g_out, g_packed, packed, g_logdet, g_in, g)
                 : cascade2_backward(0, n, h, L, in, W, p, g_out, g_packed, packed, g_logdet, g_in, g);
}
#endif /* GRADNET_CASCADE */
