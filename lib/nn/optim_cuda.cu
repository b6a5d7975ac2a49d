/* optim_cuda.cu: the CUDA backend's optimizer work (nn/optim_kernels.h): sum of squares, scale,
 * the momentum update of LARS/SGD and AdamW.
 *
 * Why it exists: lib/train/optim.c computes the scalars (trust ratios, bias corrections, the
 * clipping coefficient) once on the host and hands the per-element work to the backend; these
 * are that work on the device, kept apart so that they can be read beside optim_cpu.c.
 *
 * Arithmetic: the updates are optim_rules.h's element functions, the CPU's, with each operation
 * rounded (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn: no FMA contraction, as the CPU build), so
 * w, buf, m, v come out bitwise equal to the CPU's for the same inputs. The sum of
 * squares is in double over fixed chunks of 64 Ki elements like the CPU's, but inside a chunk
 * a block of 256 threads sums strided slices and then a fixed tree (the CPU sums the chunk left
 * to right): deterministic, and equal to the CPU's up to double rounding (relative ~1e-15). */
#include "nn/backend_cuda.cuh"
#include "nn/optim_rules.h"

#define SUMSQ_CHUNK 65536
#define SUMSQ_THREADS 256

/* part[j] = Σ x² over chunk j (of SUMSQ_CHUNK elements, the last one shorter), j < gridDim.x */
__global__ void sumsq_chunks(double *part, const float *x, int64_t n) {
    __shared__ double sh[SUMSQ_THREADS];
    const int64_t a = (int64_t)blockIdx.x * SUMSQ_CHUNK;
    const int64_t e = a + SUMSQ_CHUNK < n ? a + SUMSQ_CHUNK : n;
    const double s = lt_block_sumsq(x + a, e - a, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sum_in_order_kernel(const double *vals, int n, double *total, int add) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double t = add ? *total : 0.0;
    for (int i = 0; i < n; i++) t += vals[i];
    *total = t;
}

int cuda_sum_in_order(cuda_be *c, const double *vals, int n, double *total, int add) {
    sum_in_order_kernel<<<1, 1, 0, c->stream>>>(vals, n, total, add);
    return launch_check("ordered sum");
}

/* *total (device) = Σ x² over n elements: fixed chunks, each group of partials added in order */
static int sumsq_into(cuda_be *c, const float *x, int64_t n, double *total) {
    if (n <= 0) {
        CUDA_TRY(cudaMemsetAsync(total, 0, sizeof *total, c->stream), "cudaMemsetAsync");
        return 0;
    }
    const int64_t nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    /* chunks in groups of at most LT_CUDA_RED partials, each group added in order */
    for (int64_t g0 = 0; g0 < nchunks; g0 += LT_CUDA_RED) {
        const int nc = (int)(nchunks - g0 < LT_CUDA_RED ? nchunks - g0 : LT_CUDA_RED);
        const int64_t off = g0 * SUMSQ_CHUNK;
        sumsq_chunks<<<nc, SUMSQ_THREADS, 0, c->stream>>>(c->red, x + off, n - off);
        if (launch_check("sum of squares")) return -1;
        if (cuda_sum_in_order(c, c->red, nc, total, g0 > 0)) return -1;
    }
    return 0;
}

int cuda_sumsq(lt_backend *be, const float *x, int64_t n, double *host_out) {
    cuda_be *c = cbe(be);
    *host_out = 0.0;
    if (n <= 0) return 0;
    double *total = c->red + LT_CUDA_RED;
    if (sumsq_into(c, x, n, total)) return -1;
    double h = 0.0;
    CUDA_TRY(cudaMemcpyAsync(&h, total, sizeof h, cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync(sum of squares)");
    CUDA_TRY(cudaStreamSynchronize(c->stream), "sum of squares (a kernel failed)");
    *host_out = h;
    return 0;
}

int cuda_sumsq_many(lt_backend *be, const float *const *xs, const int64_t *ns, int k,
                    double *host_out) {
    cuda_be *c = cbe(be);
    if (k <= 0) return 0;
    if (k > c->cap_totals) {
        CUDA_TRY(cudaStreamSynchronize(c->stream), "sum of squares (waiting to grow)");
        cudaFree(c->totals);
        c->totals = NULL, c->cap_totals = 0;
        CUDA_TRY(cudaMalloc((void **)&c->totals, (size_t)k * sizeof(double)),
                 "cudaMalloc(%d sums of squares)", k);
        c->cap_totals = k;
    }
    /* each array's chunks reuse c->red one after another (one stream), as k sumsq calls would */
    for (int i = 0; i < k; i++)
        if (sumsq_into(c, xs[i], ns[i], c->totals + i)) return -1;
    CUDA_TRY(cudaMemcpyAsync(host_out, c->totals, (size_t)k * sizeof(double),
                             cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync(sums of squares)");
    CUDA_TRY(cudaStreamSynchronize(c->stream), "sums of squares (a kernel failed)");
    return 0;
}

#define GRID_STRIDE(i, n)                                                                         \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                     \
         i += (int64_t)gridDim.x * blockDim.x)

__global__ void scale_kernel(float *x, int64_t n, float s) {
    GRID_STRIDE(i, n) x[i] = __fmul_rn(x[i], s);
}

int cuda_scale(lt_backend *be, float *x, int64_t n, float s) {
    if (n <= 0) return 0;
    scale_kernel<<<grid_1d(n, LT_CUDA_THREADS), LT_CUDA_THREADS, 0, cbe(be)->stream>>>(x, n, s);
    return launch_check("scale");
}

/* lt_momentum_update, one element per thread (optim_rules.h) */
__global__ void momentum_kernel(float *w, const float *g, float *buf, int64_t n, float scale,
                                float wd, float mu, float lr, int first) {
    GRID_STRIDE(i, n) lt_momentum_elem(&w[i], g[i], buf ? &buf[i] : NULL, buf != NULL, scale, wd,
                                       mu, lr, first);
}

int cuda_momentum(lt_backend *be, float *w, const float *g, float *buf, int64_t n, float scale,
                  float wd, float mu, float lr, int first) {
    if (n <= 0) return 0;
    momentum_kernel<<<grid_1d(n, LT_CUDA_THREADS), LT_CUDA_THREADS, 0, cbe(be)->stream>>>(
        w, g, buf, n, scale, wd, mu, lr, first);
    return launch_check("momentum update");
}

/* lt_adamw_update, one element per thread (optim_rules.h) */
__global__ void adamw_kernel(float *w, const float *g, float *m, float *v, int64_t n,
                             lt_adamw_scalars k) {
    GRID_STRIDE(i, n) lt_adamw_elem(&w[i], g[i], &m[i], &v[i], &k);
}

int cuda_adamw(lt_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
               const lt_adamw_scalars *k) {
    if (n <= 0) return 0;
    adamw_kernel<<<grid_1d(n, LT_CUDA_THREADS), LT_CUDA_THREADS, 0, cbe(be)->stream>>>(
        w, g, m, v, n, *k);
    return launch_check("adamw update");
}
