/* cnn.h: the convolutional-network ops the ResNet student is written in: their contracts, and
 * their CPU implementation.
 *
 * Why it exists: the student (lib/models/resnet.c) is a fixed graph with explicit forward and
 * backward passes over preallocated buffers (docs/architecture.md §4, the llm.c way). These are
 * its ops: conv2d, batch norm (train and eval) with fused ReLU / residual add, ReLU, max pool,
 * global average pool, linear, each with its backward. The model reaches them through a backend
 * (nn/backend.h), whose entries have exactly these contracts; the functions declared here are the
 * CPU backend's implementation (cnn_cpu.c: C + OpenMP, GEMMs through OpenBLAS, fp32), the
 * reference a CUDA backend is tested against op by op.
 *
 * Conventions shared by every op:
 *  - Activations are NHWC, contiguous: a (B, H, W, C) tensor is also a (B·H·W, C) matrix.
 *  - Weights are stored in PyTorch's layout (conv (Cout, Cin, kh, kw), linear (N, K)), so
 *    checkpoints need no conversion.
 *  - No allocation inside an op and no hidden buffers: outputs, saved statistics and scratch
 *    ("ws") are passed in; each op that needs scratch has a *_ws_bytes() function giving its
 *    size for a thread count, and the op is called with that same count (`threads`, the CPU
 *    backend's); dims structs describe shapes only.
 *  - Parameter gradients (dw, dgamma, dbeta, db) are accumulated (+=) when `accumulate` is
 *    non-zero and overwritten when it is zero. Input gradients say per op.
 *  - Determinism: for a fixed lt_threads_set() count every op is bitwise reproducible run to
 *    run: static partitions, no float atomics, every reduction in a fixed order (the pooling and
 *    bias reductions are even independent of the thread count).
 *  - Every op returns 0, or -1 with lt_err_set() (bad dimensions, missing scratch). */
#ifndef LT_NN_CNN_H
#define LT_NN_CNN_H

#include <stddef.h>
#include <stdint.h>

/* ---- conv2d (no bias: every ResNet conv is followed by batch norm) ---- */

/* The dimensions of one conv2d call. Fill B..pad and call lt_conv2d_dims_init, which checks them
 * and computes OH, OW (PyTorch's floor((H + 2·pad − kh) / stride) + 1). */
typedef struct {
    int B, H, W, Cin;   /* input x (B, H, W, Cin) */
    int Cout, kh, kw;   /* weight (Cout, Cin, kh, kw) */
    int stride, pad;    /* the same in both directions */
    int OH, OW;         /* output y (B, OH, OW, Cout) */
} lt_conv2d_dims;

int lt_conv2d_dims_init(lt_conv2d_dims *d, int B, int H, int W, int Cin, int Cout, int kh,
                        int kw, int stride, int pad);
/* Scratch bytes lt_conv2d_forward / lt_conv2d_backward need for these dims when run with
 * `threads` threads (0 for a 1×1, stride 1, pad 0 conv, which is a plain GEMM on the input). A
 * scratch sized for a batch B serves every smaller batch. */
size_t lt_conv2d_ws_bytes(const lt_conv2d_dims *d, int threads);

/* y (B, OH, OW, Cout) = conv(x (B, H, W, Cin), w (Cout, Cin, kh, kw)). Zero padding. Uses at
 * most `threads` threads; ws as sized by lt_conv2d_ws_bytes for that count. */
int lt_conv2d_forward(const lt_conv2d_dims *d, int threads, float *y, const float *x,
                      const float *w, void *ws);
/* Given dy (B, OH, OW, Cout): dw (Cout, Cin, kh, kw) (+)= ∂L/∂w (accumulate flag), and when dx
 * is not NULL, dx (B, H, W, Cin) = ∂L/∂x, or dx += ∂L/∂x when accumulate_dx. x is the forward's
 * input. dw may be NULL (input gradient only). */
int lt_conv2d_backward(const lt_conv2d_dims *d, int threads, float *dx, float *dw,
                       const float *dy, const float *x, const float *w, void *ws, int accumulate,
                       int accumulate_dx);

/* ---- batch norm over the channels of an (M, C) matrix (M = B·H·W), PyTorch BatchNorm2d ---- */

/* Training mode: batch mean and biased variance normalise x (M, C):
 *   y = act(γ · (x − mean) / sqrt(var + eps) + β [+ res])
 * where act is ReLU when relu is non-zero and res (M, C) an optional residual (NULL = none).
 * Saves mean (C) and invstd (C) = 1 / sqrt(var + eps) for the backward. When running_mean /
 * running_var are not NULL they are updated as PyTorch does:
 *   r_mean = (1 − momentum) · r_mean + momentum · mean
 *   r_var  = (1 − momentum) · r_var  + momentum · var · M / (M − 1)     (unbiased)
 * y may equal x or res. Statistics are accumulated in double, in per-thread partial sums that
 * live in ws (lt_bn_ws_bytes(C, threads) bytes) and are folded in thread order. Fails (-1) when
 * M < 2, as PyTorch refuses to normalise a single value per channel. */
