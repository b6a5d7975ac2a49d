/* linear_probe.c: multinomial logistic regression by L-BFGS, and the weight-decay sweep (see
 * linear_probe.h). */
#include "eval/linear_probe.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

const double lt_linprobe_default_wd[5] = {1e-5, 1e-4, 1e-3, 1e-2, 1e-1};

#define LBFGS_M 10
#define GTOL 1e-6
#define MAX_ITERS 2000

typedef struct {
    const double *X;    /* (N, D) */
    const int32_t *y;   /* (N) */
    int64_t N;
    int D, C;
    double wd;
    double *Z;          /* (N, C) logits, then ∂f/∂logits */
    double *rowloss;    /* (N) */
} problem;

/* f at theta = [W (C·D), b (C)] and its gradient g (same layout). */
static double eval_f(const problem *p, const double *theta, double *g) {
    const int64_t N = p->N;
    const int D = p->D, C = p->C;
    const double *W = theta, *b = theta + (size_t)C * D;
    /* Z (N, C) = X Wᵀ */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, C, D, 1.0, p->X, D, W, D, 0.0,
                p->Z, C);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        double *z = p->Z + i * C;
        double m = -INFINITY;
        for (int c = 0; c < C; c++) {
            z[c] += b[c];
            if (z[c] > m) m = z[c];
        }
        double s = 0;
        for (int c = 0; c < C; c++) s += exp(z[c] - m);
        p->rowloss[i] = m + log(s) - z[p->y[i]];
        for (int c = 0; c < C; c++) z[c] = exp(z[c] - m) / s / (double)N; /* softmax / N */
        z[p->y[i]] -= 1.0 / (double)N;
    }
    double loss = 0, w2 = 0;
    for (int64_t i = 0; i < N; i++) loss += p->rowloss[i]; /* fixed order */
    for (size_t j = 0; j < (size_t)C * D; j++) {
        w2 += W[j] * W[j];
        g[j] = p->wd * W[j];
    }
    /* gW (C, D) += Gᵀ X; gb = column sums of G */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, (int)N, 1.0, p->Z, C, p->X, D, 1.0,
                g, D);
    double *gb = g + (size_t)C * D;
    for (int c = 0; c < C; c++) gb[c] = 0;
    for (int64_t i = 0; i < N; i++)
        for (int c = 0; c < C; c++) gb[c] += p->Z[i * C + c];
    return loss / (double)N + 0.5 * p->wd * w2;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double amax(const double *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

int lt_linprobe_fit(const double *X, const int32_t *y, int64_t N, int D, int C, double wd,
                    double *W, double *b, lt_linprobe_fit_info *info) {
    memset(info, 0, sizeof *info);
    if (N < 1 || D < 1 || C < 1 || !(wd >= 0))
        return lt_err_set("linear probe: bad arguments (N %lld, D %d, C %d, wd %g)",
                          (long long)N, D, C, wd);
    for (int64_t i = 0; i < N; i++)
        if (y[i] < 0 || y[i] >= C)
            return lt_err_set("linear probe: label %d outside 0..%d", y[i], C - 1);
    const size_t n = (size_t)C * D + (size_t)C;
    problem p = {.X = X, .y = y, .N = N, .D = D, .C = C, .wd = wd};
    p.Z = lt_malloc((size_t)N * C * sizeof(double), "linear probe logits");
    p.rowloss = lt_malloc((size_t)N * sizeof(double), "linear probe losses");
    /* theta, g, d, trial theta, trial g, then the L-BFGS pairs s, y (LBFGS_M each) */
    double *mem = lt_calloc((5 + 2 * LBFGS_M) * n, sizeof(double), "linear probe state");
    if (!p.Z || !p.rowloss || !mem) {
        free(p.Z), free(p.rowloss), free(mem);
        return -1;
    }
    double *x = mem, *g = x + n, *d = g + n, *xt = d + n, *gt = xt + n;
    double *S = gt + n, *Y = S + LBFGS_M * n, rho[LBFGS_M], alpha[LBFGS_M];
    int head = 0, used = 0; /* ring of the last `used` pairs; the newest at head - 1 */
    double f = eval_f(&p, x, g);
    int it = 0;
    for (; it < MAX_ITERS && amax(g, n) > GTOL; it++) {
        /* d = -H g by the two-loop recursion */
        for (size_t j = 0; j < n; j++) d[j] = -g[j];
        for (int k = 0; k < used; k++) {
            int i = (head - 1 - k + LBFGS_M) % LBFGS_M;
            alpha[i] = rho[i] * dot(S + i * n, d, n);
            for (size_t j = 0; j < n; j++) d[j] -= alpha[i] * Y[i * n + j];
        }
        if (used > 0) {
            int i = (head - 1 + LBFGS_M) % LBFGS_M;
            double gamma = dot(S + i * n, Y + i * n, n) / dot(Y + i * n, Y + i * n, n);
            for (size_t j = 0; j < n; j++) d[j] *= gamma;
        }
        for (int k = used - 1; k >= 0; k--) {
            int i = (head - 1 - k + LBFGS_M) % LBFGS_M;
            double beta = rho[i] * dot(Y + i * n, d, n);
            for (size_t j = 0; j < n; j++) d[j] += S[i * n + j] * (alpha[i] - beta);
        }
        double gd = dot(g, d, n);
        if (!(gd < 0)) { /* not a descent direction: forget the curvature pairs */
            used = 0;
            for (size_t j = 0; j < n; j++) d[j] = -g[j];
            gd = dot(g, d, n);
        }
        /* Armijo backtracking; the very first step is scaled to a unit move */
        double t = used == 0 && it == 0 ? 1.0 / sqrt(dot(g, g, n)) : 1.0, ft = f;
        int ok = 0;
        for (int k = 0; k < 60; k++, t *= 0.5) {
            for (size_t j = 0; j < n; j++) xt[j] = x[j] + t * d[j];
            ft = eval_f(&p, xt, gt);
            if (ft <= f + 1e-4 * t * gd) {
                ok = 1;
                break;
            }
        }
        if (!ok) break; /* f no longer decreases in double precision */
        double *s = S + head * n, *yy = Y + head * n;
        for (size_t j = 0; j < n; j++) {
            s[j] = xt[j] - x[j];
            yy[j] = gt[j] - g[j];
        }
        double sy = dot(s, yy, n);
        if (sy > 1e-12 * sqrt(dot(s, s, n) * dot(yy, yy, n))) { /* keep only curvature pairs */
            rho[head] = 1.0 / sy;
            head = (head + 1) % LBFGS_M;
            if (used < LBFGS_M) used++;
        }
        memcpy(x, xt, n * sizeof(double));
        memcpy(g, gt, n * sizeof(double));
        f = ft;
    }
    info->loss = f;
    info->gmax = amax(g, n);
    info->iters = it;
    info->converged = info->gmax <= GTOL;
    memcpy(W, x, (size_t)C * D * sizeof(double));
    double mb = 0;
    for (int c = 0; c < C; c++) mb += x[(size_t)C * D + c];
    for (int c = 0; c < C; c++) b[c] = x[(size_t)C * D + c] - mb / C;
    free(p.Z), free(p.rowloss), free(mem);
    return 0;
}

int lt_linprobe_stats(const float *feat, int64_t N, int D, double *mean, double *scale) {
    if (N < 1) return lt_err_set("linear probe: no training features");
    double *sq = lt_calloc((size_t)D, sizeof(double), "feature statistics");
    if (!sq) return -1;
    for (int d = 0; d < D; d++) mean[d] = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *x = feat + i * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)x[d] * x[d];
        double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (int d = 0; d < D; d++) mean[d] += x[d] * inv;
    }
    for (int d = 0; d < D; d++) mean[d] /= (double)N;
    for (int64_t i = 0; i < N; i++) {
        const float *x = feat + i * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)x[d] * x[d];
        double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (int d = 0; d < D; d++) {
            double v = x[d] * inv - mean[d];
            sq[d] += v * v;
        }
    }
    for (int d = 0; d < D; d++) {
        double sd = sqrt(sq[d] / (double)N);
        scale[d] = sd > 1e-12 ? 1.0 / sd : 1.0;
    }
    free(sq);
    return 0;
}

