/* backend.h: the seam between what lt-train computes and where it runs.
 *
 * Why it exists: the ResNet walk (lib/models/resnet.c), the training step (lib/train/step.c: head,
 * normalisation, queue, KL loss and their backward) and the optimizer (lib/train/optim.c: LARS
 * trust ratios, AdamW bias corrections, clipping) are written once. Everything they need from the
 * hardware goes through one struct of function pointers, in the style of ggml's backend
 * interface: memory, the CNN ops, the method's ops, the optimizer's elementwise updates and the
 * input's mix + normalise. The CPU backend (backend_cpu.c) is the fp32 reference; a CUDA backend
 * fills the same struct with device pointers of the same meaning (and may keep weights in a
 * layout of its own, converting at upload/download) and is tested entry by entry against it.
 *
 * Contracts: every entry's meaning, shapes and rounding rules are those of the CPU function it
 * names (nn/cnn.h; nn/ops.h for linear and L2 norm; nn/kd.h; nn/optim_kernels.h); pointers are
 * in the backend's memory (`mem`) unless a parameter says "host". Every entry returns 0, or -1
 * with lt_err_set. Scratch ("ws") is passed in, sized by the backend's *_ws_bytes entries; no
 * entry allocates.
 *
 * Activations in bf16 (act_bf16, the CUDA backend at LT_PREC_BF16): buffers keep their float
 * sizes (the walk sizes them in floats), but in bf16 mode an activation buffer holds bf16 values
 * in its first half. Which arguments are activations is fixed by the entry: conv2d x, y, dx, dy;
 * batch norm x, y, res, dx, dy; relu_backward and add (every operand: the walk adds activation
 * gradients only); max pool x, y, dx, dy; avgpool_forward x and avgpool_backward dx; the output x
 * of mix_normalize (the model's input). Everything else stays fp32 in every mode: avgpool's
 * features y and their gradient dy, the head, L2 norm, queue, loss, the optimizer, and every
 * parameter, gradient of a parameter and statistic. */
#ifndef LT_NN_BACKEND_H
#define LT_NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "data/safetensors.h"
#include "nn/cnn.h"
#include "nn/ops_cuda.h" /* lt_precision */
#include "nn/optim_kernels.h"
#include "nn/optim_multi.h"

/* Where a buffer lives; what its elements are is the project's lt_dtype (data/safetensors.h). */
typedef enum { LT_MEM_HOST = 0, LT_MEM_DEVICE = 1 } lt_mem;

/* A buffer as the layers above the backend see it. */
typedef struct {
    void *data;
    int64_t numel;
    lt_dtype dtype;
    lt_mem mem;
} lt_tensor;

typedef struct lt_backend lt_backend;
struct lt_backend {
    const char *name;   /* "cpu", "cuda" */
    lt_mem mem;         /* where its buffers live */
    int threads;        /* CPU: the thread count every op and scratch size assumes (CUDA: 1) */
    void *impl;         /* the backend's own state */
    void *stream;       /* GPU backends: the stream every entry runs on (a cudaStream_t), for
                           work that must be ordered with theirs (NCCL collectives); NULL on
                           the CPU */
    /* Data-parallel training: when not NULL, bn_forward_train and bn_backward normalise over the
     * rows of every process (nn/cnn.h lt_bn_forward_train_sync); set by the training step. */
    const lt_bn_sync *bn_sync;
    /* 1: activation buffers hold bf16 values in their first half (above); 0: floats. Set by
     * lt_backend_cuda_set_precision; the walk takes its input only through mix_normalize then. */
    int act_bf16;
    void (*destroy)(lt_backend *be);

