/* ops_cuda_internal.cuh: what the ops_cuda_*.cu files of the CUDA backend share, and nothing
 * else includes (except the kernel benchmarks of dev/cuda/): the context struct, the GEMM plan
 * cache it holds, the error helpers and the small elementwise device helpers.
 *
 * Why it exists: nn/ops_cuda.h is implemented in four files by family (ops_cuda_common.cu: types,
 * memory, context, switches; ops_cuda_gemm.cu: cuBLASLt plans, autotuning, linear;
 * ops_cuda_rows.cu: elementwise and row ops, LayerNorm, head, input; ops_cuda_attention.cu: the
 * fused attention). They need one definition of the context and of the error conventions: every
 * CUDA/cuBLASLt call is checked and a failure names the call (lt_err); kernels are checked at
 * launch (cudaGetLastError) and their faults surface at the next lt_cuda_sync(). */
#ifndef LT_NN_OPS_CUDA_INTERNAL_CUH
#define LT_NN_OPS_CUDA_INTERNAL_CUH

#include "nn/ops_cuda.h"

extern "C" {
#include "core/error.h"
}

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdint.h>

typedef __nv_bfloat16 bf16;

/* ---- error reporting (ops_cuda_common.cu) ---------------------------------------------------- */

/* lt_err_set("<what>: <cuda error string> (<error name>)"); returns -1. */
int cuda_fail(cudaError_t e, const char *fmt, ...) LT_PRINTF(2, 3);
/* The same for a cuBLASLt status. */
int cublas_fail(cublasStatus_t s, const char *fmt, ...) LT_PRINTF(2, 3);

#define CUDA_TRY(call, ...)                                                                       \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) return cuda_fail(e_, __VA_ARGS__);                                 \
    } while (0)

#define CUBLAS_TRY(call, ...)                                                                     \
    do {                                                                                          \
        cublasStatus_t s_ = (call);                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) return cublas_fail(s_, __VA_ARGS__);                     \
    } while (0)

/* After a kernel launch: configuration errors show here, faults at the next sync. */
static inline int launch_check(const char *kernel) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cuda_fail(e, "launching kernel %s", kernel);
}

static inline int grid_1d(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (int)(b > 65535 * 16 ? 65535 * 16 : b < 1 ? 1 : b); /* grid-stride loops cover the rest */
}

/* ---- the context ------------------------------------------------------------------------------ */

#define LT_PLAN_CACHE 96
#define LT_WORKSPACE_BYTES (32u << 20)

/* What a GEMM plan depends on: shapes, types, transposes, epilogue and pointer alignments. */
typedef struct {
    int prec, ta, tb, m, n, k, lda, ldb, ldc, ctype, epi, al_a, al_b, al_c, al_bias;
} gemm_key;

typedef struct {
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int usable; /* 0: cuBLASLt offered no algorithm for this combination */
} gemm_plan;

struct lt_cuda_ctx {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *ws;
    gemm_plan plans[LT_PLAN_CACHE];
    int nplans, next_evict;
    int warned_fallback;
    lt_cuda_switches sw; /* implementation switches (environment, at create) */
    int smem_optin;      /* largest dynamic shared memory a block may opt in to (bytes) */
    int attn3_smem_set;  /* dynamic shared memory limit already raised for attn_bf16_v3 */
};

/* Destroys the cached GEMM plans of c (ops_cuda_gemm.cu; lt_cuda_ctx_free calls it). */
void lt_cuda_plans_free(lt_cuda_ctx *c);

/* ---- the general row kernels (ops_cuda_rows.cu) ------------------------------------------------
 * lt_cuda_layernorm, lt_cuda_tokens and lt_cuda_patchify_views run vectorised kernels (16-byte
 * loads, one block or warp per row) when the shapes and alignments allow, and these element- or
 * lane-wise kernels otherwise (C or D not a multiple of 4, unaligned rows, more than 2³¹ − 1
 * patch rows). Same arguments and checks as the public functions; declared here so that
 * dev/cuda/rowops_v1.cu can time the two against each other on the shapes both take. */
int lt_cuda_layernorm_general(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, const float *in,
                              const float *w, const float *b, int M, int C, float eps);
int lt_cuda_tokens_general(lt_cuda_ctx *c, float *x, const float *pemb, const float *tok0,
                           const float *reg, const float *posb, int B, int G, int R, int D);
int lt_cuda_patchify_views_general(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out,
                                   const uint8_t *a, const uint8_t *b, const float *lambda,
                                   const float mean[3], const float std[3], int B, int H, int W,
                                   int p);

/* ---- elementwise device helpers ---------------------------------------------------------------- */

static __device__ __forceinline__ float ldf(const float *p, int64_t i) { return p[i]; }
static __device__ __forceinline__ float ldf(const bf16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
static __device__ __forceinline__ void stf(float *p, int64_t i, float v) { p[i] = v; }
static __device__ __forceinline__ void stf(bf16 *p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

static __device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
static __device__ __forceinline__ float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
