/* optim_multi.h: the whole optimizer step on the device, over every parameter at once: the
 * gradient norm, clipping, the LARS trust ratios and the LARS / SGD / AdamW updates, with the
 * scalars computed where the sums are (nn/optim_rules.h), so no value goes to the host and back.
 *
 * Why it exists: lib/train/optim.c asks the backend for sums of squares and computes the clipping
 * coefficient and trust ratios on the host: on a GPU that is two waits per step, and a step that
 * waits cannot be captured in a CUDA graph. This is the same step (optim.h's formulas, the same
 * sums in the same order as the CUDA backend's sumsq_many, the same element updates as every
 * backend's) as a fixed sequence of kernels over tables of all parameters: a handful of launches
 * per step instead of several per tensor, and nothing for the host to wait for. The training step
 * (lib/train/step.c) uses it through the backend entries mt_* (nn/backend.h) when the backend has
 * them; optim.c stays the reference it is tested against (tests/unit/test_optim_emu.cpp on the CPU
 * through tests/unit/cuda_emu.h, tests/cuda/test_cuda_student.c on a GPU).
 *
 * One step, in order, on one stream:
 *   io's inputs up (lr, the first-step flag, AdamW's scalars: they change every step, so they
 *   live in pinned host memory that a captured graph copies from at each launch);
 *   loss = *loss_dev (the training step's, in device memory); when it is not finite: no update,
 *   gnorm 0 (the CPU step stops before the backward then);
 *   gnorm = sqrt(Σ over parameters, in order, of Σ g²) (64 Ki-element chunks as sumsq_many);
 *   not finite: no update; clipping (clip > 0): g *= coef when coef = clip/(gnorm+1e-6) < 1;
 *   LARS: Σ p², Σ g² of every tensor, its trust ratio (lt_lars_factors);
 *   the update of every tensor; io's results down (loss, gnorm, updated). */
#ifndef LT_NN_OPTIM_MULTI_H
#define LT_NN_OPTIM_MULTI_H

#include <stdint.h>

#include "nn/optim_kernels.h" /* lt_adamw_scalars */

#ifdef __cplusplus
extern "C" {
#endif

/* the optimizers, as lt_opt_kind (train/optim.h) numbers them */
enum { LT_MT_LARS = 0, LT_MT_ADAMW = 1, LT_MT_SGD = 2 };

/* one parameter: w, g and the state in device memory (m NULL: LARS/SGD without momentum) */
typedef struct {
    float *w, *g, *m, *v;
    int64_t n;
    int decay; /* 1: the weight-decay group */
} lt_mt_param;

typedef struct {
    int kind;            /* LT_MT_* */
    double weight_decay; /* of the decay group */
    double trust_coef;   /* LARS η */
    double eps;          /* LARS eps */
    float momentum;      /* LARS, SGD μ */
} lt_mt_config;

/* What the host and the step exchange, in pinned host memory (lt_mt_io_of). */
typedef struct {
    /* in: written by the host before each step */
    float lr;                  /* the scheduled learning rate */
    double clip;               /* the max norm; <= 0: no clipping (the norm is still computed) */
    int first;                 /* 1 on the optimizer's first update (momentum buffers start) */
    lt_adamw_scalars adam[2];  /* AdamW: [0] no-decay tensors, [1] the decay group */
    /* out: valid after the step's stream has finished */
    double loss;               /* the loss the step read */
    double gnorm;              /* the total gradient norm before clipping (0: loss not finite) */
    int updated;               /* 1: loss and gnorm finite, every parameter updated */
} lt_mt_io;

typedef struct lt_mt lt_mt;

/* The tables for these n parameters and cfg on `stream` (a cudaStream_t). NULL + lt_err. */
lt_mt *lt_mt_create(void *stream, const lt_mt_config *cfg, const lt_mt_param *ps, int n);
/* The pinned exchange struct of mt (owned by it). */
lt_mt_io *lt_mt_io_of(lt_mt *mt);
/* Enqueues one step (above) on mt's stream, reading the loss from loss_dev (one double in device
 * memory) and io's inputs; returns without waiting. 0, or -1 + lt_err (a launch failed). */
int lt_mt_step(lt_mt *mt, const double *loss_dev);
void lt_mt_free(lt_mt *mt);

#ifdef __cplusplus
}
#endif

#endif
