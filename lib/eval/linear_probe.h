/* linear_probe.h: the linear probe, multinomial logistic regression on frozen features.
 *
 * Why it exists: next to kNN, the other standard score of a frozen backbone. Deterministic and
 * solved to convergence, so its optimum is well defined and can be checked against PyTorch.
 *
 * Features: each row divided by its L2 norm (as for kNN), then standardised per dimension with
 * the mean and standard deviation (population) of the set the model is fitted on; a dimension
 * without spread keeps scale 1. The model: logits z = W x + b, W (C, D), b (C). The objective:
 *   f(W, b) = (1/N) Σ_i [logsumexp(z_i) − z_i[y_i]] + (wd/2) ‖W‖²   (the bias is not decayed)
 * minimised by full-batch L-BFGS (memory 10, Armijo backtracking), in double, until the largest
 * gradient entry is below 1e-6, the line search can no longer decrease f, or 2000 iterations.
 * Softmax is invariant to adding one constant to every bias, so b is reported centred (Σ b = 0),
 * which makes the optimum unique. Predictions: argmax of z (ties: the lower class).
 *
 * The weight decay is chosen from a sweep by the accuracy on a held-out part of the training set:
 * within each class, in list order, every 5th image (positions 4, 9, 14, ... counted from 0) is
 * held out (20 %, no randomness); the model is fitted on the rest for each candidate, the best
 * held-out accuracy wins (ties: the larger decay), then it is refitted on the whole training set
 * with that decay and scored on val. When no class has 5 training images there is nothing to
 * hold out: the middle candidate is used. */
#ifndef LT_EVAL_LINEAR_PROBE_H
#define LT_EVAL_LINEAR_PROBE_H

#include <stdint.h>

#define LT_LINPROBE_MAX_WD 16
/* The default sweep: 1e-5, 1e-4, 1e-3, 1e-2, 1e-1. */
extern const double lt_linprobe_default_wd[5];

typedef struct {
    double loss;     /* f at the solution */
    double gmax;     /* largest |gradient entry| there */
    int iters;       /* L-BFGS iterations */
    int converged;   /* gmax below the tolerance */
} lt_linprobe_fit_info;

/* Fits W (C, D) and b (C) (outputs, centred b) on prepared features X (N, D) (double) with labels
 * y (N) in [0, C). -1 + lt_err on bad arguments or OOM. */
int lt_linprobe_fit(const double *X, const int32_t *y, int64_t N, int D, int C, double wd,
                    double *W, double *b, lt_linprobe_fit_info *info);

/* The preparation: mean, scale (D) from feat (N, D) (L2-normalised rows, then per dimension);
 * prepare writes out (N, D) = (feat_i / ‖feat_i‖ − mean) · scale. */
int lt_linprobe_stats(const float *feat, int64_t N, int D, double *mean, double *scale);
void lt_linprobe_prepare(const float *feat, int64_t N, int D, const double *mean,
                         const double *scale, double *out);

/* Predictions (N) of W, b on prepared X (N, D). */
void lt_linprobe_predict(const double *X, int64_t N, int D, int C, const double *W,
                         const double *b, int32_t *pred);

/* 1 for the rows of the training list that the sweep holds out (see above): labels (N). */
void lt_linprobe_holdout(const int32_t *labels, int64_t N, uint8_t *held);

typedef struct {
    double top1;                              /* on val, after the refit */
    double wd;                                /* the chosen weight decay */
    double holdout_top1[LT_LINPROBE_MAX_WD];  /* per candidate (-1: no held-out images) */
    int n_holdout;                            /* held-out images */
    lt_linprobe_fit_info fit;                 /* of the refit */
} lt_linprobe_result;

/* The whole protocol: sweep of wd (n_wd candidates, 1..LT_LINPROBE_MAX_WD, increasing) on raw
 * features train (n_train, D), refit, score on val (n_val, D). pred (n_val) or NULL. */
int lt_linprobe_run(const float *train, const int32_t *train_labels, int64_t n_train,
                    const float *val, const int32_t *val_labels, int64_t n_val, int D, int C,
                    const double *wd, int n_wd, lt_linprobe_result *r, int32_t *pred);

#endif
