/* test_cuda_ops.c: every op of nn/ops_cuda.h against its CPU twin of nn/ops.h (the reference), on
 * fresh random inputs, per precision, with a declared tolerance (ggml test-backend-ops style).
 *
 * Why it exists: the CUDA backend can only be trusted op by op against the CPU
 * (docs/architecture.md §4), and CI has no GPU: `make test-cuda` runs this on a GPU machine (tests/run-cuda.sh).
 *
 * Error measure: NMSE = Σ(gpu − cpu)² / Σ cpu², over all outputs; any NaN/Inf fails. The GPU
 * output is poisoned with NaN before each op, so an element the op forgot to write fails too.
 * Inputs are drawn from a seed taken from /dev/urandom (printed; LT_TEST_SEED=N repeats a run).
 * bf16 inputs are the fp32 inputs rounded to bf16 on the way up, so the bf16 error includes the
 * rounding of the inputs: it is the error against the CPU fp32 path.
 *
 * Tolerances (NMSE), and why:
 *   products (gemm, linear, attention): fp32 1e-9 (summation order only), tf32 1e-5 (10-bit
 *     operand mantissas: ~2e-7 expected), bf16 1e-4 (8-bit mantissas in and out: ~5e-6 expected);
 *   linear + cuBLASLt's tanh GELU: at most 1e-6 even in fp32 (the tanh form's own error vs erf);
 *   elementwise / LayerNorm / head: fp32 1e-10, bf16 output 1e-5 (one rounding: ~1.3e-6);
 *   normalisation of uint8 views, patchify, token assembly in fp32: bitwise equal.
 *
 * Output: one line per op, size and precision; exit 0 all passed, 1 a failure, 77 no GPU. */
#include "core/error.h"
#include "image/render.h"
#include "nn/ops.h"
#include "nn/ops_cuda.h"
#include "test_rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lt_cuda_ctx *ctx;
static int n_fail, n_ok;

/* ---- random inputs --------------------------------------------------------------------------- */


static float *randn(int64_t n, float scale) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) p[i] = scale * gauss();
    return p;
}


/* ---- device helpers: a failure prints lt_err and counts as FAIL ----------------------------- */

static void fail_msg(const char *op, const char *what) {
    printf("%-22s %-34s FAIL (%s: %s)\n", op, "", what, lt_err_msg());
    n_fail++;
}

/* A device copy of n fp32 values as type t (NULL on error). */
static void *up(const float *h, int64_t n, lt_cuda_dtype t) {
    void *d;
    if (lt_cuda_malloc(&d, (size_t)(n ? n : 1) * lt_cuda_dtype_size(t), "test input")) return NULL;
    if (lt_cuda_upload_f32(ctx, d, t, h, n)) {
        lt_cuda_free(d);
        return NULL;
    }
    return d;
}

/* A device array of n elements of type t filled with NaN. */
static void *poisoned(int64_t n, lt_cuda_dtype t) {
    float *nan = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!nan) return NULL;
    for (int64_t i = 0; i < n; i++) nan[i] = NAN;
    void *d = up(nan, n, t);
    free(nan);
    return d;
}

/* Host fp32 copy of a device array (NULL on error, incl. faults of the ops before). */
static float *down(const void *d, int64_t n, lt_cuda_dtype t) {
    float *h = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!h) return NULL;
    if (lt_cuda_sync(ctx) || lt_cuda_download_f32(ctx, h, d, t, n)) {
        free(h);
        return NULL;
    }
    return h;
}

/* Rounds a host array through bf16 (what the GPU sees of it) when t is BF16. */
static void round_as(float *p, int64_t n, lt_cuda_dtype t) {
    if (t == LT_CUDA_BF16)
        for (int64_t i = 0; i < n; i++) p[i] = lt_cuda_bf16_to_f32(lt_cuda_f32_to_bf16(p[i]));
}

/* ---- comparison -------------------------------------------------------------------------------- */

static const char *dtname(lt_cuda_dtype t) { return t == LT_CUDA_BF16 ? "bf16" : "fp32"; }

