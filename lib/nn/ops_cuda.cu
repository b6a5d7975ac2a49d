/* ops_cuda.cu: the CUDA implementation of nn/ops_cuda.h: cuBLASLt matrix products with fused
 * epilogues, and the kernels of the DINOv2 ViT (fused attention, LayerNorm, token assembly, head,
 * input normalisation + patchify).
 *
 * Why it exists: the teacher is ~46 GFLOP per 224² view; on the GPU nearly all of it is the four
 * GEMMs per block (cuBLASLt, bf16 tensor cores) and the attention (our kernel below, tensor cores
 * through mma.sync). Everything else is memory-bound and is fused so each activation is read and
 * written as few times as possible. Every CUDA/cuBLASLt call is checked and a failure names the
 * call; kernels are checked at launch (cudaGetLastError) and their faults surface at the next
 * lt_cuda_sync().
 *
 * Layout conventions (same as ops.h): row-major matrices, activations (rows, channels). cuBLASLt
 * is column-major: a row-major C (M,N) = op(A)·op(B) is computed as the column-major
 * Cᵀ (N,M) = op(B)ᵀ·op(A)ᵀ, i.e. the operands are swapped (see gemm_enqueue). */
#include "nn/ops_cuda.h"

extern "C" {
#include "core/error.h"
}

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef __nv_bfloat16 bf16;

/* ---- error reporting ------------------------------------------------------------------------ */

/* lt_err_set("<what>: <cuda error string> (<error name>)"); returns -1. */
static int cuda_fail(cudaError_t e, const char *fmt, ...) LT_PRINTF(2, 3);
static int cuda_fail(cudaError_t e, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lt_err_set("%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static int cublas_fail(cublasStatus_t s, const char *fmt, ...) LT_PRINTF(2, 3);
static int cublas_fail(cublasStatus_t s, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lt_err_set("%s: %s (%s)", what, cublasLtGetStatusString(s), cublasLtGetStatusName(s));
}

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
static int launch_check(const char *kernel) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cuda_fail(e, "launching kernel %s", kernel);
}

static int grid_1d(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (int)(b > 65535 * 16 ? 65535 * 16 : b < 1 ? 1 : b); /* grid-stride loops cover the rest */
}

/* ---- small helpers ---------------------------------------------------------------------------- */

extern "C" const char *lt_precision_name(lt_precision p) {
    return p == LT_PREC_BF16 ? "bf16" : p == LT_PREC_TF32 ? "tf32" : "fp32";
}

extern "C" int lt_precision_parse(const char *s, lt_precision *out) {
    if (!strcmp(s, "bf16")) *out = LT_PREC_BF16;
    else if (!strcmp(s, "tf32")) *out = LT_PREC_TF32;
    else if (!strcmp(s, "fp32")) *out = LT_PREC_FP32;
    else return lt_err_set("precision: expected bf16, tf32 or fp32, got '%s'", s);
    return 0;
}

extern "C" size_t lt_cuda_dtype_size(lt_cuda_dtype t) { return t == LT_CUDA_BF16 ? 2 : 4; }
extern "C" lt_cuda_dtype lt_cuda_act_dtype(lt_precision p) {
    return p == LT_PREC_BF16 ? LT_CUDA_BF16 : LT_CUDA_F32;
}

extern "C" uint16_t lt_cuda_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                         /* nearest even */
    return (uint16_t)(u >> 16);
}

extern "C" float lt_cuda_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- device, memory, context ------------------------------------------------------------------ */

extern "C" int lt_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n > 0;
}

extern "C" int lt_cuda_device_info(char *buf, size_t n) {
    int dev = 0;
    CUDA_TRY(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp p;
    CUDA_TRY(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties(%d)", dev);
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(buf, n, "%s, cc %d.%d, %d SMs, %.1f GiB, L2 %d MiB, driver %d.%d, runtime %d.%d",
             p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1024.0 * 1024 * 1024), p.l2CacheSize >> 20, drv / 1000,
             (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10);
    return 0;
}

extern "C" int lt_cuda_malloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    CUDA_TRY(cudaMalloc(p, bytes ? bytes : 1), "cudaMalloc(%zu bytes for %s)", bytes, what);
    return 0;
}

extern "C" void lt_cuda_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" int lt_cuda_host_alloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    CUDA_TRY(cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault),
             "cudaHostAlloc(%zu bytes of pinned memory for %s)", bytes, what);
    return 0;
}

extern "C" void lt_cuda_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

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
    int attn2_smem_set;  /* dynamic shared memory limit already raised for attn_bf16_v2 */
    int attn3_smem_set;  /* ... and for attn_bf16_v3 */
};

/* LT_CUDA_LEGACY=1: every switch as before the tuning (the first measured configuration);
 * LT_CUDA_AUTOTUNE=N, LT_CUDA_ATTN=v1|v2|v3, LT_CUDA_ROWOPS=v1|v2, LT_CUDA_TUNE_LOG=1 then
 * override one switch each. See ops_cuda.h. vmax: the newest version of the switch. */
static int env_version(const char *name, int dflt, int vmax) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    if (!strcmp(v, "v1") || !strcmp(v, "old") || !strcmp(v, "1")) return 1;
    if (!strcmp(v, "v2") || !strcmp(v, "2")) return 2;
    if (vmax >= 3 && (!strcmp(v, "v3") || !strcmp(v, "3"))) return 3;
    if (!strcmp(v, "new")) return vmax;
    fprintf(stderr, "lt: warning: %s=%s: expected v1..v%d; using v%d\n", name, v, vmax, dflt);
    return dflt;
}

extern "C" void lt_cuda_switches_from_env(lt_cuda_switches *s) {
    const char *legacy = getenv("LT_CUDA_LEGACY");
    const int old = legacy && *legacy && strcmp(legacy, "0") != 0;
    s->autotune = old ? 0 : LT_CUDA_AUTOTUNE_DEFAULT;
    const char *at = getenv("LT_CUDA_AUTOTUNE");
    if (at && *at) {
        const long n = strtol(at, NULL, 10);
        s->autotune = n < 0 ? 0 : n > LT_CUDA_AUTOTUNE_MAX ? LT_CUDA_AUTOTUNE_MAX : (int)n;
    }
    s->attn = env_version("LT_CUDA_ATTN", old ? 1 : 3, 3);
    s->rowops = env_version("LT_CUDA_ROWOPS", old ? 1 : 2, 2);
    s->attn_warps = LT_CUDA_ATTN_WARPS_MAX;
    const char *aw = getenv("LT_CUDA_ATTN_WARPS");
    if (aw && *aw) {
        const long n = strtol(aw, NULL, 10);
        s->attn_warps = n < 1 ? 1 : n > LT_CUDA_ATTN_WARPS_MAX ? LT_CUDA_ATTN_WARPS_MAX : (int)n;
    }
    const char *log = getenv("LT_CUDA_TUNE_LOG");
    s->tune_log = log && *log && strcmp(log, "0") != 0;
}

extern "C" void lt_cuda_ctx_get_switches(const lt_cuda_ctx *c, lt_cuda_switches *s) { *s = c->sw; }
extern "C" void lt_cuda_ctx_set_switches(lt_cuda_ctx *c, const lt_cuda_switches *s) {
    c->sw = *s;
    if (c->sw.autotune < 0) c->sw.autotune = 0;
    if (c->sw.autotune > LT_CUDA_AUTOTUNE_MAX) c->sw.autotune = LT_CUDA_AUTOTUNE_MAX;
    if (c->sw.attn < 1 || c->sw.attn > 3) c->sw.attn = 3;
    if (c->sw.attn_warps < 1 || c->sw.attn_warps > LT_CUDA_ATTN_WARPS_MAX)
        c->sw.attn_warps = LT_CUDA_ATTN_WARPS_MAX;
}

static void plan_destroy(gemm_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof *p);
}

extern "C" void lt_cuda_ctx_free(lt_cuda_ctx *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (int i = 0; i < c->nplans; i++) plan_destroy(&c->plans[i]);
    if (c->ws) cudaFree(c->ws);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" int lt_cuda_ctx_create(lt_cuda_ctx **out) {
    *out = NULL;
    if (!lt_cuda_available()) return lt_err_set("no CUDA device available (cudaGetDeviceCount)");
    lt_cuda_ctx *c = (lt_cuda_ctx *)lt_calloc(1, sizeof *c, "CUDA context");
    if (!c) return -1;
    int rc = 0;
    cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) rc = cuda_fail(e, "cudaStreamCreateWithFlags");
    if (!rc) {
        cublasStatus_t s = cublasLtCreate(&c->lt);
        if (s != CUBLAS_STATUS_SUCCESS) rc = cublas_fail(s, "cublasLtCreate");
    }
    if (!rc) rc = lt_cuda_malloc(&c->ws, LT_WORKSPACE_BYTES, "cuBLASLt workspace");
    if (!rc) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&c->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
                cudaSuccess) {
            cudaGetLastError();
            c->smem_optin = 48 * 1024;
        }
        lt_cuda_switches_from_env(&c->sw);
    }
    if (rc) {
        lt_cuda_ctx_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

extern "C" void *lt_cuda_ctx_stream(lt_cuda_ctx *c) { return (void *)c->stream; }

extern "C" int lt_cuda_sync(lt_cuda_ctx *c) {
    CUDA_TRY(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (a kernel or copy failed)");
    return 0;
}

extern "C" int lt_cuda_upload(lt_cuda_ctx *c, void *dst, const void *src_host, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, c->stream),
             "cudaMemcpyAsync(host to device, %zu bytes)", bytes);
    return 0;
}

extern "C" int lt_cuda_download(lt_cuda_ctx *c, void *dst_host, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync(device to host, %zu bytes)", bytes);
    return 0;
}

extern "C" int lt_cuda_upload_f32(lt_cuda_ctx *c, void *dst, lt_cuda_dtype t, const float *src,
                                  int64_t n) {
    if (t == LT_CUDA_F32) {
        if (lt_cuda_upload(c, dst, src, (size_t)n * 4)) return -1;
        return lt_cuda_sync(c);
    }
    uint16_t *tmp = (uint16_t *)lt_malloc((size_t)(n ? n : 1) * 2, "bf16 staging");
    if (!tmp) return -1;
    for (int64_t i = 0; i < n; i++) tmp[i] = lt_cuda_f32_to_bf16(src[i]);
    int rc = lt_cuda_upload(c, dst, tmp, (size_t)n * 2);
    if (!rc) rc = lt_cuda_sync(c);
    free(tmp);
    return rc;
}

