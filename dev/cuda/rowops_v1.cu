/* rowops_v1.cu: the first row kernels of lt ("row ops v1": LayerNorm one lane per column, the token
 * assembly and views → patches one thread per element) against the vectorised ones the library
 * takes whenever the shapes allow ("v2": 16-byte loads, one warp or block per row), on the same
 * inputs: a check that both give the same results, and a benchmark.
 *
 * Why it exists: LT_CUDA_ROWOPS=v1 used to force the first kernels for every shape; they stay in
 * the library (ops_cuda_rows.cu) as the general path for the shapes the vectorised ones cannot
 * take (C or D not a multiple of 4, unaligned rows), and this program is what still times the two
 * against each other at the teacher's sizes. The general kernels are reached through
 * lt_cuda_*_general (nn/ops_cuda_internal.cuh), the vectorised ones through the public functions.
 *
 *   make dev-cuda && build/dev/cuda/rowops_v1 [--batch 256 --reps 20]
 *
 * Checks (NMSE of general vs vectorised): token assembly and views → patches bitwise equal;
 * LayerNorm <= 1e-12 with an fp32 output (the summation order differs), <= 1e-5 with bf16 (a
 * rounding may flip). Prints one "RESULT kernel=rowops-v1 op=... ms=... prod_ms=..." line per op
 * at the ViT-B/14 size (batch --batch, 224², 257 tokens, D 768). Exit 0 all checks passed, 1 a
 * failure, 77 no GPU. */
#include "common.cuh"

static int fails;

static void verdict(const char *op, const char *size, double e, double limit) {
    const int ok = e <= limit; /* NaN fails */
    printf("%s %-14s %-34s general vs vectorised NMSE %.2e (limit %.0e)\n", ok ? "ok  " : "FAIL",
           op, size, e, limit);
    fails += !ok;
}

static void result(const char *op, float ms_old, float ms_new, double bytes) {
    printf("RESULT kernel=rowops-v1 op=%s ms=%.4f prod_ms=%.4f speedup_prod=%.3f prod_gbs=%.0f\n",
           op, ms_old, ms_new, ms_old / ms_new, bytes / (ms_new * 1e6));
}

/* LayerNorm of M rows of C: in fp32, out of type t */
static void layernorm(lt_cuda_ctx *c, int M, int C, lt_cuda_dtype t, int reps) {
    const int64_t n = (int64_t)M * C;
    float *x = dev_randn(n, 2.0f), *w = dev_randn(C, 0.3f), *b = dev_randn(C, 0.3f);
    for (int i = 0; i < C; i++) w[i] += 1.0f;
    float *dx = (float *)dev_upload(c, x, n, LT_CUDA_F32);
    float *dw = (float *)dev_upload(c, w, C, LT_CUDA_F32);
    float *db = (float *)dev_upload(c, b, C, LT_CUDA_F32);
    void *o_old = NULL, *o_new = NULL;
    DEV_LT(lt_cuda_malloc(&o_old, (size_t)n * lt_cuda_dtype_size(t), "general output"));
    DEV_LT(lt_cuda_malloc(&o_new, (size_t)n * lt_cuda_dtype_size(t), "vectorised output"));
    DEV_LT(lt_cuda_layernorm_general(c, o_old, t, dx, dw, db, M, C, 1e-6f));
    DEV_LT(lt_cuda_layernorm(c, o_new, t, dx, dw, db, M, C, 1e-6f));
    float *a = dev_download(c, o_old, n, t), *r = dev_download(c, o_new, n, t);
    char size[64];
    snprintf(size, sizeof size, "M=%d C=%d out %s", M, C, t == LT_CUDA_BF16 ? "bf16" : "fp32");
    verdict("layernorm", size, dev_nmse(a, r, n), t == LT_CUDA_BF16 ? 1e-5 : 1e-12);
    if (reps > 0) {
        cudaStream_t s = (cudaStream_t)lt_cuda_ctx_stream(c);
        const float ms_old = dev_time_ms(s, reps, [&] {
            DEV_LT(lt_cuda_layernorm_general(c, o_old, t, dx, dw, db, M, C, 1e-6f));
        });
        const float ms_new = dev_time_ms(s, reps, [&] {
            DEV_LT(lt_cuda_layernorm(c, o_new, t, dx, dw, db, M, C, 1e-6f));
        });
        result(t == LT_CUDA_BF16 ? "layernorm-bf16" : "layernorm-fp32", ms_old, ms_new,
               (double)n * (4 + lt_cuda_dtype_size(t)));
    }
    lt_cuda_free(dx);
    lt_cuda_free(dw);
    lt_cuda_free(db);
    lt_cuda_free(o_old);
    lt_cuda_free(o_new);
    free(x);
    free(w);
    free(b);
    free(a);
    free(r);
}

