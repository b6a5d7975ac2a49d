/* optim_rules.h: the optimizer's per-tensor scalar rules (the LARS trust ratio, the clipping
 * factor) and its per-element updates (momentum for LARS/SGD, AdamW), each written once for the
 * host and the device.
 *
 * Why it exists: lib/train/optim.c computes the scalars on the host and hands each tensor's
 * elementwise work to a backend; the multi-tensor optimizer of the CUDA backend
 * (nn/optim_multi_cuda.cu) computes the same scalars on the device, from sums of squares that
 * never leave it, so that a training step needs no host round trip and can be a CUDA graph. Both
 * include this header, so the formulas cannot drift apart: gcc compiles it for the CPU, nvcc for
 * the kernels (and tests/unit/test_optim_emu.cpp as host C++).
 *
 * Arithmetic: the scalar rules run in double (IEEE sqrt, + − × ÷, correctly rounded on both
 * sides, so host and device give the same bits from the same sums) and round once to float. The
 * element updates are float operations rounded one by one, no FMA contraction: on the device
 * through __fmul_rn and friends, on the host through builds without contraction. The CPU
 * backend's loops (optim_cpu.c) evaluate the same expressions; optim.h has the formulas. */
#ifndef LT_NN_OPTIM_RULES_H
#define LT_NN_OPTIM_RULES_H

#include <math.h>
#include <stdint.h>

#include "nn/optim_kernels.h" /* lt_adamw_scalars */

#if defined(__CUDACC__) || defined(LT_CUDA_EMULATE)
#define LT_OR static __host__ __device__ __forceinline__
#else
#define LT_OR static inline
#endif
/* one rounding per operation: the device's intrinsics in device code; plain operators elsewhere
 * (every host build of these functions is without FMA contraction: ISO C mode for gcc's C,
 * -ffp-contract=off for the host C++ of the emulation test) */
#ifdef __CUDA_ARCH__
#define LT_OR_MUL(a, b) __fmul_rn(a, b)
#define LT_OR_ADD(a, b) __fadd_rn(a, b)
#define LT_OR_SUB(a, b) __fsub_rn(a, b)
#define LT_OR_DIV(a, b) __fdiv_rn(a, b)
#define LT_OR_SQRT(a) __fsqrt_rn(a)
#else
#define LT_OR_MUL(a, b) ((a) * (b))
#define LT_OR_ADD(a, b) ((a) + (b))
#define LT_OR_SUB(a, b) ((a) - (b))
#define LT_OR_DIV(a, b) ((a) / (b))
#define LT_OR_SQRT(a) sqrtf(a)
#endif

/* LARS, one tensor with weight decay wd (0: the no-decay group) from pss = Σ p², gss = Σ g²:
 * *scale = η‖p‖ / (‖g‖ + wd‖p‖ + eps) and *fwd = wd when wd, ‖p‖ and ‖g‖ are all non-zero, else
 * *scale = 1 and *fwd = 0 (plain momentum SGD on this tensor). */
LT_OR void lt_lars_factors(double pss, double gss, double wd, double trust, double eps,
                           float *scale, float *fwd) {
    *scale = 1.0f, *fwd = 0.0f;
    if (wd == 0.0) return;
    const double pn = sqrt(pss), gn = sqrt(gss);
    if (pn != 0.0 && gn != 0.0) {
        *scale = (float)(trust * pn / (gn + pn * wd + eps));
        *fwd = (float)wd;
    }
}

/* Global-norm clipping from the total norm: 1 and *coef set when the gradients are to be
 * multiplied by *coef (max_norm > 0, total finite and max_norm / (total + 1e-6) < 1), else 0. */
LT_OR int lt_clip_factor(double total, double max_norm, float *coef) {
    if (max_norm <= 0.0 || !isfinite(total)) return 0;
    const double c = max_norm / (total + 1e-6);
    if (!(c < 1.0)) return 0;
    *coef = (float)c;
    return 1;
}

/* One element of the momentum update of LARS and SGD (lt_momentum_update): d = (g + wd·w)·scale;
 * has_buf 0: w −= lr·d; first: buf = d; else buf = buf·mu + d; then w −= lr·buf. */
LT_OR void lt_momentum_elem(float *w, float g, float *buf, int has_buf, float scale, float wd,
                            float mu, float lr, int first) {
    const float wi = *w;
    const float d = LT_OR_MUL(LT_OR_ADD(g, LT_OR_MUL(wd, wi)), scale);
    float u = d;
    if (has_buf) {
        if (!first) u = LT_OR_ADD(LT_OR_MUL(*buf, mu), d);
        *buf = u;
    }
    *w = LT_OR_SUB(wi, LT_OR_MUL(lr, u));
}

/* One element of AdamW (lt_adamw_update). */
LT_OR void lt_adamw_elem(float *w, float g, float *m, float *v, const lt_adamw_scalars *k) {
    const float wi = k->decay_on ? LT_OR_MUL(*w, k->decay) : *w;
    const float mi = LT_OR_ADD(LT_OR_MUL(*m, k->b1), LT_OR_MUL(g, k->omb1));
    const float vi = LT_OR_ADD(LT_OR_MUL(*v, k->b2), LT_OR_MUL(LT_OR_MUL(g, g), k->omb2));
    *m = mi;
    *v = vi;
    const float denom = LT_OR_ADD(LT_OR_DIV(LT_OR_SQRT(vi), k->bc2_sqrt), k->eps);
    *w = LT_OR_SUB(wi, LT_OR_MUL(k->step_size, LT_OR_DIV(mi, denom)));
}

#if defined(__CUDACC__) || defined(LT_CUDA_EMULATE)
/* One block's Σ x² over x[0..len) in double, returned to thread 0: thread t sums x[t], x[t + T],
 * ... (T = blockDim.x, a power of two, the size of the shared array sh), then a fixed tree over
 * the T partial sums. The chunk sum of both the per-tensor sumsq_many (optim_cuda.cu) and the
 * multi-tensor step (optim_multi_cuda.cu): one code, so both paths give the same bits. */
static __device__ __forceinline__ double lt_block_sumsq(const float *x, int64_t len, double *sh) {
    const int T = (int)blockDim.x, t = (int)threadIdx.x;
    double s = 0.0;
    for (int64_t i = t; i < len; i += T) s += (double)x[i] * x[i];
    sh[t] = s;
    __syncthreads();
    for (int k = T / 2; k > 0; k >>= 1) {
        if (t < k) sh[t] += sh[t + k];
        __syncthreads();
    }
    return sh[0];
}
#endif

#endif