extern "C" int lt_cuda_download_f32(lt_cuda_ctx *c, float *dst, const void *src, lt_cuda_dtype t,
                                    int64_t n) {
    if (t == LT_CUDA_F32) {
        if (lt_cuda_download(c, dst, src, (size_t)n * 4)) return -1;
        return lt_cuda_sync(c);
    }
    uint16_t *tmp = (uint16_t *)lt_malloc((size_t)(n ? n : 1) * 2, "bf16 staging");
    if (!tmp) return -1;
    int rc = lt_cuda_download(c, tmp, src, (size_t)n * 2);
    if (!rc) rc = lt_cuda_sync(c);
    if (!rc)
        for (int64_t i = 0; i < n; i++) dst[i] = lt_cuda_bf16_to_f32(tmp[i]);
    free(tmp);
    return rc;
}

/* ---- elementwise device helpers -------------------------------------------------------------- */

__device__ __forceinline__ float ldf(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ldf(const bf16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void stf(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void stf(bf16 *p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- matrix products ------------------------------------------------------------------------- */

/* The largest power of two (<= 256) dividing the address: what cuBLASLt may assume about it. */
static int ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 1;
    while (al < 256 && !(a & (uintptr_t)al)) al <<= 1;
    return a == 0 ? 256 : al;
}

static cudaDataType_t cuda_type(lt_cuda_dtype t) {
    return t == LT_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static const char *epi_name(int epi) {
    return epi == CUBLASLT_EPILOGUE_BIAS        ? "bias"
           : epi == CUBLASLT_EPILOGUE_GELU_BIAS ? "bias+gelu"
                                                : "none";
}

static int key_eq(const gemm_key *a, const gemm_key *b) { return !memcmp(a, b, sizeof *a); }

/* Autotuning (LT_CUDA_AUTOTUNE = N > 1): cuBLASLt's heuristic ranks its algorithms by a model,
 * not by a measurement, and its first choice is not always the fastest for our shapes (tall
 * M = B·T, short K = 768). Each of the N candidates is run once (warm-up) and then timed over
 * three runs with CUDA events, on the real A, B and bias of the first call (read only) and a
 * scratch C/D, so the in-place residual GEMMs (beta = 1) leave the real C alone; the fastest is
 * kept in the plan. Once per plan (shape, types, epilogue, alignments); the stream is synchronised
 * here, so the first forward of a new shape is slower. Any candidate cuBLASLt refuses is skipped;
 * when nothing can be timed (no memory for the scratch) the heuristic's first choice stays. */
static int plan_tune(lt_cuda_ctx *c, gemm_plan *p, const cublasLtMatmulHeuristicResult_t *res,
                     int nres, const void *A, const void *B, float beta) {
    const gemm_key *k = &p->key;
    const size_t csz = (size_t)k->ldc * (size_t)k->n * lt_cuda_dtype_size((lt_cuda_dtype)k->ctype);
    void *scratch = NULL;
    if (cudaMalloc(&scratch, csz ? csz : 1) != cudaSuccess) {
        cudaGetLastError(); /* not fatal: keep the heuristic's choice */
        return 0;
    }
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = 0, best = -1;
    float best_ms = 0.0f, first_ms = -1.0f;
    const float alpha = 1.0f;
    const int reps = 3;
    cudaError_t e = cudaMemsetAsync(scratch, 0, csz, c->stream);
    if (e == cudaSuccess) e = cudaEventCreate(&e0);
    if (e == cudaSuccess) e = cudaEventCreate(&e1);
    if (e != cudaSuccess) rc = cuda_fail(e, "GEMM autotuning (events)");
    for (int i = 0; !rc && i < nres; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > LT_WORKSPACE_BYTES)
            continue;
        cublasStatus_t st = cublasLtMatmul(c->lt, p->op, &alpha, A, p->la, B, p->lb, &beta,
                                           scratch, p->lc, scratch, p->lc, &res[i].algo, c->ws,
                                           LT_WORKSPACE_BYTES, c->stream);
        if (st != CUBLAS_STATUS_SUCCESS) continue; /* this candidate refused: skip it */
        e = cudaEventRecord(e0, c->stream);
        for (int r = 0; r < reps && st == CUBLAS_STATUS_SUCCESS && e == cudaSuccess; r++)
            st = cublasLtMatmul(c->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, scratch, p->lc,
                                scratch, p->lc, &res[i].algo, c->ws, LT_WORKSPACE_BYTES,
                                c->stream);
        if (e == cudaSuccess) e = cudaEventRecord(e1, c->stream);
        if (e == cudaSuccess) e = cudaEventSynchronize(e1);
        float ms = 0.0f;
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
        if (e != cudaSuccess) {
            rc = cuda_fail(e, "GEMM autotuning (m=%d n=%d k=%d, candidate %d)", k->m, k->n, k->k, i);
            break;
        }
        if (st != CUBLAS_STATUS_SUCCESS) continue;
        ms /= reps;
        if (i == 0) first_ms = ms;
        if (best < 0 || ms < best_ms) {
            best = i;
            best_ms = ms;
        }
    }
    if (!rc && best >= 0) {
        p->algo = res[best].algo;
        if (c->sw.tune_log) {
            const double fl = 2.0 * k->m * (double)k->n * k->k;
            fprintf(stderr,
                    "lt: gemm autotune m=%d n=%d k=%d %s %s out %s: %d candidates, heuristic's "
                    "first %.4f ms, best #%d %.4f ms (%.1f TFLOP/s, %+.1f%%)\n",
                    k->m, k->n, k->k, lt_precision_name((lt_precision)k->prec), epi_name(k->epi),
                    k->ctype == LT_CUDA_BF16 ? "bf16" : "fp32", nres, first_ms, best, best_ms,
                    fl / (best_ms * 1e9), first_ms > 0 ? 100.0 * (first_ms / best_ms - 1.0) : 0.0);
        }
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(scratch); /* synchronises: the timed runs are done */
    return rc;
}

/* Builds descriptors and asks cuBLASLt's heuristic for the best algorithm. Sets p->usable = 0
 * (and returns 0) when cuBLASLt supports the call but has no algorithm for it; -1 on errors. */
static int plan_build(lt_cuda_ctx *c, gemm_plan *p, const void *bias, const void *A,
                      const void *B, float beta) {
    const gemm_key *k = &p->key;
    const lt_precision prec = (lt_precision)k->prec;
    const cudaDataType_t ab = prec == LT_PREC_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t ct = cuda_type((lt_cuda_dtype)k->ctype);
    const cublasComputeType_t comp =
        prec == LT_PREC_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const cublasOperation_t opa = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = (cublasLtEpilogue_t)k->epi;
    CUBLAS_TRY(cublasLtMatmulDescCreate(&p->op, comp, CUDA_R_32F), "cublasLtMatmulDescCreate");
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
               "cublasLtMatmulDescSetAttribute(TRANSA)");
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
               "cublasLtMatmulDescSetAttribute(TRANSB)");
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
               "cublasLtMatmulDescSetAttribute(EPILOGUE %s)", epi_name(k->epi));
    if (k->epi != CUBLASLT_EPILOGUE_DEFAULT)
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias),
                   "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    /* stored (column-major) shapes: op N → (m×k) / (k×n); op T → (k×m) / (n×k) */
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->la, ab, k->ta ? k->k : k->m, k->ta ? k->m : k->k, k->lda),
               "cublasLtMatrixLayoutCreate(A)");
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->lb, ab, k->tb ? k->n : k->k, k->tb ? k->k : k->n, k->ldb),
               "cublasLtMatrixLayoutCreate(B)");
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->lc, ct, k->m, k->n, k->ldc),
               "cublasLtMatrixLayoutCreate(C)");
    cublasLtMatmulPreference_t pref;
    CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    size_t ws = LT_WORKSPACE_BYTES;
    uint32_t al[4] = {(uint32_t)k->al_a, (uint32_t)k->al_b, (uint32_t)k->al_c, (uint32_t)k->al_c};
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(
            pref, (cublasLtMatmulPreferenceAttributes_t)(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + i),
            &al[i], sizeof al[i]);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasLtMatmulPreferenceDestroy(pref);
        return cublas_fail(s, "cublasLtMatmulPreferenceSetAttribute");
    }
    cublasLtMatmulHeuristicResult_t res[LT_CUDA_AUTOTUNE_MAX];
    memset(res, 0, sizeof res);
    int nres = 0;
    const int want = c->sw.autotune > 1 ? c->sw.autotune : 1;
    s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, want, res,
                                       &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && nres == 0)) {
        p->usable = 0;
        return 0;
    }
    if (s != CUBLAS_STATUS_SUCCESS)
        return cublas_fail(s, "cublasLtMatmulAlgoGetHeuristic(m=%d n=%d k=%d, %s, epilogue %s)",
                           k->m, k->n, k->k, lt_precision_name(prec), epi_name(k->epi));
    p->algo = res[0].algo;
    p->usable = 1;
    if (nres > 1) return plan_tune(c, p, res, nres, A, B, beta);
    return 0;
}

/* The cached plan for key (built on first use); NULL + lt_err on error. */
static gemm_plan *plan_get(lt_cuda_ctx *c, const gemm_key *key, const void *bias, const void *A,
                           const void *B, float beta) {
    for (int i = 0; i < c->nplans; i++)
        if (key_eq(&c->plans[i].key, key)) return &c->plans[i];
    gemm_plan *p;
    if (c->nplans < LT_PLAN_CACHE) {
        p = &c->plans[c->nplans++];
    } else {
        p = &c->plans[c->next_evict];
        c->next_evict = (c->next_evict + 1) % LT_PLAN_CACHE;
        plan_destroy(p);
    }
    memset(p, 0, sizeof *p);
    p->key = *key;
    if (plan_build(c, p, bias, A, B, beta)) {
        plan_destroy(p);
        p->key.m = -1; /* never matches a real key */
        return NULL;
    }
    return p;
}

/* Enqueues the column-major product D = alpha·op(A)·op(B) + beta·C (+ epilogue), C = D in place.
 * *done = 0 (and nothing enqueued) when cuBLASLt has no algorithm for the epilogue. */
