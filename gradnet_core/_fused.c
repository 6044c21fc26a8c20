/* Fused CPU kernels (gradnet_core/_fused.py), float32, d = 2: mGradNet-M's softmax blocks, which the image
 * KDE's log-sum-exp reuses, and the epsilon-scaling loop of the Sinkhorn divergence.
 *
 * Softmax blocks. For every block b and sample i: u_j = A[b, j, :] . x_i (x_i ends with a 1, so A's last column is the
 * bias), p = softmax(u) over the block's h units, out[b, i, :] = sum_j p_j R[b, j, :]. The backward pass
 * recomputes p from x and the saved log-normaliser lse[b, i] instead of storing the (B, n, h) matrix:
 * with s_i = <G[b, i], out[b, i]>, dL/du_j = p_j (<G[b, i], R[b, j]> - s_i), and
 *   grad_A[b, j, :] = sum_i dL/du_ij x_i,  grad_R[b, j, :] = sum_i p_ij G[b, i, :].
 * Samples are processed in tiles of TILE; every inner loop runs over the samples of a tile, so it
 * vectorises without reassociating anyone's sums (no -ffast-math: each lane is one sample). float32.
 *
 * mGradNet-M combines its blocks' outputs, v_b = out[b, :, :2] and, with the Jacobian, s_b = out[b, :, 2:5]:
 *   T = sum_b sg[b] v_b,   P = sum_b wt[b] (s_b - sq(v_b)),   sq(v) = (v0 v0, v0 v1, v1 v1),
 * T(x) and the packed Jacobian (networks.MGradNetM). Given sg and wt the kernels form T and P in the same pass,
 * and the backward pass takes their gradients dT, dP and forms G on the fly: G[b] = (sg[b] dT - wt[b] dsq(v_b)^T dP,
 * wt[b] dP), with grad_sg[b] = sum_i <dT_i, v_bi> and grad_wt[b] = sum_i <dP_i, s_bi - sq(v_bi)>.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TILE 128
#define MAX_K 4          /* columns of x: d + 1 */
#define MAX_C 8          /* columns of R: d, or d + d(d + 1) / 2 with the Jacobian */

/* e^x, relative error below 2e-7; arguments below -87 are raised to -87 (terms that far below the row's
 * largest weigh under 1e-37 of it; CPU exp of results below the smallest normal float is slow).
 * e^x = 2^r e^f with r = round(x / ln 2) and f = x - r ln 2 in [-0.35, 0.35], r ln 2 taken in two parts
 * (Cody and Waite) so that f keeps its precision when |x| is large. */