    /* ---- memory: zeroed allocations in the backend's memory; copies from and to the host ---- */
    void *(*alloc)(lt_backend *be, size_t bytes, const char *what);
    void (*free)(lt_backend *be, void *p);
    int (*upload)(lt_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(lt_backend *be, void *host_dst, const void *src, size_t bytes);
    /* waits for everything enqueued so far (a device backend's entries return once enqueued);
     * the CPU backend's work is done when an entry returns: nothing to wait for */
    int (*sync)(lt_backend *be);

    /* ---- CNN ops (nn/cnn.h; linear: lt_op_linear, nn/ops.h) ---- */
    size_t (*conv2d_ws_bytes)(lt_backend *be, const lt_conv2d_dims *d);
    int (*conv2d_forward)(lt_backend *be, const lt_conv2d_dims *d, float *y, const float *x,
                          const float *w, void *ws);
    int (*conv2d_backward)(lt_backend *be, const lt_conv2d_dims *d, float *dx, float *dw,
                           const float *dy, const float *x, const float *w, void *ws,
                           int accumulate, int accumulate_dx);
    size_t (*bn_ws_bytes)(lt_backend *be, int C);
    int (*bn_forward_train)(lt_backend *be, float *y, const float *x, const float *res,
                            const float *gamma, const float *beta, float *mean, float *invstd,
                            float *running_mean, float *running_var, int M, int C, float eps,
                            float momentum, int relu, void *ws);
    int (*bn_forward_eval)(lt_backend *be, float *y, const float *x, const float *res,
                           const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, int M, int C, float eps, int relu);
    int (*bn_backward)(lt_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy,
                       const float *x, const float *y, const float *gamma, const float *mean,
                       const float *invstd, int M, int C, int relu, int accumulate, void *ws);
    int (*relu_backward)(lt_backend *be, float *dx, const float *dy, const float *y, int64_t n);
    int (*add)(lt_backend *be, float *y, const float *a, const float *b, int64_t n);
    int (*maxpool_forward)(lt_backend *be, const lt_pool_dims *d, float *y, int32_t *argmax,
                           const float *x);
    int (*maxpool_backward)(lt_backend *be, const lt_pool_dims *d, float *dx, const float *dy,
                            const int32_t *argmax);
    int (*avgpool_forward)(lt_backend *be, float *y, const float *x, int B, int HW, int C);
    int (*avgpool_backward)(lt_backend *be, float *dx, const float *dy, int B, int HW, int C);
    int (*linear_forward)(lt_backend *be, float *y, const float *x, const float *w,
                          const float *b, int M, int K, int N);
    int (*linear_backward)(lt_backend *be, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int M, int K, int N, int accumulate);

    /* ---- the input (nn/kd.h lt_mix_normalize): uint8 views + λ -> the normalised batch ---- */
    int (*mix_normalize)(lt_backend *be, float *x, const uint8_t *a, const uint8_t *b,
                         const float *lambda, int B, int HW, const float mean[3],
                         const float std[3]);

    /* ---- the method (L2 norm: lt_op_l2norm, nn/ops.h; queue and loss: nn/kd.h) ---- */
    int (*l2norm_forward)(lt_backend *be, float *y, float *norm, const float *x, int B, int D);
    int (*l2norm_backward)(lt_backend *be, float *dx, const float *dy, const float *y,
                           const float *norm, int B, int D);
    int (*queue_push)(lt_backend *be, float *queue, int Q, int D, const float *x, int B);
    /* loss: host double */
    int (*kd_loss_forward)(lt_backend *be, double *loss, const float *t, const float *s,
                           const float *queue, int B, int Qn, int D, float tau, float *probs);
    int (*kd_loss_backward)(lt_backend *be, float *ds, const float *probs, const float *queue,
                            int B, int Qn, int D, float tau);

    /* ---- the optimizer's elementwise work (nn/optim_kernels.h) ---- */
    int (*sumsq)(lt_backend *be, const float *x, int64_t n, double *host_out);
    /* host_out[i] = sumsq of xs[i] (ns[i] elements) for i < k, each exactly as sumsq gives it; a
     * device backend waits once for all of them (the optimizer's norms in one round trip) */
    int (*sumsq_many)(lt_backend *be, const float *const *xs, const int64_t *ns, int k,
                      double *host_out);
    int (*scale)(lt_backend *be, float *x, int64_t n, float s);
    int (*momentum_update)(lt_backend *be, float *w, const float *g, float *buf, int64_t n,
                           float scale, float wd, float mu, float lr, int first);
    int (*adamw_update)(lt_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                        const lt_adamw_scalars *k);

    /* ---- optional (NULL where absent, as on the CPU): a step whose scalars stay on the device,
     * so that the host waits once per step and the step can be a CUDA graph (lib/train/step.c
     * uses them when all are present) ---- */
    /* kd_loss_forward with the loss left in backend memory (loss: one double there) */
    int (*kd_loss_forward_dev)(lt_backend *be, double *loss, const float *t, const float *s,
                               const float *queue, int B, int Qn, int D, float tau, float *probs);
    /* the multi-tensor optimizer of nn/optim_multi.h on the backend's stream: mt_create gives
     * its handle (NULL + lt_err), mt_io its pinned exchange struct, mt_step enqueues one step */
    void *(*mt_create)(lt_backend *be, const lt_mt_config *cfg, const lt_mt_param *ps, int n);
    lt_mt_io *(*mt_io)(lt_backend *be, void *mt);
    int (*mt_step)(lt_backend *be, void *mt, const double *loss);
    void (*mt_free)(lt_backend *be, void *mt);
    /* CUDA graphs: between graph_begin and graph_end the entries' work is recorded, not run;
     * graph_end gives the recorded work as *graph (-1 + lt_err when the capture failed: the
     * stream then runs work again as before), graph_launch enqueues one replay of it */
    int (*graph_begin)(lt_backend *be);
    int (*graph_end)(lt_backend *be, void **graph);
    int (*graph_launch)(lt_backend *be, void *graph);
    void (*graph_free)(lt_backend *be, void *graph);
};

/* The CPU backend with `threads` threads (>= 1: the lt_threads_set() count). NULL + lt_err on
 * failure. Free it with be->destroy(be). */
lt_backend *lt_backend_cpu(int threads);
/* The CUDA backend on device device_index (fp32: cuDNN convolutions with deterministic
 * algorithms and no TF32, cuBLAS fp32 GEMMs, our own batch norm, pooling, method and optimizer
 * kernels; backend_cuda.cu). Buffers live on the device (mem = LT_MEM_DEVICE); every entry runs
 * on the backend's one stream, and upload, download, sumsq and kd_loss_forward wait for it.
 * Layouts are the CPU backend's (NHWC activations, PyTorch weights). Data-parallel batch norm
 * (bn_sync) sums its statistics over the processes through the host. NULL + lt_err when there is
 * no usable device or CUDA library, and always in a build without CUDA (cuda_stub.c). */
lt_backend *lt_backend_cuda(int device_index);
/* The CUDA backend's arithmetic, before its first convolution: LT_PREC_FP32 (the default: fp32
 * operands on CUDA cores, no TF32), LT_PREC_TF32 (cuDNN's and cuBLAS's TF32 tensor cores: 10-bit
 * operand mantissas, fp32 accumulation; still deterministic algorithms) or LT_PREC_BF16
 * (autocast-like: activations and their gradients stored in bf16 (act_bf16), cuDNN's bf16
 * convolutions with fp32 accumulation; parameters, their gradients, statistics, the head, the
 * method and the optimizer in fp32). Any precision on a CPU backend is refused. (lt_precision:
 * nn/ops_cuda.h.) */
int lt_backend_cuda_set_precision(lt_backend *be, lt_precision p);
/* The backend for a --device name: "cpu" gives the CPU backend with `threads` threads; "cuda"
 * the CUDA backend on device 0 (an error naming --device cuda when there is none or it cannot
 * start); "auto" the CUDA backend when a device is usable and it starts, else the CPU backend. */
lt_backend *lt_backend_open(const char *device, int threads);
/* The same for process local_rank of the run's processes on this machine (data parallel): the
 * CUDA backend goes on device local_rank mod the device count. */
lt_backend *lt_backend_open_local(const char *device, int threads, int local_rank);

#endif