static int gemm_enqueue(lt_cuda_ctx *c, const gemm_key *key, float alpha, const void *A,
                        const void *B, float beta, void *C, const void *bias, int *done) {
    gemm_plan *p = plan_get(c, key, bias, A, B, beta);
    if (!p) return -1;
    *done = p->usable;
    if (!p->usable) return 0;
    if (key->epi != CUBLASLT_EPILOGUE_DEFAULT)
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias),
                   "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    CUBLAS_TRY(cublasLtMatmul(c->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, C, p->lc,
                              &p->algo, c->ws, LT_WORKSPACE_BYTES, c->stream),
               "cublasLtMatmul(m=%d n=%d k=%d, %s, epilogue %s)", key->m, key->n, key->k,
               lt_precision_name((lt_precision)key->prec), epi_name(key->epi));
    return 0;
}

/* Fills the key of row-major C (M,N) = op(A)·op(B): cuBLASLt's A is our B and vice versa. */
static gemm_key make_key(lt_precision prec, int trans_a, int trans_b, int M, int N, int K,
                         const void *A, int lda, const void *B, int ldb, void *C, int ldc,
                         lt_cuda_dtype ct, int epi, const void *bias) {
    gemm_key k;
    memset(&k, 0, sizeof k);
    k.prec = prec;
    k.ta = trans_b; /* cuBLASLt A = our B, stored column-major as (N,K) (op N) or (K,N) (op T) */
    k.tb = trans_a; /* cuBLASLt B = our A, stored as (K,M) (op N) or (M,K) (op T) */
    k.m = N;
    k.n = M;
    k.k = K;
    k.lda = ldb;
    k.ldb = lda;
    k.ldc = ldc;
    k.ctype = ct;
    k.epi = epi;
    k.al_a = ptr_align(B);
    k.al_b = ptr_align(A);
    k.al_c = ptr_align(C);
    k.al_bias = bias ? ptr_align(bias) : 0;
    return k;
}

static int check_gemm_types(lt_precision prec, lt_cuda_dtype ct) {
    if (prec != LT_PREC_BF16 && ct == LT_CUDA_BF16)
        return lt_err_set("cuda gemm: %s products need an fp32 output, not bf16",
                          lt_precision_name(prec));
    return 0;
}

extern "C" int lt_cuda_gemm(lt_cuda_ctx *c, lt_precision prec, int trans_a, int trans_b, int M,
                            int N, int K, float alpha, const void *A, int lda, const void *B,
                            int ldb, float beta, void *C, int ldc, lt_cuda_dtype c_type) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) return lt_err_set("cuda gemm: K = %d", K);
    if (check_gemm_types(prec, c_type)) return -1;
    gemm_key key = make_key(prec, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, c_type,
                            CUBLASLT_EPILOGUE_DEFAULT, NULL);
    int done = 0;
    if (gemm_enqueue(c, &key, alpha, B, A, beta, C, NULL, &done)) return -1;
    if (!done)
        return lt_err_set("cuBLASLt has no algorithm for a %s GEMM m=%d n=%d k=%d (lda %d ldb %d "
                          "ldc %d, %s output)", lt_precision_name(prec), M, N, K, lda, ldb, ldc,
                          c_type == LT_CUDA_BF16 ? "bf16" : "fp32");
    return 0;
}

/* out (M,N) = act(out + bias): the epilogue when cuBLASLt has no fused one. */
template <typename T>
__global__ void bias_act_kernel(T *out, const T *bias, int64_t M, int N, int act) {
    const int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = ldf(out, i);
        if (bias) v += ldf(bias, i % N);
        if (act == LT_CUDA_ACT_GELU_TANH) v = gelu_tanh(v);
        else if (act == LT_CUDA_ACT_GELU_ERF) v = gelu_erf(v);
        stf(out, i, v);
    }
}

static int bias_act(lt_cuda_ctx *c, void *out, lt_cuda_dtype t, const void *bias, int M, int N,
                    int act) {
    const int64_t n = (int64_t)M * N;
    if (t == LT_CUDA_BF16)
        bias_act_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>((bf16 *)out,
                                                                     (const bf16 *)bias, M, N, act);
    else
        bias_act_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>((float *)out,
                                                                      (const float *)bias, M, N, act);
    return launch_check("bias_act");
}

extern "C" int lt_cuda_linear(lt_cuda_ctx *c, lt_precision prec, void *out,
                              lt_cuda_dtype out_type, const void *in, const void *w,
                              const void *bias, int M, int K, int N, lt_cuda_act act, float beta) {
    if (M <= 0) return 0;
    if (K <= 0 || N <= 0) return lt_err_set("cuda linear: K = %d, N = %d", K, N);
    if (check_gemm_types(prec, out_type)) return -1;
    if (act != LT_CUDA_ACT_NONE && beta != 0.0f)
        return lt_err_set("cuda linear: an activation needs beta = 0");
    /* exact GELU: the product with its bias, then the erf GELU kernel */
    const int fused_act = act == LT_CUDA_ACT_GELU_TANH;
    const int epi = fused_act ? (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                    : bias    ? CUBLASLT_EPILOGUE_BIAS
                              : CUBLASLT_EPILOGUE_DEFAULT;
    /* out (M,N) = in (M,K) · w (N,K)ᵀ: trans_b */
    gemm_key key = make_key(prec, 0, 1, M, N, K, in, K, w, K, out, N, out_type, epi, bias);
    int done = 0;
    if (gemm_enqueue(c, &key, 1.0f, w, in, beta, out, bias, &done)) return -1;
    if (!done && epi != CUBLASLT_EPILOGUE_DEFAULT) {
        if (!c->warned_fallback) {
            fprintf(stderr, "lt: note: cuBLASLt has no fused %s epilogue for %s m=%d n=%d k=%d; "
                            "using a separate kernel\n", epi_name(epi), lt_precision_name(prec), N,
                    M, K);
            c->warned_fallback = 1;
        }
        key = make_key(prec, 0, 1, M, N, K, in, K, w, K, out, N, out_type,
                       CUBLASLT_EPILOGUE_DEFAULT, NULL);
        if (gemm_enqueue(c, &key, 1.0f, w, in, beta, out, NULL, &done)) return -1;
        if (done && bias_act(c, out, out_type, bias, M, N, fused_act ? act : LT_CUDA_ACT_NONE))
            return -1;
    }
    if (!done)
        return lt_err_set("cuBLASLt has no algorithm for a %s linear M=%d K=%d N=%d (%s output)",
                          lt_precision_name(prec), M, K, N,
                          out_type == LT_CUDA_BF16 ? "bf16" : "fp32");
    if (act == LT_CUDA_ACT_GELU_ERF) return lt_cuda_gelu(c, out, out, out_type, (int64_t)M * N);
    return 0;
}

/* ---- elementwise ops -------------------------------------------------------------------------- */

template <typename T>
__global__ void gelu_kernel(T *out, const T *in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        stf(out, i, gelu_erf(ldf(in, i)));
}

extern "C" int lt_cuda_gelu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t,
                            int64_t n) {
    if (n <= 0) return 0;
    if (t == LT_CUDA_BF16)
        gelu_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>((bf16 *)out, (const bf16 *)in, n);
    else
        gelu_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>((float *)out, (const float *)in, n);
    return launch_check("gelu");
}

/* out (M,H) = silu(in[:, :H]) · in[:, H:], in (M, 2H) */
template <typename T>
__global__ void swiglu_kernel(T *out, const T *in, int64_t M, int H) {
    const int64_t n = M * H;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / H, j = i % H;
        const float a = ldf(in, r * 2 * H + j), g = ldf(in, r * 2 * H + H + j);
        stf(out, i, a / (1.0f + expf(-a)) * g);
    }
}

extern "C" int lt_cuda_swiglu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t, int M,
                              int H) {
    if (M <= 0 || H <= 0) return 0;
    const size_t es = lt_cuda_dtype_size(t);
    const char *o = (const char *)out, *i = (const char *)in;
    if (o < i + (size_t)M * 2 * H * es && i < o + (size_t)M * H * es)
        return lt_err_set("cuda swiglu: out overlaps in (no in-place form on the GPU)");
    const int64_t n = (int64_t)M * H;
    if (t == LT_CUDA_BF16)
        swiglu_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>((bf16 *)out, (const bf16 *)in, M, H);
    else
        swiglu_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>((float *)out, (const float *)in, M, H);
    return launch_check("swiglu");
}

template <typename T>
__global__ void layerscale_add_kernel(float *x, const T *y, const float *gamma, int64_t M, int C) {
    const int64_t n = M * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = ldf(y, i);
        x[i] += gamma ? gamma[i % C] * v : v;
    }
}

extern "C" int lt_cuda_layerscale_add(lt_cuda_ctx *c, float *x, const void *y, lt_cuda_dtype yt,
                                      const float *gamma, int M, int C) {
    const int64_t n = (int64_t)M * C;
    if (n <= 0) return 0;
    if (yt == LT_CUDA_BF16)
        layerscale_add_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>(x, (const bf16 *)y, gamma, M, C);
    else
        layerscale_add_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>(x, (const float *)y, gamma, M, C);
    return launch_check("layerscale_add");
}

/* one warp per row: x (M,C) /= max(‖x‖, eps) */
__global__ void l2norm_kernel(float *x, int M, int C, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    float *r = x + (int64_t)row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += r[i] * r[i];
    s = warp_sum(s);
    const float inv = 1.0f / fmaxf(sqrtf(s), eps);
    for (int i = lane; i < C; i += 32) r[i] *= inv;
}

extern "C" int lt_cuda_l2norm(lt_cuda_ctx *c, float *x, int M, int C, float eps) {
    if (M <= 0) return 0;
    l2norm_kernel<<<(M + 7) / 8, 256, 0, c->stream>>>(x, M, C, eps);
    return launch_check("l2norm");
}

/* ---- LayerNorm and the head ------------------------------------------------------------------- */

/* LayerNorm of one row (C <= 32·NV) held in registers by one warp: lane owns columns lane + 32·i.
 * v receives the normalised, affine-transformed values (0 beyond C). */
template <int NV>
__device__ __forceinline__ void ln_row(const float *x, int C, const float *w, const float *b,
                                       float eps, float (&v)[NV], int lane) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int col = lane + 32 * i;
        v[i] = col < C ? x[col] : 0.0f;
        s += v[i];
    }
    const float mean = warp_sum(s) / (float)C;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int col = lane + 32 * i;
        const float d = col < C ? v[i] - mean : 0.0f;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(warp_sum(q) / (float)C + eps);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int col = lane + 32 * i;
        v[i] = col < C ? (v[i] - mean) * rstd * w[col] + b[col] : 0.0f;
    }
}

