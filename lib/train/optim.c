/* optim.c: the CPU reference of optim.h: LARS / AdamW / SGD updates over preallocated state,
 * global-norm clipping, the warmup + cosine schedule and the default learning rates. The update
 * formulas are in optim.h's top comment; each loop below computes them in float32 in the same
 * order as the PyTorch code they mirror, with norms and scalars in double. */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"

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

/* ---- configuration ---- */

lt_optim_config lt_optim_defaults(lt_opt_kind kind) {
    lt_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    switch (kind) {
    case LT_OPT_ADAMW:
        c.eps = 1e-8;
        c.weight_decay = 0.0;
        break;
    case LT_OPT_SGD:
        c.momentum = 0.9;
        c.weight_decay = 1e-6;
        break;
    case LT_OPT_LARS:
    default:
        c.momentum = 0.9;
        c.weight_decay = 1e-6;
        c.trust_coef = 0.001;
        c.eps = 1e-8;
        break;
    }
    return c;
}

double lt_default_lr(lt_opt_kind kind, int64_t batch_size) {
    if (kind == LT_OPT_ADAMW) return 5e-4;
    return 1.8 * sqrt((double)batch_size / 1536.0);
}

int lt_opt_kind_parse(const char *s, lt_opt_kind *kind) {
    if (!strcasecmp(s, "lars")) *kind = LT_OPT_LARS;
    else if (!strcasecmp(s, "adamw")) *kind = LT_OPT_ADAMW;
    else if (!strcasecmp(s, "sgd")) *kind = LT_OPT_SGD;
    else return lt_err_set("unknown optimizer '%s': use lars, adamw or sgd", s);
    return 0;
}

const char *lt_opt_kind_name(lt_opt_kind kind) {
    switch (kind) {
    case LT_OPT_LARS: return "lars";
    case LT_OPT_ADAMW: return "adamw";
    case LT_OPT_SGD: return "sgd";
    }
    return "?";
}

/* ---- life cycle ---- */

int lt_optim_init(lt_optim *o, const lt_optim_config *cfg, const lt_param *params, int nparams) {
    memset(o, 0, sizeof *o);
    if (cfg->kind != LT_OPT_LARS && cfg->kind != LT_OPT_ADAMW && cfg->kind != LT_OPT_SGD)
        return lt_err_set("optimizer: unknown kind %d", (int)cfg->kind);
    if (!(cfg->momentum >= 0.0) || !(cfg->weight_decay >= 0.0) || !(cfg->eps >= 0.0) ||
        !(cfg->trust_coef >= 0.0))
        return lt_err_set("optimizer: momentum, weight decay, eps and trust coefficient must be "
                          ">= 0 (got %g, %g, %g, %g)",
                          cfg->momentum, cfg->weight_decay, cfg->eps, cfg->trust_coef);
    if (cfg->kind == LT_OPT_ADAMW &&
        !(cfg->beta1 >= 0.0 && cfg->beta1 < 1.0 && cfg->beta2 >= 0.0 && cfg->beta2 < 1.0))
        return lt_err_set("optimizer: AdamW betas must be in [0, 1) (got %g, %g)", cfg->beta1,
                          cfg->beta2);
    if (nparams < 0) return lt_err_set("optimizer: %d parameters", nparams);
    o->cfg = *cfg;
    o->params = lt_calloc(nparams > 0 ? (size_t)nparams : 1, sizeof(lt_param),
                          "the optimizer's parameter list");
    if (!o->params) return -1;
    o->nparams = nparams;
    int need_m = cfg->kind == LT_OPT_ADAMW || cfg->momentum != 0.0;
    int need_v = cfg->kind == LT_OPT_ADAMW;
    for (int i = 0; i < nparams; i++) {
        lt_param *p = &o->params[i];
        *p = params[i];
        p->m = p->v = NULL;
        if (p->n < 0) {
            lt_optim_free(o);
            return lt_err_set("optimizer: parameter %d (%s) has %lld elements", i,
                              params[i].name ? params[i].name : "?", (long long)params[i].n);
        }
        size_t n = p->n > 0 ? (size_t)p->n : 1;
        if (need_m && !(p->m = lt_calloc(n, sizeof(float), "optimizer state"))) {
            lt_optim_free(o);
            return -1;
        }
        if (need_v && !(p->v = lt_calloc(n, sizeof(float), "optimizer state"))) {
            lt_optim_free(o);
            return -1;
        }
    }
    return 0;
}

void lt_optim_free(lt_optim *o) {
    if (o->params)
        for (int i = 0; i < o->nparams; i++) {
            free(o->params[i].m);
            free(o->params[i].v);
        }
    free(o->params);
    memset(o, 0, sizeof *o);
}

