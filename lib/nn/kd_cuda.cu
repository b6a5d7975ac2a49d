/* kd_cuda.cu: the CUDA backend's method ops (nn/kd.h, and the L2 norm of nn/ops.h): L2
 * normalisation forward/backward, the queue push, the KL loss and its gradient.
 *
 * Why it exists: the step after the projection head is tiny in FLOPs but easy to get subtly
 * wrong (push order, B >= Q, probabilities formed in double); these kernels follow the CPU code
 * (kd_cpu.c, ops_cpu.c) line by line so that they can be read side by side.
 *
 * Arithmetic: the L2 norm's row sums run in double in index order on one thread per row (rows
 * are short and few: B ≤ a few hundred, D ≤ a few thousand), and every elementwise operation is
 * rounded as the CPU's, so l2norm forward/backward are bitwise the CPU's; the queue push only
 * moves bytes. The loss's two (B, Qn) GEMMs and the backward GEMM go through cuBLAS (fp32, no
 * TF32), so they sum in another order than OpenBLAS; each row's max / Σexp / KL is a fixed-order
 * tree over one block (double), the rows' KL values are added in row order on one thread. */
#include "nn/backend_cuda.cuh"

extern "C" {
#include "nn/ops.h" /* LT_L2NORM_EPS */
}

#include <math.h>

#define KD_THREADS 256

/* ---- L2 norm (lt_op_l2norm): y (B, D) = x / max(‖x‖, eps), norm (B) = ‖x‖ ---- */

/* one block per row; thread 0 sums the row in order (the CPU's order), all divide */
__global__ void l2_fwd_kernel(float *y, float *norm, const float *x, int D) {
    __shared__ float den;
    const int64_t b = blockIdx.x;
    const float *xr = x + b * D;
    float *yr = y + b * D;
    if (threadIdx.x == 0) {
        double ss = 0.0;
        for (int d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
        const float n = (float)sqrt(ss);
        if (norm) norm[b] = n;
        den = n > LT_L2NORM_EPS ? n : LT_L2NORM_EPS;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) yr[d] = __fdiv_rn(xr[d], den);
}

int cuda_l2_fwd(lt_backend *be, float *y, float *norm, const float *x, int B, int D) {
    if (B <= 0 || D <= 0) return 0;
    l2_fwd_kernel<<<B, KD_THREADS, 0, cbe(be)->stream>>>(y, norm, x, D);
    return launch_check("l2norm");
}

/* dx = (dy − y·⟨y,dy⟩)/n where n ≥ eps, dy/eps where clamped; the dot in double in order */
__global__ void l2_bwd_kernel(float *dx, const float *dy, const float *y, const float *norm,
                              int D) {
    __shared__ float fdot;
    const int64_t b = blockIdx.x;
    const float *dyr = dy + b * D, *yr = y + b * D;
    float *dxr = dx + b * D;
    const float n = norm[b];
    const int clamped = !(n >= LT_L2NORM_EPS);
    if (threadIdx.x == 0 && !clamped) {
        double dot = 0.0;
        for (int d = 0; d < D; d++) dot += (double)yr[d] * dyr[d];
        fdot = (float)dot;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        dxr[d] = clamped ? __fdiv_rn(dyr[d], LT_L2NORM_EPS)
                         : __fdiv_rn(__fsub_rn(dyr[d], __fmul_rn(yr[d], fdot)), n);
}

int cuda_l2_bwd(lt_backend *be, float *dx, const float *dy, const float *y, const float *norm,
                int B, int D) {
    if (B <= 0 || D <= 0) return 0;
    l2_bwd_kernel<<<B, KD_THREADS, 0, cbe(be)->stream>>>(dx, dy, y, norm, D);
    return launch_check("l2norm backward");
}

/* ---- the queue (lt_queue_push_rows): push x (B, D) to the front of queue (Q, D) ---- */

/* B < Q: rows 0..Q−B−1 move down by B rows, in place. Element i (of (Q−B)·D) goes to i + B·D;
 * thread r (< B·D) moves the elements i ≡ r (mod B·D) from the last to the first, so every
 * element is read before it is overwritten and no two threads touch the same element. */
__global__ void queue_shift_kernel(float *queue, int64_t keep, int64_t step) {
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < step && r < keep;
         r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t last = (keep - 1 - r) / step; /* the largest k with r + k·step < keep */
        for (int64_t k = last; k >= 0; k--) queue[r + (k + 1) * step] = queue[r + k * step];
    }
}

int cuda_queue_push(lt_backend *be, float *queue, int Q, int D, const float *x, int B) {
    cuda_be *c = cbe(be);
    if (!queue) return lt_err_set("queue: push into an uninitialised queue");
    if (B <= 0) return lt_err_set("queue: push of %d rows", B);
    const size_t d = (size_t)D;
    if (B >= Q) { /* the queue becomes x's first Q rows */
        CUDA_TRY(cudaMemcpyAsync(queue, x, (size_t)Q * d * sizeof(float),
                                 cudaMemcpyDeviceToDevice, c->stream),
                 "cudaMemcpyAsync(queue)");
        return 0;
    }
    const int64_t keep = (int64_t)(Q - B) * D, step = (int64_t)B * D;
    const int64_t threads = step < keep ? step : keep;
    queue_shift_kernel<<<grid_1d(threads, LT_CUDA_THREADS), LT_CUDA_THREADS, 0, c->stream>>>(
        queue, keep, step);
    if (launch_check("queue shift")) return -1;
    CUDA_TRY(cudaMemcpyAsync(queue, x, (size_t)B * d * sizeof(float), cudaMemcpyDeviceToDevice,
                             c->stream),
             "cudaMemcpyAsync(queue)");
    return 0;
}

/* ---- the loss (lt_kd_loss_forward / backward) ---- */

/* fixed-order tree over the block (blockDim.x == KD_THREADS, a power of two) */
__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = KD_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = KD_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    const float r = sh[0];
    __syncthreads();
    return r;
}

