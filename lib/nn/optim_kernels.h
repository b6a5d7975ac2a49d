/* optim_kernels.h: the elementwise work of the optimizers and of gradient clipping, the part a
 * backend runs (nn/backend.h). The scalar logic around it (LARS trust ratios, AdamW bias
 * corrections, the clipping coefficient, the schedule) is written once, in lib/train/optim.c.
 *
 * These are the CPU implementations: float32 arithmetic in the order the PyTorch code they mirror
 * uses (optim.h's top comment has the formulas), static OpenMP loops, and sums of squares over
 * fixed chunks in double, so results do not depend on the thread count. */
#ifndef LT_NN_OPTIM_KERNELS_H
#define LT_NN_OPTIM_KERNELS_H

#include <stdint.h>

/* Sum of squares of x (n) in double over fixed 64 Ki-element chunks (added in order). */
double lt_sumsq(const float *x, int64_t n);
/* x (n) *= s. */
int lt_scale(float *x, int64_t n, float s);
/* The momentum update of LARS and SGD, with d = scale · (g + wd · w) per element:
 *   buf NULL (momentum 0): w −= lr · d
 *   first:                 buf = d;            w −= lr · buf
 *   otherwise:             buf = mu·buf + d;   w −= lr · buf */
int lt_momentum_update(float *w, const float *g, float *buf, int64_t n, float scale, float wd,
                       float mu, float lr, int first);

/* The per-step scalars of an AdamW update (computed in double by optim.c, rounded once). */
typedef struct {
    int decay_on;       /* weight decay applies to this tensor */
    float decay;        /* 1 − lr · wd */
    float b1, b2;       /* β1, β2 */
    float omb1, omb2;   /* 1 − β1, 1 − β2 */
    float step_size;    /* lr / (1 − β1^t) */
    float bc2_sqrt;     /* sqrt(1 − β2^t) */
    float eps;
} lt_adamw_scalars;

/* AdamW (torch.optim.AdamW, amsgrad off) on w, m, v (n) from g (n):
 *   w = w · decay (when decay_on);  m = b1·m + omb1·g;  v = b2·v + omb2·g²;
 *   w = w − step_size · m / (sqrt(v) / bc2_sqrt + eps) */
int lt_adamw_update(float *w, const float *g, float *m, float *v, int64_t n,
                    const lt_adamw_scalars *k);

#endif
