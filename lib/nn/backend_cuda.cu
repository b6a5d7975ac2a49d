/* backend_cuda.cu: the student's CUDA backend (nn/backend.h, lt_backend_cuda): the state and the
 * struct of entries, memory, the elementwise ops, pooling, the linear head and the input's
 * mix + normalise.
 *
 * Why it exists: lt-train's step (lib/train/step.c), the ResNet walk (lib/models/resnet.c) and
 * the optimizer (lib/train/optim.c) reach the hardware only through struct lt_backend. This file
 * fills that struct with device implementations of the same contracts as the CPU functions
 * (nn/cnn.h, nn/ops.h, nn/kd.h, nn/optim_kernels.h), fp32 throughout (at LT_PREC_BF16 the
 * activations are bf16: backend_cuda.cuh, nn/backend.h); the conv/batch-norm,
 * method and optimizer entries live in cnn_cuda.cu, kd_cuda.cu and optim_cuda.cu
 * (backend_cuda.cuh says who does what). tests/cuda/test_cuda_cnn.c checks every entry against
 * the CPU backend, tests/cuda/test_cuda_student.c whole training steps.
 *
 * Rounding: the elementwise kernels round every operation as the CPU code does (the CPU build
 * does not contract a·b + c into an FMA, so neither do these: __fmul_rn / __fadd_rn), which makes
 * relu_backward, add, pooling, avgpool, mix_normalize and the bias gradient bitwise equal to the
 * CPU's; only the GEMMs (cuBLAS, fp32, CUBLAS_DEFAULT_MATH: no TF32) sum in another order. With
 * bf16 activations the same fp32 arithmetic runs on the bf16 inputs and a bf16 output is that
 * result rounded once to nearest even: bitwise the CPU's result on the same inputs, rounded.
 *
 * Layouts: activations NHWC, weights in PyTorch's layout, exactly as the CPU backend; the conv
 * entries transpose the filter into cuDNN's KRSC layout in their scratch (cnn_cuda.cu). */
#include "nn/backend_cuda.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cudnn_fail(cudnnStatus_t s, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lt_err_set("%s: %s", what, cudnnGetErrorString(s));
}

/* ---- memory ------------------------------------------------------------------------------------ */

static void *be_alloc(lt_backend *be, size_t bytes, const char *what) {
    cuda_be *c = cbe(be);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cuda_fail(e, "cudaMalloc(%zu bytes for %s)", bytes, what);
        return NULL;
    }
    /* zeroed, as the CPU backend's calloc: on the stream, so later work sees zeros */
    e = cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        cuda_fail(e, "cudaMemset(%zu bytes for %s)", bytes, what);
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void be_free(lt_backend *be, void *p) {
    if (!p) return;
    cudaStreamSynchronize(cbe(be)->stream); /* no kernel may still use it */
    cudaFree(p);
}

/* Copies are synchronous (the host buffer may be reused or read at once on return). */
static int be_upload(lt_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_be *c = cbe(be);
    if (!bytes) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream),
             "cudaMemcpyAsync(host to device, %zu bytes)", bytes);
    CUDA_TRY(cudaStreamSynchronize(c->stream), "upload of %zu bytes (or a kernel before it)",
             bytes);
    return 0;
}

static int be_download(lt_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_be *c = cbe(be);
    if (!bytes) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync(device to host, %zu bytes)", bytes);
    CUDA_TRY(cudaStreamSynchronize(c->stream), "download of %zu bytes (or a kernel before it)",
             bytes);
    return 0;
}

static int be_sync(lt_backend *be) {
    CUDA_TRY(cudaStreamSynchronize(cbe(be)->stream), "waiting for the GPU (a kernel failed)");
    return 0;
}

/* ---- GEMM ---------------------------------------------------------------------------------------
 * Row-major C (M,N) = α·op(A)·op(B) + β·C (lt_op_gemm's meaning) in column-major cuBLAS: a
 * row-major (r, c) matrix with row stride ld is the column-major (c, r) matrix with leading
 * dimension ld, its transpose. So C_rm is Cᵀ_cm (N×M, ldc), and Cᵀ = op(B)ᵀ·op(A)ᵀ:
 *   B_rm not transposed is (K,N), seen column-major as (N,K) = op(B)ᵀ: cuBLAS op N on it;
 *   B_rm transposed is (N,K), seen as (K,N) = op(B): op T. The same for A with (M, K).
 * Hence cublasSgemm(opB, opA, N, M, K, α, B, ldb, A, lda, β, C, ldc). */