/* one warp per row; 8 rows per block of 256 */
template <typename T, int NV>
__global__ void layernorm_kernel(T *out, const float *in, const float *w, const float *b, int M,
                                 int C, float eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    float v[NV];
    ln_row<NV>(in + (int64_t)row * C, C, w, b, eps, v, lane);
    T *o = out + (int64_t)row * C;
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (lane + 32 * i < C) stf(o, lane + 32 * i, v[i]);
}

/* out (B,D) = l2normalize(LN(x[b, 0, :])) */
template <int NV>
__global__ void cls_head_kernel(float *out, const float *x, int B, int64_t T, int D, const float *w,
                                const float *b, float ln_eps, float l2_eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= B) return;
    float v[NV];
    ln_row<NV>(x + (int64_t)row * T * D, D, w, b, ln_eps, v, lane);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) s += v[i] * v[i];
    const float inv = 1.0f / fmaxf(sqrtf(warp_sum(s)), l2_eps);
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (lane + 32 * i < D) out[(int64_t)row * D + lane + 32 * i] = v[i] * inv;
}

/* Registers per lane for a row of C: the smallest instantiated NV with 32·NV >= C. */
#define LN_DISPATCH(C, MACRO)                                                                     \
    do {                                                                                          \
        const int nv_ = ((C) + 31) / 32;                                                          \
        if (nv_ <= 2) { MACRO(2); }                                                               \
        else if (nv_ <= 4) { MACRO(4); }                                                          \
        else if (nv_ <= 8) { MACRO(8); }                                                          \
        else if (nv_ <= 16) { MACRO(16); }                                                        \
        else if (nv_ <= 24) { MACRO(24); }                                                        \
        else if (nv_ <= 32) { MACRO(32); }                                                        \
        else if (nv_ <= 48) { MACRO(48); }                                                        \
        else { MACRO(64); }                                                                       \
    } while (0)

typedef struct {
    float mean[3], std[3];
} norm3;

/* The CPU's lt_mix_normalize expression, rounded step by step (no FMA contraction). */
__device__ __forceinline__ float mix_norm(const uint8_t *a, const uint8_t *b, float wa, float wb,
                                          int64_t i, int ch, const norm3 &n) {
    float v = __fmul_rn(wa, (float)a[i]);
    if (b) v = __fadd_rn(v, __fmul_rn(wb, (float)b[i]));
    return __fdiv_rn(__fsub_rn(v, n.mean[ch]), n.std[ch]);
}

/* Without a partner (b NULL) λ is 1, whatever lambda holds (as lt-embed calls the CPU twin). */
__device__ __forceinline__ void mix_weights(const float *lambda, const uint8_t *b, int s,
                                            float *wa, float *wb) {
    const float l = lambda && b ? lambda[s] : 1.0f;
    *wa = __fdiv_rn(l, 255.0f);
    *wb = __fdiv_rn(__fsub_rn(1.0f, l), 255.0f);
}

/* Row ops v2 (LT_CUDA_ROWOPS=v2): 16-byte loads and stores, row coordinates computed once per
 * row (v1 computes them per element with 64-bit divisions). */
__device__ __forceinline__ void st4(float *p, int64_t i, float4 v) {
    *reinterpret_cast<float4 *>(p + i) = v;
}
__device__ __forceinline__ void st4(bf16 *p, int64_t i, float4 v) {
    uint2 u;
    u.x = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.x)) |
          ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.y)) << 16);
    u.y = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.z)) |
          ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.w)) << 16);
    *reinterpret_cast<uint2 *>(p + i) = u;
}

// EMU-BEGIN rowops
/* LayerNorm, one warp per row, 8 rows per block of 256; lane owns the float4 columns
 * 4·(lane + 32·i). Needs C % 4 == 0 and 16-byte aligned rows (8-byte for a bf16 out). */
template <typename T, int NV4>
__global__ void layernorm_v2_kernel(T *out, const float *in, const float *w, const float *b, int M,
                                    int C, float eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    const int C4 = C >> 2;
    const float4 *x = reinterpret_cast<const float4 *>(in + (int64_t)row * C);
    float4 v[NV4];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV4; i++) {
        const int c4 = lane + 32 * i;
        v[i] = c4 < C4 ? x[c4] : make_float4(0.f, 0.f, 0.f, 0.f);
        s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
    }
    const float mean = warp_sum(s) / (float)C;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < NV4; i++)
        if (lane + 32 * i < C4) {
            const float d0 = v[i].x - mean, d1 = v[i].y - mean, d2 = v[i].z - mean,
                        d3 = v[i].w - mean;
            q += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    const float rstd = 1.0f / sqrtf(warp_sum(q) / (float)C + eps);
    const float4 *w4 = reinterpret_cast<const float4 *>(w);
    const float4 *b4 = reinterpret_cast<const float4 *>(b);
#pragma unroll
    for (int i = 0; i < NV4; i++) {
        const int c4 = lane + 32 * i;
        if (c4 < C4) {
            const float4 ww = w4[c4], bw = b4[c4];
            float4 y;
            y.x = (v[i].x - mean) * rstd * ww.x + bw.x;
            y.y = (v[i].y - mean) * rstd * ww.y + bw.y;
            y.z = (v[i].z - mean) * rstd * ww.z + bw.z;
            y.w = (v[i].w - mean) * rstd * ww.w + bw.w;
            st4(out, (int64_t)row * C + 4 * c4, y);
        }
    }
}

/* x (B·T, D) fp32: one block per token row; D % 4 == 0, 16-byte aligned arrays */
__global__ void tokens_v2_kernel(float *x, const float *pemb, const float *tok0, const float *reg,
                                 const float *posb, int T, int G, int R, int D) {
    const int row = blockIdx.x, t = row % T, bi = row / T, D4 = D >> 2;
    float4 *dst = reinterpret_cast<float4 *>(x + (int64_t)row * D);
    if (t <= R) { /* the class token (t = 0) or a register */
        const float *s = t == 0 ? tok0 : reg + (int64_t)(t - 1) * D;
        const float4 *src = reinterpret_cast<const float4 *>(s);
        for (int i = threadIdx.x; i < D4; i += blockDim.x) dst[i] = src[i];
        return;
    }
    const int g = t - 1 - R;
    const float4 *pe = reinterpret_cast<const float4 *>(pemb + ((int64_t)bi * G + g) * D);
    const float4 *pb = reinterpret_cast<const float4 *>(posb + (int64_t)g * D);
    for (int i = threadIdx.x; i < D4; i += blockDim.x) {
        const float4 a = pe[i], p = pb[i];
        dst[i] = make_float4(a.x + p.x, a.y + p.y, a.z + p.z, a.w + p.w);
    }
}

/* uint8 views → patch rows: one block per patch row r = (b, gy, gx), threads over its columns */
template <typename T>
__global__ void patchify_views_v2_kernel(T *out, int ld, const uint8_t *a, const uint8_t *b,
                                         const float *lambda, norm3 n, int H, int W, int p) {
    const int r = blockIdx.x, gw = W / p, G = (H / p) * gw, K = 3 * p * p, pp = p * p;
    const int bi = r / G, gi = r % G, y0 = (gi / gw) * p, x0 = (gi % gw) * p;
    float wa, wb;
    mix_weights(lambda, b, bi, &wa, &wb);
    T *o = out + (int64_t)r * ld;
    for (int k = threadIdx.x; k < ld; k += blockDim.x) {
        float v = 0.0f;
        if (k < K) {
            const int ch = k / pp, rem = k - ch * pp, ky = rem / p, kx = rem - ky * p;
            const int64_t src = (((int64_t)bi * H + y0 + ky) * W + x0 + kx) * 3 + ch;
            v = mix_norm(a, b, wa, wb, src, ch, n);
        }
        stf(o, k, v);
    }
}
// EMU-END rowops

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

extern "C" int lt_cuda_layernorm(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type,
                                 const float *in, const float *w, const float *b, int M, int C,
                                 float eps) {
    if (M <= 0) return 0;
    if (C <= 0 || C > 2048) return lt_err_set("cuda layernorm: C = %d (1..2048 supported)", C);
    const int grid = (M + 7) / 8;
    if (c->sw.rowops >= 2 && C % 4 == 0 && aligned16(in) && aligned16(w) && aligned16(b) &&
        ((uintptr_t)out & (out_type == LT_CUDA_BF16 ? 7 : 15)) == 0) {
        const int nv4 = (C / 4 + 31) / 32;
#define LN2_LAUNCH(NV4)                                                                           \
    if (out_type == LT_CUDA_BF16)                                                                 \
        layernorm_v2_kernel<bf16, NV4><<<grid, 256, 0, c->stream>>>((bf16 *)out, in, w, b, M, C,   \
                                                                    eps);                         \
    else                                                                                          \
        layernorm_v2_kernel<float, NV4><<<grid, 256, 0, c->stream>>>((float *)out, in, w, b, M, C, \
                                                                     eps)
        if (nv4 <= 1) { LN2_LAUNCH(1); }
        else if (nv4 <= 2) { LN2_LAUNCH(2); }
        else if (nv4 <= 4) { LN2_LAUNCH(4); }
        else if (nv4 <= 6) { LN2_LAUNCH(6); }
        else if (nv4 <= 8) { LN2_LAUNCH(8); }
        else if (nv4 <= 12) { LN2_LAUNCH(12); }
        else { LN2_LAUNCH(16); }
#undef LN2_LAUNCH
        return launch_check("layernorm (v2)");
    }
#define LN_LAUNCH(NV)                                                                             \
    if (out_type == LT_CUDA_BF16)                                                                 \
        layernorm_kernel<bf16, NV><<<grid, 256, 0, c->stream>>>((bf16 *)out, in, w, b, M, C, eps); \
    else                                                                                          \
        layernorm_kernel<float, NV><<<grid, 256, 0, c->stream>>>((float *)out, in, w, b, M, C, eps)
    LN_DISPATCH(C, LN_LAUNCH);
#undef LN_LAUNCH
    return launch_check("layernorm");
}

extern "C" int lt_cuda_cls_head(lt_cuda_ctx *c, float *out, const float *x, int B, int T, int D,
                                const float *w, const float *b, float ln_eps, float l2_eps) {
    if (B <= 0) return 0;
    if (D <= 0 || D > 2048) return lt_err_set("cuda cls head: D = %d (1..2048 supported)", D);
    const int grid = (B + 7) / 8;
#define HEAD_LAUNCH(NV)                                                                           \
    cls_head_kernel<NV><<<grid, 256, 0, c->stream>>>(out, x, B, T, D, w, b, ln_eps, l2_eps)
    LN_DISPATCH(D, HEAD_LAUNCH);
#undef HEAD_LAUNCH
    return launch_check("cls_head");
}