/* Compares got (GPU) with ref (CPU); prints one line; frees got. thr < 0: must be bitwise. */
static void compare(const char *op, const char *size, const char *prec, float *got,
                    const float *ref, int64_t n, double thr) {
    if (!got) {
        fail_msg(op, "reading the result");
        return;
    }
    double num = 0.0, den = 0.0, maxd = 0.0;
    int64_t bad = 0, diff = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            bad++;
            continue;
        }
        const double d = (double)got[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (fabs(d) > maxd) maxd = fabs(d);
        diff += got[i] != ref[i];
    }
    const double e = den > 0 ? num / den : num;
    int ok;
    if (thr < 0) {
        ok = !bad && !diff;
        printf("%-22s %-34s %-5s %s (%lld of %lld differ, max |diff| %.2e)%s\n", op, size, prec,
               ok ? "bitwise equal" : "NOT bitwise equal", (long long)diff, (long long)n, maxd,
               ok ? "  OK" : "  FAIL");
    } else {
        ok = !bad && e <= thr;
        printf("%-22s %-34s %-5s nmse %.3e (max |diff| %.2e) thr %.0e  %s", op, size, prec, e,
               maxd, thr, ok ? "OK" : "FAIL");
        if (bad) printf(" (%lld NaN/Inf or unwritten)", (long long)bad);
        printf("\n");
    }
    ok ? n_ok++ : n_fail++;
    free(got);
}

static double thr_prod(lt_precision p) {
    return p == LT_PREC_BF16 ? 1e-4 : p == LT_PREC_TF32 ? 1e-5 : 1e-9;
}
static double thr_elem(lt_cuda_dtype t) { return t == LT_CUDA_BF16 ? 1e-5 : 1e-10; }

/* ---- products --------------------------------------------------------------------------------- */

static void test_gemm(lt_precision prec, int ta, int tb, int M, int N, int K) {
    const lt_cuda_dtype t = lt_cuda_act_dtype(prec);
    const float alpha = 0.75f, beta = 0.5f;
    float *A = randn((int64_t)M * K, 1.0f), *B = randn((int64_t)K * N, 1.0f);
    float *C = randn((int64_t)M * N, 1.0f);
    const int lda = ta ? M : K, ldb = tb ? K : N;
    char size[64];
    snprintf(size, sizeof size, "M=%d N=%d K=%d ta=%d tb=%d", M, N, K, ta, tb);
    void *dA = up(A, (int64_t)M * K, t), *dB = up(B, (int64_t)K * N, t);
    void *dC = up(C, (int64_t)M * N, LT_CUDA_F32);
    if (!dA || !dB || !dC ||
        lt_cuda_gemm(ctx, prec, ta, tb, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, N,
                     LT_CUDA_F32)) {
        fail_msg("gemm", size);
    } else {
        float *got = down(dC, (int64_t)M * N, LT_CUDA_F32);
        lt_op_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, N);
        compare("gemm", size, lt_precision_name(prec), got, C, (int64_t)M * N, thr_prod(prec));
    }
    lt_cuda_free(dA);
    lt_cuda_free(dB);
    lt_cuda_free(dC);
    free(A);
    free(B);
    free(C);
}

/* variant: 0 bias, 1 bias + tanh GELU, 2 bias + erf GELU, 3 residual (fp32 out += ...),
 * 4 no bias, 5 bias with fp32 output from bf16 operands */
