/* optim_cpu.c: the CPU implementation of optim_kernels.h (the optimizers' elementwise loops and
 * the deterministic sums of squares). */
#include "nn/optim_kernels.h"

#include <math.h>

/* Elementwise loops go parallel only when the tensor is big enough to pay for the threads. */
#define PAR_MIN 32768
/* Norm reductions: fixed chunks, so the summation order does not depend on the thread count. */
#define SUMSQ_CHUNK 65536
#define SUMSQ_GROUP 256

static double sumsq_chunk(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

double lt_sumsq(const float *x, int64_t n) {
    if (n <= SUMSQ_CHUNK) return sumsq_chunk(x, n);
    int64_t nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double total = 0.0;
    for (int64_t c0 = 0; c0 < nchunks; c0 += SUMSQ_GROUP) {
        int nc = (int)(nchunks - c0 < SUMSQ_GROUP ? nchunks - c0 : SUMSQ_GROUP);
        double part[SUMSQ_GROUP];
#pragma omp parallel for schedule(static)
        for (int c = 0; c < nc; c++) {
            int64_t a = (c0 + c) * SUMSQ_CHUNK;
            int64_t len = n - a < SUMSQ_CHUNK ? n - a : SUMSQ_CHUNK;
            part[c] = sumsq_chunk(x + a, len);
        }
        for (int c = 0; c < nc; c++) total += part[c];
    }
    return total;
}

int lt_scale(float *x, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t j = 0; j < n; j++) x[j] *= s;
    return 0;
}

int lt_momentum_update(float *w, const float *g, float *buf, int64_t n, float scale, float wd,
                       float mu, float lr, int first) {
    if (!buf) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float d = (g[i] + wd * w[i]) * scale;
            w[i] = w[i] - lr * d;
        }
    } else if (first) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float d = (g[i] + wd * w[i]) * scale;
            buf[i] = d;
            w[i] = w[i] - lr * d;
        }
    } else {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float d = (g[i] + wd * w[i]) * scale;
            float b = buf[i] * mu + d;
            buf[i] = b;
            w[i] = w[i] - lr * b;
        }
    }
    return 0;
}

int lt_adamw_update(float *w, const float *g, float *m, float *v, int64_t n,
                    const lt_adamw_scalars *k) {
    const float decay = k->decay, b1 = k->b1, b2 = k->b2, omb1 = k->omb1, omb2 = k->omb2;
    const float step_size = k->step_size, bc2_sqrt = k->bc2_sqrt, eps = k->eps;
    const int decay_on = k->decay_on;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float wi = decay_on ? w[i] * decay : w[i];
        float gi = g[i];
        float mi = m[i] * b1 + gi * omb1;
        float vi = v[i] * b2 + gi * gi * omb2;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = wi - step_size * (mi / denom);
    }
    return 0;
}
