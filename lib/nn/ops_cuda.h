/* ops_cuda.h: the CUDA twin of nn/ops.h: the ops the DINOv2 ViT needs, on device pointers.
 *
 * Why it exists: lt keeps one op API (docs/architecture.md §4) with a CPU reference
 * (ops_cpu.c) and a CUDA backend tested op by op against it (tests/cuda/test_cuda_ops.c). The ops
 * here take the same arguments as their ops.h namesakes, plus:
 *   - a context (lt_cuda_ctx: the CUDA stream, the cuBLASLt handle and its workspace); every op is
 *     enqueued on that stream and returns at once (asynchronous), so errors raised by a kernel
 *     while it runs surface at the next lt_cuda_sync();
 *   - the storage type of activations (lt_cuda_dtype: fp32 or bf16) and, for matrix products, the
 *     precision (lt_precision: bf16 tensor cores, tf32 tensor cores, or plain fp32), always with
 *     fp32 accumulation.
 * All pointers are device pointers unless named *_host. Matrices are row-major, like ops.h.
 *
 * Errors: every function returns 0, or -1 with lt_err naming the CUDA/cuBLASLt call and its
 * status (e.g. "cudaMalloc(1048576 bytes for activations): out of memory").
 *
 * Built from ops_cuda_{common,gemm,rows,attention}.cu when nvcc is present (CUDA=1); with CUDA=0,
 * cuda_stub.c provides the same symbols: lt_cuda_available() returns 0 and everything else fails
 * with a clear message. */
#ifndef LT_NN_OPS_CUDA_H
#define LT_NN_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Precision of the matrix products (and the activation storage that goes with it):
 * BF16: bf16 operands and activations, fp32 accumulation, fp32 residual stream;
 * TF32: fp32 storage, tf32 tensor-core products (10-bit mantissa operands), fp32 accumulation;
 * FP32: fp32 everywhere (CUDA-core fp32 GEMMs), the closest to the CPU reference. */
typedef enum { LT_PREC_FP32 = 0, LT_PREC_TF32 = 1, LT_PREC_BF16 = 2 } lt_precision;
const char *lt_precision_name(lt_precision p); /* "fp32", "tf32", "bf16" */
/* Parses "fp32" / "tf32" / "bf16"; -1 + lt_err otherwise. */
int lt_precision_parse(const char *s, lt_precision *out);

/* Storage type of a device array of activations. */
typedef enum { LT_CUDA_F32 = 0, LT_CUDA_BF16 = 1 } lt_cuda_dtype;
size_t lt_cuda_dtype_size(lt_cuda_dtype t);
/* The operand (and activation) storage type of a precision: BF16 → LT_CUDA_BF16, else F32. */
lt_cuda_dtype lt_cuda_act_dtype(lt_precision p);

/* ---- device, memory, context --------------------------------------------------------------- */

/* 1 when a CUDA device is usable, else 0 (no driver, no device, or CUDA=0 build). Never crashes,
 * never sets lt_err. */
int lt_cuda_available(void);
/* How many CUDA devices there are (0 without a driver or in a CPU-only build). */
int lt_cuda_device_count(void);
/* One line describing device 0 ("NVIDIA H100 80GB HBM3, cc 9.0, 132 SMs, 79.1 GiB"); -1 + lt_err
 * when there is none. */
int lt_cuda_device_info(char *buf, size_t n);

int lt_cuda_malloc(void **p, size_t bytes, const char *what);
void lt_cuda_free(void *p);
/* Page-locked ("pinned") host memory: host<->device copies from/to it are truly asynchronous and
 * run at full PCIe speed. The pipeline renders views straight into such buffers. */
int lt_cuda_host_alloc(void **p, size_t bytes, const char *what);
void lt_cuda_host_free(void *p);

typedef struct lt_cuda_ctx lt_cuda_ctx;
/* A stream of its own (non-blocking), a cuBLASLt handle, a 32 MiB GEMM workspace and a cache of
 * GEMM plans. One context per host thread at a time (the plan cache is not locked). */