static void test_linear(lt_precision prec, int M, int K, int N, int variant) {
    static const char *names[] = {"linear+bias", "linear+gelu_tanh", "linear+gelu_erf",
                                  "linear+residual", "linear(no bias)", "linear->fp32"};
    const lt_cuda_dtype t = lt_cuda_act_dtype(prec);
    const lt_cuda_dtype ot = variant == 3 || variant == 5 ? LT_CUDA_F32 : t;
    float *in = randn((int64_t)M * K, 1.0f), *w = randn((int64_t)N * K, 1.0f / sqrtf((float)K));
    float *bias = randn(N, 0.5f), *x0 = randn((int64_t)M * N, 1.0f);
    float *ref = malloc((size_t)M * N * sizeof(float));
    char size[64];
    snprintf(size, sizeof size, "M=%d K=%d N=%d out %s", M, K, N, dtname(ot));
    const int has_bias = variant != 4;
    const lt_cuda_act act = variant == 1   ? LT_CUDA_ACT_GELU_TANH
                            : variant == 2 ? LT_CUDA_ACT_GELU_ERF
                                           : LT_CUDA_ACT_NONE;
    void *din = up(in, (int64_t)M * K, t), *dw = up(w, (int64_t)N * K, t);
    void *db = up(bias, N, ot);
    void *dout = variant == 3 ? up(x0, (int64_t)M * N, ot) : poisoned((int64_t)M * N, ot);
    if (!din || !dw || !db || !dout || !ref ||
        lt_cuda_linear(ctx, prec, dout, ot, din, dw, has_bias ? db : NULL, M, K, N, act,
                       variant == 3 ? 1.0f : 0.0f)) {
        fail_msg(names[variant], size);
    } else {
        float *got = down(dout, (int64_t)M * N, ot);
        lt_op_linear(ref, in, w, has_bias ? bias : NULL, M, K, N);
        if (act != LT_CUDA_ACT_NONE) lt_op_gelu(ref, ref, (int64_t)M * N);
        if (variant == 3)
            for (int64_t i = 0; i < (int64_t)M * N; i++) ref[i] += x0[i];
        double thr = thr_prod(prec);
        if (act == LT_CUDA_ACT_GELU_TANH && thr < 1e-6) thr = 1e-6;
        compare(names[variant], size, lt_precision_name(prec), got, ref, (int64_t)M * N, thr);
    }
    lt_cuda_free(din);
    lt_cuda_free(dw);
    lt_cuda_free(db);
    lt_cuda_free(dout);
    free(in);
    free(w);
    free(bias);
    free(x0);
    free(ref);
}

static void test_attention(lt_cuda_dtype t, int B, int N, int heads) {
    const int D = heads * 64;
    const int64_t nq = (int64_t)B * N * 3 * D, no = (int64_t)B * N * D;
    float *qkv = randn(nq, 1.0f), *ref = malloc((size_t)no * sizeof(float));
    float *scratch = malloc((size_t)lt_op_attention_scratch(N) * sizeof(float));
    char size[64];
    snprintf(size, sizeof size, "B=%d N=%d heads=%d", B, N, heads);
    void *dq = up(qkv, nq, t), *dout = poisoned(no, t);
    if (!ref || !scratch || !dq || !dout || lt_cuda_attention(ctx, dout, dq, t, B, N, heads, 64)) {
        fail_msg("attention", size);
    } else {
        float *got = down(dout, no, t);
        lt_op_attention(ref, qkv, scratch, B, N, heads, 64);
        compare("attention", size, dtname(t), got, ref, no,
                t == LT_CUDA_BF16 ? 1e-4 : 1e-9);
    }
    lt_cuda_free(dq);
    lt_cuda_free(dout);
    free(qkv);
    free(ref);
    free(scratch);
}

/* ---- row ops ---------------------------------------------------------------------------------- */

static void test_layernorm(lt_cuda_dtype t, int M, int C, int in_place) {
    const int64_t n = (int64_t)M * C;
    float *x = randn(n, 2.0f), *w = randn(C, 0.3f), *b = randn(C, 0.3f);
    float *ref = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] += 0.5f; /* a non-zero mean */
    for (int c = 0; c < C; c++) w[c] += 1.0f;
    char size[64];
    snprintf(size, sizeof size, "M=%d C=%d%s", M, C, in_place ? " in place" : "");
    void *dx = up(x, n, LT_CUDA_F32), *dw = up(w, C, LT_CUDA_F32), *db = up(b, C, LT_CUDA_F32);
    void *dout = in_place ? dx : poisoned(n, t);
    if (!ref || !dx || !dw || !db || !dout ||
        lt_cuda_layernorm(ctx, dout, t, dx, dw, db, M, C, 1e-6f)) {
        fail_msg("layernorm", size);
    } else {
        float *got = down(dout, n, t);
        lt_op_layernorm(ref, x, w, b, M, C, 1e-6f);
        compare("layernorm", size, dtname(t), got, ref, n, thr_elem(t));
    }
    if (!in_place) lt_cuda_free(dout);
    lt_cuda_free(dx);
    lt_cuda_free(dw);
    lt_cuda_free(db);
    free(x);
    free(w);
    free(b);
    free(ref);
}

