/* attention_bench.cuh: the check and benchmark that attention_v1.cu and attention_v2.cu run on
 * their kernel against the production one (lt_cuda_attention, bf16: kernel v3).
 *
 * Why it exists: an earlier kernel is only worth keeping if it can still be run and compared; both
 * programs share this harness, so their numbers line up with each other and with the library.
 *
 *   check: for each of a set of sizes (ragged and exact tile ends, ViT-B/14's 257 and 261
 *     tokens, long sequences), random qkv (N(0, 1), rounded to bf16 on upload), the old kernel and
 *     the production one, each compared with the CPU reference lt_op_attention on the fp32
 *     inputs: NMSE <= 1e-4, as tests/cuda/test_cuda_ops.c asks of the production kernel;
 *   benchmark: --batch B (256) --tokens N (257) --heads H (12) --reps R (20): milliseconds per
 *     call and TFLOP/s (4·B·H·N²·64 flops) of both, and the NMSE between their outputs; one line
 *     "RESULT kernel=attention-vX ..." for scripts/device-check.sh.
 * Exit 0 all checks passed, 1 a failure, 77 no GPU. */
#ifndef LT_DEV_CUDA_ATTENTION_BENCH_CUH
#define LT_DEV_CUDA_ATTENTION_BENCH_CUH

#include "common.cuh"

extern "C" {
#include "nn/ops.h"
}

/* The online-softmax step of the earlier kernels (v1 and v2), over one 8-column tile of scores
 * s (8 column pairs x 4: rows g, g + 8) whose keys start at k0 (lane t of its quad): scale to
 * log2 units and mask keys >= N, row maxima over the 4 lanes of a row, rescale the running sums
 * l and outputs o to the new maxima m, and P = 2^(S − m) packed as bf16 A fragments pf (keys
 * 16kk..16kk+15 = S tiles 2kk (a0, a1), 2kk+1 (a2, a3)). Every tile holds a key < N, so the new
 * maxima are finite. (The production kernel v3 has its own, online_softmax_tile.) */
static __device__ __forceinline__ void old_online_softmax(float (&s)[8][4], int k0, int t, int N,
                                                          float scale_log2, float &m0, float &m1,
                                                          float &l0, float &l1,
                                                          float (&o)[8][4],
                                                          uint32_t (&pf)[4][4]) {
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
}

/* Enqueues the old kernel on c's stream: 0, 1 when it cannot take this size (reason printed), or
 * -1 + lt_err. */
typedef int (*attn_launch_fn)(lt_cuda_ctx *c, bf16 *out, const bf16 *qkv, int B, int N, int heads);

/* one size: 0 passed or not applicable, 1 failed */
static int attn_check(lt_cuda_ctx *c, const char *name, attn_launch_fn launch, int B, int N,
                      int heads) {
    const int D = heads * 64;
    const int64_t nq = (int64_t)B * N * 3 * D, no = (int64_t)B * N * D;
    float *qkv = dev_randn(nq, 1.0f);
    float *ref = (float *)malloc((size_t)no * sizeof(float));
    float *scratch = (float *)malloc((size_t)lt_op_attention_scratch(N) * sizeof(float));
    if (!ref || !scratch) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    lt_op_attention(ref, qkv, scratch, B, N, heads, 64);
    bf16 *dq = (bf16 *)dev_upload(c, qkv, nq, LT_CUDA_BF16);
    void *d_old = NULL, *d_new = NULL;
    DEV_LT(lt_cuda_malloc(&d_old, (size_t)no * 2, "old output"));
    DEV_LT(lt_cuda_malloc(&d_new, (size_t)no * 2, "production output"));
    DEV_CHECK(cudaMemset(d_old, 0xff, (size_t)no * 2)); /* NaN: an unwritten element fails */
    DEV_CHECK(cudaMemset(d_new, 0xff, (size_t)no * 2));
    int bad = 0;
    const int rc = launch(c, (bf16 *)d_old, dq, B, N, heads);
    if (rc < 0) {
        printf("FAIL attention %s B=%d N=%d heads=%d: %s\n", name, B, N, heads, lt_err_msg());
        bad = 1;
    }
    DEV_LT(lt_cuda_attention(c, d_new, dq, LT_CUDA_BF16, B, N, heads, 64));
    DEV_LT(lt_cuda_sync(c));
    float *got_new = dev_download(c, d_new, no, LT_CUDA_BF16);
    const double e_new = dev_nmse(got_new, ref, no);
    double e_old = NAN;
    if (rc == 0) {
        float *got_old = dev_download(c, d_old, no, LT_CUDA_BF16);
        e_old = dev_nmse(got_old, ref, no);
        free(got_old);
    }
    const int ok_new = e_new <= 1e-4, ok_old = rc != 0 || e_old <= 1e-4;
    if (rc >= 0) {
        printf("%s attention B=%d N=%d heads=%d: %s NMSE %.2e%s, production NMSE %.2e (vs CPU "
               "fp32, limit 1e-4)\n",
               ok_new && ok_old ? "ok  " : "FAIL", B, N, heads, name, e_old,
               rc == 1 ? " (not run)" : "", e_new);
        bad |= !ok_new || !ok_old;
    }
    lt_cuda_free(dq);
    lt_cuda_free(d_old);
    lt_cuda_free(d_new);
    free(got_new);
    free(qkv);
    free(ref);
    free(scratch);
    return bad;
}