int lt_cuda_ctx_create(lt_cuda_ctx **out);
void lt_cuda_ctx_free(lt_cuda_ctx *c);
void *lt_cuda_ctx_stream(lt_cuda_ctx *c); /* the cudaStream_t */
/* Implementation switches of a context (issue 6's tuning), read from the environment by
 * lt_cuda_ctx_create:
 *   LT_CUDA_AUTOTUNE=N  cuBLASLt: ask the heuristic for N algorithms per GEMM plan and keep the
 *                       fastest, timed once on the first call (default 8; 0 or 1: the
 *                       heuristic's first choice);
 *   LT_CUDA_ATTN_WARPS=N  bf16 attention: at most N warps (16 queries each) per block, 1..8
 *                       (default 8). The 16-query chunks of a sequence are balanced over
 *                       ceil(chunks / N) blocks (N = 257: 17 chunks → 3 blocks of 6 warps with
 *                       the default, 5 blocks of 4 with N = 4: more warps per SM, more L2 reads
 *                       of K/V);
 *   LT_CUDA_TUNE_LOG=1  one stderr line per autotuned GEMM plan: heuristic's first vs best time.
 * The earlier kernels that LT_CUDA_ATTN=v1|v2, LT_CUDA_ROWOPS=v1 and LT_CUDA_LEGACY=1 selected
 * are benchmarked in dev/cuda/ now; setting one of those variables only gets a warning.
 * These functions exist only in CUDA builds (not in cuda_stub.c): callers guard them with
 * #ifdef LT_HAVE_CUDA. */
#define LT_CUDA_AUTOTUNE_DEFAULT 8
#define LT_CUDA_AUTOTUNE_MAX 32
#define LT_CUDA_ATTN_WARPS_MAX 8
typedef struct {
    int autotune;   /* GEMM algorithms timed per plan (0, 1: none timed) */
    int attn_warps; /* bf16 attention: most warps per block, 1..LT_CUDA_ATTN_WARPS_MAX */
    int tune_log;   /* 1: print the autotuning results on stderr */
} lt_cuda_switches;
void lt_cuda_switches_from_env(lt_cuda_switches *s);
void lt_cuda_ctx_get_switches(const lt_cuda_ctx *c, lt_cuda_switches *s);
/* Later calls use the new switches; GEMM plans already built keep their algorithm. */
void lt_cuda_ctx_set_switches(lt_cuda_ctx *c, const lt_cuda_switches *s);

/* Waits for everything enqueued on the context's stream; reports kernel faults. */
int lt_cuda_sync(lt_cuda_ctx *c);

/* Copies on the context's stream (asynchronous when the host side is pinned). */
int lt_cuda_upload(lt_cuda_ctx *c, void *dst, const void *src_host, size_t bytes);
int lt_cuda_download(lt_cuda_ctx *c, void *dst_host, const void *src, size_t bytes);
/* fp32 host array → device array of dtype t (bf16: round to nearest even on the host). Synchronous
 * (returns once the copy is done, so src_host can be reused). */
int lt_cuda_upload_f32(lt_cuda_ctx *c, void *dst, lt_cuda_dtype t, const float *src_host,
                       int64_t n);
/* device array of dtype t → fp32 host array. Synchronous. */
int lt_cuda_download_f32(lt_cuda_ctx *c, float *dst_host, const void *src, lt_cuda_dtype t,
                         int64_t n);
/* Host-side conversions (round to nearest even, NaN kept NaN). */
uint16_t lt_cuda_f32_to_bf16(float f);
float lt_cuda_bf16_to_f32(uint16_t h);

/* ---- matrix products (cuBLASLt) ---------------------------------------------------------- */

/* lt_op_gemm on the GPU: C (M,N) = alpha · op(A) · op(B) + beta · C, row-major, same meaning of
 * trans_a/trans_b/lda/ldb/ldc. A and B are of type lt_cuda_act_dtype(prec); C of type c_type. */
int lt_cuda_gemm(lt_cuda_ctx *c, lt_precision prec, int trans_a, int trans_b, int M, int N, int K,
                 float alpha, const void *A, int lda, const void *B, int ldb, float beta, void *C,
                 int ldc, lt_cuda_dtype c_type);

/* What follows the product in lt_cuda_linear. GELU_TANH is cuBLASLt's fused GELU epilogue, the
 * tanh approximation 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))), which differs from the exact erf GELU
 * of ops.h by at most 4.7e-4 (absolute; NMSE ~4e-8): far below bf16 rounding, so the bf16 path uses it;
 * GELU_ERF is the exact GELU (lt_op_gelu) as a separate kernel after the product. */
typedef enum { LT_CUDA_ACT_NONE = 0, LT_CUDA_ACT_GELU_TANH = 1, LT_CUDA_ACT_GELU_ERF = 2 } lt_cuda_act;

/* lt_op_linear on the GPU, with fused extras: out (M,N) = act(in (M,K) · w (N,K)ᵀ + bias) +
 * beta · out. in and w are of type lt_cuda_act_dtype(prec); out and bias (N, or NULL) of type
 * out_type. beta = 1 with act NONE accumulates into out (a residual add, in place, fused into the
 * GEMM). When cuBLASLt offers no fused epilogue for the case, a plain product is followed by a
 * bias/activation kernel (same result; noted once on stderr). */
int lt_cuda_linear(lt_cuda_ctx *c, lt_precision prec, void *out, lt_cuda_dtype out_type,
                   const void *in, const void *w, const void *bias, int M, int K, int N,
                   lt_cuda_act act, float beta);