static void test_gelu(lt_cuda_dtype t, int64_t n) {
    float *x = randn(n, 2.0f);
    round_as(x, n, t); /* elementwise: compare the function, not the input rounding */
    float *ref = malloc((size_t)n * sizeof(float));
    char size[64];
    snprintf(size, sizeof size, "n=%lld", (long long)n);
    void *dx = up(x, n, t), *dout = poisoned(n, t);
    if (!ref || !dx || !dout || lt_cuda_gelu(ctx, dout, dx, t, n)) {
        fail_msg("gelu(erf)", size);
    } else {
        float *got = down(dout, n, t);
        lt_op_gelu(ref, x, n);
        compare("gelu(erf)", size, dtname(t), got, ref, n, thr_elem(t));
    }
    lt_cuda_free(dx);
    lt_cuda_free(dout);
    free(x);
    free(ref);
}

static void test_swiglu(lt_cuda_dtype t, int M, int H) {
    const int64_t n = (int64_t)M * H;
    float *x = randn(2 * n, 2.0f);
    round_as(x, 2 * n, t);
    float *ref = malloc((size_t)n * sizeof(float));
    char size[64];
    snprintf(size, sizeof size, "M=%d H=%d", M, H);
    void *dx = up(x, 2 * n, t), *dout = poisoned(n, t);
    if (!ref || !dx || !dout || lt_cuda_swiglu(ctx, dout, dx, t, M, H)) {
        fail_msg("swiglu", size);
    } else {
        float *got = down(dout, n, t);
        lt_op_swiglu(ref, x, M, H);
        compare("swiglu", size, dtname(t), got, ref, n, thr_elem(t));
    }
    lt_cuda_free(dx);
    lt_cuda_free(dout);
    free(x);
    free(ref);
}

static void test_layerscale(lt_cuda_dtype t, int M, int C, int with_gamma) {
    const int64_t n = (int64_t)M * C;
    float *x = randn(n, 1.0f), *y = randn(n, 1.0f), *g = randn(C, 0.5f);
    round_as(y, n, t);
    char size[64];
    snprintf(size, sizeof size, "M=%d C=%d%s", M, C, with_gamma ? "" : " no gamma");
    void *dx = up(x, n, LT_CUDA_F32), *dy = up(y, n, t), *dg = up(g, C, LT_CUDA_F32);
    if (!dx || !dy || !dg ||
        lt_cuda_layerscale_add(ctx, dx, dy, t, with_gamma ? dg : NULL, M, C)) {
        fail_msg("layerscale_add", size);
    } else {
        float *got = down(dx, n, LT_CUDA_F32);
        lt_op_layerscale_add(x, y, with_gamma ? g : NULL, M, C);
        compare("layerscale_add", size, dtname(t), got, x, n, 1e-10);
    }
    lt_cuda_free(dx);
    lt_cuda_free(dy);
    lt_cuda_free(dg);
    free(x);
    free(y);
    free(g);
}

static void test_l2norm(int M, int C) {
    const int64_t n = (int64_t)M * C;
    float *x = randn(n, 3.0f);
    char size[64];
    snprintf(size, sizeof size, "M=%d C=%d", M, C);
    void *dx = up(x, n, LT_CUDA_F32);
    if (!dx || lt_cuda_l2norm(ctx, dx, M, C, 1e-12f)) {
        fail_msg("l2norm", size);
    } else {
        float *got = down(dx, n, LT_CUDA_F32);
        lt_op_l2norm(x, NULL, x, M, C);
        compare("l2norm", size, "fp32", got, x, n, 1e-10);
    }
    lt_cuda_free(dx);
    free(x);
}

static void test_cls_head(int B, int T, int D) {
    const int64_t n = (int64_t)B * T * D;
    float *x = randn(n, 2.0f), *w = randn(D, 0.3f), *b = randn(D, 0.3f);
    float *ref = malloc((size_t)B * D * sizeof(float));
    for (int d = 0; d < D; d++) w[d] += 1.0f;
    char size[64];
    snprintf(size, sizeof size, "B=%d T=%d D=%d", B, T, D);
    void *dx = up(x, n, LT_CUDA_F32), *dw = up(w, D, LT_CUDA_F32), *db = up(b, D, LT_CUDA_F32);
    void *dout = poisoned((int64_t)B * D, LT_CUDA_F32);
    if (!ref || !dx || !dw || !db || !dout ||
        lt_cuda_cls_head(ctx, dout, dx, B, T, D, dw, db, 1e-6f, 1e-12f)) {
        fail_msg("cls_head", size);
    } else {
        float *got = down(dout, (int64_t)B * D, LT_CUDA_F32);
        for (int i = 0; i < B; i++)
            memcpy(ref + (int64_t)i * D, x + (int64_t)i * T * D, (size_t)D * sizeof(float));
        lt_op_layernorm(ref, ref, w, b, B, D, 1e-6f);
        lt_op_l2norm(ref, NULL, ref, B, D);
        compare("cls_head(ln+l2)", size, "fp32", got, ref, (int64_t)B * D, 1e-10);
    }
    lt_cuda_free(dx);
    lt_cuda_free(dw);
    lt_cuda_free(db);
    lt_cuda_free(dout);
    free(x);
    free(w);
    free(b);
    free(ref);
}