int cuda_gemm_rm(cuda_be *c, int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) return lt_err_set("cuda gemm: K = %d", K); /* never asked by the student */
    CUBLAS_TRY(cublasSgemm(c->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda,
                           &beta, C, ldc),
               "cublasSgemm(M=%d N=%d K=%d ta=%d tb=%d)", M, N, K, trans_a, trans_b);
    return 0;
}

/* ---- elementwise --------------------------------------------------------------------------------- */

#define GRID_STRIDE(i, n)                                                                         \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                     \
         i += (int64_t)gridDim.x * blockDim.x)

/* dx (n) = dy · (y > 0); dx may equal dy. T: the activations' storage (backend_cuda.cuh) */
template <typename T>
__global__ void relu_bwd_kernel(T *dx, const T *dy, const T *y, int64_t n) {
    GRID_STRIDE(i, n) stf(dx, i, ldf(y, i) > 0.0f ? ldf(dy, i) : 0.0f);
}

static int be_relu_bwd(lt_backend *be, float *dx, const float *dy, const float *y, int64_t n) {
    cuda_be *c = cbe(be);
    if (n <= 0) return 0;
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        relu_bwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(dx), as_bf16(dy), as_bf16(y),
                                                              n);
    else
        relu_bwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(dx, dy, y, n);
    return launch_check("relu_backward");
}

/* y (n) = a + b, in fp32, one rounding at a bf16 store; y may equal a or b. The walk adds
 * activation gradients only (resnet.c block_bwd), so every operand is an activation. */
template <typename T> __global__ void add_kernel(T *y, const T *a, const T *b, int64_t n) {
    GRID_STRIDE(i, n) stf(y, i, __fadd_rn(ldf(a, i), ldf(b, i)));
}

static int be_add(lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
    cuda_be *c = cbe(be);
    if (n <= 0) return 0;
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        add_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(y), as_bf16(a), as_bf16(b), n);
    else
        add_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(y, a, b, n);
    return launch_check("add");
}

/* ---- pooling --------------------------------------------------------------------------------------- */

/* One thread per output element (b, oy, ox, c) of y (B, OH, OW, C), channels fastest (coalesced).
 * Taps in window order (ky, kx); the first inside the image initialises, a later one wins when it
 * is larger or NaN: lt_maxpool_forward's rule, so y and argmax (iy·W + ix) are the CPU's. */
template <typename T>
__global__ void maxpool_fwd_kernel(lt_pool_dims d, T *y, int32_t *argmax, const T *x) {
    const int64_t n = (int64_t)d.B * d.OH * d.OW * d.C;
    GRID_STRIDE(i, n) {
        const int c = (int)(i % d.C);
        int64_t r = i / d.C;
        const int ox = (int)(r % d.OW);
        r /= d.OW;
        const int oy = (int)(r % d.OH);
        const int64_t b = r / d.OH;
        const T *xb = x + b * d.H * d.W * d.C + c;
        float best = 0.0f;
        int32_t at = 0, first = 1;
        for (int ky = 0; ky < d.k; ky++) {
            const int iy = oy * d.stride - d.pad + ky;
            if (iy < 0 || iy >= d.H) continue;
            for (int kx = 0; kx < d.k; kx++) {
                const int ix = ox * d.stride - d.pad + kx;
                if (ix < 0 || ix >= d.W) continue;
                const int32_t pos = iy * d.W + ix;
                const float v = ldf(xb, (int64_t)pos * d.C);
                if (first || v > best || v != v) {
                    best = v;
                    at = pos;
                    first = 0;
                }
            }
        }
        stf(y, i, best); /* a value of x: exact in its storage type */
        argmax[i] = at;
    }
}

static int be_maxpool_fwd(lt_backend *be, const lt_pool_dims *d, float *y, int32_t *argmax,
                          const float *x) {
    const int64_t n = (int64_t)d->B * d->OH * d->OW * d->C;
    if (n <= 0) return 0;
    cuda_be *c = cbe(be);
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        maxpool_fwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(*d, as_bf16(y), argmax,
                                                                 as_bf16(x));
    else
        maxpool_fwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(*d, y, argmax, x);
    return launch_check("maxpool_forward");
}