static inline float exp_clamped(float x) {
    x = x < -87.0f ? -87.0f : x;
    float r = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* rounded to an integer */
    float f = x - r * 0.693145751953125f;                               /* ln 2, its leading bits */
    f = f - r * 1.42860682030941723e-6f;                                 /* and the rest */
    float p = 1.9841270e-4f;                                             /* e^f = sum f^k / k!, k <= 7 */
    p = p * f + 1.3888889e-3f;
    p = p * f + 8.3333333e-3f;
    p = p * f + 4.1666667e-2f;
    p = p * f + 1.6666667e-1f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    int32_t bits = ((int32_t)r + 127) << 23;                             /* 2^r, r in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

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

/* x: (n, k) with its last column all ones; A: (B, h, k); R: (B, h, C); out: (B, n, C); lse: (B, n).
 * Inlined into one copy per (k, C) below, so that the loops over them unroll and the sample loops vectorise. */
static inline __attribute__((always_inline)) void forward(int64_t n, int64_t blocks, int64_t h, const int k,
                                                          const int C, const float *x, const float *A,
                                                          const float *R, float *out, float *lse, const float *sg,
                                                          const float *wt, float *T, float *P) {
    float xt[MAX_K][TILE], u[TILE], top[TILE], sum[TILE], acc[MAX_C][TILE], tt[2][TILE], pt[3][TILE];
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        load_tile(xt, x, k, (int)i0, tn);
        for (int i = 0; i < tn; i++) tt[0][i] = tt[1][i] = pt[0][i] = pt[1][i] = pt[2][i] = 0.0f;
        for (int64_t b = 0; b < blocks; b++) {
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
            float *o = out + (b * n + i0) * C;
            for (int i = 0; i < tn; i++) {
                float inv = 1.0f / sum[i];
                for (int c = 0; c < C; c++) o[i * C + c] = acc[c][i] * inv;
                lse[b * n + i0 + i] = top[i] + logf(sum[i]);
            }
            if (T) {
                const float sb = sg[b], wb = wt[b];
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
        }
        if (T)
            for (int i = 0; i < tn; i++) {
                T[2 * (i0 + i)] = tt[0][i];
                T[2 * (i0 + i) + 1] = tt[1][i];
                if (C == 5)
                    for (int c = 0; c < 3; c++) P[3 * (i0 + i) + c] = pt[c][i];
            }
    }
}

/* dT: (n, 2) and dP: (n, 3) (unread when C = 2), the gradients of the combined T and P; grad_sg, grad_wt: (B),
 * grad_A: (B, h, k) and grad_R: (B, h, C), overwritten. */
static inline __attribute__((always_inline)) void backward(int64_t n, int64_t blocks, int64_t h, const int k,
                                                           const int C, const float *x, const float *A,
                                                           const float *R, const float *out, const float *lse,
                                                           const float *sg, const float *wt, const float *dT,
                                                           const float *dP, float *grad_sg, float *grad_wt,
                                                           float *grad_A, float *grad_R) {
    float xt[MAX_K][TILE], gt[MAX_C][TILE], u[TILE], s[TILE], l[TILE], p[TILE], du[TILE], dt[2][TILE], dp[3][TILE];
    memset(grad_A, 0, (size_t)(blocks * h * k) * sizeof(float));
    memset(grad_R, 0, (size_t)(blocks * h * C) * sizeof(float));
    memset(grad_sg, 0, (size_t)blocks * sizeof(float));
    memset(grad_wt, 0, (size_t)blocks * sizeof(float));
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        load_tile(xt, x, k, (int)i0, tn);
        for (int i = 0; i < tn; i++) {
            xt[k - 1][i] = 1.0f;
            dt[0][i] = dT[2 * (i0 + i)];
            dt[1][i] = dT[2 * (i0 + i) + 1];
            if (C == 5)
                for (int c = 0; c < 3; c++) dp[c][i] = dP[3 * (i0 + i) + c];
        }
        for (int64_t b = 0; b < blocks; b++) {
            const float *a = A + b * h * k, *r = R + b * h * C, *o = out + (b * n + i0) * C;
            const float sb = sg[b], wb = wt[b];
            float to_sg = 0.0f, to_wt = 0.0f;
            for (int i = 0; i < tn; i++) {
                const float v0 = o[i * C], v1 = o[i * C + 1];
                gt[0][i] = sb * dt[0][i];
                gt[1][i] = sb * dt[1][i];
                to_sg += dt[0][i] * v0 + dt[1][i] * v1;
                if (C == 5) {
                    gt[0][i] -= wb * (2.0f * v0 * dp[0][i] + v1 * dp[1][i]);
                    gt[1][i] -= wb * (v0 * dp[1][i] + 2.0f * v1 * dp[2][i]);
                    for (int c = 0; c < 3; c++) gt[2 + c][i] = wb * dp[c][i];
                    to_wt += dp[0][i] * (o[i * C + 2] - v0 * v0) + dp[1][i] * (o[i * C + 3] - v0 * v1)
                             + dp[2][i] * (o[i * C + 4] - v1 * v1);
                }
            }
            grad_sg[b] += to_sg;
            grad_wt[b] += to_wt;
            for (int i = 0; i < tn; i++) {
                float dot = 0.0f;
                for (int c = 0; c < C; c++) dot += gt[c][i] * o[i * C + c];
                s[i] = dot;
                l[i] = lse[b * n + i0 + i];
            }
            for (int64_t j = 0; j < h; j++) {
                unit_inputs(u, a + j * k, xt, k, tn);
                const float *rj = r + j * C;
#pragma omp simd
                for (int i = 0; i < tn; i++) {
                    float e = exp_clamped(u[i] - l[i]);
                    float gr = 0.0f;
                    for (int c = 0; c < C; c++) gr += gt[c][i] * rj[c];
                    p[i] = e;
                    du[i] = e * (gr - s[i]);
                }
                float *ga = grad_A + (b * h + j) * k, *gr = grad_R + (b * h + j) * C;
                for (int c = 0; c < C; c++) {
                    float total = 0.0f;
#pragma omp simd reduction(+ : total)
                    for (int i = 0; i < tn; i++) total += p[i] * gt[c][i];
                    gr[c] += total;
                }
                for (int c = 0; c < k; c++) {
                    float total = 0.0f;
#pragma omp simd reduction(+ : total)
                    for (int i = 0; i < tn; i++) total += du[i] * xt[c][i];
                    ga[c] += total;
                }
            }
        }
    }
}

/* The exported entry points: d = 2 (k = 3), with the Jacobian's columns (C = 5) or without (C = 2); the forward
 * pass's sg, wt, T and P may be NULL (no combination: the image KDE), and P is unread when C = 2. They return 1
 * for any other shape, which the caller never passes. */
int gradnet_softmax_average_forward(int64_t n, int64_t blocks, int64_t h, int k, int C, const float *x,
                                    const float *A, const float *R, float *out, float *lse, const float *sg,
                                    const float *wt, float *T, float *P) {
    if (k == 3 && C == 5) forward(n, blocks, h, 3, 5, x, A, R, out, lse, sg, wt, T, P);
    else if (k == 3 && C == 2) forward(n, blocks, h, 3, 2, x, A, R, out, lse, sg, wt, T, P);
    else return 1;
    return 0;
}

