/* backend_profile.c: a backend that runs another one and times each of its entries, for the
 * per-op profile of a training step (bench_student --profile, make bench, the device check).
 *
 * Why it exists: "where does a step's time go" must be answered the same way on the CPU and on
 * the GPU, and the seam (nn/backend.h) already names every op a step runs. Each entry of the
 * wrapper forwards to the inner backend's and adds the wall time it took to its op class. On a
 * device backend an entry returns once its work is enqueued, so the wrapper waits for the device
 * (be->sync) before and after each call: the times are
 * then each op's device time plus a launch and a wait, a few microseconds per call, so profile
 * steps run slower than plain ones; use plain steps for throughput. The results are those of the
 * inner backend, bit for bit (tests/unit/test_backend.c). */
#include "nn/backend_profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"

static const char *const class_names[LT_PROF_CLASSES] = {
    "conv forward",  "conv backward",   "batch norm fwd", "batch norm bwd", "relu/add",
    "pooling",       "linear (head)",   "input mix",      "L2 norm",        "queue + KL loss",
    "optimizer",     "memory + copies",
};

typedef struct {
    lt_backend *inner;
    double ms[LT_PROF_CLASSES];
    int64_t calls[LT_PROF_CLASSES];
} prof;

static prof *P(lt_backend *be) { return (prof *)be->impl; }
static lt_backend *IN(lt_backend *be) {
    lt_backend *in = P(be)->inner;
    in->bn_sync = be->bn_sync; /* the step sets it on the backend it was given */
    return in;
}

/* Waits for the inner backend's work, so that a call's time is its own. */
static void settle(lt_backend *be) {
    lt_backend *in = P(be)->inner;
    in->sync(in);
}
static int p_sync(lt_backend *be) { return P(be)->inner->sync(P(be)->inner); }

#define TIMED(cls, call)                                                                          \
    do {                                                                                          \
        settle(be);                                                                               \
        double t0_ = lt_now();                                                                    \
        int rc_ = (call);                                                                         \
        settle(be);                                                                               \
        P(be)->ms[cls] += (lt_now() - t0_) * 1e3;                                                 \
        P(be)->calls[cls]++;                                                                      \
        return rc_;                                                                               \
    } while (0)