/* One thread per input element (b, iy, ix, c) of dx (B, H, W, C): a gather, no atomics. The
 * outputs whose window holds (iy, ix) are oy in [ceil((iy + pad − k + 1) / s), (iy + pad) / s]
 * (clipped to the map), the same for ox; those whose argmax is this position add their dy, in
 * ascending output order starting from 0: the order in which lt_maxpool_backward adds them, so
 * the sums are bitwise the CPU's (in fp32; a bf16 dx is that sum rounded once). */
template <typename T>
__global__ void maxpool_bwd_kernel(lt_pool_dims d, T *dx, const T *dy, const int32_t *argmax) {
    const int64_t n = (int64_t)d.B * d.H * d.W * d.C;
    GRID_STRIDE(i, n) {
        const int c = (int)(i % d.C);
        int64_t r = i / d.C;
        const int ix = (int)(r % d.W);
        r /= d.W;
        const int iy = (int)(r % d.H);
        const int64_t b = r / d.H;
        const int32_t pos = iy * d.W + ix;
        const int ny = iy + d.pad - d.k + 1, nx = ix + d.pad - d.k + 1;
        int oy0 = ny <= 0 ? 0 : (ny + d.stride - 1) / d.stride;
        int ox0 = nx <= 0 ? 0 : (nx + d.stride - 1) / d.stride;
        int oy1 = (iy + d.pad) / d.stride, ox1 = (ix + d.pad) / d.stride;
        if (oy1 > d.OH - 1) oy1 = d.OH - 1;
        if (ox1 > d.OW - 1) ox1 = d.OW - 1;
        const int64_t base = b * d.OH * d.OW;
        float s = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++) {
                const int64_t o = (base + (int64_t)oy * d.OW + ox) * d.C + c;
                if (argmax[o] == pos) s = __fadd_rn(s, ldf(dy, o));
            }
        stf(dx, i, s);
    }
}

static int be_maxpool_bwd(lt_backend *be, const lt_pool_dims *d, float *dx, const float *dy,
                          const int32_t *argmax) {
    const int64_t n = (int64_t)d->B * d->H * d->W * d->C;
    if (n <= 0) return 0;
    cuda_be *c = cbe(be);
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        maxpool_bwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(*d, as_bf16(dx), as_bf16(dy),
                                                                 argmax);
    else
        maxpool_bwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(*d, dx, dy, argmax);
    return launch_check("maxpool_backward");
}

/* y (B, C) = mean over p of x (B, HW, C): one thread per (b, c), the HW values summed in double
 * in order, divided by HW in double, rounded once (lt_avgpool_forward's arithmetic). x is an
 * activation (T); y, the features the head reads, is fp32 in every mode. */
template <typename T> __global__ void avgpool_fwd_kernel(float *y, const T *x, int B, int HW, int C) {
    const int64_t n = (int64_t)B * C;
    GRID_STRIDE(i, n) {
        const int64_t b = i / C, c = i % C;
        const T *xb = x + b * HW * C + c;
        double s = 0.0;
        for (int64_t p = 0; p < HW; p++) s += (double)ldf(xb, p * C);
        y[i] = (float)(s / HW);
    }
}

static int be_avgpool_fwd(lt_backend *be, float *y, const float *x, int B, int HW, int C) {
    const int64_t n = (int64_t)B * C;
    if (n <= 0) return 0;
    cuda_be *c = cbe(be);
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        avgpool_fwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(y, as_bf16(x), B, HW, C);
    else
        avgpool_fwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(y, x, B, HW, C);
    return launch_check("avgpool_forward");
}

/* dx (B, HW, C) = dy (B, C) · inv, inv = 1/HW rounded to float on the host as the CPU does; dy
 * (the features' gradient) fp32 in every mode, dx an activation gradient (T) */
template <typename T>
__global__ void avgpool_bwd_kernel(T *dx, const float *dy, int64_t n, int HW, int C, float inv) {
    GRID_STRIDE(i, n) {
        const int64_t c = i % C, b = i / ((int64_t)HW * C);
        stf(dx, i, __fmul_rn(dy[b * C + c], inv));
    }
}