/* token assembly: B images of G patches, R registers, width D */
static void tokens(lt_cuda_ctx *c, int B, int G, int R, int D, int reps) {
    const int T = 1 + R + G;
    const int64_t n = (int64_t)B * T * D;
    float *pemb = dev_randn((int64_t)B * G * D, 1.0f), *tok0 = dev_randn(D, 1.0f);
    float *reg = dev_randn((int64_t)(R ? R : 1) * D, 1.0f), *posb = dev_randn((int64_t)G * D, 1.0f);
    float *dp = (float *)dev_upload(c, pemb, (int64_t)B * G * D, LT_CUDA_F32);
    float *dt = (float *)dev_upload(c, tok0, D, LT_CUDA_F32);
    float *dr = (float *)dev_upload(c, reg, (int64_t)(R ? R : 1) * D, LT_CUDA_F32);
    float *dpos = (float *)dev_upload(c, posb, (int64_t)G * D, LT_CUDA_F32);
    void *o_old = NULL, *o_new = NULL;
    DEV_LT(lt_cuda_malloc(&o_old, (size_t)n * 4, "general output"));
    DEV_LT(lt_cuda_malloc(&o_new, (size_t)n * 4, "vectorised output"));
    float *x_old = (float *)o_old, *x_new = (float *)o_new;
    DEV_LT(lt_cuda_tokens_general(c, x_old, dp, dt, R ? dr : NULL, dpos, B, G, R, D));
    DEV_LT(lt_cuda_tokens(c, x_new, dp, dt, R ? dr : NULL, dpos, B, G, R, D));
    float *a = dev_download(c, o_old, n, LT_CUDA_F32), *r = dev_download(c, o_new, n, LT_CUDA_F32);
    char size[64];
    snprintf(size, sizeof size, "B=%d G=%d R=%d D=%d", B, G, R, D);
    verdict("tokens", size, memcmp(a, r, (size_t)n * 4) ? 1.0 : 0.0, 0.0);
    if (reps > 0) {
        cudaStream_t s = (cudaStream_t)lt_cuda_ctx_stream(c);
        const float ms_old = dev_time_ms(s, reps, [&] {
            DEV_LT(lt_cuda_tokens_general(c, x_old, dp, dt, R ? dr : NULL, dpos, B, G, R, D));
        });
        const float ms_new = dev_time_ms(s, reps, [&] {
            DEV_LT(lt_cuda_tokens(c, x_new, dp, dt, R ? dr : NULL, dpos, B, G, R, D));
        });
        result("tokens", ms_old, ms_new, (double)n * 4 + (double)B * G * D * 4);
    }
    lt_cuda_free(dp);
    lt_cuda_free(dt);
    lt_cuda_free(dr);
    lt_cuda_free(dpos);
    lt_cuda_free(o_old);
    lt_cuda_free(o_new);
    free(pemb);
    free(tok0);
    free(reg);
    free(posb);
    free(a);
    free(r);
}