/* log Σ exp(r[q]) of a row, max-subtracted, in double (logsumexp_row of kd_cpu.c) */
__device__ double row_lse(const float *r, int Qn, double *shd, float *shf) {
    float mx = -INFINITY;
    for (int q = threadIdx.x; q < Qn; q += KD_THREADS) mx = fmaxf(mx, r[q]);
    mx = block_max(mx, shf);
    double se = 0.0;
    for (int q = threadIdx.x; q < Qn; q += KD_THREADS) se += exp((double)r[q] - mx);
    se = block_sum(se, shd);
    return mx + log(se);
}

/* Row b0 + blockIdx.x of pt, ps (B, Qn), logits on entry: pt = p_t, ps = p_s − p_t (formed in
 * double) on exit; kl[blockIdx.x] = Σ p_t·(log p_t − log p_s). */
__global__ void kd_rows_kernel(float *pt, float *ps, int Qn, int b0, double *kl) {
    __shared__ double shd[KD_THREADS];
    __shared__ float shf[KD_THREADS];
    const int64_t b = (int64_t)b0 + blockIdx.x;
    float *rt = pt + b * Qn, *rs = ps + b * Qn;
    const double lse_t = row_lse(rt, Qn, shd, shf), lse_s = row_lse(rs, Qn, shd, shf);
    double acc = 0.0;
    for (int q = threadIdx.x; q < Qn; q += KD_THREADS) {
        const double lpt = (double)rt[q] - lse_t, lps = (double)rs[q] - lse_s;
        const double p = exp(lpt);
        acc += p * (lpt - lps); /* p == 0 (underflow) adds exactly 0 */
        rt[q] = (float)p;
        rs[q] = (float)(exp(lps) - p);
    }
    acc = block_sum(acc, shd);
    if (threadIdx.x == 0) kl[blockIdx.x] = acc;
}

/* *loss = *total / B, on the device */
__global__ void kd_mean_kernel(double *loss, const double *total, int B) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *loss = *total / B;
}

int cuda_kd_fwd_dev(lt_backend *be, double *loss, const float *t, const float *s,
                    const float *queue, int B, int Qn, int D, float tau, float *probs) {
    cuda_be *c = cbe(be);
    if (B <= 0 || Qn <= 0 || D <= 0)
        return lt_err_set("distillation loss: invalid sizes B=%d Q=%d D=%d", B, Qn, D);
    if (!(tau > 0.0f)) return lt_err_set("distillation loss: temperature %g must be > 0", tau);
    float *pt = probs, *ps = probs + (int64_t)B * Qn; /* (B, Qn) each */
    const float inv_tau = 1.0f / tau;
    /* logits (B, Qn) = x (B, D) · queueᵀ (D, Qn) / τ */
    if (cuda_gemm_rm(c, 0, 1, B, Qn, D, inv_tau, t, D, queue, D, 0.0f, pt, Qn) ||
        cuda_gemm_rm(c, 0, 1, B, Qn, D, inv_tau, s, D, queue, D, 0.0f, ps, Qn))
        return -1;
    double *total = c->red + LT_CUDA_RED;
    for (int b0 = 0; b0 < B; b0 += LT_CUDA_RED) {
        const int nb = B - b0 < LT_CUDA_RED ? B - b0 : LT_CUDA_RED;
        kd_rows_kernel<<<nb, KD_THREADS, 0, c->stream>>>(pt, ps, Qn, b0, c->red);
        if (launch_check("distillation loss rows")) return -1;
        if (cuda_sum_in_order(c, c->red, nb, total, b0 > 0)) return -1;
    }
    kd_mean_kernel<<<1, 1, 0, c->stream>>>(loss, total, B);
    return launch_check("distillation loss mean");
}

int cuda_kd_fwd(lt_backend *be, double *loss, const float *t, const float *s, const float *queue,
                int B, int Qn, int D, float tau, float *probs) {
    cuda_be *c = cbe(be);
    double *dev = c->red + LT_CUDA_RED + 1, h = 0.0;
    if (cuda_kd_fwd_dev(be, dev, t, s, queue, B, Qn, D, tau, probs)) return -1;
    CUDA_TRY(cudaMemcpyAsync(&h, dev, sizeof h, cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync(loss)");
    CUDA_TRY(cudaStreamSynchronize(c->stream), "distillation loss (a kernel failed)");
    *loss = h;
    return 0;
}

int cuda_kd_bwd(lt_backend *be, float *ds, const float *probs, const float *queue, int B, int Qn,
                int D, float tau) {
    const float *g = probs + (int64_t)B * Qn; /* p_s − p_t (B, Qn) */
    /* ds (B, D) = g (B, Qn) · queue (Qn, D) / (τ B) */
    const float alpha = (float)(1.0 / ((double)tau * B));
    return cuda_gemm_rm(cbe(be), 0, 0, B, D, Qn, alpha, g, Qn, queue, D, 0.0f, ds, D);
}