static int be_avgpool_bwd(lt_backend *be, float *dx, const float *dy, int B, int HW, int C) {
    const int64_t n = (int64_t)B * HW * C;
    if (n <= 0) return 0;
    const float inv = 1.0f / (float)HW;
    cuda_be *c = cbe(be);
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        avgpool_bwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(dx), dy, n, HW, C, inv);
    else
        avgpool_bwd_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(dx, dy, n, HW, C, inv);
    return launch_check("avgpool_backward");
}

/* ---- linear (lt_op_linear: y (M,N) = x (M,K) · wᵀ + b, w (N,K)) ------------------------------------ */

/* y (M, N) rows = b (N) */
__global__ void bias_rows_kernel(float *y, const float *b, int64_t n, int N) {
    GRID_STRIDE(i, n) y[i] = b[i % N];
}

static int be_linear_fwd(lt_backend *be, float *y, const float *x, const float *w,
                         const float *b, int M, int K, int N) {
    cuda_be *c = cbe(be);
    if (M <= 0) return 0;
    if (b) { /* the bias first, then the GEMM adds onto it (β 1), as the CPU */
        const int64_t n = (int64_t)M * N;
        bias_rows_kernel<<<grid_1d(n, LT_CUDA_THREADS), LT_CUDA_THREADS, 0, c->stream>>>(y, b, n,
                                                                                          N);
        if (launch_check("linear bias")) return -1;
    }
    return cuda_gemm_rm(c, 0, 1, M, N, K, 1.0f, x, K, w, K, b ? 1.0f : 0.0f, y, N);
}

/* db (N) (+)= column sums of dy (M, N): one thread per column, the M rows summed in double in
 * order (lt_op_linear_backward's arithmetic: bitwise equal; M is the batch, small). */
__global__ void colsum_kernel(float *db, const float *dy, int M, int N, int acc) {
    GRID_STRIDE(c, (int64_t)N) {
        double s = 0.0;
        for (int64_t i = 0; i < M; i++) s += (double)dy[i * N + c];
        db[c] = (float)(acc ? (double)db[c] + s : s);
    }
}

static int be_linear_bwd(lt_backend *be, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int M, int K, int N, int acc) {
    cuda_be *c = cbe(be);
    /* dw (N, K) (+)= dyᵀ (N, M) · x (M, K) */
    if (dw && cuda_gemm_rm(c, 1, 0, N, K, M, 1.0f, dy, N, x, K, acc ? 1.0f : 0.0f, dw, K))
        return -1;
    if (db && N > 0) {
        colsum_kernel<<<grid_1d(N, LT_CUDA_THREADS), LT_CUDA_THREADS, 0, c->stream>>>(db, dy, M,
                                                                                       N, acc);
        if (launch_check("linear bias gradient")) return -1;
    }
    /* dx (M, K) = dy (M, N) · w (N, K) */
    if (dx && cuda_gemm_rm(c, 0, 0, M, K, N, 1.0f, dy, N, w, K, 0.0f, dx, K)) return -1;
    return 0;
}

/* ---- the input: lt_mix_normalize_batch ---------------------------------------------------------------- */

typedef struct {
    float mean[3], std[3];
} norm3_t;

/* x (B, HW, 3) = ((λ/255)·a + ((1 − λ)/255)·b − mean[c]) / std[c], each operation rounded as in
 * lt_mix_normalize (image/render.c), no contraction; b NULL: λ = 1 and no partner term. The
 * same arithmetic as the teacher's mix_normalize kernel (ops_cuda_rows.cu). x is the model's
 * input, an activation (T: a bf16 x is the fp32 value rounded once). */
template <typename T>
__global__ void mix_kernel(T *x, const uint8_t *a, const uint8_t *b, const float *lambda,
                           int64_t per, int64_t n, norm3_t k) {
    GRID_STRIDE(i, n) {
        const float l = b ? lambda[i / per] : 1.0f;
        const float wa = __fdiv_rn(l, 255.0f), wb = __fdiv_rn(__fsub_rn(1.0f, l), 255.0f);
        const int ch = (int)(i % 3);
        float v = __fmul_rn(wa, (float)a[i]);
        if (b) v = __fadd_rn(v, __fmul_rn(wb, (float)b[i]));
        stf(x, i, __fdiv_rn(__fsub_rn(v, k.mean[ch]), k.std[ch]));
    }
}