/* ---- input ops -------------------------------------------------------------------------------- */

static uint8_t *rand_u8(int64_t n) {
    uint8_t *p = malloc((size_t)(n ? n : 1));
    if (!p) exit(1);
    for (int64_t i = 0; i < n; i++) p[i] = (uint8_t)(next_u64() >> 56);
    return p;
}

static int up_bytes(void **d, const void *h, size_t n) {
    return lt_cuda_malloc(d, n, "test input") || lt_cuda_upload(ctx, *d, h, n) || lt_cuda_sync(ctx);
}

/* CPU twin of the views input: x (B,H,W,3) = lt_mix_normalize per sample */
static float *cpu_views(const uint8_t *a, const uint8_t *b, const float *lambda, int B,
                        int64_t npix, const float mean[3], const float std[3]) {
    float *x = malloc((size_t)B * npix * 3 * sizeof(float));
    if (!x) exit(1);
    for (int i = 0; i < B; i++)
        lt_mix_normalize(a + (int64_t)i * npix * 3, b ? b + (int64_t)i * npix * 3 : NULL,
                         b ? lambda[i] : 1.0f, mean, std, npix, x + (int64_t)i * npix * 3);
    return x;
}

static void test_views(int B, int H, int W, int p, int with_b) {
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    const int64_t npix = (int64_t)H * W, nb = B * npix * 3;
    const int gh = H / p, gw = W / p, K = 3 * p * p, ld = (K + 7) / 8 * 8;
    const int64_t rows = (int64_t)B * gh * gw;
    uint8_t *a = rand_u8(nb), *b = rand_u8(nb);
    float lambda[64];
    for (int i = 0; i < B; i++) lambda[i] = i == 0 ? 1.0f : (float)uni();
    float *x = cpu_views(a, with_b ? b : NULL, lambda, B, npix, mean, std);
    /* CPU patches, padded like the GPU's */
    float *pt = malloc((size_t)rows * K * sizeof(float)), *ref = calloc((size_t)rows * ld, sizeof(float));
    if (!pt || !ref) exit(1);
    lt_op_patchify(pt, x, B, H, W, 3, p);
    for (int64_t r = 0; r < rows; r++) memcpy(ref + r * ld, pt + r * K, (size_t)K * sizeof(float));
    char size[64];
    snprintf(size, sizeof size, "B=%d %dx%d p=%d%s", B, H, W, p, with_b ? " mixup" : "");
    void *da = NULL, *db = NULL, *dl = NULL;
    if (up_bytes(&da, a, (size_t)nb) || up_bytes(&db, b, (size_t)nb) ||
        up_bytes(&dl, lambda, (size_t)B * 4)) {
        fail_msg("views", size);
        goto out;
    }
    /* normalisation alone: bitwise lt_mix_normalize */
    void *dx = poisoned(nb, LT_CUDA_F32);
    if (!dx || lt_cuda_mix_normalize(ctx, dx, da, with_b ? db : NULL, dl, mean, std, B, npix))
        fail_msg("mix_normalize", size);
    else
        compare("mix_normalize", size, "fp32", down(dx, nb, LT_CUDA_F32), x, nb, -1);
    /* patchify of the float input */
    void *dp = poisoned(rows * ld, LT_CUDA_F32);
    if (!dp || lt_cuda_patchify(ctx, dp, LT_CUDA_F32, ld, dx, B, H, W, 3, p))
        fail_msg("patchify", size);
    else
        compare("patchify", size, "fp32", down(dp, rows * ld, LT_CUDA_F32), ref, rows * ld, -1);
    /* fused views → patches, fp32 (bitwise) and bf16 */
    for (int bt = 0; bt < 2; bt++) {
        const lt_cuda_dtype t = bt ? LT_CUDA_BF16 : LT_CUDA_F32;
        void *dq = poisoned(rows * ld, t);
        if (!dq || lt_cuda_patchify_views(ctx, dq, t, ld, da, with_b ? db : NULL, dl, mean, std,
                                          B, H, W, p))
            fail_msg("patchify_views", size);
        else
            compare("patchify_views", size, dtname(t), down(dq, rows * ld, t), ref, rows * ld,
                    bt ? 1e-5 : -1);
        lt_cuda_free(dq);
    }
    lt_cuda_free(dx);
    lt_cuda_free(dp);
out:
    lt_cuda_free(da);
    lt_cuda_free(db);
    lt_cuda_free(dl);
    free(a);
    free(b);
    free(x);
    free(pt);
    free(ref);
}