static int attention_bench_main(int argc, char **argv, const char *name, attn_launch_fn launch) {
    if (!lt_cuda_available()) {
        printf("attention %s: SKIP: no CUDA device\n", name);
        return 77;
    }
    char info[256];
    if (lt_cuda_device_info(info, sizeof info) == 0) printf("device: %s\n", info);
    lt_cuda_ctx *c = NULL;
    DEV_LT(lt_cuda_ctx_create(&c));
    dev_seed();

    static const int sizes[][3] = {{2, 257, 2}, {1, 1, 1},    {3, 65, 1}, {2, 261, 12},
                                   {1, 700, 2}, {4, 128, 3},  {1, 17, 2}, {1, 1000, 1},
                                   {2, 64, 3},  {2, 300, 2}};
    int fails = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        fails += attn_check(c, name, launch, sizes[s][0], sizes[s][1], sizes[s][2]);

    const int B = dev_opt(argc, argv, "--batch", 256), N = dev_opt(argc, argv, "--tokens", 257);
    const int H = dev_opt(argc, argv, "--heads", 12), reps = dev_opt(argc, argv, "--reps", 20);
    const int64_t nq = (int64_t)B * N * 3 * H * 64, no = (int64_t)B * N * H * 64;
    float *qkv = dev_randn(nq, 1.0f);
    bf16 *dq = (bf16 *)dev_upload(c, qkv, nq, LT_CUDA_BF16);
    free(qkv);
    void *d_old = NULL, *d_new = NULL;
    DEV_LT(lt_cuda_malloc(&d_old, (size_t)no * 2, "old output"));
    DEV_LT(lt_cuda_malloc(&d_new, (size_t)no * 2, "production output"));
    cudaStream_t st = (cudaStream_t)lt_cuda_ctx_stream(c);
    const int rc = launch(c, (bf16 *)d_old, dq, B, N, H);
    if (rc < 0) {
        printf("FAIL attention %s B=%d N=%d heads=%d: %s\n", name, B, N, H, lt_err_msg());
        fails++;
    }
    const double flop = 4.0 * B * H * (double)N * N * 64;
    const float ms_new = dev_time_ms(st, reps, [&] {
        DEV_LT(lt_cuda_attention(c, d_new, dq, LT_CUDA_BF16, B, N, H, 64));
    });
    if (rc == 0) {
        const float ms_old = dev_time_ms(st, reps, [&] {
            DEV_LT(launch(c, (bf16 *)d_old, dq, B, N, H) < 0 ? -1 : 0);
        });
        DEV_LT(lt_cuda_sync(c));
        float *o_old = dev_download(c, d_old, no, LT_CUDA_BF16);
        float *o_new = dev_download(c, d_new, no, LT_CUDA_BF16);
        const double e = dev_nmse(o_old, o_new, no);
        printf("RESULT kernel=attention-%s B=%d N=%d heads=%d ms=%.4f tflops=%.1f prod_ms=%.4f "
               "prod_tflops=%.1f speedup_prod=%.3f nmse_vs_prod=%.2e\n",
               name, B, N, H, ms_old, flop / (ms_old * 1e9), ms_new, flop / (ms_new * 1e9),
               ms_old / ms_new, e);
        free(o_old);
        free(o_new);
    } else if (rc == 1) {
        printf("RESULT kernel=attention-%s B=%d N=%d heads=%d ms=n/a prod_ms=%.4f "
               "prod_tflops=%.1f\n", name, B, N, H, ms_new, flop / (ms_new * 1e9));
    }
    lt_cuda_free(dq);
    lt_cuda_free(d_old);
    lt_cuda_free(d_new);
    lt_cuda_ctx_free(c);
    printf("attention %s: %s\n", name, fails ? "SOME CHECKS FAILED" : "all checks passed");
    return fails ? 1 : 0;
}

#endif
