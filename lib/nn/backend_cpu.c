/* backend_cpu.c: the CPU backend (nn/backend.h): host memory, and every entry the fp32 reference
 * function it names (nn/cnn.h, nn/ops.h, nn/kd.h, nn/optim_kernels.h), run with the backend's thread
 * count. It adds nothing of its own: a model run through it computes exactly what those functions
 * compute. */
#include "nn/backend.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "nn/kd.h"
#include "nn/optim_kernels.h"
#include "nn/ops_cuda.h" /* lt_cuda_available */

static void cpu_destroy(lt_backend *be) { free(be); }

static void *cpu_alloc(lt_backend *be, size_t bytes, const char *what) {
    (void)be;
    return lt_calloc(1, bytes ? bytes : 1, what);
}
static void cpu_free(lt_backend *be, void *p) {
    (void)be;
    free(p);
}
static int cpu_copy(lt_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static size_t cpu_conv_ws(lt_backend *be, const lt_conv2d_dims *d) {
    return lt_conv2d_ws_bytes(d, be->threads);
}
static int cpu_conv_fwd(lt_backend *be, const lt_conv2d_dims *d, float *y, const float *x,
                        const float *w, void *ws) {
    return lt_conv2d_forward(d, be->threads, y, x, w, ws);
}
static int cpu_conv_bwd(lt_backend *be, const lt_conv2d_dims *d, float *dx, float *dw,
                        const float *dy, const float *x, const float *w, void *ws, int acc,
                        int acc_dx) {
    return lt_conv2d_backward(d, be->threads, dx, dw, dy, x, w, ws, acc, acc_dx);
}
static size_t cpu_bn_ws(lt_backend *be, int C) { return lt_bn_ws_bytes(C, be->threads); }
static int cpu_bn_fwd_train(lt_backend *be, float *y, const float *x, const float *res,
                            const float *gamma, const float *beta, float *mean, float *invstd,
                            float *rm, float *rv, int M, int C, float eps, float momentum,
                            int relu, void *ws) {
    if (be->bn_sync)
        return lt_bn_forward_train_sync(y, x, res, gamma, beta, mean, invstd, rm, rv, M, C, eps,
                                        momentum, relu, be->threads, ws, be->bn_sync);
    return lt_bn_forward_train(y, x, res, gamma, beta, mean, invstd, rm, rv, M, C, eps, momentum,
                               relu, be->threads, ws);
}
static int cpu_bn_fwd_eval(lt_backend *be, float *y, const float *x, const float *res,
                           const float *gamma, const float *beta, const float *rm,
                           const float *rv, int M, int C, float eps, int relu) {
    (void)be;
    return lt_bn_forward_eval(y, x, res, gamma, beta, rm, rv, M, C, eps, relu);
}
static int cpu_bn_bwd(lt_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy,
                      const float *x, const float *y, const float *gamma, const float *mean,
                      const float *invstd, int M, int C, int relu, int acc, void *ws) {
    if (be->bn_sync)
        return lt_bn_backward_sync(dx, dgamma, dbeta, dy, x, y, gamma, mean, invstd, M, C, relu,
                                   acc, be->threads, ws, be->bn_sync);
    return lt_bn_backward(dx, dgamma, dbeta, dy, x, y, gamma, mean, invstd, M, C, relu, acc,
                          be->threads, ws);
}
static int cpu_relu_bwd(lt_backend *be, float *dx, const float *dy, const float *y, int64_t n) {
    (void)be;
    return lt_relu_backward(dx, dy, y, n);
}
static int cpu_add(lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
    (void)be;
    return lt_add(y, a, b, n);
}
static int cpu_maxpool_fwd(lt_backend *be, const lt_pool_dims *d, float *y, int32_t *argmax,
                           const float *x) {
    (void)be;
    return lt_maxpool_forward(d, y, argmax, x);
}
static int cpu_maxpool_bwd(lt_backend *be, const lt_pool_dims *d, float *dx, const float *dy,
                           const int32_t *argmax) {
    (void)be;
    return lt_maxpool_backward(d, dx, dy, argmax);
}
static int cpu_avgpool_fwd(lt_backend *be, float *y, const float *x, int B, int HW, int C) {
    (void)be;
    return lt_avgpool_forward(y, x, B, HW, C);
}
static int cpu_avgpool_bwd(lt_backend *be, float *dx, const float *dy, int B, int HW, int C) {
    (void)be;
    return lt_avgpool_backward(dx, dy, B, HW, C);
}
static int cpu_linear_fwd(lt_backend *be, float *y, const float *x, const float *w,
                          const float *b, int M, int K, int N) {
    (void)be;
    return lt_op_linear(y, x, w, b, M, K, N);
}
static int cpu_linear_bwd(lt_backend *be, float *dx, float *dw, float *db, const float *dy,
                          const float *x, const float *w, int M, int K, int N, int acc) {
    (void)be;
    return lt_op_linear_backward(dx, dw, db, dy, x, w, M, K, N, acc);
}
static int cpu_mix(lt_backend *be, float *x, const uint8_t *a, const uint8_t *b,
                   const float *lambda, int B, int HW, const float mean[3], const float std[3]) {
    (void)be;
    return lt_mix_normalize_batch(x, a, b, lambda, B, HW, mean, std);
}
static int cpu_l2_fwd(lt_backend *be, float *y, float *norm, const float *x, int B, int D) {
    (void)be;
    return lt_op_l2norm(y, norm, x, B, D);
}
static int cpu_l2_bwd(lt_backend *be, float *dx, const float *dy, const float *y,
                      const float *norm, int B, int D) {
    (void)be;
    return lt_op_l2norm_backward(dx, dy, y, norm, B, D);
}
static int cpu_queue_push(lt_backend *be, float *queue, int Q, int D, const float *x, int B) {
    (void)be;
    return lt_queue_push_rows(queue, Q, D, x, B);
}
static int cpu_kd_fwd(lt_backend *be, double *loss, const float *t, const float *s,
                      const float *queue, int B, int Qn, int D, float tau, float *probs) {
    (void)be;
    return lt_kd_loss_forward(loss, t, s, queue, B, Qn, D, tau, probs);
}
static int cpu_kd_bwd(lt_backend *be, float *ds, const float *probs, const float *queue, int B,
                      int Qn, int D, float tau) {
    (void)be;
    return lt_kd_loss_backward(ds, probs, queue, B, Qn, D, tau);
}
static int cpu_sumsq(lt_backend *be, const float *x, int64_t n, double *out) {
    (void)be;
    *out = lt_sumsq(x, n);
    return 0;
}
static int cpu_sync(lt_backend *be) {
    (void)be;
    return 0;
}
static int cpu_sumsq_many(lt_backend *be, const float *const *xs, const int64_t *ns, int k,
                          double *out) {
    (void)be;
    for (int i = 0; i < k; i++) out[i] = lt_sumsq(xs[i], ns[i]);
    return 0;
}
static int cpu_scale(lt_backend *be, float *x, int64_t n, float s) {
    (void)be;
    return lt_scale(x, n, s);
}
static int cpu_momentum(lt_backend *be, float *w, const float *g, float *buf, int64_t n,
                        float scale, float wd, float mu, float lr, int first) {
    (void)be;
    return lt_momentum_update(w, g, buf, n, scale, wd, mu, lr, first);
}
static int cpu_adamw(lt_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                     const lt_adamw_scalars *k) {
    (void)be;
    return lt_adamw_update(w, g, m, v, n, k);
}

lt_backend *lt_backend_cpu(int threads) {
    if (threads < 1) {
        lt_err_set("cpu backend: thread count %d (expected >= 1)", threads);
        return NULL;
    }
    lt_backend *be = lt_calloc(1, sizeof *be, "cpu backend");
    if (!be) return NULL;
    *be = (lt_backend){
        .name = "cpu", .mem = LT_MEM_HOST, .threads = threads, .destroy = cpu_destroy,
        .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy, .download = cpu_copy,
        .conv2d_ws_bytes = cpu_conv_ws, .conv2d_forward = cpu_conv_fwd,
        .conv2d_backward = cpu_conv_bwd, .bn_ws_bytes = cpu_bn_ws,
        .bn_forward_train = cpu_bn_fwd_train, .bn_forward_eval = cpu_bn_fwd_eval,
        .bn_backward = cpu_bn_bwd, .relu_backward = cpu_relu_bwd, .add = cpu_add,
        .maxpool_forward = cpu_maxpool_fwd, .maxpool_backward = cpu_maxpool_bwd,
        .avgpool_forward = cpu_avgpool_fwd, .avgpool_backward = cpu_avgpool_bwd,
        .linear_forward = cpu_linear_fwd, .linear_backward = cpu_linear_bwd,
        .mix_normalize = cpu_mix, .l2norm_forward = cpu_l2_fwd, .l2norm_backward = cpu_l2_bwd,
        .queue_push = cpu_queue_push, .kd_loss_forward = cpu_kd_fwd,
        .kd_loss_backward = cpu_kd_bwd, .sumsq = cpu_sumsq, .sumsq_many = cpu_sumsq_many, .sync = cpu_sync,
        .scale = cpu_scale,
        .momentum_update = cpu_momentum, .adamw_update = cpu_adamw};
    return be;
}

lt_backend *lt_backend_open(const char *device, int threads) {
    return lt_backend_open_local(device, threads, 0);
}

lt_backend *lt_backend_open_local(const char *device, int threads, int local_rank) {
    if (!device || !strcmp(device, "cpu")) return lt_backend_cpu(threads);
    const int n_dev = lt_cuda_device_count();
    const int dev = n_dev > 0 && local_rank > 0 ? local_rank % n_dev : 0;
    if (!strcmp(device, "cuda")) {
        if (!lt_cuda_available()) {
            lt_err_set("--device cuda: no usable CUDA device (no GPU or driver, or this lt was "
                       "built without CUDA); use --device cpu");
            return NULL;
        }
        lt_backend *be = lt_backend_cuda(dev);
        if (!be) lt_err_prefix("--device cuda");
        return be;
    }
    if (!strcmp(device, "auto")) {
        if (lt_cuda_available()) {
            lt_backend *be = lt_backend_cuda(dev);
            if (be) return be;
            lt_warn("--device auto: the CUDA backend did not start (%s); training on the CPU",
                    lt_err_msg());
            lt_err_clear();
        }
        return lt_backend_cpu(threads);
    }
    lt_err_set("--device: expected auto, cpu or cuda, got '%s'", device);
    return NULL;
}