static void test_tokens(int B, int G, int R, int D) {
    const int T = 1 + R + G;
    float *pemb = randn((int64_t)B * G * D, 1.0f), *tok0 = randn(D, 1.0f);
    float *reg = randn((int64_t)(R ? R : 1) * D, 1.0f), *posb = randn((int64_t)G * D, 1.0f);
    float *ref = malloc((size_t)B * T * D * sizeof(float));
    if (!ref) exit(1);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int d = 0; d < D; d++) {
                float v = t == 0 ? tok0[d]
                          : t <= R ? reg[(int64_t)(t - 1) * D + d]
                                   : pemb[((int64_t)b * G + t - 1 - R) * D + d] +
                                         posb[(int64_t)(t - 1 - R) * D + d];
                ref[((int64_t)b * T + t) * D + d] = v;
            }
    char size[64];
    snprintf(size, sizeof size, "B=%d G=%d R=%d D=%d", B, G, R, D);
    void *dp = up(pemb, (int64_t)B * G * D, LT_CUDA_F32), *dt = up(tok0, D, LT_CUDA_F32);
    void *dr = up(reg, (int64_t)(R ? R : 1) * D, LT_CUDA_F32);
    void *dpos = up(posb, (int64_t)G * D, LT_CUDA_F32);
    void *dx = poisoned((int64_t)B * T * D, LT_CUDA_F32);
    if (!dp || !dt || !dr || !dpos || !dx ||
        lt_cuda_tokens(ctx, dx, dp, dt, R ? dr : NULL, dpos, B, G, R, D))
        fail_msg("tokens(+pos)", size);
    else
        compare("tokens(+pos)", size, "fp32", down(dx, (int64_t)B * T * D, LT_CUDA_F32), ref,
                (int64_t)B * T * D, -1);
    lt_cuda_free(dp);
    lt_cuda_free(dt);
    lt_cuda_free(dr);
    lt_cuda_free(dpos);
    lt_cuda_free(dx);
    free(pemb);
    free(tok0);
    free(reg);
    free(posb);
    free(ref);
}

/* ---- main ------------------------------------------------------------------------------------- */

static void row_ops_and_inputs(void);
static void attention_cases(lt_cuda_dtype t);

int main(void) {
    if (!lt_cuda_available()) {
        printf("test_cuda_ops: SKIP: no CUDA device (or a CPU-only build)\n");
        return 77;
    }
    char info[256];
    if (lt_cuda_device_info(info, sizeof info) == 0) printf("device: %s\n", info);
    if (lt_cuda_ctx_create(&ctx)) {
        printf("test_cuda_ops: FAIL: %s\n", lt_err_msg());
        return 1;
    }
    seed_rng();

    static const lt_precision precs[] = {LT_PREC_FP32, LT_PREC_TF32, LT_PREC_BF16};
    for (int pi = 0; pi < 3; pi++) {
        const lt_precision pr = precs[pi];
        printf("-- products, %s\n", lt_precision_name(pr));
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) test_gemm(pr, ta, tb, 104, 64, 80);
        test_gemm(pr, 0, 1, 257, 192, 768);
        static const int lin[][3] = {{514, 64, 192}, {1028, 768, 2304}, {257, 768, 3072},
                                     {100, 200, 72}};
        for (int s = 0; s < 4; s++)
            for (int v = 0; v < 6; v++) {
                if (v == 5 && pr != LT_PREC_BF16) continue; /* same as variant 0 there */
                if (s == 3 && v != 0 && v != 3) continue;   /* odd size: two variants */
                test_linear(pr, lin[s][0], lin[s][1], lin[s][2], v);
            }
    }
    row_ops_and_inputs();