size_t lt_bn_ws_bytes(int C, int threads);
int lt_bn_forward_train(float *y, const float *x, const float *res, const float *gamma,
                        const float *beta, float *mean, float *invstd, float *running_mean,
                        float *running_var, int M, int C, float eps, float momentum, int relu,
                        int threads, void *ws);
/* Eval mode: y = act(γ · (x − r_mean) / sqrt(r_var + eps) + β [+ res]). y may equal x. */
int lt_bn_forward_eval(float *y, const float *x, const float *res, const float *gamma,
                       const float *beta, const float *running_mean, const float *running_var,
                       int M, int C, float eps, int relu);
/* Backward of lt_bn_forward_train. dy (M, C) is ∂L/∂y. When relu is non-zero, y (M, C) is the
 * forward output and dy is first masked by y > 0 (the fused ReLU); y is unused otherwise.
 * dx (M, C) = ∂L/∂x (written; dx may equal dy), dgamma, dbeta (C) (+)= per `accumulate`.
 * mean, invstd: as saved by the forward. (The residual's gradient is the masked dy itself; use
 * lt_relu_backward for it first and call this with relu = 0.) threads, ws: as for the forward. */
int lt_bn_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                   const float *y, const float *gamma, const float *mean, const float *invstd,
                   int M, int C, int relu, int accumulate, int threads, void *ws);

/* Synchronised batch norm, for data-parallel training (PyTorch SyncBatchNorm): each of P
 * processes normalises its own M rows with the statistics of all P·M rows. sum adds, in place, a
 * vector of doubles over the processes (identically on each: train/comm.h). */
typedef struct {
    int (*sum)(void *ctx, double *x, int n);
    void *ctx;
    int processes; /* P; every process has the same M */
} lt_bn_sync;

/* lt_bn_forward_train over the P·M rows of all processes: the mean and the biased variance (and
 * the running statistics, unbiased over P·M) are those of the union, combined exactly from each
 * process's own mean and sum of squared deviations (two sums of C doubles). */
int lt_bn_forward_train_sync(float *y, const float *x, const float *res, const float *gamma,
                             const float *beta, float *mean, float *invstd, float *running_mean,
                             float *running_var, int M, int C, float eps, float momentum,
                             int relu, int threads, void *ws, const lt_bn_sync *sync);
/* lt_bn_backward of lt_bn_forward_train_sync: Σ dy and Σ dy·(x − mean) are summed over the
 * processes (one sum of 2C doubles) for dx. dgamma and dbeta (+)= the mean over the processes of
 * their own parts (the same on every process: the data-parallel step's average of the gradients
 * leaves them as they are), formed from those double sums: the processes' parts nearly cancel,
 * as the next batch norm removes the mean over all rows, so each rounded to float first would
 * leave errors of order 1e-2 in the total. */
int lt_bn_backward_sync(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *y, const float *gamma, const float *mean,
                        const float *invstd, int M, int C, int relu, int accumulate, int threads,
                        void *ws, const lt_bn_sync *sync);

/* ---- elementwise ---- */

/* y (n) = max(x, 0); y may equal x. */
int lt_relu_forward(float *y, const float *x, int64_t n);
/* dx (n) = dy · (y > 0), y the forward output; dx may equal dy. */
int lt_relu_backward(float *dx, const float *dy, const float *y, int64_t n);
/* y (n) = a + b; y may equal a or b. */
int lt_add(float *y, const float *a, const float *b, int64_t n);

/* ---- pooling ---- */

/* Max pool dimensions: kernel k×k, stride, pad (padding never wins), PyTorch's output size
 * (floor mode). */
typedef struct {
    int B, H, W, C;     /* input (B, H, W, C) */
    int k, stride, pad;
    int OH, OW;         /* output (B, OH, OW, C) */
} lt_pool_dims;

int lt_pool_dims_init(lt_pool_dims *d, int B, int H, int W, int C, int k, int stride, int pad);
/* y (B, OH, OW, C) = max over each window; argmax (B, OH, OW, C) saves the winning input
 * position (iy·W + ix within its image; the first maximum in window order on ties, NaN wins, as
 * PyTorch). */
int lt_maxpool_forward(const lt_pool_dims *d, float *y, int32_t *argmax, const float *x);
/* dx (B, H, W, C) = dy (B, OH, OW, C) routed to the argmax positions (written). */
int lt_maxpool_backward(const lt_pool_dims *d, float *dx, const float *dy,
                         const int32_t *argmax);

/* Global average pool: y (B, C) = mean over H·W of x (B, HW, C) (HW = H·W). */
int lt_avgpool_forward(float *y, const float *x, int B, int HW, int C);
/* dx (B, HW, C) = dy (B, C) / HW, broadcast (written). */
int lt_avgpool_backward(float *dx, const float *dy, int B, int HW, int C);

#endif
