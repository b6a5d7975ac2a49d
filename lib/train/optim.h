/* optim.h: the optimisation of docs/architecture.md §1: LARS (the default), AdamW and SGD over two parameter
 * groups, global-norm gradient clipping, the warmup + cosine learning-rate schedule and the
 * default learning rates.
 *
 * Why it exists: lt-train must reproduce LightlyTrain's optimisation to float32 rounding, and the
 * checkpoint must hold every bit of optimizer state so a resumed run ends bit-identical. So the
 * update rules are written out here exactly as the PyTorch / lightly code they mirror computes
 * them, the state lives in plain arrays the checkpoint code can read and write, and the tests
 * compare several steps with torch.optim and with tests/reference/optim_ref.py.
 *
 * Parameter groups. Every tensor is an lt_param with a weight_decay flag: 1 for conv and linear
 * weights, 0 for biases, norm weights and every 1-D parameter (LightlyTrain's
 * get_weight_decay_parameters). A flag-0 tensor is updated with weight decay 0 by every optimizer.
 *
 * The update rules, per tensor p with gradient g (after clipping), lr = base lr · schedule
 * multiplier of this step, wd = the configured weight decay if the tensor's flag is 1 else 0:
 *
 * LARS (lightly.utils.lars.LARS, which LightlyTrain uses; momentum μ, trust coefficient η, eps):
 *     d = g
 *     if wd != 0 and ‖p‖ != 0 and ‖g‖ != 0:
 *         d = (g + wd·p) · η·‖p‖ / (‖g‖ + wd·‖p‖ + eps)
 *     (so the flag-0 group, or --weight-decay 0, or a zero tensor, get no decay and no trust
 *      ratio: plain momentum SGD; note the denominator is ‖g‖ + wd·‖p‖, not ‖g + wd·p‖)
 *     buf = d on the first step, else buf = μ·buf + d              (dampening 0)
 *     p = p − lr·buf                                                (μ = 0: p = p − lr·d)
 *   ‖·‖ are 2-norms over the tensor (accumulated in double, fixed order).
 *
 * SGD (torch.optim.SGD, dampening 0, no Nesterov):
 *     d = g + wd·p;  buf = d on the first step, else μ·buf + d;  p = p − lr·buf  (μ = 0: lr·d)
 *
 * AdamW (torch.optim.AdamW, amsgrad off; β1, β2, eps; step t counts from 1):
 *     p = p·(1 − lr·wd)
 *     m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²
 *     p = p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 *
 * Gradient clipping (torch.nn.utils.clip_grad_norm_, norm type 2): total = sqrt(Σ over all
 * tensors of Σ g²); coef = max_norm / (total + 1e-6); if coef < 1 every gradient is multiplied by
 * coef (torch clamps coef at 1 and multiplies; multiplying by 1 is skipped here, same result).
 *
 * Determinism: sums of squares are taken over fixed 64 Ki-element chunks in double (chunks in
 * parallel, then added in order), so norms do not even depend on the thread count; elementwise
 * updates are static OpenMP loops. */
#ifndef LT_TRAIN_OPTIM_H
#define LT_TRAIN_OPTIM_H

#include <stdint.h>

#include "nn/backend.h"
#include "nn/optim_kernels.h"

typedef enum { LT_OPT_LARS = 0, LT_OPT_ADAMW = 1, LT_OPT_SGD = 2 } lt_opt_kind;

typedef struct {
    const char *name;  /* for checkpoint keys and messages (not owned; may be NULL) */
    float *w;          /* (n) the parameter, updated in place */
    float *g;          /* (n) its gradient (clipping scales it in place) */
    int64_t n;
    int weight_decay;  /* 1: weight-decay group; 0: no weight decay (biases, norms, 1-D) */
    /* State, allocated (zeroed) by lt_optim_init and owned by the optimizer: */
    float *m;          /* (n) LARS/SGD momentum buffer, AdamW exp_avg; NULL if μ = 0 (LARS/SGD) */
    float *v;          /* (n) AdamW exp_avg_sq; NULL otherwise */
} lt_param;

typedef struct {
    lt_opt_kind kind;
    double momentum;     /* LARS, SGD */
    double weight_decay; /* applied to the weight_decay = 1 group only */
    double trust_coef;   /* LARS η */
    double eps;          /* LARS eps; AdamW eps */
    double beta1, beta2; /* AdamW */
} lt_optim_config;

