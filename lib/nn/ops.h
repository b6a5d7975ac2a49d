/* ops.h: the compute ops the models are written in, declared once for every backend.
 *
 * Why it exists: lt keeps one op API (docs/architecture.md §4) with a CPU implementation
 * (ops_cpu.c: C + OpenMP, GEMMs through OpenBLAS, fp32, the reference) and a CUDA twin tested op
 * by op against it. So
 * every op here takes plain float pointers and sizes, no tensor objects, no allocation inside
 * (callers pass preallocated outputs and scratch), and no hidden state; a CUDA implementation takes
 * device pointers with the same meaning. All matrices are row-major, contiguous unless a leading
 * dimension (ld*) is given. Activations are NHWC / (rows, channels).
 *
 * Determinism: for a fixed lt_threads_set() count every op gives bitwise identical results run to
 * run (static OpenMP partitions, no atomics, reductions in a fixed order per row). */
#ifndef LT_NN_OPS_H
#define LT_NN_OPS_H

#include <stdint.h>

/* C (M,N) = alpha · op(A) · op(B) + beta · C, row-major. op(A) is (M,K): A is (M,K) with row
 * stride lda, or (K,M) when trans_a. op(B) is (K,N): B is (K,N) with row stride ldb, or (N,K)
 * when trans_b. C has row stride ldc. CPU: split over the OpenMP threads, each running a
 * single-threaded OpenBLAS sgemm; called from inside a parallel region, one plain sgemm. */
void lt_op_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* For callers that run lt_op_gemm inside their own parallel region (each call one
 * single-threaded sgemm): switch OpenBLAS to one thread around the region and restore it after.
 * Not for use inside a parallel region. */
int lt_op_blas_single_enter(void);
void lt_op_blas_single_leave(int saved);

/* PyTorch nn.Linear, the one linear layer of lt (the teacher's and the student's head), weight
 * (N, K) in PyTorch's layout:
 *   forward:  y (M, N) = x (M, K) · wᵀ + b (N): y is set to the bias (when b is not NULL) and the
 *             GEMM accumulates onto it (beta 1), saving a pass over y
 *   backward: dw (N, K) (+)= dyᵀ · x (accumulate flag), db (N) (+)= column sums of dy in double
 *             (NULL skips), dx (M, K) = dy · w when dx is not NULL (written). */
int lt_op_linear(float *y, const float *x, const float *w, const float *b, int M, int K, int N);
int lt_op_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, int M, int K, int N, int accumulate);

/* LayerNorm over the last dim: out (M,C) = (in − mean) / sqrt(var + eps) · w + b (biased var).
 * out may equal in. w, b (C). Row statistics are accumulated in double. */
void lt_op_layernorm(float *out, const float *in, const float *w, const float *b, int M, int C,
                     float eps);

/* Exact GELU (nn.GELU default): x · ½(1 + erf(x/√2)), elementwise over n, in place allowed. */
void lt_op_gelu(float *out, const float *in, int64_t n);

/* SwiGLU gate: in (M, 2H) = [x1 | x2] per row → out (M, H) = silu(x1) · x2. out must not overlap
 * in unless out == in (then it is written row by row from the front, which is safe). */
void lt_op_swiglu(float *out, const float *in, int M, int H);

/* Softmax over each row of x (M,N), in place, max-subtracted. */
void lt_op_softmax(float *x, int M, int N);

/* Multi-head self-attention core, B sequences of N tokens, `heads` heads of dim hd (D = heads·hd):
 * qkv (B, N, 3, heads, hd) as produced by the fused qkv Linear (rows of 3D); out (B, N, D) =
 * per head softmax(Q Kᵀ · hd^−½) V, heads concatenated. scratch: at least
 * lt_op_attention_scratch(N) floats, a number that depends on the thread count in effect (CPU:
 * one N×N score matrix per thread), so ask again after lt_threads_set(). */
void lt_op_attention(float *out, const float *qkv, float *scratch, int B, int N, int heads,
                     int hd);
int64_t lt_op_attention_scratch(int N);

/* x (M,C) += gamma (C) ⊙ y (M,C): LayerScale then residual add. gamma NULL means ones. */
void lt_op_layerscale_add(float *x, const float *y, const float *gamma, int M, int C);

/* L2 normalisation, torch.nn.functional.normalize(x, p=2, dim=-1, eps=1e-12), the one of lt (the
 * teacher's output and the student's projection):
 *   y (M,C) = x / max(‖x_row‖₂, 1e-12), dividing by the norm rounded to float; norm (M), unless
 *   NULL, receives ‖x_row‖₂ (unclamped, accumulated in double) for the backward. y may equal x.
 * Backward: dy (M,C) = dL/dy; y and norm from the forward;
 *   dx = (dy − y·⟨y,dy⟩) / n   where n = ‖x‖ ≥ eps (the norm is differentiated through),
 *      = dy / eps               where ‖x‖ < eps (the clamp is constant; as torch's clamp_min).
 *   dx may equal dy. */
#define LT_L2NORM_EPS 1e-12f
int lt_op_l2norm(float *y, float *norm, const float *x, int M, int C);
int lt_op_l2norm_backward(float *dx, const float *dy, const float *y, const float *norm, int M,
                          int C);

/* im2col for a non-overlapping patch conv (kernel = stride = p): x (B, H, W, C) NHWC →
 * out (B·gh·gw, C·p·p), gh = H/p, gw = W/p (extra pixels ignored); columns ordered (c, ky, kx) so
 * that a conv weight (D, C, p, p) read as (D, C·p·p) is the Linear weight. */
void lt_op_patchify(float *out, const float *x, int B, int H, int W, int C, int p);

/* PyTorch F.interpolate(mode="bicubic", align_corners=False, antialias=False) on an HWC image:
 * in (ih, iw, C) → out (oh, ow, C). scale_h/scale_w: the scale_factor given to F.interpolate
 * (then, as PyTorch does when recompute_scale_factor is unset, the source coordinate is
 * (dst + ½)/scale − ½), or <= 0 to use the sizes (ih/oh). Cubic coefficient A = −0.75, border
 * pixels replicated. */
void lt_op_bicubic(float *out, const float *in, int ih, int iw, int oh, int ow, int C,
                   double scale_h, double scale_w);

#endif