static void p_destroy(lt_backend *be) {
    free(be->impl);
    free(be);
}
static void *p_alloc(lt_backend *be, size_t n, const char *what) {
    return P(be)->inner->alloc(P(be)->inner, n, what);
}
static void p_free(lt_backend *be, void *p) { P(be)->inner->free(P(be)->inner, p); }
static int p_upload(lt_backend *be, void *dst, const void *src, size_t n) {
    TIMED(LT_PROF_MEMORY, IN(be)->upload(IN(be), dst, src, n));
}
static int p_download(lt_backend *be, void *dst, const void *src, size_t n) {
    TIMED(LT_PROF_MEMORY, IN(be)->download(IN(be), dst, src, n));
}
static size_t p_conv_ws(lt_backend *be, const lt_conv2d_dims *d) {
    return IN(be)->conv2d_ws_bytes(IN(be), d);
}
static int p_conv_fwd(lt_backend *be, const lt_conv2d_dims *d, float *y, const float *x,
                      const float *w, void *ws) {
    TIMED(LT_PROF_CONV_FWD, IN(be)->conv2d_forward(IN(be), d, y, x, w, ws));
}
static int p_conv_bwd(lt_backend *be, const lt_conv2d_dims *d, float *dx, float *dw,
                      const float *dy, const float *x, const float *w, void *ws, int acc,
                      int acc_dx) {
    TIMED(LT_PROF_CONV_BWD, IN(be)->conv2d_backward(IN(be), d, dx, dw, dy, x, w, ws, acc, acc_dx));
}
static size_t p_bn_ws(lt_backend *be, int C) { return IN(be)->bn_ws_bytes(IN(be), C); }
static int p_bn_fwd_train(lt_backend *be, float *y, const float *x, const float *res,
                          const float *gamma, const float *beta, float *mean, float *invstd,
                          float *rm, float *rv, int M, int C, float eps, float momentum, int relu,
                          void *ws) {
    TIMED(LT_PROF_BN_FWD, IN(be)->bn_forward_train(IN(be), y, x, res, gamma, beta, mean, invstd,
                                                    rm, rv, M, C, eps, momentum, relu, ws));
}
static int p_bn_fwd_eval(lt_backend *be, float *y, const float *x, const float *res,
                         const float *gamma, const float *beta, const float *rm, const float *rv,
                         int M, int C, float eps, int relu) {
    TIMED(LT_PROF_BN_FWD,
          IN(be)->bn_forward_eval(IN(be), y, x, res, gamma, beta, rm, rv, M, C, eps, relu));
}
static int p_bn_bwd(lt_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy,
                    const float *x, const float *y, const float *gamma, const float *mean,
                    const float *invstd, int M, int C, int relu, int acc, void *ws) {
    TIMED(LT_PROF_BN_BWD, IN(be)->bn_backward(IN(be), dx, dgamma, dbeta, dy, x, y, gamma, mean,
                                               invstd, M, C, relu, acc, ws));
}
static int p_relu_bwd(lt_backend *be, float *dx, const float *dy, const float *y, int64_t n) {
    TIMED(LT_PROF_ELEMWISE, IN(be)->relu_backward(IN(be), dx, dy, y, n));
}
static int p_add(lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
    TIMED(LT_PROF_ELEMWISE, IN(be)->add(IN(be), y, a, b, n));
}
static int p_maxpool_fwd(lt_backend *be, const lt_pool_dims *d, float *y, int32_t *am,
                         const float *x) {
    TIMED(LT_PROF_POOL, IN(be)->maxpool_forward(IN(be), d, y, am, x));
}
static int p_maxpool_bwd(lt_backend *be, const lt_pool_dims *d, float *dx, const float *dy,
                         const int32_t *am) {
    TIMED(LT_PROF_POOL, IN(be)->maxpool_backward(IN(be), d, dx, dy, am));
}
static int p_avgpool_fwd(lt_backend *be, float *y, const float *x, int B, int HW, int C) {
    TIMED(LT_PROF_POOL, IN(be)->avgpool_forward(IN(be), y, x, B, HW, C));
}
static int p_avgpool_bwd(lt_backend *be, float *dx, const float *dy, int B, int HW, int C) {
    TIMED(LT_PROF_POOL, IN(be)->avgpool_backward(IN(be), dx, dy, B, HW, C));
}
static int p_linear_fwd(lt_backend *be, float *y, const float *x, const float *w, const float *b,
                        int M, int K, int N) {
    TIMED(LT_PROF_LINEAR, IN(be)->linear_forward(IN(be), y, x, w, b, M, K, N));
}
static int p_linear_bwd(lt_backend *be, float *dx, float *dw, float *db, const float *dy,
                        const float *x, const float *w, int M, int K, int N, int acc) {
    TIMED(LT_PROF_LINEAR, IN(be)->linear_backward(IN(be), dx, dw, db, dy, x, w, M, K, N, acc));
}
static int p_mix(lt_backend *be, float *x, const uint8_t *a, const uint8_t *b,
                 const float *lambda, int B, int HW, const float mean[3], const float std[3]) {
    TIMED(LT_PROF_INPUT, IN(be)->mix_normalize(IN(be), x, a, b, lambda, B, HW, mean, std));
}
static int p_l2_fwd(lt_backend *be, float *y, float *norm, const float *x, int B, int D) {
    TIMED(LT_PROF_L2, IN(be)->l2norm_forward(IN(be), y, norm, x, B, D));
}
static int p_l2_bwd(lt_backend *be, float *dx, const float *dy, const float *y,
                    const float *norm, int B, int D) {
    TIMED(LT_PROF_L2, IN(be)->l2norm_backward(IN(be), dx, dy, y, norm, B, D));
}
static int p_queue_push(lt_backend *be, float *queue, int Q, int D, const float *x, int B) {
    TIMED(LT_PROF_KD, IN(be)->queue_push(IN(be), queue, Q, D, x, B));
}
static int p_kd_fwd(lt_backend *be, double *loss, const float *t, const float *s,
                    const float *queue, int B, int Qn, int D, float tau, float *probs) {
    TIMED(LT_PROF_KD, IN(be)->kd_loss_forward(IN(be), loss, t, s, queue, B, Qn, D, tau, probs));
}
static int p_kd_bwd(lt_backend *be, float *ds, const float *probs, const float *queue, int B,
                    int Qn, int D, float tau) {
    TIMED(LT_PROF_KD, IN(be)->kd_loss_backward(IN(be), ds, probs, queue, B, Qn, D, tau));
}
static int p_sumsq(lt_backend *be, const float *x, int64_t n, double *out) {
    TIMED(LT_PROF_OPTIM, IN(be)->sumsq(IN(be), x, n, out));
}
static int p_sumsq_many(lt_backend *be, const float *const *xs, const int64_t *ns, int k,
                        double *out) {
    TIMED(LT_PROF_OPTIM, IN(be)->sumsq_many(IN(be), xs, ns, k, out));
}
static int p_scale(lt_backend *be, float *x, int64_t n, float s) {
    TIMED(LT_PROF_OPTIM, IN(be)->scale(IN(be), x, n, s));
}
static int p_momentum(lt_backend *be, float *w, const float *g, float *buf, int64_t n, float scale,
                      float wd, float mu, float lr, int first) {
    TIMED(LT_PROF_OPTIM, IN(be)->momentum_update(IN(be), w, g, buf, n, scale, wd, mu, lr, first));
}
static int p_adamw(lt_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                   const lt_adamw_scalars *k) {
    TIMED(LT_PROF_OPTIM, IN(be)->adamw_update(IN(be), w, g, m, v, n, k));
}