typedef struct {
    lt_optim_config cfg;
    lt_backend *be;   /* where the parameters, gradients and state live and the updates run */
    int nparams;
    lt_param *params; /* (nparams), a copy of the caller's list plus the state pointers */
    int64_t step;     /* updates taken so far; 0 means the momentum buffers are not yet set.
                         Save and restore it with the m/v buffers to resume exactly. */
    /* scratch of the norms, asked of the backend in one call (be->sumsq_many) */
    const float **nx; /* (2·nparams) */
    int64_t *nn;      /* (2·nparams) */
    double *ns;       /* (4·nparams): Σ p², Σ g² per parameter, then sumsq_many's results */
} lt_optim;

/* The defaults of docs/architecture.md §1:
 *   LARS:  momentum 0.9, weight decay 1e-6, trust coefficient 0.001, eps 1e-8
 *   AdamW: betas 0.9 / 0.999, eps 1e-8, weight decay 0
 *   SGD:   momentum 0.9, weight decay 1e-6 (LARS's values, so `--optimizer sgd` is LARS without
 *          the trust ratio). */
lt_optim_config lt_optim_defaults(lt_opt_kind kind);

/* Default base learning rate for a batch size B:
 *   LARS 1.8·sqrt(B/1536) (LightlyTrain's 1.8 at its reference batch 1536, square-root scaling);
 *   AdamW 5e-4 (not scaled, as docs/architecture.md §1 states it);
 *   SGD the same rule as LARS, 1.8·sqrt(B/1536) (our choice; it is also the lr LARS applies to
 *   its no-trust-ratio group). */
double lt_default_lr(lt_opt_kind kind, int64_t batch_size);

/* Parses "lars" / "adamw" / "sgd" into *kind. Returns 0, or -1 with a message listing the names. */
int lt_opt_kind_parse(const char *s, lt_opt_kind *kind);
const char *lt_opt_kind_name(lt_opt_kind kind);

/* Copies the parameter list (w, g, n, weight_decay, name; m/v ignored; w and g in be's memory)
 * and allocates zeroed state on be. Returns 0, or -1 with lt_err_set (bad config, n < 0, out of
 * memory). */
int lt_optim_init(lt_optim *o, lt_backend *be, const lt_optim_config *cfg, const lt_param *params,
                  int nparams);
void lt_optim_free(lt_optim *o);

/* One update of every parameter from its gradient with learning rate lr (already multiplied by the
 * schedule). Increments o->step. Returns 0, or -1 if lr is not finite / negative. */
int lt_optim_step(lt_optim *o, double lr);

/* AdamW's scalars for o's next update (step t = o->step + 1) at learning rate lr, for a tensor
 * of the weight-decay group (decay 1) or not (0). */
void lt_optim_adamw_scalars(const lt_optim *o, double lr, int decay, lt_adamw_scalars *k);

/* Global-norm clipping over the gradients of o's parameters (see the top comment). max_norm <= 0
 * turns clipping off (the norm is still computed). *norm receives the total norm before
 * clipping. A non-finite total leaves the gradients untouched (torch would turn them all into
 * NaN); the caller should treat it like a non-finite loss and stop. Returns 0 or -1 (backend). */
int lt_clip_grad_norm(lt_optim *o, double max_norm, double *norm);

/* ---- The learning-rate schedule (a multiplier of the base lr, set per optimizer step) ---- */

/* W = int(steps_per_epoch · min(10, epochs/10)), the Python expression evaluated in double and
 * truncated toward zero. warmup_epochs >= 0 (`--warmup-epochs X`) replaces min(10, epochs/10)
 * with X; pass a negative value for the default. */
int64_t lt_sched_warmup_steps(int64_t steps_per_epoch, double epochs, double warmup_epochs);

/* Multiplier for optimizer step k (0-based) of T total steps with W warmup steps:
 *   k < W:  (k+1)/W
 *   else j = k − W, M = T − W:
 *     j >= M − 1 (this includes M <= 1): 0.001
 *     else 0.001 + (1 − 0.001)·(cos(π·j/(M−1)) + 1)/2
 * W = 0 means no warmup. T is the scheduled total (epochs · steps_per_epoch) even when --steps
 * stops the run earlier. */
double lt_sched_multiplier(int64_t k, int64_t total_steps, int64_t warmup_steps);

#endif
