/* ops_cuda_common.cu: the plumbing of the CUDA backend (nn/ops_cuda.h): precisions and storage
 * types, bf16 conversions on the host, error reporting, device queries, memory, the context
 * (stream, cuBLASLt handle, workspace) and its implementation switches, copies.
 *
 * Why it exists: every op family (ops_cuda_gemm.cu, ops_cuda_rows.cu, ops_cuda_attention.cu)
 * runs on a context made here and reports errors the same way (ops_cuda_internal.cuh); keeping
 * this apart leaves the kernel files with kernels only. */
#include "nn/ops_cuda_internal.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- error reporting ------------------------------------------------------------------------ */

int cuda_fail(cudaError_t e, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lt_err_set("%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int cublas_fail(cublasStatus_t s, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lt_err_set("%s: %s (%s)", what, cublasLtGetStatusString(s), cublasLtGetStatusName(s));
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

extern "C" int lt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" int lt_cuda_available(void) { return lt_cuda_device_count() > 0; }

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

/* ---- implementation switches ------------------------------------------------------------------ */

/* Variables of earlier versions whose non-default values selected kernels that now live in
 * dev/cuda/ (attention v1 and v2, the first row kernels, all of them at once): setting one to
 * something else than the default gets one warning per process, so that a run that meant to time
 * an old kernel does not pass for one. */
static void warn_retired_switches(void) {
    static int warned;
    if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) return;
    const char *legacy = getenv("LT_CUDA_LEGACY");
    const char *attn = getenv("LT_CUDA_ATTN");
    const char *rows = getenv("LT_CUDA_ROWOPS");
    if (legacy && *legacy && strcmp(legacy, "0") != 0)
        fprintf(stderr, "lt: warning: LT_CUDA_LEGACY=%s is not read any more: the first kernels "
                        "are benchmarked in dev/cuda/ (make dev-cuda); LT_CUDA_AUTOTUNE=0 turns "
                        "the GEMM autotuning off\n", legacy);
    if (attn && *attn && strcmp(attn, "v3") != 0 && strcmp(attn, "3") != 0 &&
        strcmp(attn, "new") != 0)
        fprintf(stderr, "lt: warning: LT_CUDA_ATTN=%s is not read any more: the library has one "
                        "bf16 attention kernel (v3); v1 and v2 are benchmarked in dev/cuda/\n",
                attn);
    if (rows && *rows && strcmp(rows, "v2") != 0 && strcmp(rows, "2") != 0 &&
        strcmp(rows, "new") != 0)
        fprintf(stderr, "lt: warning: LT_CUDA_ROWOPS=%s is not read any more: the row ops take "
                        "the vectorised kernels whenever the shapes allow; dev/cuda/rowops_v1 "
                        "times the general ones\n", rows);
}

/* LT_CUDA_AUTOTUNE=N, LT_CUDA_ATTN_WARPS=N, LT_CUDA_TUNE_LOG=1; see ops_cuda.h. */
extern "C" void lt_cuda_switches_from_env(lt_cuda_switches *s) {
    s->autotune = LT_CUDA_AUTOTUNE_DEFAULT;
    const char *at = getenv("LT_CUDA_AUTOTUNE");
    if (at && *at) {
        const long n = strtol(at, NULL, 10);
        s->autotune = n < 0 ? 0 : n > LT_CUDA_AUTOTUNE_MAX ? LT_CUDA_AUTOTUNE_MAX : (int)n;
    }
    s->attn_warps = LT_CUDA_ATTN_WARPS_MAX;
    const char *aw = getenv("LT_CUDA_ATTN_WARPS");
    if (aw && *aw) {
        const long n = strtol(aw, NULL, 10);
        s->attn_warps = n < 1 ? 1 : n > LT_CUDA_ATTN_WARPS_MAX ? LT_CUDA_ATTN_WARPS_MAX : (int)n;
    }
    const char *log = getenv("LT_CUDA_TUNE_LOG");
    s->tune_log = log && *log && strcmp(log, "0") != 0;
    warn_retired_switches();
}

extern "C" void lt_cuda_ctx_get_switches(const lt_cuda_ctx *c, lt_cuda_switches *s) { *s = c->sw; }
extern "C" void lt_cuda_ctx_set_switches(lt_cuda_ctx *c, const lt_cuda_switches *s) {
    c->sw = *s;
    if (c->sw.autotune < 0) c->sw.autotune = 0;
    if (c->sw.autotune > LT_CUDA_AUTOTUNE_MAX) c->sw.autotune = LT_CUDA_AUTOTUNE_MAX;
    if (c->sw.attn_warps < 1 || c->sw.attn_warps > LT_CUDA_ATTN_WARPS_MAX)
        c->sw.attn_warps = LT_CUDA_ATTN_WARPS_MAX;
}

/* ---- the context -------------------------------------------------------------------------------- */

extern "C" void lt_cuda_ctx_free(lt_cuda_ctx *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    lt_cuda_plans_free(c);
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