static int be_mix(lt_backend *be, float *x, const uint8_t *a, const uint8_t *b,
                  const float *lambda, int B, int HW, const float mean[3], const float std[3]) {
    if (B < 0 || HW < 0) return lt_err_set("mix/normalise: bad sizes B=%d HW=%d", B, HW);
    const int64_t per = (int64_t)HW * 3, n = (int64_t)B * per;
    if (n == 0) return 0;
    if (b && !lambda) return lt_err_set("mix/normalise: a partner view without mixup weights");
    norm3_t k;
    for (int i = 0; i < 3; i++) k.mean[i] = mean[i], k.std[i] = std[i];
    cuda_be *c = cbe(be);
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        mix_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(x), a, b, lambda, per, n, k);
    else
        mix_kernel<<<g, LT_CUDA_THREADS, 0, c->stream>>>(x, a, b, lambda, per, n, k);
    return launch_check("mix_normalize");
}

/* ---- the step with its scalars on the device: the multi-tensor optimizer, CUDA graphs ---- */

static void *be_mt_create(lt_backend *be, const lt_mt_config *cfg, const lt_mt_param *ps, int n) {
    return lt_mt_create((void *)cbe(be)->stream, cfg, ps, n);
}
static lt_mt_io *be_mt_io(lt_backend *be, void *mt) {
    (void)be;
    return lt_mt_io_of((lt_mt *)mt);
}
static int be_mt_step(lt_backend *be, void *mt, const double *loss) {
    (void)be;
    return lt_mt_step((lt_mt *)mt, loss);
}
static void be_mt_free(lt_backend *be, void *mt) {
    (void)be;
    lt_mt_free((lt_mt *)mt);
}

/* Capture mode "thread local": other threads of the process (lt-train's loader, the HDF5
 * writer) may go on calling CUDA while this thread records. */
static int be_graph_begin(lt_backend *be) {
    cudaError_t e = cudaStreamBeginCapture(cbe(be)->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* the step then runs without a graph: no stale error for its kernels */
        return cuda_fail(e, "cudaStreamBeginCapture");
    }
    return 0;
}

static int be_graph_end(lt_backend *be, void **graph) {
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    *graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cbe(be)->stream, &g);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&x, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* a failed capture is no fault of the device: clear it */
        return cuda_fail(e, "capturing the training step as a CUDA graph");
    }
    *graph = (void *)x;
    return 0;
}

static int be_graph_launch(lt_backend *be, void *graph) {
    CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)graph, cbe(be)->stream), "cudaGraphLaunch");
    return 0;
}