/* ---- input: normalisation, patchify, tokens -------------------------------------------------- */

__global__ void mix_normalize_kernel(float *out, const uint8_t *a, const uint8_t *b,
                                     const float *lambda, norm3 n, int B, int64_t npix) {
    const int64_t total = (int64_t)B * npix * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float wa, wb;
        mix_weights(lambda, b, (int)(i / (npix * 3)), &wa, &wb);
        out[i] = mix_norm(a, b, wa, wb, i, (int)(i % 3), n);
    }
}

extern "C" int lt_cuda_mix_normalize(lt_cuda_ctx *c, float *out, const uint8_t *a,
                                     const uint8_t *b, const float *lambda, const float mean[3],
                                     const float std[3], int B, int64_t npix) {
    const int64_t total = (int64_t)B * npix * 3;
    if (total <= 0) return 0;
    norm3 n;
    for (int i = 0; i < 3; i++) {
        n.mean[i] = mean[i];
        n.std[i] = std[i];
    }
    mix_normalize_kernel<<<grid_1d(total, 256), 256, 0, c->stream>>>(out, a, b, lambda, n, B, npix);
    return launch_check("mix_normalize");
}

/* Patch rows r = (b, gy, gx), columns k = (c, ky, kx) (+ zero padding up to ld):
 * out[r, k] = x[b, gy·p + ky, gx·p + kx, c], x either fp32 NHWC or uint8 views (then normalised). */
template <typename T, bool VIEWS>
__global__ void patchify_kernel(T *out, int ld, const float *x, const uint8_t *a, const uint8_t *b,
                                const float *lambda, norm3 n, int B, int H, int W, int C, int p) {
    const int gh = H / p, gw = W / p, K = C * p * p;
    const int64_t total = (int64_t)B * gh * gw * ld;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / ld;
        const int k = (int)(i % ld);
        if (k >= K) {
            stf(out, i, 0.0f);
            continue;
        }
        const int ch = k / (p * p), rem = k % (p * p), ky = rem / p, kx = rem % p;
        const int bi = (int)(r / ((int64_t)gh * gw)), g = (int)(r % ((int64_t)gh * gw));
        const int y = (g / gw) * p + ky, xx = (g % gw) * p + kx;
        const int64_t src = (((int64_t)bi * H + y) * W + xx) * C + ch;
        float v;
        if (VIEWS) {
            float wa, wb;
            mix_weights(lambda, b, bi, &wa, &wb);
            v = mix_norm(a, b, wa, wb, src, ch, n);
        } else {
            v = x[src];
        }
        stf(out, i, v);
    }
}

static int patchify_args(int ld_out, int B, int H, int W, int C, int p) {
    if (p <= 0 || H / p <= 0 || W / p <= 0 || B <= 0)
        return lt_err_set("cuda patchify: %d images of %dx%d, patch %d", B, H, W, p);
    if (ld_out < C * p * p) return lt_err_set("cuda patchify: ld_out %d < %d", ld_out, C * p * p);
    return 0;
}

extern "C" int lt_cuda_patchify(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out,
                                const float *x, int B, int H, int W, int C, int p) {
    if (patchify_args(ld_out, B, H, W, C, p)) return -1;
    const int64_t total = (int64_t)B * (H / p) * (W / p) * ld_out;
    norm3 n;
    memset(&n, 0, sizeof n);
    if (out_type == LT_CUDA_BF16)
        patchify_kernel<bf16, false><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (bf16 *)out, ld_out, x, NULL, NULL, NULL, n, B, H, W, C, p);
    else
        patchify_kernel<float, false><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (float *)out, ld_out, x, NULL, NULL, NULL, n, B, H, W, C, p);
    return launch_check("patchify");
}

extern "C" int lt_cuda_patchify_views(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type,
                                      int ld_out, const uint8_t *a, const uint8_t *b,
                                      const float *lambda, const float mean[3],
                                      const float std[3], int B, int H, int W, int p) {
    if (patchify_args(ld_out, B, H, W, 3, p)) return -1;
    const int64_t total = (int64_t)B * (H / p) * (W / p) * ld_out;
    norm3 n;
    for (int i = 0; i < 3; i++) {
        n.mean[i] = mean[i];
        n.std[i] = std[i];
    }
    const int64_t prow = (int64_t)B * (H / p) * (W / p);
    if (c->sw.rowops >= 2 && prow <= 0x7fffffff) {
        const int threads = ld_out >= 256 ? 256 : 32 * ((ld_out + 31) / 32);
        if (out_type == LT_CUDA_BF16)
            patchify_views_v2_kernel<bf16><<<(unsigned)prow, threads, 0, c->stream>>>(
                (bf16 *)out, ld_out, a, b, lambda, n, H, W, p);
        else
            patchify_views_v2_kernel<float><<<(unsigned)prow, threads, 0, c->stream>>>(
                (float *)out, ld_out, a, b, lambda, n, H, W, p);
        return launch_check("patchify_views (v2)");
    }
    if (out_type == LT_CUDA_BF16)
        patchify_kernel<bf16, true><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (bf16 *)out, ld_out, NULL, a, b, lambda, n, B, H, W, 3, p);
    else
        patchify_kernel<float, true><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (float *)out, ld_out, NULL, a, b, lambda, n, B, H, W, 3, p);
    return launch_check("patchify_views");
}

/* x (B,T,D): [tok0, reg, pemb + posb] per image */
__global__ void tokens_kernel(float *x, const float *pemb, const float *tok0, const float *reg,
                              const float *posb, int B, int G, int R, int D) {
    const int T = 1 + R + G;
    const int64_t total = (int64_t)B * T * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % D);
        const int64_t row = i / D;
        const int t = (int)(row % T), bi = (int)(row / T);
        float v;
        if (t == 0) v = tok0[d];
        else if (t <= R) v = reg[(int64_t)(t - 1) * D + d];
        else {
            const int g = t - 1 - R;
            v = pemb[((int64_t)bi * G + g) * D + d] + posb[(int64_t)g * D + d];
        }
        x[i] = v;
    }
}

extern "C" int lt_cuda_tokens(lt_cuda_ctx *c, float *x, const float *pemb, const float *tok0,
                              const float *reg, const float *posb, int B, int G, int R, int D) {
    const int64_t total = (int64_t)B * (1 + R + G) * D;
    if (total <= 0) return 0;
    if (R > 0 && !reg) return lt_err_set("cuda tokens: %d registers but no register tokens", R);
    if (c->sw.rowops >= 2 && D % 4 == 0 && aligned16(x) && aligned16(pemb) && aligned16(tok0) &&
        (!reg || aligned16(reg)) && aligned16(posb) && (int64_t)B * (1 + R + G) <= 0x7fffffff) {
        const int threads = D / 4 >= 128 ? 128 : 32 * ((D / 4 + 31) / 32);
        tokens_v2_kernel<<<(unsigned)(B * (1 + R + G)), threads, 0, c->stream>>>(x, pemb, tok0, reg,
                                                                                posb, 1 + R + G, G,
                                                                                R, D);
        return launch_check("tokens (v2)");
    }
    tokens_kernel<<<grid_1d(total, 256), 256, 0, c->stream>>>(x, pemb, tok0, reg, posb, B, G, R, D);
    return launch_check("tokens");
}

/* ---- attention, fp32 (CUDA cores) ------------------------------------------------------------- */

#define AF_Q 64 /* queries per block: one thread each */
#define AF_K 64 /* keys per shared-memory tile */

/* grid (B·heads, ceil(N/64)), block 64. qkv (B, N, 3, heads, 64) → out (B, N, heads·64).
 * Thread = one query row; q and the output accumulator live in registers; keys stream through
 * shared memory; softmax online per key (running max m, running sum l). */
__global__ void __launch_bounds__(AF_Q) attn_f32_kernel(float *out, const float *qkv, int N,
                                                        int heads, float scale) {
    __shared__ __align__(16) float Ks[AF_K][64];
    __shared__ __align__(16) float Vs[AF_K][64];
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int qi = blockIdx.y * AF_Q + threadIdx.x;
    const float *base = qkv + (int64_t)b * N * ld + h * 64;
    const bool valid = qi < N;
    float q[64], o[64];
#pragma unroll
    for (int d = 0; d < 64; d += 4) {
        float4 v = valid ? *reinterpret_cast<const float4 *>(base + qi * ld + d)
                         : make_float4(0.f, 0.f, 0.f, 0.f);
        q[d] = v.x;
        q[d + 1] = v.y;
        q[d + 2] = v.z;
        q[d + 3] = v.w;
        o[d] = o[d + 1] = o[d + 2] = o[d + 3] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < N; k0 += AF_K) {
        __syncthreads(); /* everyone is done with the previous tile */
        for (int i = threadIdx.x; i < AF_K * 16; i += AF_Q) {
            const int key = i >> 4, c4 = (i & 15) * 4;
            float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
            if (k0 + key < N) {
                const float *src = base + (int64_t)(k0 + key) * ld + c4;
                kv = *reinterpret_cast<const float4 *>(src + D);
                vv = *reinterpret_cast<const float4 *>(src + 2 * D);
            }
            *reinterpret_cast<float4 *>(&Ks[key][c4]) = kv;
            *reinterpret_cast<float4 *>(&Vs[key][c4]) = vv;
        }
        __syncthreads();
        const int nk = min(AF_K, N - k0);
        for (int j = 0; j < nk; j++) {
            float s = 0.0f;
#pragma unroll
            for (int d = 0; d < 64; d += 4) {
                const float4 k4 = *reinterpret_cast<const float4 *>(&Ks[j][d]);
                s += q[d] * k4.x + q[d + 1] * k4.y + q[d + 2] * k4.z + q[d + 3] * k4.w;
            }
            s *= scale;
            if (s > m) {
                const float corr = expf(m - s);
                l *= corr;
#pragma unroll
                for (int d = 0; d < 64; d++) o[d] *= corr;
                m = s;
            }
            const float pj = expf(s - m);
            l += pj;
#pragma unroll
            for (int d = 0; d < 64; d += 4) {
                const float4 v4 = *reinterpret_cast<const float4 *>(&Vs[j][d]);
                o[d] += pj * v4.x;
                o[d + 1] += pj * v4.y;
                o[d + 2] += pj * v4.z;
                o[d + 3] += pj * v4.w;
            }
        }
    }
    if (!valid) return;
    const float inv = 1.0f / l;
    float *dst = out + ((int64_t)b * N + qi) * D + h * 64;
#pragma unroll
    for (int d = 0; d < 64; d += 4)
        *reinterpret_cast<float4 *>(dst + d) =
            make_float4(o[d] * inv, o[d + 1] * inv, o[d + 2] * inv, o[d + 3] * inv);
}

