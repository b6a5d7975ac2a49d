/* optim.c: LARS / AdamW / SGD over preallocated state, global-norm clipping, the warmup + cosine
 * schedule and the default learning rates (optim.h has the formulas). This is the one place the
 * update rules are written: the scalars (trust ratios, bias corrections, the clipping coefficient)
 * are computed here in double; the elementwise work runs on the backend (nn/backend.h, whose CPU
 * kernels are nn/optim_cpu.c), in float32 in the order of the PyTorch code it mirrors. */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "nn/backend.h"
#include "nn/optim_rules.h"

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

int lt_optim_init(lt_optim *o, lt_backend *be, const lt_optim_config *cfg, const lt_param *params,
                  int nparams) {
    memset(o, 0, sizeof *o);
    o->be = be;
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
    const size_t k2 = 2 * (size_t)(nparams > 0 ? nparams : 1);
    o->nx = lt_malloc(k2 * sizeof *o->nx, "the optimizer's norm list");
    o->nn = lt_malloc(k2 * sizeof *o->nn, "the optimizer's norm list");
    o->ns = lt_malloc(2 * k2 * sizeof *o->ns, "the optimizer's norm list"); /* per parameter,
                                                                              then results */
    if (!o->nx || !o->nn || !o->ns) {
        lt_optim_free(o);
        return -1;
    }
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
        if (need_m && !(p->m = be->alloc(be, n * sizeof(float), "optimizer state"))) {
            lt_optim_free(o);
            return -1;
        }
        if (need_v && !(p->v = be->alloc(be, n * sizeof(float), "optimizer state"))) {
            lt_optim_free(o);
            return -1;
        }
    }
    return 0;
}

void lt_optim_free(lt_optim *o) {
    if (o->params)
        for (int i = 0; i < o->nparams; i++) {
            o->be->free(o->be, o->params[i].m);
            o->be->free(o->be, o->params[i].v);
        }
    free(o->params);
    free(o->nx);
    free(o->nn);
    free(o->ns);
    memset(o, 0, sizeof *o);
}

/* ---- updates ---- */

/* LARS: the trust ratio η‖p‖ / (‖g‖ + wd‖p‖ + eps) of a decayed tensor, then momentum. pss, gss:
 * Σ p², Σ g² of this tensor (lars_norms). */
static int lars_step(lt_optim *o, lt_param *p, double lr, double pss, double gss) {
    const lt_optim_config *c = &o->cfg;
    lt_backend *be = o->be;
    double wd = p->weight_decay ? c->weight_decay : 0.0;
    float scale, fwd;
    lt_lars_factors(pss, gss, wd, c->trust_coef, c->eps, &scale, &fwd);
    return be->momentum_update(be, p->w, p->g, p->m, p->n, scale, fwd, (float)c->momentum,
                               (float)lr, o->step == 0);
}

static int sgd_step(lt_optim *o, lt_param *p, double lr) {
    float wd = p->weight_decay ? (float)o->cfg.weight_decay : 0.0f;
    return o->be->momentum_update(o->be, p->w, p->g, p->m, p->n, 1.0f, wd,
                                  (float)o->cfg.momentum, (float)lr, o->step == 0);
}

void lt_optim_adamw_scalars(const lt_optim *o, double lr, int decay, lt_adamw_scalars *k) {
    const lt_optim_config *c = &o->cfg;
    double wd = decay ? c->weight_decay : 0.0;
    double t = (double)(o->step + 1);
    double bc1 = 1.0 - pow(c->beta1, t);
    double bc2 = 1.0 - pow(c->beta2, t);
    *k = (lt_adamw_scalars){.decay_on = wd != 0.0, .decay = (float)(1.0 - lr * wd),
                            .b1 = (float)c->beta1, .b2 = (float)c->beta2,
                            .omb1 = (float)(1.0 - c->beta1), .omb2 = (float)(1.0 - c->beta2),
                            .step_size = (float)(lr / bc1), .bc2_sqrt = (float)sqrt(bc2),
                            .eps = (float)c->eps};
}

/* AdamW: the bias corrections of step t = step + 1, then the elementwise update. */
static int adamw_step(lt_optim *o, lt_param *p, double lr) {
    lt_adamw_scalars k;
    lt_optim_adamw_scalars(o, lr, p->weight_decay, &k);
    return o->be->adamw_update(o->be, p->w, p->g, p->m, p->v, p->n, &k);
}

/* LARS: Σ p² and Σ g² of every decayed tensor, in one call to the backend (an update changes
 * only its own tensor, so the norms taken before the first update are each tensor's own):
 * o->ns[2i], o->ns[2i + 1] for parameter i (0 for the others). */
static int lars_decayed(const lt_optim *o, const lt_param *p) {
    return p->n > 0 && p->weight_decay && o->cfg.weight_decay != 0.0;
}

static int lars_norms(lt_optim *o) {
    int k = 0;
    for (int i = 0; i < o->nparams; i++) {
        const lt_param *p = &o->params[i];
        o->ns[2 * i] = o->ns[2 * i + 1] = 0.0;
        if (!lars_decayed(o, p)) continue;
        o->nx[k] = p->w, o->nn[k++] = p->n;
        o->nx[k] = p->g, o->nn[k++] = p->n;
    }
    double *res = o->ns + 2 * o->nparams; /* the k results, then to their parameters' places */
    if (k > 0 && o->be->sumsq_many(o->be, o->nx, o->nn, k, res) != 0) return -1;
    for (int i = 0, j = 0; i < o->nparams; i++) {
        if (!lars_decayed(o, &o->params[i])) continue;
        o->ns[2 * i] = res[j++];
        o->ns[2 * i + 1] = res[j++];
    }
    return 0;
}

int lt_optim_step(lt_optim *o, double lr) {
    if (!(lr >= 0.0) || !isfinite(lr)) return lt_err_set("optimizer: learning rate %g", lr);
    if (o->cfg.kind == LT_OPT_LARS && lars_norms(o) != 0) return -1;
    for (int i = 0; i < o->nparams; i++) {
        lt_param *p = &o->params[i];
        if (p->n == 0) continue;
        int r = o->cfg.kind == LT_OPT_LARS  ? lars_step(o, p, lr, o->ns[2 * i], o->ns[2 * i + 1])
                : o->cfg.kind == LT_OPT_SGD ? sgd_step(o, p, lr)
                                            : adamw_step(o, p, lr);
        if (r != 0) return -1;
    }
    o->step++;
    return 0;
}

int lt_clip_grad_norm(lt_optim *o, double max_norm, double *norm) {
    lt_backend *be = o->be;
    double ss = 0.0;
    for (int i = 0; i < o->nparams; i++) o->nx[i] = o->params[i].g, o->nn[i] = o->params[i].n;
    if (o->nparams > 0 && be->sumsq_many(be, o->nx, o->nn, o->nparams, o->ns) != 0) return -1;
    for (int i = 0; i < o->nparams; i++) ss += o->ns[i]; /* in parameter order, as before */
    double total = sqrt(ss);
    *norm = total;
    float coef;
    if (lt_clip_factor(total, max_norm, &coef))
        for (int i = 0; i < o->nparams; i++)
            if (be->scale(be, o->params[i].g, o->params[i].n, coef) != 0) return -1;
    return 0;
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
