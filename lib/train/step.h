/* step.h: the student being trained (ResNet + projection head + queue + optimizer state, all on
 * one backend) and its training step.
 *
 * Why it exists: this is the one place lt-train's step is written. Everything it computes goes
 * through the backend (nn/backend.h), so the same step runs on the CPU backend and on any other
 * backend that fills the same interface. One step, for a batch of B views:
 *
 *   a, b (B,H,W,3) uint8, λ (B), t (B,D)      rendered views, mixup weights, teacher rows
 *   x (B,H,W,3) = normalise(λ·a/255 + (1−λ)·b/255)   the backend's mix_normalize
 *   f (B,C)   = resnet(x)                      training-mode BN
 *   z (B,D)   = f · head_wᵀ + head_b
 *   s (B,D)   = z / ‖z‖
 *   queue     <- push t (front)                before the loss, as LightlyTrain does
 *   loss      = KL(softmax(t·Qᵀ/τ) ‖ softmax(s·Qᵀ/τ)), batch mean
 *   backward  : ds -> dz -> (dhead, df) -> resnet grads
 *   clip (global norm), optimizer update with the step's learning rate */
#ifndef LT_TRAIN_STEP_H
#define LT_TRAIN_STEP_H

#include <stdint.h>

#include "models/resnet.h"
#include "nn/backend.h"
#include "nn/kd.h"
#include "train/comm.h"
#include "train/optim.h"

typedef struct {
    lt_backend *be;
    lt_resnet *model;
    int B, C, D;
    float *head_w, *head_b, *dhead_w, *dhead_b; /* (D,C), (D) and their grads */
    float *z, *znorm, *s, *ds, *dz, *dfeat;     /* (B,D), (B), (B,D), (B,D), (B,D), (B,C) */
    float *probs;                               /* (2, B, Q) */
    float *x;                                   /* (B,H,W,3) the mixed, normalised input: the
                                                   model's own input buffer */
    uint8_t *a, *b;                             /* (B,H,W,3) views on a device backend */
    float *lambda, *t;                          /* (B), (B,D) on a device backend */
    float mean[3], std[3];                      /* the cache's normalisation */
    lt_queue queue;                             /* (Q, D) on the backend */
    lt_optim optim;
    lt_param *params;                           /* every trainable tensor, then the head */
    int nparams;
    /* Data parallel (lt_student_data_parallel): this process trains on its B rows of a global
     * batch of P·B; NULL comm: one process. */
    lt_comm *comm;
    lt_bn_sync bn_sync;                         /* batch norm over the rows of all processes */
    float *t_all;                               /* (P·B, D) host: the global batch's teacher
                                                   rows, for the queue */
    float *t_all_be;                            /* (P·B, D) the same on a device backend */
    float *grads;                               /* (Σ n over params) host: the gradients packed
                                                   for their mean over the processes */
    int64_t grads_n;
    float **grad_ptrs;                          /* (nparams) each gradient, and its length, */
    int64_t *grad_ns;                           /* for a communicator's device collective */
    /* The step with its scalars on the device (a backend with the optional entries of
     * nn/backend.h, one process): the multi-tensor optimizer, the loss in backend memory, and
     * the step recorded once as a CUDA graph and replayed (graph_off: not, or no longer, tried) */
    void *mt;
    double *loss_dev;                           /* (1) */
    void *graph;                                /* the step for B = st->B rows */
    float graph_tau;                            /* and the temperature it was recorded with */
    int graph_off;
    int64_t dev_steps;                          /* device steps run so far by this process */
} lt_student;

/* Builds arch for batches of up to B square views of `size` pixels, the head C -> D, a zero queue
 * of Q rows and the optimizer of cfg, on be; views are normalised with mean, std (3). Backbone
 * weights from seed (lt_resnet_init_weights), head weight ~ N(0, 0.02²) redrawn beyond ±2 from
 * the RNG keyed (seed, "HEAD"), bias 0. */
int lt_student_init(lt_student *st, lt_backend *be, const char *arch, int B, int size, int D,
                    int Q, uint64_t seed, const lt_optim_config *cfg, const float mean[3],
                    const float std[3]);
void lt_student_free(lt_student *st);

/* Makes st one of comm->size processes that train together (data parallel, docs/architecture.md
 * §7): each step's B rows are this process's part of a global batch of size·B rows (rank r holds
 * rows r·B .. r·B+B−1). The step then pushes the teacher rows of the whole global batch into the
 * queue (gathered from every process), normalises batch norm over the rows of all processes,
 * reports the loss of the global batch, and averages every gradient over the processes before
 * clipping, so that every process takes the same update as one process with the global batch.
 * Every process must call lt_student_step for every step. comm->size == 1 changes nothing
 * (unless comm has device collectives: train.c's LT_NCCL=1 check runs the data-parallel path). */
int lt_student_data_parallel(lt_student *st, lt_comm *comm);

/* One training step on the views a, b (B, size, size, 3) uint8 with mixup weights lambda (B) (a
 * sample without a partner: λ = 1) and the teacher rows t (B, D), all in host memory, with
 * learning rate lr (already scheduled), temperature tau and clipping max norm clip. On a device
 * backend a and b may be NULL: the views were written into st->a and st->b (device, (B, size,
 * size, 3) each) by the GPU renderer on the backend's stream. *loss and *gnorm get the loss and
 * the gradient norm before clipping; when either is not finite the step stops there (no update)
 * and returns 0: the caller decides. -1 + lt_err on a backend failure.
 *
 * On a backend with the device-step entries (CUDA) and one process, the loss, the gradient norm,
 * clipping and the optimizer's scalars stay on the device (nn/optim_multi.h: the same formulas,
 * sums and updates as the host path, so the same bits), the host waits once per step, and from
 * the second full batch on the step (everything after the inputs' upload) is one CUDA graph
 * recorded once and replayed: the same kernels on the same buffers, so the same bits again.
 * A step with another batch size or temperature than the recorded one runs without the graph.
 * LT_CUDA_GRAPH=0 in the environment runs it without the graph; a graph that cannot be recorded
 * is given up for the run, with a note at -v. A non-finite loss then still runs the backward
 * (nothing is updated, *gnorm is 0). */
int lt_student_step(lt_student *st, const uint8_t *a, const uint8_t *b, const float *lambda,
                    const float *t, int B, double tau, double clip, double lr, double *loss,
                    double *gnorm);

#endif