/* ---- attention, bf16 (tensor cores, mma.sync m16n8k16) ----------------------------------------
 *
 * Block = 4 warps = 64 query rows of one (image, head); warp w owns rows 16w..16w+15. Keys come in
 * tiles of 64 through shared memory: K as [key][dim], V transposed as [dim][key], rows padded to
 * 72 elements so that the fragment loads below hit 32 different banks.
 *
 * Fragments of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4·g + t:
 *   A (16×16, row-major), 4 regs of 2 bf16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1],
 *                                            a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]
 *   B (16×8, k×n), 2 regs: b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
 *   C/D (16×8 fp32), 4 floats: c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
 * (the lower-indexed element in the low 16 bits). S = Q·Kᵀ per 8-key tile j is a C fragment;
 * two adjacent tiles (2kk, 2kk+1) form exactly the A fragment of P for keys 16kk..16kk+15, so the
 * probabilities never leave registers (the FlashAttention-2 arrangement). */

#define AB_Q 64  /* queries per block */
#define AB_K 64  /* keys per tile */
#define AB_LD 72 /* padded shared row (bf16 elements) */

__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void)d; (void)a; (void)b0; (void)b1;
    __trap(); /* bf16 tensor-core attention needs sm_80 or newer */
#endif
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const uint32_t l = __bfloat16_as_ushort(__float2bfloat16_rn(lo));
    const uint32_t h = __bfloat16_as_ushort(__float2bfloat16_rn(hi));
    return l | (h << 16);
}

__device__ __forceinline__ uint32_t ld_u32(const bf16 *p) {
    return *reinterpret_cast<const uint32_t *>(p);
}

/* grid (B·heads, ceil(N/64)), block 128. */
__global__ void __launch_bounds__(128) attn_bf16_kernel(bf16 *out, const bf16 *qkv, int N,
                                                        int heads, float scale_log2) {
    __shared__ __align__(16) bf16 Ks[AB_K * AB_LD]; /* [key][dim] */
    __shared__ __align__(16) bf16 Vt[64 * AB_LD];   /* [dim][key] */
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.y * AB_Q + warp * 16 + g, r1 = r0 + 8; /* this lane's two rows */
    const bf16 *qb = qkv + (int64_t)b * N * ld + h * 64;          /* Q of token 0 */
    const bf16 *kb = qb + D, *vb = qb + 2 * D;

    /* Q as A fragments, 4 steps of 16 dims; rows past N are zeros */
    uint32_t qf[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const int col = kk * 16 + 2 * t;
        qf[kk][0] = r0 < N ? ld_u32(qb + r0 * ld + col) : 0u;
        qf[kk][1] = r1 < N ? ld_u32(qb + r1 * ld + col) : 0u;
        qf[kk][2] = r0 < N ? ld_u32(qb + r0 * ld + col + 8) : 0u;
        qf[kk][3] = r1 < N ? ld_u32(qb + r1 * ld + col + 8) : 0u;
    }
    float o[8][4]; /* O (16 rows × 64 dims) as 8 C fragments of 8 dims */
#pragma unroll
    for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY; /* running max of rows r0, r1 (log2 units) */
    float l0 = 0.0f, l1 = 0.0f;           /* running sums, this lane's share */

    for (int k0 = 0; k0 < N; k0 += AB_K) {
        __syncthreads(); /* all warps are done with the previous tile */
        /* K tile: 8 lanes read one key's 128 bytes (coalesced), store 16 bytes each */
        for (int i = threadIdx.x; i < AB_K * 8; i += 128) {
            const int key = i >> 3, ch = i & 7;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + key < N) v = *reinterpret_cast<const uint4 *>(kb + (k0 + key) * ld + ch * 8);
            *reinterpret_cast<uint4 *>(&Ks[key * AB_LD + ch * 8]) = v;
        }
        /* V tile, transposed: consecutive lanes take consecutive keys of one 8-dim chunk, so the
         * 2-byte stores of a warp fall in 16 consecutive words (no bank conflicts) */
        for (int i = threadIdx.x; i < AB_K * 8; i += 128) {
            const int key = i & (AB_K - 1), ch = i / AB_K;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + key < N) v = *reinterpret_cast<const uint4 *>(vb + (k0 + key) * ld + ch * 8);
            const bf16 *e = reinterpret_cast<const bf16 *>(&v);
#pragma unroll
            for (int k = 0; k < 8; k++) Vt[(ch * 8 + k) * AB_LD + key] = e[k];
        }
        __syncthreads();

        /* S (16 × 64 keys) = Q Kᵀ: B[k = dim][n = key] = Ks[key][dim] */
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const bf16 *kp = &Ks[(8 * j + g) * AB_LD + kk * 16 + 2 * t];
                mma_16816(s[j], qf[kk], ld_u32(kp), ld_u32(kp + 8));
            }
        }
        /* scale to log2 units, mask keys >= N, row maxima over the 4 lanes of a row */
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const bool in = k0 + 8 * j + 2 * t + e < N;
                s[j][e] = in ? s[j][e] * scale_log2 : -INFINITY;
                s[j][2 + e] = in ? s[j][2 + e] * scale_log2 : -INFINITY;
                mx0 = fmaxf(mx0, s[j][e]);
                mx1 = fmaxf(mx1, s[j][2 + e]);
            }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        /* every tile holds key k0 < N, so the new maxima are finite */
        const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        const float c0 = exp2f(m0 - n0), c1 = exp2f(m1 - n1); /* 0 on the first tile */
        m0 = n0;
        m1 = n1;
        l0 *= c0;
        l1 *= c1;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            o[j][0] *= c0;
            o[j][1] *= c0;
            o[j][2] *= c1;
            o[j][3] *= c1;
        }
        /* P = 2^(S − m) as A fragments: keys 16kk..16kk+15 = S tiles 2kk (a0, a1), 2kk+1 (a2, a3) */
        uint32_t pf[4][4];
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int j = 2 * kk + half;
                const float p0 = exp2f(s[j][0] - m0), p1 = exp2f(s[j][1] - m0);
                const float p2 = exp2f(s[j][2] - m1), p3 = exp2f(s[j][3] - m1);
                l0 += p0 + p1;
                l1 += p2 + p3;
                pf[kk][2 * half] = pack_bf16x2(p0, p1);     /* row g */
                pf[kk][2 * half + 1] = pack_bf16x2(p2, p3); /* row g + 8 */
            }
        /* O += P V: B[k = key][n = dim] = Vt[dim][key] */
#pragma unroll
        for (int jd = 0; jd < 8; jd++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const bf16 *vp = &Vt[(8 * jd + g) * AB_LD + kk * 16 + 2 * t];
                mma_16816(o[jd], pf[kk], ld_u32(vp), ld_u32(vp + 8));
            }
    }
    /* full row sums: add the shares of the 4 lanes of each row */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    bf16 *ob = out + (int64_t)b * N * D + h * 64;
#pragma unroll
    for (int jd = 0; jd < 8; jd++) {
        const int col = 8 * jd + 2 * t;
        if (r0 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r0 * D + col) =
                pack_bf16x2(o[jd][0] * i0, o[jd][1] * i0);
        if (r1 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r1 * D + col) =
                pack_bf16x2(o[jd][2] * i1, o[jd][3] * i1);
    }
}

/* ---- attention, bf16, v2: K and V of one (image, head) resident in shared memory ---------------
 *
 * v1 above gives each block 64 queries and streams K and V through shared memory in 64-key tiles.
 * At ViT-B/14's N = 257 that costs twice: (1) each (image, head) is read from L2 by 5 blocks (5 ×
 * 80 KB per (image, head), ~1.3 GB per layer at batch 256), and (2) the work is padded to 320 ×
 * 320 (the last query block has 1 live row of 64, the last key tile 1 live key of 64): 1.55× the
 * useful products. v2: one block of 6 warps per (image, head) loads the whole K and V once
 * (cp.async, 16-byte rows, keys >= N zero-filled) into [key][dim] tiles padded to 72 elements
 * (rows 144 bytes apart: every 8-row ldmatrix phase hits 32 different banks); the warps then take
 * 16-query chunks in turn (17 for N = 257) and sweep the keys in 64-key steps, skipping the
 * 16-key granules past ceil16(N): 272 × 272 padded work (1.12×). K fragments come from ldmatrix
 * (x4: two 16-dim steps of one 8-key tile), V fragments from ldmatrix.trans (so V needs no
 * transposed copy); softmax and P as in v1 (same arithmetic, so the same results up to the order
 * of the row sums). Shared memory 2 · ceil16(N) · 144 bytes (78 KB at N = 257: 2 blocks per SM). */

#define A2_WARPS 6
#define A2_LD 72

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16-byte global → shared copy; src_bytes 0 writes zeros (src is not read) */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(src_bytes));
#else
    (void)dst; (void)src; (void)src_bytes;
    __trap();
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

/* ldmatrix x4: lanes 8i..8i+7 give the row addresses of 8×8 matrix i (16 bytes each); lane
 * 4g + t receives r[i] = M_i[g][2t..2t+1] (trans: M_i[2t..2t+1][g]). */
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16 *p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
#else
    (void)p;
    r[0] = r[1] = r[2] = r[3] = 0u;
    __trap();
#endif
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16 *p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
#else
    (void)p;
    r[0] = r[1] = r[2] = r[3] = 0u;
    __trap();
#endif
}