void lt_linprobe_prepare(const float *feat, int64_t N, int D, const double *mean,
                         const double *scale, double *out) {
    for (int64_t i = 0; i < N; i++) {
        const float *x = feat + i * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)x[d] * x[d];
        double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (int d = 0; d < D; d++) out[i * D + d] = (x[d] * inv - mean[d]) * scale[d];
    }
}

void lt_linprobe_predict(const double *X, int64_t N, int D, int C, const double *W,
                         const double *b, int32_t *pred) {
    for (int64_t i = 0; i < N; i++) {
        int best = 0;
        double bz = -INFINITY;
        for (int c = 0; c < C; c++) {
            double z = b[c] + dot(X + i * D, W + (size_t)c * D, (size_t)D);
            if (z > bz) bz = z, best = c;
        }
        pred[i] = best;
    }
}

void lt_linprobe_holdout(const int32_t *labels, int64_t N, uint8_t *held) {
    int32_t maxl = 0;
    for (int64_t i = 0; i < N; i++) maxl = labels[i] > maxl ? labels[i] : maxl;
    int64_t *seen = calloc((size_t)maxl + 1, sizeof *seen);
    for (int64_t i = 0; i < N; i++) held[i] = seen ? seen[labels[i]]++ % 5 == 4 : 0;
    free(seen);
}

