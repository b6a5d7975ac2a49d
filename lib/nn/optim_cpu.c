/* optim_cpu.c: the CPU implementation of optim_kernels.h (the optimizers' elementwise loops and
 * the deterministic sums of squares). The per-element updates are optim_rules.h's, the ones the
 * CUDA kernels run: built without FMA contraction (ISO C mode), they give the GPU's bits. */
#include "nn/optim_kernels.h"

#include <math.h>
#include <stddef.h>

#include "nn/optim_rules.h"

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
    /* the three cases as separate loops, so that each vectorises without a branch inside */
    if (!buf) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) lt_momentum_elem(&w[i], g[i], NULL, 0, scale, wd, mu, lr, 0);
    } else if (first) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) lt_momentum_elem(&w[i], g[i], &buf[i], 1, scale, wd, mu, lr, 1);
    } else {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) lt_momentum_elem(&w[i], g[i], &buf[i], 1, scale, wd, mu, lr, 0);
    }
    return 0;
}

int lt_adamw_update(float *w, const float *g, float *m, float *v, int64_t n,
                    const lt_adamw_scalars *k) {
    const lt_adamw_scalars kk = *k;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) lt_adamw_elem(&w[i], g[i], &m[i], &v[i], &kk);
    return 0;
}