lt_backend *lt_backend_profile(lt_backend *inner) {
    lt_backend *be = lt_calloc(1, sizeof *be, "profiling backend");
    prof *p = lt_calloc(1, sizeof *p, "profiling backend");
    if (!be || !p) {
        free(be);
        free(p);
        return NULL;
    }
    p->inner = inner;
    *be = (lt_backend){
        .name = inner->name, .mem = inner->mem, .threads = inner->threads, .impl = p,
        .stream = inner->stream, .act_bf16 = inner->act_bf16, .destroy = p_destroy, .alloc = p_alloc, .free = p_free,
        .upload = p_upload, .download = p_download, .sync = p_sync, .conv2d_ws_bytes = p_conv_ws,
        .conv2d_forward = p_conv_fwd, .conv2d_backward = p_conv_bwd, .bn_ws_bytes = p_bn_ws,
        .bn_forward_train = p_bn_fwd_train, .bn_forward_eval = p_bn_fwd_eval,
        .bn_backward = p_bn_bwd, .relu_backward = p_relu_bwd, .add = p_add,
        .maxpool_forward = p_maxpool_fwd, .maxpool_backward = p_maxpool_bwd,
        .avgpool_forward = p_avgpool_fwd, .avgpool_backward = p_avgpool_bwd,
        .linear_forward = p_linear_fwd, .linear_backward = p_linear_bwd, .mix_normalize = p_mix,
        .l2norm_forward = p_l2_fwd, .l2norm_backward = p_l2_bwd, .queue_push = p_queue_push,
        .kd_loss_forward = p_kd_fwd, .kd_loss_backward = p_kd_bwd, .sumsq = p_sumsq,
        .sumsq_many = p_sumsq_many, .scale = p_scale, .momentum_update = p_momentum,
        .adamw_update = p_adamw};
    return be;
}

void lt_backend_profile_reset(lt_backend *be) {
    prof *p = P(be);
    memset(p->ms, 0, sizeof p->ms);
    memset(p->calls, 0, sizeof p->calls);
}

void lt_backend_profile_get(lt_backend *be, double ms[LT_PROF_CLASSES],
                            int64_t calls[LT_PROF_CLASSES]) {
    memcpy(ms, P(be)->ms, sizeof P(be)->ms);
    memcpy(calls, P(be)->calls, sizeof P(be)->calls);
}

const char *lt_backend_profile_class(int cls) {
    return cls >= 0 && cls < LT_PROF_CLASSES ? class_names[cls] : "?";
}