/* Prepares fit rows (stats from them) and eval rows, fits with wd, returns eval accuracy. */
static int fit_and_score(const float *fit, const int32_t *yfit, int64_t nf, const float *ev,
                         const int32_t *yev, int64_t ne, int D, int C, double wd, double *acc,
                         lt_linprobe_fit_info *info, int32_t *pred_out) {
    double *mean = lt_malloc((size_t)D * sizeof(double), "feature statistics");
    double *scale = lt_malloc((size_t)D * sizeof(double), "feature statistics");
    double *X = lt_malloc((size_t)(nf > ne ? nf : ne) * D * sizeof(double), "prepared features");
    double *W = lt_malloc((size_t)C * D * sizeof(double), "linear probe weights");
    double *b = lt_malloc((size_t)C * sizeof(double), "linear probe bias");
    int32_t *pred = lt_malloc((size_t)(ne > 0 ? ne : 1) * sizeof(int32_t), "predictions");
    int rc = mean && scale && X && W && b && pred ? lt_linprobe_stats(fit, nf, D, mean, scale) : -1;
    if (rc == 0) {
        lt_linprobe_prepare(fit, nf, D, mean, scale, X);
        rc = lt_linprobe_fit(X, yfit, nf, D, C, wd, W, b, info);
    }
    if (rc == 0) {
        lt_linprobe_prepare(ev, ne, D, mean, scale, X);
        lt_linprobe_predict(X, ne, D, C, W, b, pred);
        int64_t right = 0;
        for (int64_t i = 0; i < ne; i++) right += pred[i] == yev[i];
        *acc = ne > 0 ? (double)right / (double)ne : 0;
        if (pred_out) memcpy(pred_out, pred, (size_t)ne * sizeof(int32_t));
    }
    free(mean), free(scale), free(X), free(W), free(b), free(pred);
    return rc;
}

int lt_linprobe_run(const float *train, const int32_t *train_labels, int64_t n_train,
                    const float *val, const int32_t *val_labels, int64_t n_val, int D, int C,
                    const double *wd, int n_wd, lt_linprobe_result *r, int32_t *pred) {
    memset(r, 0, sizeof *r);
    if (n_wd < 1 || n_wd > LT_LINPROBE_MAX_WD)
        return lt_err_set("linear probe: %d weight decays (1..%d)", n_wd, LT_LINPROBE_MAX_WD);
    uint8_t *held = lt_malloc((size_t)n_train, "hold-out split");
    float *fit = lt_malloc((size_t)n_train * D * sizeof(float), "hold-out split");
    float *ho = lt_malloc((size_t)n_train * D * sizeof(float), "hold-out split");
    int32_t *yf = lt_malloc((size_t)n_train * sizeof(int32_t), "hold-out split");
    int32_t *yh = lt_malloc((size_t)n_train * sizeof(int32_t), "hold-out split");
    int rc = held && fit && ho && yf && yh ? 0 : -1;
    int64_t nf = 0, nh = 0;
    if (rc == 0) {
        lt_linprobe_holdout(train_labels, n_train, held);
        for (int64_t i = 0; i < n_train; i++) {
            float *dst = held[i] ? ho + nh * D : fit + nf * D;
            memcpy(dst, train + i * D, (size_t)D * sizeof(float));
            if (held[i]) yh[nh++] = train_labels[i];
            else yf[nf++] = train_labels[i];
        }
    }
    r->n_holdout = (int)nh;
    int best = n_wd / 2;
    for (int k = 0; k < n_wd; k++) r->holdout_top1[k] = -1;
    if (rc == 0 && nh > 0) {
        best = -1;
        for (int k = 0; k < n_wd && rc == 0; k++) {
            lt_linprobe_fit_info info;
            rc = fit_and_score(fit, yf, nf, ho, yh, nh, D, C, wd[k], &r->holdout_top1[k], &info,
                               NULL);
            if (rc == 0 && (best < 0 || r->holdout_top1[k] >= r->holdout_top1[best])) best = k;
        }
    }
    free(held), free(fit), free(ho), free(yf), free(yh);
    if (rc != 0) return -1;
    r->wd = wd[best];
    return fit_and_score(train, train_labels, n_train, val, val_labels, n_val, D, C, r->wd,
                         &r->top1, &r->fit, pred);
}