int gradnet_softmax_average_backward(int64_t n, int64_t blocks, int64_t h, int k, int C, const float *x,
                                     const float *A, const float *R, const float *out, const float *lse,
                                     const float *sg, const float *wt, const float *dT, const float *dP,
                                     float *grad_sg, float *grad_wt, float *grad_A, float *grad_R) {
    if (k == 3 && C == 5)
        backward(n, blocks, h, 3, 5, x, A, R, out, lse, sg, wt, dT, dP, grad_sg, grad_wt, grad_A, grad_R);
    else if (k == 3 && C == 2)
        backward(n, blocks, h, 3, 2, x, A, R, out, lse, sg, wt, dT, dP, grad_sg, grad_wt, grad_A, grad_R);
    else return 1;
    return 0;
}


/* Sinkhorn. The softmin out_i = -eps log sum_j exp(h_j - |p_i - q_j|^2 / eps) for p: (n, 2), q: (m, 2),
 * h: (m), from the row's largest exponent, in two passes over q per tile of p (one lane per point). With
 * bary (n, 2), the second pass also gives the softmin's weighted mean of q: out_i's gradient in p_i is
 * 2 (p_i - bary_i) (sample_losses._PointSoftmin). */
static inline __attribute__((always_inline)) void softmin_pass(int64_t n, int64_t m, const float *p, const float *q,
                                                               const float *h, float eps, float *out,
                                                               float *bary, const int with_bary) {
    const float inv = 1.0f / eps;
    float p0[TILE], p1[TILE], top[TILE], sum[TILE], m0[TILE], m1[TILE];
    for (int64_t i0 = 0; i0 < n; i0 += TILE) {
        int tn = (int)(n - i0 < TILE ? n - i0 : TILE);
        for (int i = 0; i < tn; i++) {
            p0[i] = p[2 * (i0 + i)];
            p1[i] = p[2 * (i0 + i) + 1];
            top[i] = -INFINITY;
            sum[i] = m0[i] = m1[i] = 0.0f;
        }
        for (int64_t j = 0; j < m; j++) {
            const float q0 = q[2 * j], q1 = q[2 * j + 1], hj = h[j];
#pragma omp simd
            for (int i = 0; i < tn; i++) {
                float d0 = p0[i] - q0, d1 = p1[i] - q1, z = hj - (d0 * d0 + d1 * d1) * inv;
                top[i] = z > top[i] ? z : top[i];
            }
        }
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
        for (int i = 0; i < tn; i++) {
            out[i0 + i] = -eps * (top[i] + logf(sum[i]));
            if (with_bary) {
                bary[2 * (i0 + i)] = m0[i] / sum[i];
                bary[2 * (i0 + i) + 1] = m1[i] / sum[i];
            }
        }
    }
}

static void softmin(int64_t n, int64_t m, const float *p, const float *q, const float *h, float eps, float *out) {
    softmin_pass(n, m, p, q, h, eps, out, NULL, 0);
}

int gradnet_softmin_barycentre(int64_t n, int64_t m, const float *p, const float *q, const float *h, float eps,
                               float *out, float *bary) {
    softmin_pass(n, m, p, q, h, eps, out, bary, 1);
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
 * update for update. schedule: the eps of each step. Returns 2 when memory runs out. */
int gradnet_sinkhorn_potentials(int64_t n, int64_t m, const float *x, const float *y, const float *schedule,
                                int steps, int debias, float *f_ba, float *g_ab, float *f_aa, float *g_bb) {
    int64_t most = n > m ? n : m;
    float *h = malloc(3 * most * sizeof(float));
    if (!h) return 2;
    float *ft = h + most, *gt = ft + most;
    const float a_log = -logf((float)n), b_log = -logf((float)m);
    float eps = schedule[0];
    for (int64_t j = 0; j < m; j++) h[j] = b_log;
    softmin(n, m, x, y, h, eps, f_ba);
    if (debias) softmin(m, m, y, y, h, eps, g_bb);
    for (int64_t i = 0; i < n; i++) h[i] = a_log;
    softmin(m, n, y, x, h, eps, g_ab);
    if (debias) softmin(n, n, x, x, h, eps, f_aa);
    for (int k = 0; k < steps; k++) {
        eps = schedule[k];
        /* Symmetric updates, each averaged with the last (see the Python loop). */
        offsets(h, m, b_log, g_ab, eps);
        softmin(n, m, x, y, h, eps, ft);
        offsets(h, n, a_log, f_ba, eps);
        softmin(m, n, y, x, h, eps, gt);
        average(f_ba, ft, n);
        average(g_ab, gt, m);
        if (debias) {
            offsets(h, n, a_log, f_aa, eps);
            softmin(n, n, x, x, h, eps, ft);
            average(f_aa, ft, n);
            offsets(h, m, b_log, g_bb, eps);
            softmin(m, m, y, y, h, eps, gt);
            average(g_bb, gt, m);
        }
    }
    free(h);
    return 0;
}