/* ---- updates ---- */

/* buf = first ? d : μ·buf + d; then p −= lr·buf. d is computed per element by the caller's
 * scale/decay: d = scale·(g + wd·p). With μ = 0 (buf NULL): p −= lr·d. */
static void momentum_update(float *w, const float *g, float *buf, int64_t n, float scale, float wd,
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
}

static void lars_step(lt_optim *o, lt_param *p, double lr) {
    const lt_optim_config *c = &o->cfg;
    double wd = p->weight_decay ? c->weight_decay : 0.0;
    float scale = 1.0f, fwd = 0.0f;
    if (wd != 0.0) {
        double pn = sqrt(lt_sumsq(p->w, p->n));
        double gn = sqrt(lt_sumsq(p->g, p->n));
        if (pn != 0.0 && gn != 0.0) {
            scale = (float)(c->trust_coef * pn / (gn + pn * wd + c->eps));
            fwd = (float)wd;
        }
    }
    momentum_update(p->w, p->g, p->m, p->n, scale, fwd, (float)c->momentum, (float)lr,
                    o->step == 0);
}

static void sgd_step(lt_optim *o, lt_param *p, double lr) {
    float wd = p->weight_decay ? (float)o->cfg.weight_decay : 0.0f;
    momentum_update(p->w, p->g, p->m, p->n, 1.0f, wd, (float)o->cfg.momentum, (float)lr,
                    o->step == 0);
}

static void adamw_step(lt_optim *o, lt_param *p, double lr) {
    const lt_optim_config *c = &o->cfg;
    double wd = p->weight_decay ? c->weight_decay : 0.0;
    double t = (double)(o->step + 1);
    double bc1 = 1.0 - pow(c->beta1, t);
    double bc2 = 1.0 - pow(c->beta2, t);
    float decay = (float)(1.0 - lr * wd);
    float b1 = (float)c->beta1, b2 = (float)c->beta2;
    float omb1 = (float)(1.0 - c->beta1), omb2 = (float)(1.0 - c->beta2);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float eps = (float)c->eps;
    float *w = p->w, *m = p->m, *v = p->v;
    const float *g = p->g;
    int64_t n = p->n;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float wi = wd != 0.0 ? w[i] * decay : w[i];
        float gi = g[i];
        float mi = m[i] * b1 + gi * omb1;
        float vi = v[i] * b2 + gi * gi * omb2;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = wi - step_size * (mi / denom);
    }
}

int lt_optim_step(lt_optim *o, double lr) {
    if (!(lr >= 0.0) || !isfinite(lr)) return lt_err_set("optimizer: learning rate %g", lr);
    for (int i = 0; i < o->nparams; i++) {
        lt_param *p = &o->params[i];
        if (p->n == 0) continue;
        switch (o->cfg.kind) {
        case LT_OPT_LARS: lars_step(o, p, lr); break;
        case LT_OPT_SGD: sgd_step(o, p, lr); break;
        case LT_OPT_ADAMW: adamw_step(o, p, lr); break;
        }
    }
    o->step++;
    return 0;
}

double lt_clip_grad_norm(lt_param *params, int nparams, double max_norm) {
    double ss = 0.0;
    for (int i = 0; i < nparams; i++) ss += lt_sumsq(params[i].g, params[i].n);
    double total = sqrt(ss);
    if (max_norm <= 0.0 || !isfinite(total)) return total;
    double coef = max_norm / (total + 1e-6);
    if (coef < 1.0) {
        float fc = (float)coef;
        for (int i = 0; i < nparams; i++) {
            float *g = params[i].g;
            int64_t n = params[i].n;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
            for (int64_t j = 0; j < n; j++) g[j] *= fc;
        }
    }
    return total;
}

/* ---- schedule ---- */

int64_t lt_sched_warmup_steps(int64_t steps_per_epoch, double epochs, double warmup_epochs) {
    double we = warmup_epochs >= 0.0 ? warmup_epochs : fmin(10.0, epochs / 10.0);
    double w = (double)steps_per_epoch * we;
    if (!(w > 0.0)) return 0;
    return (int64_t)w; /* truncation toward zero, as Python's int() */
}

double lt_sched_multiplier(int64_t k, int64_t total_steps, int64_t warmup_steps) {
    const double end = 0.001;
    if (warmup_steps > 0 && k < warmup_steps) return (double)(k + 1) / (double)warmup_steps;
    int64_t W = warmup_steps > 0 ? warmup_steps : 0;
    int64_t j = k - W, M = total_steps - W;
    if (j >= M - 1) return end;
    return end + (1.0 - end) * (cos(M_PI * (double)j / (double)(M - 1)) + 1.0) / 2.0;
}