#ifdef LT_HAVE_CUDA
    /* the GEMMs without autotuning (LT_CUDA_AUTOTUNE=0: the heuristic's first algorithm) on a
     * context of their own, so that both plan paths stay tested whatever the defaults */
    lt_cuda_ctx *ctx_new = ctx, *ctx_heur = NULL;
    if (lt_cuda_ctx_create(&ctx_heur)) {
        fail_msg("context", "autotune 0");
    } else {
        lt_cuda_switches sw;
        lt_cuda_ctx_get_switches(ctx_heur, &sw);
        sw.autotune = 0;
        lt_cuda_ctx_set_switches(ctx_heur, &sw);
        ctx = ctx_heur;
        printf("-- products without autotuning (autotune 0)\n");
        test_linear(LT_PREC_BF16, 1028, 768, 2304, 0);
        test_linear(LT_PREC_BF16, 1028, 768, 2304, 3);
        lt_cuda_ctx_free(ctx_heur);
        ctx = ctx_new;
    }
    {
        /* the bf16 attention in blocks of at most 4 warps (LT_CUDA_ATTN_WARPS=4) on the default
         * context, whatever the default is */
        lt_cuda_switches sw, sw0;
        lt_cuda_ctx_get_switches(ctx, &sw0);
        sw = sw0;
        sw.attn_warps = 4;
        lt_cuda_ctx_set_switches(ctx, &sw);
        printf("-- attention with at most 4 warps per block, bf16\n");
        attention_cases(LT_CUDA_BF16);
        lt_cuda_ctx_set_switches(ctx, &sw0);
        printf("-- switches of the default context: autotune %d, attention in blocks of at most "
               "%d warps\n", sw0.autotune, sw0.attn_warps);
    }
#endif

    lt_cuda_ctx_free(ctx);
    printf("test_cuda_ops: %d passed, %d failed\n", n_ok, n_fail);
    return n_fail ? 1 : 0;
}

/* The attention sizes: ViT-B/14's 257 tokens (and 261 with 4 registers), ragged and exact tile
 * ends (N = 1, 17, 64, 65, 128, 300), long sequences (N = 700, 1000). */
static void attention_cases(lt_cuda_dtype t) {
    static const int att[][3] = {{2, 257, 2}, {1, 1, 1},   {3, 65, 1}, {2, 261, 12}, {1, 700, 2},
                                 {4, 128, 3}, {1, 17, 2},  {1, 1000, 1}, {2, 64, 3}, {2, 300, 2}};
    for (size_t s = 0; s < sizeof att / sizeof att[0]; s++)
        test_attention(t, att[s][0], att[s][1], att[s][2]);
}

/* The attention, row-op and input tests. LayerNorm with C % 4 != 0 and the token assembly with
 * D % 4 != 0 take the general kernels, the other sizes the vectorised ones. */
static void row_ops_and_inputs(void) {
    for (int bt = 0; bt < 2; bt++) {
        const lt_cuda_dtype t = bt ? LT_CUDA_BF16 : LT_CUDA_F32;
        printf("-- attention and row ops, %s activations\n", dtname(t));
        attention_cases(t);
        test_layernorm(t, 257, 64, 0);
        test_layernorm(t, 1000, 768, 0);
        test_layernorm(t, 33, 1536, 0);
        test_layernorm(t, 5, 100, 0);
        test_layernorm(t, 7, 99, 0); /* C % 4 != 0: the general kernel */
        if (t == LT_CUDA_F32) test_layernorm(t, 300, 768, 1);
        test_gelu(t, 100003);
        test_swiglu(t, 257, 192);
        test_layerscale(t, 257, 768, 1);
        test_layerscale(t, 31, 64, 0);
    }
    printf("-- fp32 row ops and inputs\n");
    test_l2norm(100, 768);
    test_l2norm(3, 64);
    test_cls_head(5, 257, 768);
    test_cls_head(3, 9, 64);
    test_views(3, 56, 70, 14, 1);
    test_views(2, 224, 224, 14, 0);
    test_views(2, 33, 47, 16, 1); /* extra pixels ignored */
    test_tokens(3, 16, 0, 64);
    test_tokens(2, 256, 4, 768);
    test_tokens(2, 5, 1, 36); /* D % 4 == 0 but not a multiple of 128 */
    test_tokens(1, 4, 2, 30); /* D % 4 != 0: the element-wise kernel */
}