/* uint8 views (B, H, W, 3) with a mixup partner → patch rows (B·gh·gw, ld) of type t */
static void views(lt_cuda_ctx *c, int B, int H, int W, int p, lt_cuda_dtype t, int reps) {
    const int ld = (3 * p * p + 7) & ~7;
    const int64_t npx = (int64_t)B * H * W * 3, n = (int64_t)B * (H / p) * (W / p) * ld;
    uint8_t *ha = (uint8_t *)malloc((size_t)npx), *hb = (uint8_t *)malloc((size_t)npx);
    float *lam = (float *)malloc((size_t)B * sizeof(float));
    if (!ha || !hb || !lam) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < npx; i++) {
        ha[i] = (uint8_t)(dev_u64() >> 56);
        hb[i] = (uint8_t)(dev_u64() >> 56);
    }
    for (int i = 0; i < B; i++) lam[i] = (float)dev_uni();
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    void *da = NULL, *db = NULL, *o_old = NULL, *o_new = NULL;
    DEV_LT(lt_cuda_malloc(&da, (size_t)npx, "views a"));
    DEV_LT(lt_cuda_malloc(&db, (size_t)npx, "views b"));
    float *dl = (float *)dev_upload(c, lam, B, LT_CUDA_F32);
    DEV_LT(lt_cuda_upload(c, da, ha, (size_t)npx));
    DEV_LT(lt_cuda_upload(c, db, hb, (size_t)npx));
    DEV_LT(lt_cuda_sync(c));
    const size_t es = lt_cuda_dtype_size(t);
    DEV_LT(lt_cuda_malloc(&o_old, (size_t)n * es, "general output"));
    DEV_LT(lt_cuda_malloc(&o_new, (size_t)n * es, "vectorised output"));
    const uint8_t *a8 = (const uint8_t *)da, *b8 = (const uint8_t *)db;
    DEV_LT(lt_cuda_patchify_views_general(c, o_old, t, ld, a8, b8, dl, mean, std, B, H, W, p));
    DEV_LT(lt_cuda_patchify_views(c, o_new, t, ld, a8, b8, dl, mean, std, B, H, W, p));
    float *a = dev_download(c, o_old, n, t), *r = dev_download(c, o_new, n, t);
    char size[64];
    snprintf(size, sizeof size, "B=%d %dx%d p=%d out %s", B, H, W, p,
             t == LT_CUDA_BF16 ? "bf16" : "fp32");
    verdict("views→patches", size, memcmp(a, r, (size_t)n * 4) ? 1.0 : 0.0, 0.0);
    if (reps > 0) {
        cudaStream_t s = (cudaStream_t)lt_cuda_ctx_stream(c);
        const float ms_old = dev_time_ms(s, reps, [&] {
            DEV_LT(lt_cuda_patchify_views_general(c, o_old, t, ld, a8, b8, dl, mean, std, B, H, W,
                                                  p));
        });
        const float ms_new = dev_time_ms(s, reps, [&] {
            DEV_LT(lt_cuda_patchify_views(c, o_new, t, ld, a8, b8, dl, mean, std, B, H, W, p));
        });
        result(t == LT_CUDA_BF16 ? "views-bf16" : "views-fp32", ms_old, ms_new,
               2.0 * npx + (double)n * es);
    }
    lt_cuda_free(da);
    lt_cuda_free(db);
    lt_cuda_free(dl);
    lt_cuda_free(o_old);
    lt_cuda_free(o_new);
    free(ha);
    free(hb);
    free(lam);
    free(a);
    free(r);
}

int main(int argc, char **argv) {
    if (!lt_cuda_available()) {
        printf("rowops v1: SKIP: no CUDA device\n");
        return 77;
    }
    char info[256];
    if (lt_cuda_device_info(info, sizeof info) == 0) printf("device: %s\n", info);
    lt_cuda_ctx *c = NULL;
    DEV_LT(lt_cuda_ctx_create(&c));
    dev_seed();
    const int B = dev_opt(argc, argv, "--batch", 256), reps = dev_opt(argc, argv, "--reps", 20);

    /* small sizes: checks only */
    for (int bt = 0; bt < 2; bt++) {
        const lt_cuda_dtype t = bt ? LT_CUDA_BF16 : LT_CUDA_F32;
        layernorm(c, 257, 64, t, 0);
        layernorm(c, 5, 100, t, 0);
        layernorm(c, 33, 1536, t, 0);
        views(c, 3, 56, 70, 14, t, 0);
    }
    tokens(c, 3, 16, 0, 64, 0);
    tokens(c, 2, 5, 1, 36, 0);
    /* ViT-B/14 at 224, batch B: checks and timings */
    layernorm(c, B * 257, 768, LT_CUDA_BF16, reps);
    layernorm(c, B * 257, 768, LT_CUDA_F32, reps);
    tokens(c, B, 256, 4, 768, reps);
    views(c, B, 224, 224, 14, LT_CUDA_BF16, reps);

    lt_cuda_ctx_free(c);
    printf("rowops v1: %s\n", fails ? "SOME CHECKS FAILED" : "all checks passed");
    return fails ? 1 : 0;
}
