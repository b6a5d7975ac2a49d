/* common.cuh: what the kernel benchmarks of dev/cuda/ share: a context of the library, random
 * inputs with a printed seed, NMSE, CUDA-event timing, a few command-line options, and the device
 * helpers of the earlier attention kernels that the production kernel no longer uses.
 *
 * Why it exists: each program here pits one superseded kernel against the production one through
 * the same harness, so that their numbers compare; the harness is written once. Host code in a
 * header: every program is a single .cu file that includes it once. */
#ifndef LT_DEV_CUDA_COMMON_CUH
#define LT_DEV_CUDA_COMMON_CUH

#include "nn/ops_cuda_internal.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- failures ---------------------------------------------------------------------------------- */

/* a CUDA runtime call that must succeed, or the program ends with the error */
#define DEV_CHECK(call)                                                                           \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

/* an lt_* call (0 or -1 + lt_err) that must succeed */
#define DEV_LT(call)                                                                              \
    do {                                                                                          \
        if ((call) != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, lt_err_msg());          \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

/* ---- options ----------------------------------------------------------------------------------- */

/* "--name N" among argv, else dflt */
static int dev_opt(int argc, char **argv, const char *name, int dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return atoi(argv[i + 1]);
    return dflt;
}

/* ---- random inputs (xorshift64*, seed printed; LT_TEST_SEED=N repeats a run) ------------------ */

static uint64_t dev_rng = 1;

static void dev_seed(void) {
    const char *env = getenv("LT_TEST_SEED");
    uint64_t s = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    printf("seed %llu (LT_TEST_SEED=%llu repeats this run)\n", (unsigned long long)s,
           (unsigned long long)s);
    dev_rng = s ? s : 1;
}

static uint64_t dev_u64(void) {
    dev_rng ^= dev_rng >> 12;
    dev_rng ^= dev_rng << 25;
    dev_rng ^= dev_rng >> 27;
    return dev_rng * 2685821657736338717ULL;
}

static double dev_uni(void) { return (double)(dev_u64() >> 11) * (1.0 / 9007199254740992.0); }

static float dev_gauss(void) {
    const double u = dev_uni(), v = dev_uni();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* n floats, N(0, scale²); exits when out of memory */
static float *dev_randn(int64_t n, float scale) {
    float *p = (float *)malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) p[i] = scale * dev_gauss();
    return p;
}

/* a device array of n elements of type t holding x (rounded to bf16 for LT_CUDA_BF16) */
static void *dev_upload(lt_cuda_ctx *c, const float *x, int64_t n, lt_cuda_dtype t) {
    void *d = NULL;
    DEV_LT(lt_cuda_malloc(&d, (size_t)n * lt_cuda_dtype_size(t), "benchmark input"));
    DEV_LT(lt_cuda_upload_f32(c, d, t, x, n));
    return d;
}

/* the n elements of type t at d, as fp32 (malloc'ed) */
static float *dev_download(lt_cuda_ctx *c, const void *d, int64_t n, lt_cuda_dtype t) {
    float *h = (float *)malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!h) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    DEV_LT(lt_cuda_download_f32(c, h, d, t, n));
    return h;
}

/* Σ(a − b)² / Σ b²; NaN when any element is not finite */
static double dev_nmse(const float *a, const float *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return NAN;
        const double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

/* ---- timing ------------------------------------------------------------------------------------ */

/* Milliseconds per call of f (which enqueues on stream s): two calls to warm up, then reps calls
 * between two CUDA events. */
template <class F> static float dev_time_ms(cudaStream_t s, int reps, F f) {
    cudaEvent_t e0, e1;
    DEV_CHECK(cudaEventCreate(&e0));
    DEV_CHECK(cudaEventCreate(&e1));
    f();
    f();
    DEV_CHECK(cudaEventRecord(e0, s));
    for (int i = 0; i < reps; i++) f();
    DEV_CHECK(cudaEventRecord(e1, s));
    DEV_CHECK(cudaEventSynchronize(e1));
    float ms = 0.0f;
    DEV_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    DEV_CHECK(cudaEventDestroy(e0));
    DEV_CHECK(cudaEventDestroy(e1));
    return ms / (float)reps;
}

/* ---- device helpers of the earlier attention kernels (v1, v2) ---------------------------------- */

/* (lo, hi) → bf16x2 in two conversions (v3 uses one cvt.rn.bf16x2: pack_bf16x2_rn) */
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const uint32_t l = __bfloat16_as_ushort(__float2bfloat16_rn(lo));
    const uint32_t h = __bfloat16_as_ushort(__float2bfloat16_rn(hi));
    return l | (h << 16);
}

static __device__ __forceinline__ uint32_t ld_u32(const bf16 *p) {
    return *reinterpret_cast<const uint32_t *>(p);
}

/* commits this thread's cp.async copies and waits for all of them */
static __device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

#endif