static void be_graph_free(lt_backend *be, void *graph) {
    if (!graph) return;
    cudaStreamSynchronize(cbe(be)->stream);
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---- the backend ------------------------------------------------------------------------------------ */

static void be_destroy(lt_backend *be) {
    if (!be) return;
    cuda_be *c = cbe(be);
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        cuda_conv_plans_free(c);
        if (c->red) cudaFree(c->red);
        if (c->totals) cudaFree(c->totals);
        if (c->dnn) cudnnDestroy(c->dnn);
        if (c->blas) cublasDestroy(c->blas);
        if (c->blas_ws) cudaFree(c->blas_ws);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

static int be_init(cuda_be *c, int device) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return cuda_fail(e, "cuda backend: no usable CUDA device (cudaGetDeviceCount)");
    }
    if (device < 0 || device >= n)
        return lt_err_set("cuda backend: device %d does not exist (%d device%s)", device, n,
                          n == 1 ? "" : "s");
    c->device = device;
    const char *det = getenv("LT_CUDA_DETERMINISTIC");
    c->nondet = det && !strcmp(det, "0");
    CUDA_TRY(cudaSetDevice(device), "cudaSetDevice(%d)", device);
    CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
             "cudaStreamCreateWithFlags");
    CUBLAS_TRY(cublasCreate(&c->blas), "cublasCreate");
    CUBLAS_TRY(cublasSetStream(c->blas, c->stream), "cublasSetStream");
    /* fp32 products in fp32: no TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH is never set) */
    CUBLAS_TRY(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    CUBLAS_TRY(cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
    /* cuBLAS's workspace, ours and fixed: the same GEMM plans whether the step runs as it is or
     * is recorded as a CUDA graph (cuBLAS allocates nothing while a stream records) */
    CUDA_TRY(cudaMalloc(&c->blas_ws, LT_CUDA_BLAS_WS), "cudaMalloc(%d bytes of cuBLAS workspace)",
             LT_CUDA_BLAS_WS);
    CUBLAS_TRY(cublasSetWorkspace(c->blas, c->blas_ws, LT_CUDA_BLAS_WS), "cublasSetWorkspace");
    CUDNN_TRY(cudnnCreate(&c->dnn), "cudnnCreate (is libcudnn installed?)");
    CUDNN_TRY(cudnnSetStream(c->dnn, c->stream), "cudnnSetStream");
    CUDA_TRY(cudaMalloc((void **)&c->red, (LT_CUDA_RED + 2) * sizeof(double)),
             "cudaMalloc(%zu bytes for the backend's reductions)",
             (size_t)(LT_CUDA_RED + 2) * sizeof(double));
    return 0;
}

extern "C" int lt_backend_cuda_set_precision(lt_backend *be, lt_precision p) {
    if (!be || strcmp(be->name, "cuda") != 0)
        return lt_err_set("--precision %s: the CPU backend computes in fp32", lt_precision_name(p));
    cuda_be *c = cbe(be);
    if (c->nplans > 0)
        return lt_err_set("cuda backend: the precision is set before the first convolution");
    /* bf16: the head's GEMMs stay fp32 (CUBLAS_DEFAULT_MATH), as everything but activations */
    c->tf32 = p == LT_PREC_TF32;
    c->bf16 = p == LT_PREC_BF16;
    be->act_bf16 = c->bf16;
    CUBLAS_TRY(cublasSetMathMode(c->blas, c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
               "cublasSetMathMode");
    return 0;
}

extern "C" lt_backend *lt_backend_cuda(int device_index) {
    lt_backend *be = (lt_backend *)lt_calloc(1, sizeof *be, "cuda backend");
    cuda_be *c = (cuda_be *)lt_calloc(1, sizeof *c, "cuda backend state");
    if (!be || !c) {
        free(be);
        free(c);
        return NULL;
    }
    be->impl = c;
    if (be_init(c, device_index) != 0) {
        be_destroy(be);
        return NULL;
    }
    be->stream = (void *)c->stream;
    be->name = "cuda";
    be->mem = LT_MEM_DEVICE;
    be->threads = 1;
    be->bn_sync = NULL;
    be->act_bf16 = 0; /* fp32 until lt_backend_cuda_set_precision says otherwise */
    be->destroy = be_destroy;
    be->alloc = be_alloc;
    be->free = be_free;
    be->upload = be_upload;
    be->download = be_download;
    be->sync = be_sync;
    be->conv2d_ws_bytes = cuda_conv_ws;
    be->conv2d_forward = cuda_conv_fwd;
    be->conv2d_backward = cuda_conv_bwd;
    be->bn_ws_bytes = cuda_bn_ws;
    be->bn_forward_train = cuda_bn_fwd_train;
    be->bn_forward_eval = cuda_bn_fwd_eval;
    be->bn_backward = cuda_bn_bwd;
    be->relu_backward = be_relu_bwd;
    be->add = be_add;
    be->maxpool_forward = be_maxpool_fwd;
    be->maxpool_backward = be_maxpool_bwd;
    be->avgpool_forward = be_avgpool_fwd;
    be->avgpool_backward = be_avgpool_bwd;
    be->linear_forward = be_linear_fwd;
    be->linear_backward = be_linear_bwd;
    be->mix_normalize = be_mix;
    be->l2norm_forward = cuda_l2_fwd;
    be->l2norm_backward = cuda_l2_bwd;
    be->queue_push = cuda_queue_push;
    be->kd_loss_forward = cuda_kd_fwd;
    be->kd_loss_backward = cuda_kd_bwd;
    be->sumsq = cuda_sumsq;
    be->sumsq_many = cuda_sumsq_many;
    be->scale = cuda_scale;
    be->momentum_update = cuda_momentum;
    be->adamw_update = cuda_adamw;
    be->kd_loss_forward_dev = cuda_kd_fwd_dev;
    be->mt_create = be_mt_create;
    be->mt_io = be_mt_io;
    be->mt_step = be_mt_step;
    be->mt_free = be_mt_free;
    be->graph_begin = be_graph_begin;
    be->graph_end = be_graph_end;
    be->graph_launch = be_graph_launch;
    be->graph_free = be_graph_free;
    return be;
}