// EMU-BEGIN attn2 (tests emulate this region on the host: keep helpers outside it)
/* grid (B·heads), block A2_WARPS·32, dynamic shared memory 2 · ceil16(N) · A2_LD · 2 bytes */
__global__ void __launch_bounds__(A2_WARPS * 32, 2)
    attn_bf16_v2_kernel(bf16 *out, const bf16 *qkv, int N, int heads, float scale_log2) {
    extern __shared__ __align__(16) unsigned char a2_smem[];
    const int Np = (N + 15) & ~15;
    bf16 *Ks = reinterpret_cast<bf16 *>(a2_smem); /* [Np][A2_LD] */
    bf16 *Vs = Ks + (int64_t)Np * A2_LD;           /* [Np][A2_LD] */
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int lr = lane & 7, li = lane >> 3; /* ldmatrix: row of matrix li this lane addresses */
    const bf16 *qb = qkv + (int64_t)b * N * ld + h * 64; /* Q of token 0 */
    const bf16 *kb = qb + D, *vb = qb + 2 * D;

    for (int i = threadIdx.x; i < Np * 8; i += A2_WARPS * 32) {
        const int key = i >> 3, c8 = (i & 7) * 8;
        const int in = key < N;
        const int64_t off = (int64_t)(in ? key : 0) * ld + c8;
        cp_async16(&Ks[key * A2_LD + c8], kb + off, in ? 16 : 0);
        cp_async16(&Vs[key * A2_LD + c8], vb + off, in ? 16 : 0);
    }
    cp_async_wait_all();
    __syncthreads();

    bf16 *ob = out + (int64_t)b * N * D + h * 64;
    for (int chunk = warp; chunk < (Np >> 4); chunk += A2_WARPS) {
        const int r0 = chunk * 16 + g, r1 = r0 + 8; /* this lane's two query rows */
        uint32_t qf[4][4];
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const int col = kk * 16 + 2 * t;
            qf[kk][0] = r0 < N ? ld_u32(qb + r0 * ld + col) : 0u;
            qf[kk][1] = r1 < N ? ld_u32(qb + r1 * ld + col) : 0u;
            qf[kk][2] = r0 < N ? ld_u32(qb + r0 * ld + col + 8) : 0u;
            qf[kk][3] = r1 < N ? ld_u32(qb + r1 * ld + col + 8) : 0u;
        }
        float o[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
        float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

        for (int k0 = 0; k0 < Np; k0 += 64) {
            const int n16 = min(4, (Np - k0) >> 4); /* live 16-key granules of this step */
            float s[8][4];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
                if (j < 2 * n16) {
#pragma unroll
                    for (int kk = 0; kk < 4; kk += 2) {
                        uint32_t kf[4]; /* B fragments of dim steps kk (0, 1) and kk + 1 (2, 3) */
                        ldsm_x4(kf, &Ks[(k0 + 8 * j + lr) * A2_LD + kk * 16 + 8 * li]);
                        mma_16816(s[j], qf[kk], kf[0], kf[1]);
                        mma_16816(s[j], qf[kk + 1], kf[2], kf[3]);
                    }
                }
            }
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const bool in = k0 + 8 * j + 2 * t + e < N;
                    s[j][e] = in ? s[j][e] * scale_log2 : -INFINITY;
                    s[j][2 + e] = in ? s[j][2 + e] * scale_log2 : -INFINITY;
                    mx0 = fmaxf(mx0, s[j][e]);
                    mx1 = fmaxf(mx1, s[j][2 + e]);
                }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            /* every step holds key k0 < N (Np − N < 16), so the new maxima are finite */
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
            const float c0 = exp2f(m0 - n0), c1 = exp2f(m1 - n1);
            m0 = n0;
            m1 = n1;
            l0 *= c0;
            l1 *= c1;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                o[j][0] *= c0;
                o[j][1] *= c0;
                o[j][2] *= c1;
                o[j][3] *= c1;
            }
            uint32_t pf[4][4];
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    const int j = 2 * kk + half;
                    const float p0 = exp2f(s[j][0] - m0), p1 = exp2f(s[j][1] - m0);
                    const float p2 = exp2f(s[j][2] - m1), p3 = exp2f(s[j][3] - m1);
                    l0 += p0 + p1;
                    l1 += p2 + p3;
                    pf[kk][2 * half] = pack_bf16x2(p0, p1);
                    pf[kk][2 * half + 1] = pack_bf16x2(p2, p3);
                }
            /* O += P V: keys 16kk.., B fragments of dims 8jd (0, 1) and 8(jd + 1) (2, 3) */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                if (kk < n16) {
#pragma unroll
                    for (int jd = 0; jd < 8; jd += 2) {
                        uint32_t vf[4];
                        ldsm_x4_t(vf, &Vs[(k0 + 16 * kk + 8 * (li & 1) + lr) * A2_LD + 8 * jd +
                                          8 * (li >> 1)]);
                        mma_16816(o[jd], pf[kk], vf[0], vf[1]);
                        mma_16816(o[jd + 1], pf[kk], vf[2], vf[3]);
                    }
                }
            }
        }
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
        for (int jd = 0; jd < 8; jd++) {
            const int col = 8 * jd + 2 * t;
            if (r0 < N)
                *reinterpret_cast<uint32_t *>(ob + (int64_t)r0 * D + col) =
                    pack_bf16x2(o[jd][0] * i0, o[jd][1] * i0);
            if (r1 < N)
                *reinterpret_cast<uint32_t *>(ob + (int64_t)r1 * D + col) =
                    pack_bf16x2(o[jd][2] * i1, o[jd][3] * i1);
        }
    }
}
// EMU-END attn2

/* ---- attention, bf16, v3: FlashAttention-2 style, K/V tiles streamed and double-buffered -------
 *
 * v2 loads the whole K and V of an (image, head) before any product (the load latency is exposed
 * once per block, and with 78 KB of shared memory only 2 blocks of 6 warps fit an SM), and its
 * warps walk several 16-query chunks one after another, each fetching its Q from global memory.
 * v3 is the FlashAttention-2 loop: a block of nw <= A3_MAXW warps owns 16·nw consecutive queries
 * of one (image, head), one 16-row chunk per warp; Q goes through shared memory once (cp.async,
 * then ldmatrix into A fragments that stay in registers); K and V stream through shared memory in
 * tiles of 64 keys, two stages deep (cp.async: tile kt + 1 is in flight while tile kt is used), B
 * fragments by ldmatrix (x4: K as [key][dim], V with .trans, no transposed copy). S = Q·Kᵀ and
 * O += P·V on mma.sync.m16n8k16 (bf16 in, fp32 accumulation); the online softmax stays in
 * registers in raw score units, with the 1/√64 · log2(e) scale folded into one FMA before ex2
 * (ex2.approx.ftz); P is rounded to bf16 (cvt.rn.bf16x2) straight into A fragments (the m16n8k16
 * C layout of two 8-key S tiles is the A layout of one 16-key step: no shared-memory round trip).
 * Ragged ends: the last key tile loads and multiplies only ceil16 of its live keys (T = 257: one
 * 8-key S tile and one 16-key P·V step instead of 64), scores of keys >= N are −∞, rows of K/V
 * past N are zero-filled (never NaN garbage); the query chunks are balanced over the blocks of an
 * (image, head): nqb = ceil(chunks / maxw) blocks of nw = ceil(chunks / nqb) warps, maxw =
 * LT_CUDA_ATTN_WARPS (default 8; T = 257: 17 chunks → 3 blocks of 6 warps, one idle warp in 18,
 * K/V read 3 times per (image, head); maxw = 4: 5 blocks of 4), and a warp whose chunk starts
 * past N only helps to load. The grid is 1-D with the nqb blocks of one (image, head) adjacent, so
 * they run together and K/V come from HBM once and from L2 after. Registers: 125 of the 128 that
 * __launch_bounds__(256, 2) allows, no spills (96 at 3 blocks of 6 warps: 56 bytes spilled, as
 * 18 warps put 5 on one scheduler). Shared memory (16·nw + 4·64) · 144 bytes (50.7 KB at nw = 6).
 * Occupancy at T = 257: 2 blocks of 6 warps per SM (registers); at maxw = 4: 4 blocks of 4. */