/* ---- the other ops, same meaning as in ops.h ----------------------------------------------- */

/* LayerNorm over the last dim: in (M,C) fp32 → out (M,C) of type out_type (out may equal in when
 * out_type is F32). w, b (C) fp32. Row statistics in fp32 (two passes over registers).
 * C <= 2048. */
int lt_cuda_layernorm(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, const float *in,
                      const float *w, const float *b, int M, int C, float eps);

/* Exact GELU (erf), elementwise over n, in place allowed. */
int lt_cuda_gelu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t, int64_t n);

/* SwiGLU gate: in (M, 2H) = [x1 | x2] → out (M, H) = silu(x1) · x2. out must not overlap in
 * (unlike the CPU op, no in-place form: the GPU writes rows in parallel). */
int lt_cuda_swiglu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t, int M, int H);

/* Fused multi-head self-attention, as lt_op_attention: qkv (B, N, 3, heads, 64) → out (B, N,
 * heads·64), both of type t, head dim 64 only, no scratch. One pass over the keys per block of
 * queries with an online softmax held in registers: no N×N matrix is ever stored. BF16: tensor
 * cores (mma.sync m16n8k16, fp32 accumulation, probabilities rounded to bf16 for the P·V product),
 * FlashAttention-2 style (kernel v3), blocks of up to LT_CUDA_ATTN_WARPS warps; F32: CUDA-core
 * fp32. */
int lt_cuda_attention(lt_cuda_ctx *c, void *out, const void *qkv, lt_cuda_dtype t, int B, int N,
                      int heads, int hd);

/* x (M,C) fp32 += gamma (C) ⊙ y (M,C) (y of type yt); gamma NULL means ones. */
int lt_cuda_layerscale_add(lt_cuda_ctx *c, float *x, const void *y, lt_cuda_dtype yt,
                           const float *gamma, int M, int C);

/* Each row of x (M,C) fp32 divided by max(‖row‖₂, eps), in place. */
int lt_cuda_l2norm(lt_cuda_ctx *c, float *x, int M, int C, float eps);

/* lt_op_patchify: x (B,H,W,C) fp32 NHWC → out (B·gh·gw, ld_out) of type out_type, columns
 * (c, ky, kx) as ops.h; columns C·p·p .. ld_out−1 are set to 0 (padding so that bf16 rows are
 * 16-byte multiples for the tensor cores). ld_out >= C·p·p. */
int lt_cuda_patchify(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out, const float *x,
                     int B, int H, int W, int C, int p);

/* Mixup + normalisation of uint8 views, bit for bit lt_mix_normalize (image/render.h) per sample:
 * a, b (B, npix, 3) uint8 (b NULL: no partner, λ = 1), lambda (B) fp32 device array (NULL: all 1),
 * out (B, npix, 3) fp32 = (λ/255·a + (1−λ)/255·b − mean) / std, no FMA contraction. */
int lt_cuda_mix_normalize(lt_cuda_ctx *c, float *out, const uint8_t *a, const uint8_t *b,
                          const float *lambda, const float mean[3], const float std[3], int B,
                          int64_t npix);

/* lt_cuda_mix_normalize then lt_cuda_patchify in one kernel: uint8 views (B,H,W,3) → patches
 * (B·gh·gw, ld_out) of type out_type. The fp32 pixel values are bitwise those of the CPU path. */
int lt_cuda_patchify_views(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out,
                           const uint8_t *a, const uint8_t *b, const float *lambda,
                           const float mean[3], const float std[3], int B, int H, int W, int p);

/* Token assembly with the position embedding (dinov2.c's token loop): x (B, T, D) fp32 with
 * T = 1 + R + G: x[b,0] = tok0 (D); x[b,1+r] = reg[r] (R,D); x[b,1+R+i] = pemb[b·G+i] +
 * posb[i], pemb (B·G, D) fp32, posb (G, D) fp32 (the resized position embedding of the patches,
 * with the patch-embedding bias folded in by the caller). reg may be NULL when R = 0. */
int lt_cuda_tokens(lt_cuda_ctx *c, float *x, const float *pemb, const float *tok0,
                   const float *reg, const float *posb, int B, int G, int R, int D);

/* The model's head: out (B, D) fp32 = l2normalize(LayerNorm(x[b, 0, :])) for x (B, T, D) fp32,
 * w, b (D); LayerNorm eps ln_eps, L2 eps l2_eps (as lt_op_layernorm then lt_op_l2norm). */
int lt_cuda_cls_head(lt_cuda_ctx *c, float *out, const float *x, int B, int T, int D,
                     const float *w, const float *b, float ln_eps, float l2_eps);

#ifdef __cplusplus
}
#endif

#endif
