/* kd_cpu.c: the CPU reference of the distillation method after the projection head (kd.h):
 * L2 normalisation forward/backward, the teacher-embedding queue, the KL loss and its gradient.
 * GEMMs go through lt_op_gemm (OpenBLAS, split over OpenMP threads); row loops are OpenMP with
 * static schedules, and every
 * reduction runs in double in a fixed order, so results do not depend on the run. */
#include "nn/kd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "image/render.h"
#include "nn/ops.h"

/* ---- The queue ---- */

int lt_queue_init(lt_queue *q, int Q, int D) {
    memset(q, 0, sizeof *q);
    if (Q <= 0 || D <= 0) return lt_err_set("queue: invalid size %d x %d", Q, D);
    q->data = lt_calloc((size_t)Q * (size_t)D, sizeof(float), "the teacher-embedding queue");
    if (!q->data) return -1;
    q->Q = Q;
    q->D = D;
    return 0;
}

void lt_queue_free(lt_queue *q) {
    free(q->data);
    q->data = NULL;
    q->Q = q->D = 0;
}

int lt_queue_push_rows(float *queue, int Q, int D, const float *x, int B) {
    if (!queue) return lt_err_set("queue: push into an uninitialised queue");
    if (B <= 0) return lt_err_set("queue: push of %d rows", B);
    size_t d = (size_t)D;
    if (B >= Q) {
        memcpy(queue, x, (size_t)Q * d * sizeof(float));
    } else {
        memmove(queue + (size_t)B * d, queue, (size_t)(Q - B) * d * sizeof(float));
        memcpy(queue, x, (size_t)B * d * sizeof(float));
    }
    return 0;
}

int lt_queue_push(lt_queue *q, const float *x, int B) {
    return lt_queue_push_rows(q->data, q->Q, q->D, x, B);
}

int lt_queue_size_auto(int64_t N) {
    static const int64_t bound[] = {50, 100, 250, 500, 1000, 2000, 4000, 10000, 20000};
    static const int size[] = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
    for (int i = 0; i < (int)(sizeof bound / sizeof bound[0]); i++)
        if (N < bound[i]) return size[i];
    return 8192;
}

int lt_queue_size_check(int64_t Q, int64_t N) {
    if (Q < 1)
        return lt_err_set("--queue-size %lld: the queue needs at least one entry (or use auto)",
                          (long long)Q);
    if (Q >= N)
        return lt_err_set("--queue-size %lld must be smaller than the number of images (%lld): "
                          "pass a smaller --queue-size, or --queue-size auto",
                          (long long)Q, (long long)N);
    return 0;
}

/* ---- The loss ---- */

/* log Σ exp(r[i]) of a row, max-subtracted, summed in double left to right. */
static double logsumexp_row(const float *r, int n) {
    float mx = r[0];
    for (int i = 1; i < n; i++) mx = r[i] > mx ? r[i] : mx;
    double se = 0.0;
    for (int i = 0; i < n; i++) se += exp((double)r[i] - mx);
    return mx + log(se);
}

int lt_kd_loss_forward(double *loss, const float *t, const float *s, const float *queue, int B,
                       int Qn, int D, float tau, float *probs) {
    if (B <= 0 || Qn <= 0 || D <= 0)
        return lt_err_set("distillation loss: invalid sizes B=%d Q=%d D=%d", B, Qn, D);
    if (!(tau > 0.0f)) return lt_err_set("distillation loss: temperature %g must be > 0", tau);
    float *pt = probs;                     /* (B, Qn) */
    float *ps = probs + (int64_t)B * Qn;   /* (B, Qn) */
    float inv_tau = 1.0f / tau;
    /* logits (B, Qn) = x (B, D) · queueᵀ (D, Qn) / τ */
    lt_op_gemm(0, 1, B, Qn, D, inv_tau, t, D, queue, D, 0.0f,
                pt, Qn);
    lt_op_gemm(0, 1, B, Qn, D, inv_tau, s, D, queue, D, 0.0f,
                ps, Qn);
    /* Per-row KL in double (rows in parallel), then summed over rows in order. */
    enum { CHUNK = 256 };
    double row_kl[CHUNK];
    double total = 0.0;
    for (int b0 = 0; b0 < B; b0 += CHUNK) {
        int nb = B - b0 < CHUNK ? B - b0 : CHUNK;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nb; i++) {
            float *rt = pt + (int64_t)(b0 + i) * Qn;
            float *rs = ps + (int64_t)(b0 + i) * Qn;
            double lse_t = logsumexp_row(rt, Qn), lse_s = logsumexp_row(rs, Qn);
            double kl = 0.0;
            for (int q = 0; q < Qn; q++) {
                double lpt = (double)rt[q] - lse_t; /* log p_t */
                double lps = (double)rs[q] - lse_s; /* log p_s */
                double p = exp(lpt);
                kl += p * (lpt - lps); /* p == 0 (underflow) adds exactly 0 */
                rt[q] = (float)p;
                rs[q] = (float)(exp(lps) - p); /* p_s − p_t, formed in double */
            }
            row_kl[i] = kl;
        }
        for (int i = 0; i < nb; i++) total += row_kl[i];
    }
    *loss = total / B;
    return 0;
}

int lt_kd_loss_backward(float *ds, const float *probs, const float *queue, int B, int Qn, int D,
                         float tau) {
    const float *g = probs + (int64_t)B * Qn; /* p_s − p_t (B, Qn) */
    /* ds (B, D) = g (B, Qn) · queue (Qn, D) / (τ B) */
    float alpha = (float)(1.0 / ((double)tau * B));
    lt_op_gemm(0, 0, B, D, Qn, alpha, g, Qn, queue, D, 0.0f,
                ds, D);
    return 0;
}

/* ---- The input ---- */

int lt_mix_normalize_batch(float *x, const uint8_t *a, const uint8_t *b, const float *lambda,
                           int B, int HW, const float mean[3], const float std[3]) {
    if (B < 0 || HW < 0) return lt_err_set("mix/normalise: bad sizes B=%d HW=%d", B, HW);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        size_t o = (size_t)i * (size_t)HW * 3;
        lt_mix_normalize(a + o, b ? b + o : NULL, b ? lambda[i] : 1.0f, mean, std, HW, x + o);
    }
    return 0;
}