#define A3_MAXW 8 /* warps per block at most (16 query rows each) = LT_CUDA_ATTN_WARPS_MAX */
#define A3_MINB 2 /* blocks per SM the register budget is sized for (65536 / (2·256) → <= 128) */
#define A3_KT 64  /* keys per tile */
#define A3_LD 72  /* padded shared row (bf16 elements): 144 bytes, conflict-free ldmatrix phases */

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* waits until at most N of this thread's committed cp.async groups are still in flight */
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* 2^x, MUFU.EX2 with flush-to-zero (2^−∞ = 0; relative error ~2^−22, far under bf16's) */
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* (lo, hi) → bf16x2 in one cvt.rn.bf16x2.f32: lo in the low half, as pack_bf16x2 */
__device__ __forceinline__ uint32_t pack_bf16x2_rn(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// EMU-BEGIN attn3 (tests emulate this region on the host: keep helpers outside it)
/* grid (B·heads·nqb), block nw·32 (nw <= A3_MAXW), dynamic shared memory
 * (16·nw + 4·A3_KT) · A3_LD · 2 bytes */
__global__ void __launch_bounds__(A3_MAXW * 32, A3_MINB)
    attn_bf16_v3_kernel(bf16 *out, const bf16 *qkv, int N, int heads, int nqb, float scale_log2) {
    extern __shared__ __align__(16) unsigned char a2_smem[];
    const int nw = blockDim.x >> 5, nthr = blockDim.x;
    bf16 *Qs = reinterpret_cast<bf16 *>(a2_smem); /* [16·nw][A3_LD] */
    bf16 *KVs = Qs + nw * 16 * A3_LD;              /* stage s: K [A3_KT][A3_LD], then V */
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int bh = blockIdx.x / nqb, qblk = blockIdx.x - bh * nqb;
    const int b = bh / heads, h = bh - b * heads;
    const int q0 = qblk * nw * 16; /* first query of the block */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int lr = lane & 7, li = lane >> 3; /* ldmatrix: row of matrix li this lane addresses */
    const bf16 *qb = qkv + (int64_t)b * N * ld + h * 64; /* Q of token 0 */
    const bf16 *kb = qb + D, *vb = qb + 2 * D;

    /* Q rows q0 .. q0 + 16nw − 1 (rows >= N zero-filled): group 0 with the first K/V tile */
    for (int i = tid; i < nw * 16 * 8; i += nthr) {
        const int r = i >> 3, c8 = (i & 7) * 8, q = q0 + r;
        const int in = q < N;
        cp_async16(&Qs[r * A3_LD + c8], qb + (int64_t)(in ? q : 0) * ld + c8, in ? 16 : 0);
    }
    const int nkt = (N + A3_KT - 1) / A3_KT;
    /* K/V tile kt → stage kt & 1; only the first ceil16(live keys) rows, zero-filled past N */
    auto load_kv = [&](int kt) {
        const int k0 = kt * A3_KT;
        const int rows = min(A3_KT, (N - k0 + 15) & ~15);
        bf16 *Kd = KVs + (kt & 1) * (2 * A3_KT * A3_LD), *Vd = Kd + A3_KT * A3_LD;
        for (int i = tid; i < rows * 8; i += nthr) {
            const int r = i >> 3, c8 = (i & 7) * 8, key = k0 + r;
            const int in = key < N;
            const int64_t off = (int64_t)(in ? key : 0) * ld + c8;
            cp_async16(&Kd[r * A3_LD + c8], kb + off, in ? 16 : 0);
            cp_async16(&Vd[r * A3_LD + c8], vb + off, in ? 16 : 0);
        }
    };
    load_kv(0);
    cp_async_commit();

    const bool live = q0 + warp * 16 < N; /* this warp's chunk holds a query */
    uint32_t qf[4][4];                    /* Q as A fragments, 4 steps of 16 dims */
    float o[8][4];                        /* O (16 rows × 64 dims) as 8 C fragments */
#pragma unroll
    for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY; /* running max of rows g, g + 8 (raw scores) */
    float l0 = 0.0f, l1 = 0.0f;           /* running sums, this lane's share */

    for (int kt = 0; kt < nkt; kt++) {
        if (kt + 1 < nkt) {
            load_kv(kt + 1); /* into the stage tile kt − 1 used (freed by the barrier below) */
            cp_async_commit();
            cp_async_wait<1>(); /* this thread's copies of tile kt (and Q) have landed */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); /* ... and everybody's */
        if (live) {
            if (kt == 0) {
#pragma unroll
                for (int kk = 0; kk < 4; kk++)
                    ldsm_x4(qf[kk], &Qs[(warp * 16 + (lane & 15)) * A3_LD + kk * 16 + (lane >> 4) * 8]);
            }
            const bf16 *Kt = KVs + (kt & 1) * (2 * A3_KT * A3_LD), *Vt = Kt + A3_KT * A3_LD;
            const int k0 = kt * A3_KT;
            const int n8 = min(8, (N - k0 + 7) >> 3); /* 8-key S tiles holding a live key */
            const int n16 = (n8 + 1) >> 1;             /* 16-key P·V steps */
            /* S (16 × 64 keys) = Q Kᵀ: B[k = dim][n = key] = K[key][dim] */
            float s[8][4];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
                if (j < n8) {
#pragma unroll
                    for (int kk = 0; kk < 4; kk += 2) {
                        uint32_t kf[4]; /* B fragments of dim steps kk (0, 1) and kk + 1 (2, 3) */
                        ldsm_x4(kf, &Kt[(8 * j + lr) * A3_LD + kk * 16 + 8 * li]);
                        mma_16816(s[j], qf[kk], kf[0], kf[1]);
                        mma_16816(s[j], qf[kk + 1], kf[2], kf[3]);
                    }
                }
            }
            if (k0 + A3_KT > N) { /* the ragged last tile: keys >= N (and S tiles not computed) */
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        if (k0 + 8 * j + 2 * t + e >= N) s[j][e] = s[j][2 + e] = -INFINITY;
            }
            float mx0 = s[0][0], mx1 = s[0][2];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
                mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            /* every tile holds key k0 < N, so the new maxima are finite */
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
            const float c0 = fast_exp2((m0 - n0) * scale_log2); /* 0 on the first tile */
            const float c1 = fast_exp2((m1 - n1) * scale_log2);
            m0 = n0;
            m1 = n1;
            const float ms0 = n0 * scale_log2, ms1 = n1 * scale_log2;
            l0 *= c0;
            l1 *= c1;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                o[j][0] *= c0;
                o[j][1] *= c0;
                o[j][2] *= c1;
                o[j][3] *= c1;
            }
            /* P = 2^(S·scale − m·scale) as A fragments: keys 16kk.. = S tiles 2kk (a0, a1) and
             * 2kk + 1 (a2, a3); S tiles past the live keys are 0 without an ex2 */
            uint32_t pf[4][4];
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    const int j = 2 * kk + half;
                    float p0 = 0.0f, p1 = 0.0f, p2 = 0.0f, p3 = 0.0f;
                    if (j < n8) {
                        p0 = fast_exp2(fmaf(s[j][0], scale_log2, -ms0));
                        p1 = fast_exp2(fmaf(s[j][1], scale_log2, -ms0));
                        p2 = fast_exp2(fmaf(s[j][2], scale_log2, -ms1));
                        p3 = fast_exp2(fmaf(s[j][3], scale_log2, -ms1));
                    }
                    l0 += p0 + p1;
                    l1 += p2 + p3;
                    pf[kk][2 * half] = pack_bf16x2_rn(p0, p1);     /* row g */
                    pf[kk][2 * half + 1] = pack_bf16x2_rn(p2, p3); /* row g + 8 */
                }
            /* O += P V: keys 16kk.., B fragments of dims 8jd (0, 1) and 8(jd + 1) (2, 3) */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                if (kk < n16) {
#pragma unroll
                    for (int jd = 0; jd < 8; jd += 2) {
                        uint32_t vf[4];
                        ldsm_x4_t(vf, &Vt[(16 * kk + 8 * (li & 1) + lr) * A3_LD + 8 * jd +
                                          8 * (li >> 1)]);
                        mma_16816(o[jd], pf[kk], vf[0], vf[1]);
                        mma_16816(o[jd + 1], pf[kk], vf[2], vf[3]);
                    }
                }
            }
        }
        __syncthreads(); /* all warps are done with stage kt & 1 before tile kt + 2 goes there */
    }
    if (!live) return;
    /* full row sums: add the shares of the 4 lanes of each row */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    const int r0 = q0 + warp * 16 + g, r1 = r0 + 8; /* this lane's two query rows */
    bf16 *ob = out + (int64_t)b * N * D + h * 64;
#pragma unroll
    for (int jd = 0; jd < 8; jd++) {
        const int col = 8 * jd + 2 * t;
        if (r0 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r0 * D + col) =
                pack_bf16x2_rn(o[jd][0] * i0, o[jd][1] * i0);
        if (r1 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r1 * D + col) =
                pack_bf16x2_rn(o[jd][2] * i1, o[jd][3] * i1);
    }
}
// EMU-END attn3

extern "C" int lt_cuda_attention(lt_cuda_ctx *c, void *out, const void *qkv, lt_cuda_dtype t,
                                 int B, int N, int heads, int hd) {
    if (B <= 0 || N <= 0) return 0;
    if (hd != 64) return lt_err_set("cuda attention: head dim %d (only 64 is implemented)", hd);
    if (heads <= 0 || (int64_t)B * heads > 0x7fffffff || N > 65535 * 64)
        return lt_err_set("cuda attention: B=%d N=%d heads=%d out of range", B, N, heads);
    if (((uintptr_t)qkv | (uintptr_t)out) & 15)
        return lt_err_set("cuda attention: qkv and out must be 16-byte aligned");
    if (t == LT_CUDA_BF16 && c->sw.attn == 3) {
        /* 16-query chunks balanced over nqb blocks of nw warps per (image, head) */
        const int nch = (N + 15) / 16;
        const int maxw = c->sw.attn_warps;
        const int nqb = (nch + maxw - 1) / maxw;
        const int nw = (nch + nqb - 1) / nqb;
        const int smem = (nw * 16 + 4 * A3_KT) * A3_LD * (int)sizeof(bf16);
        const int smem_max = (A3_MAXW * 16 + 4 * A3_KT) * A3_LD * (int)sizeof(bf16);
        if ((int64_t)B * heads * nqb > 0x7fffffff)
            return lt_err_set("cuda attention: B=%d N=%d heads=%d out of range", B, N, heads);
        if (smem_max <= c->smem_optin) {
            if (smem_max > 48 * 1024 && !c->attn3_smem_set) {
                CUDA_TRY(cudaFuncSetAttribute(attn_bf16_v3_kernel,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              smem_max),
                         "cudaFuncSetAttribute(attention v3, %d bytes of shared memory)",
                         smem_max);
                c->attn3_smem_set = 1;
            }
            static_assert(A3_MAXW == LT_CUDA_ATTN_WARPS_MAX, "v3 block size");
            const float scale_log2 = 0.125f * 1.4426950408889634f; /* 64^-½ · log2(e) */
            attn_bf16_v3_kernel<<<(unsigned)((int64_t)B * heads * nqb), nw * 32, smem,
                                  c->stream>>>((bf16 *)out, (const bf16 *)qkv, N, heads, nqb,
                                               scale_log2);
            return launch_check("attention (bf16 v3, K/V tiles streamed)");
        }
        /* (no device of cc >= 8.0 has less shared memory per block than this) */
    }
    if (t == LT_CUDA_BF16 && c->sw.attn == 2) {
        const int smem = 2 * ((N + 15) & ~15) * A2_LD * (int)sizeof(bf16);
        if (smem <= c->smem_optin) {
            if (smem > 48 * 1024 && !c->attn2_smem_set) {
                CUDA_TRY(cudaFuncSetAttribute(attn_bf16_v2_kernel,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              c->smem_optin),
                         "cudaFuncSetAttribute(attention v2, %d bytes of shared memory)",
                         c->smem_optin);
                c->attn2_smem_set = 1;
            }
            const float scale_log2 = 0.125f * 1.4426950408889634f;
            attn_bf16_v2_kernel<<<(unsigned)(B * heads), A2_WARPS * 32, smem, c->stream>>>(
                (bf16 *)out, (const bf16 *)qkv, N, heads, scale_log2);
            return launch_check("attention (bf16 v2, K/V resident)");
        }
        /* too long for shared memory: v1 streams the keys */
    }
    if (t == LT_CUDA_BF16) {
        dim3 grid((unsigned)(B * heads), (unsigned)((N + AB_Q - 1) / AB_Q));
        const float scale_log2 = 0.125f * 1.4426950408889634f; /* 64^-½ · log2(e) */
        attn_bf16_kernel<<<grid, 128, 0, c->stream>>>((bf16 *)out, (const bf16 *)qkv, N, heads,
                                                      scale_log2);
        return launch_check("attention (bf16, mma.sync)");
    }
    dim3 grid((unsigned)(B * heads), (unsigned)((N + AF_Q - 1) / AF_Q));
    attn_f32_kernel<<<grid, AF_Q, 0, c->stream>>>((float *)out, (const float *)qkv, N, heads,
                                                  0.125f);
    return launch_check("attention (fp32)");
}
