/* test_cuda_cnn.c: every entry of the student's CUDA backend (lt_backend_cuda, nn/backend.h)
 * against the CPU backend (the reference), on fresh random inputs, with a stated tolerance each.
 *
 * Why it exists: the training step, the ResNet walk and the optimizer are written once over the
 * backend; they can only be trusted on the GPU if each entry means there what it means on the
 * CPU (shapes, layouts, accumulate flags, aliasing, rounding). CI has no GPU: `make test-cuda`
 * runs this on a GPU machine (tests/run-cuda.sh).
 *
 * Error measure: NMSE = Σ(gpu − cpu)² / Σ cpu² over an output, and max |gpu − cpu|; any NaN/Inf
 * fails. Outputs that an entry writes (rather than accumulates into) start as NaN on the GPU, so
 * an element it forgot to write fails. Seeded from /dev/urandom (printed; LT_TEST_SEED=N repeats).
 *
 * Tolerances, and why:
 *   bitwise equal: everything whose arithmetic is the CPU's operation for operation (the
 *     kernels round each operation as the CPU build does, which contracts nothing into FMAs):
 *     relu_backward, add, max pool (values and argmax, with ties), avgpool, mix_normalize,
 *     batch norm in eval mode, the linear bias gradient (double column sums in row order), L2
 *     norm forward/backward (double row sums in order on one thread), the queue push, scale,
 *     the momentum and AdamW updates;
 *   conv2d (forward, dx, dw): NMSE <= 1e-9. Both sides are fp32 with fp32 accumulation but sum
 *     in different orders and with different algorithms (the CPU uses Winograd F(2×2, 3×3) for
 *     3×3 stride 1, cuDNN whichever deterministic FMA algorithm its heuristics pick): each is
 *     ~1e-7..1e-6 relative per element, NMSE ~1e-13..1e-11; 1e-9 leaves two decades;
 *   linear, the loss GEMMs and the loss gradient: NMSE <= 1e-10 (cuBLAS vs OpenBLAS fp32,
 *     K <= 512: summation order only, ~1e-13 expected);
 *   batch norm training forward (y, mean, invstd, running stats): NMSE <= 1e-10 — the GPU sums
 *     the statistics in double, the CPU in float over blocks of 32 rows and then in double, so
 *     they differ by a few float ulps at most (NMSE <= ~2e-12, a mean near 0 the largest);
 *     backward (dx, dgamma, dbeta): NMSE <= 1e-9, as dx = a·(g − b − (x − μ)·k) can cancel and
 *     turn a one-ulp difference of b or k into a larger relative one in an element (~1e-13
 *     seen). With two rows dx is nothing but such a cancellation (~1e-5 of its terms): there
 *     its error is measured against the terms, Σ(gpu − cpu)² / Σ(γ·invstd·dy)² <= 1e-11
 *     (~1e-13 seen). These figures come from a CPU emulation of the GPU kernels' arithmetic
 *     over 2000 seeds, which also saw a ReLU mask flip (a pre-activation within rounding of 0,
 *     dx NMSE up to 1e-4) in about 1 run in 500;
 *   the loss value: |Δ| <= 1e-5·|loss| + 1e-9 (logits differ by GEMM order, ~1e-7 relative;
 *     the KL sum of Q terms amplifies that by at most ~Q·1e-7·|logit| in absolute terms);
 *     probabilities NMSE <= 1e-10; an all-zero queue gives loss 0 exactly on both;
 *   sum of squares: relative difference <= 1e-12 (double, different order).
 * Determinism: conv backward, batch norm forward/backward, the loss and the sum of squares are
 * each run twice on the same inputs and must give identical bytes.
 * Precisions: a second backend at tf32 runs the convolutions again (conv_thr 1e-5); a third at
 * bf16 runs every entry whose arguments include activations, which are bf16 there, with the
 * bounds of the bf16 section (bf16_cases).
 *
 * Output: one line per check; exit 0 all passed, 1 a failure, 77 no GPU. */
#include "core/error.h"
#include "core/threads.h"
#include "nn/backend.h"
#include "nn/cnn.h"
#include "nn/ops_cuda.h"
#include "test_rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lt_backend *cpu, *gpu;
static int n_fail, n_ok;

/* ---- random inputs --------------------------------------------------------------------------- */


static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static float *randn(int64_t n, float scale, float offset) {
    float *p = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = offset + scale * gauss();
    return p;
}

static float *copyf(const float *src, int64_t n) {
    float *p = xmalloc((size_t)n * sizeof(float));
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}


/* ---- device helpers (a failure exits: the backend is unusable) ----------------------------------- */

static void die(const char *what) {
    printf("FAIL: %s: %s\n", what, lt_err_msg());
    exit(1);
}

static void *dev(size_t bytes) {
    void *p = gpu->alloc(gpu, bytes, "test buffer");
    if (!p) die("alloc");
    return p;
}
static void *up(const void *h, size_t bytes) {
    void *d = dev(bytes);
    if (gpu->upload(gpu, d, h, bytes)) die("upload");
    return d;
}
static float *upf(const float *h, int64_t n) { return up(h, (size_t)n * sizeof(float)); }
/* a device array of n floats, all NaN */
static float *nanf_dev(int64_t n) {
    float *h = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    float *d = upf(h, n);
    free(h);
    return d;
}
static void *down(const void *d, size_t bytes) {
    void *h = xmalloc(bytes);
    if (gpu->download(gpu, h, d, bytes)) die("download");
    return h;
}
static float *downf(const float *d, int64_t n) { return down(d, (size_t)n * sizeof(float)); }
static void gfree(void *p) { gpu->free(gpu, p); }
static void *host_ws(size_t bytes) { return calloc(1, bytes ? bytes : 1); }

/* ---- comparison -------------------------------------------------------------------------------------- */

/* got (GPU, host copy) against ref (CPU); thr < 0: bitwise. Frees got. */
static void compare(const char *op, const char *what, float *got, const float *ref, int64_t n,
                    double thr) {
    double num = 0.0, den = 0.0, maxd = 0.0;
    int64_t bad = 0, diff = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i])) {
            bad++;
            continue;
        }
        const double d = (double)got[i] - (double)ref[i];
        if (isfinite(d)) {
            num += d * d;
            if (fabs(d) > maxd) maxd = fabs(d);
        }
        if (isfinite(ref[i])) den += (double)ref[i] * ref[i];
        diff += memcmp(&got[i], &ref[i], sizeof(float)) != 0;
    }
    const double e = den > 0 ? num / den : num;
    int ok;
    if (thr < 0) {
        ok = !bad && !diff;
        printf("%-18s %-44s %s (%lld of %lld differ, max |diff| %.2e)  %s\n", op, what,
               ok ? "bitwise" : "NOT bitwise", (long long)diff, (long long)n, maxd,
               ok ? "OK" : "FAIL");
    } else {
        ok = !bad && e <= thr;
        printf("%-18s %-44s nmse %.3e (max |diff| %.2e) thr %.0e  %s", op, what, e, maxd, thr,
               ok ? "OK" : "FAIL");
        if (bad) printf(" (%lld NaN/Inf or unwritten)", (long long)bad);
        printf("\n");
    }
    ok ? n_ok++ : n_fail++;
    free(got);
}

/* As compare with thr >= 0, but the squared error measured against Σ scale² instead of Σ ref²:
 * for an output that is a small difference of float terms of size |scale| (its rounding error is
 * relative to those terms, not to itself). Frees got. */
static void compare_scaled(const char *op, const char *what, float *got, const float *ref,
                           const float *scale, int64_t n, double thr) {
    double num = 0.0, den = 0.0, maxd = 0.0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)got[i] - (double)ref[i];
        if (!isfinite(d)) {
            bad++;
            continue;
        }
        num += d * d;
        den += (double)scale[i] * scale[i];
        if (fabs(d) > maxd) maxd = fabs(d);
    }
    const double e = den > 0 ? num / den : num;
    const int ok = !bad && e <= thr;
    printf("%-18s %-44s err²/Σterm² %.3e (max |diff| %.2e) thr %.0e  %s", op, what, e, maxd, thr,
           ok ? "OK" : "FAIL");
    if (bad) printf(" (%lld NaN/Inf or unwritten)", (long long)bad);
    printf("\n");
    ok ? n_ok++ : n_fail++;
    free(got);
}

static void compare_i32(const char *op, const char *what, int32_t *got, const int32_t *ref,
                        int64_t n) {
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += got[i] != ref[i];
    printf("%-18s %-44s %s (%lld of %lld differ)  %s\n", op, what, diff ? "NOT equal" : "equal",
           (long long)diff, (long long)n, diff ? "FAIL" : "OK");
    diff ? n_fail++ : n_ok++;
    free(got);
}

static void expect(int cond, const char *op, const char *what) {
    printf("%-18s %-44s %s\n", op, what, cond ? "OK" : "FAIL");
    cond ? n_ok++ : n_fail++;
}

/* Two device arrays of n bytes are identical (the determinism checks). */
static void same_bytes(const char *op, const char *what, const void *a, const void *b,
                       size_t bytes) {
    void *ha = down(a, bytes), *hb = down(b, bytes);
    expect(memcmp(ha, hb, bytes) == 0, op, what);
    free(ha);
    free(hb);
}

#define OK_OR_FAIL(call, op, what)                                                                \
    do {                                                                                          \
        if ((call) != 0) {                                                                        \
            printf("%-18s %-44s FAIL (%s)\n", op, what, lt_err_msg());                            \
            n_fail++;                                                                             \
            goto out;                                                                             \
        }                                                                                         \
    } while (0)

/* fp32 convolutions: summation order only. tf32 (lt_backend_cuda_set_precision): 10-bit operand
 * mantissas, fp32 accumulation: ~1e-7 expected, bound 1e-5 (as the teacher's tf32 products) */
static double conv_thr = 1e-9;
#define CONV_THR conv_thr
#define GEMM_THR 1e-10
#define BN_FWD_THR 1e-10
#define BN_BWD_THR 1e-9
#define BN_BWD_M2_THR 1e-11

/* ---- conv2d ------------------------------------------------------------------------------------------ */

/* One geometry: forward, then backward with every combination the model uses: accumulate (dw)
 * off/on, accumulate_dx off/on, dw only (dx NULL), dx only (dw NULL). ws_B: the scratch is
 * sized for this batch (>= B: a smaller batch served by a larger batch's scratch). */
static void test_conv(int B, int H, int W, int Cin, int Cout, int k, int stride, int pad,
                      int ws_B) {
    lt_conv2d_dims d, dw_dims;
    char what[96];
    snprintf(what, sizeof what, "B%d %dx%dx%d->%d k%d s%d p%d%s", B, H, W, Cin, Cout, k, stride,
             pad, ws_B > B ? " (ws of a larger B)" : "");
    if (lt_conv2d_dims_init(&d, B, H, W, Cin, Cout, k, k, stride, pad) ||
        lt_conv2d_dims_init(&dw_dims, ws_B, H, W, Cin, Cout, k, k, stride, pad))
        die("conv dims");
    const int64_t nx = (int64_t)B * H * W * Cin, ny = (int64_t)B * d.OH * d.OW * Cout;
    const int64_t nw = (int64_t)Cout * Cin * k * k;
    float *x = randn(nx, 1.0f, 0.0f), *w = randn(nw, 0.2f, 0.0f), *dy = randn(ny, 1.0f, 0.0f);
    float *dx0 = randn(nx, 1.0f, 0.0f), *dw0 = randn(nw, 1.0f, 0.0f);
    size_t cws = cpu->conv2d_ws_bytes(cpu, &d), gws = gpu->conv2d_ws_bytes(gpu, &dw_dims);
    void *hws = host_ws(cws);
    float *y = xmalloc((size_t)ny * sizeof(float));
    float *gx = upf(x, nx), *gw = upf(w, nw), *gdy = upf(dy, ny), *gy = nanf_dev(ny);
    float *gdx = NULL, *gdw = NULL, *gdx2 = NULL, *gdw2 = NULL;
    void *gws_p = dev(gws ? gws : 1);
    OK_OR_FAIL(gws == 0 ? -1 : 0, "conv2d ws", what); /* 0: no plan (the error says why) */
    OK_OR_FAIL(cpu->conv2d_forward(cpu, &d, y, x, w, hws), "conv2d fwd (cpu)", what);
    OK_OR_FAIL(gpu->conv2d_forward(gpu, &d, gy, gx, gw, gws_p), "conv2d fwd", what);
    compare("conv2d fwd", what, downf(gy, ny), y, ny, CONV_THR);
    for (int mode = 0; mode < 4; mode++) {
        /* 0: dw, dx written; 1: dw +=, dx +=; 2: dw only; 3: dx only (accumulate_dx) */
        const int acc = mode == 1, acc_dx = mode == 1 || mode == 3;
        const int with_dx = mode != 2, with_dw = mode != 3;
        float *dx = copyf(dx0, nx), *dw = copyf(dw0, nw);
        gdx = acc_dx ? upf(dx0, nx) : nanf_dev(nx);
        gdw = acc ? upf(dw0, nw) : nanf_dev(nw);
        char m[128];
        snprintf(m, sizeof m, "%s acc=%d acc_dx=%d%s%s", what, acc, acc_dx,
                 with_dx ? "" : " no dx", with_dw ? "" : " no dw");
        int rc = cpu->conv2d_backward(cpu, &d, with_dx ? dx : NULL, with_dw ? dw : NULL, dy, x, w,
                                      hws, acc, acc_dx);
        if (rc == 0)
            rc = gpu->conv2d_backward(gpu, &d, with_dx ? gdx : NULL, with_dw ? gdw : NULL, gdy,
                                      gx, gw, gws_p, acc, acc_dx);
        if (rc != 0) {
            printf("%-18s %-44s FAIL (%s)\n", "conv2d bwd", m, lt_err_msg());
            n_fail++;
        } else {
            if (with_dx) compare("conv2d bwd dx", m, downf(gdx, nx), dx, nx, CONV_THR);
            if (with_dw) compare("conv2d bwd dw", m, downf(gdw, nw), dw, nw, CONV_THR);
        }
        free(dx);
        free(dw);
        gfree(gdx);
        gfree(gdw);
        gdx = gdw = NULL;
    }
    /* determinism: the same backward twice */
    gdx = nanf_dev(nx), gdw = nanf_dev(nw), gdx2 = nanf_dev(nx), gdw2 = nanf_dev(nw);
    OK_OR_FAIL(gpu->conv2d_backward(gpu, &d, gdx, gdw, gdy, gx, gw, gws_p, 0, 0), "conv2d bwd",
               what);
    OK_OR_FAIL(gpu->conv2d_backward(gpu, &d, gdx2, gdw2, gdy, gx, gw, gws_p, 0, 0), "conv2d bwd",
               what);
    same_bytes("conv2d determinism", what, gdx, gdx2, (size_t)nx * sizeof(float));
    same_bytes("conv2d determinism", what, gdw, gdw2, (size_t)nw * sizeof(float));
out:
    gfree(gx), gfree(gw), gfree(gdy), gfree(gy), gfree(gdx), gfree(gdw), gfree(gdx2), gfree(gdw2);
    gfree(gws_p);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(y), free(hws);
}

static void conv_cases(void) {
    printf("-- conv2d (cuDNN, NHWC, deterministic algorithms, fp32)\n");
    test_conv(2, 37, 37, 3, 16, 7, 2, 3, 2);   /* the stem: Cin 3, 7×7/2 pad 3, odd input */
    test_conv(3, 7, 7, 32, 32, 3, 1, 1, 3);    /* 3×3/1 on a 7×7 map (the CPU's Winograd) */
    test_conv(2, 15, 15, 16, 32, 3, 2, 1, 2);  /* 3×3/2, odd input */
    test_conv(4, 9, 9, 64, 128, 1, 1, 0, 4);   /* 1×1/1 (bottleneck) */
    test_conv(2, 13, 13, 32, 64, 1, 2, 0, 2);  /* 1×1/2 downsample, odd input */
    test_conv(1, 7, 7, 8, 8, 3, 1, 1, 1);      /* batch 1 */
    test_conv(2, 14, 14, 16, 16, 3, 1, 1, 6);  /* a batch smaller than the scratch's */
    /* no scratch: refused with a message */
    lt_conv2d_dims d;
    lt_conv2d_dims_init(&d, 1, 5, 5, 4, 4, 3, 3, 1, 1);
    float *gx = nanf_dev(100), *gw = nanf_dev(144), *gy = nanf_dev(100);
    lt_err_clear();
    expect(gpu->conv2d_forward(gpu, &d, gy, gx, gw, NULL) == -1 &&
               strstr(lt_err_msg(), "scratch") != NULL,
           "conv2d", "no scratch: refused");
    gfree(gx), gfree(gw), gfree(gy);
}

/* ---- batch norm ------------------------------------------------------------------------------------- */

static void test_bn(int M, int C, int relu, int with_res, int acc, float offset, int in_place) {
    char what[96];
    snprintf(what, sizeof what, "M%d C%d relu=%d res=%d acc=%d mean~%g%s", M, C, relu, with_res,
             acc, offset, in_place ? " y=x" : "");
    const int64_t n = (int64_t)M * C;
    const float eps = 1e-5f, mom = 0.1f;
    float *x = randn(n, 1.5f, offset), *res = with_res ? randn(n, 1.0f, 0.0f) : NULL;
    float *gamma = randn(C, 0.3f, 1.0f), *beta = randn(C, 0.3f, 0.0f);
    float *rm = randn(C, 0.1f, 0.0f), *rv = randn(C, 0.1f, 1.0f);
    float *dy = randn(n, 1.0f, 0.0f), *dg0 = randn(C, 1.0f, 0.0f), *db0 = randn(C, 1.0f, 0.0f);
    float *y = xmalloc((size_t)n * sizeof(float)), *mean = xmalloc(C * sizeof(float));
    float *invstd = xmalloc(C * sizeof(float)), *dx = xmalloc((size_t)n * sizeof(float));
    float *crm = copyf(rm, C), *crv = copyf(rv, C), *dg = copyf(dg0, C), *db = copyf(db0, C);
    void *hws = host_ws(cpu->bn_ws_bytes(cpu, C));
    float *gx = upf(x, n), *gres = with_res ? upf(res, n) : NULL, *gg = upf(gamma, C);
    float *gb = upf(beta, C), *grm = upf(rm, C), *grv = upf(rv, C), *gdy = upf(dy, n);
    float *gy = in_place ? gx : nanf_dev(n), *gmean = nanf_dev(C), *ginv = nanf_dev(C);
    float *gdx = nanf_dev(n), *gdg = acc ? upf(dg0, C) : nanf_dev(C);
    float *gdb = acc ? upf(db0, C) : nanf_dev(C);
    float *gy2 = nanf_dev(n), *gdx2 = nanf_dev(n), *gm2 = nanf_dev(C), *gi2 = nanf_dev(C);
    void *gws = dev(gpu->bn_ws_bytes(gpu, C));
    float *xin = copyf(x, n); /* the CPU's input (y may overwrite x) */
    OK_OR_FAIL(cpu->bn_forward_train(cpu, in_place ? xin : y, xin, res, gamma, beta, mean, invstd,
                                     crm, crv, M, C, eps, mom, relu, hws),
               "bn fwd (cpu)", what);
    if (in_place) memcpy(y, xin, (size_t)n * sizeof(float));
    OK_OR_FAIL(gpu->bn_forward_train(gpu, gy, gx, gres, gg, gb, gmean, ginv, grm, grv, M, C, eps,
                                     mom, relu, gws),
               "bn fwd train", what);
    compare("bn fwd y", what, downf(gy, n), y, n, BN_FWD_THR);
    compare("bn fwd mean", what, downf(gmean, C), mean, C, BN_FWD_THR);
    compare("bn fwd invstd", what, downf(ginv, C), invstd, C, BN_FWD_THR);
    compare("bn running_mean", what, downf(grm, C), crm, C, BN_FWD_THR);
    compare("bn running_var", what, downf(grv, C), crv, C, BN_FWD_THR);
    if (in_place) goto out; /* the backward needs the forward's input */
    /* backward: x the forward's input, y its output (the ReLU mask); the residual's gradient is
     * dy itself (nn/cnn.h), not an output of this entry */
    OK_OR_FAIL(cpu->bn_backward(cpu, dx, dg, db, dy, x, y, gamma, mean, invstd, M, C, relu, acc,
                                hws),
               "bn bwd (cpu)", what);
    /* the GPU's own forward outputs: the backward is tested as the model runs it */
    OK_OR_FAIL(gpu->bn_backward(gpu, gdx, gdg, gdb, gdy, gx, gy, gg, gmean, ginv, M, C, relu, acc,
                                gws),
               "bn bwd", what);
    if (M == 2) {
        /* two rows: dx = γ·is·(g − ḡ)·eps/(var + eps) exactly, ~1e-5 of the float terms a·g, b and
         * (x − μ)·k it is the difference of, so a one-ulp difference of b or k between the
         * backends is a relative error of up to 1e-2 in dx: its error is measured against those
         * terms, a·g = γ·invstd·dy */
        float *terms = xmalloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) terms[i] = gamma[i % C] * invstd[i % C] * dy[i];
        compare_scaled("bn bwd dx", what, downf(gdx, n), dx, terms, n, BN_BWD_M2_THR);
        free(terms);
    } else {
        compare("bn bwd dx", what, downf(gdx, n), dx, n, BN_BWD_THR);
    }
    compare("bn bwd dgamma", what, downf(gdg, C), dg, C, BN_BWD_THR);
    compare("bn bwd dbeta", what, downf(gdb, C), db, C, BN_BWD_THR);
    /* determinism: forward (no running stats) and backward again */
    OK_OR_FAIL(gpu->bn_forward_train(gpu, gy2, gx, gres, gg, gb, gm2, gi2, NULL, NULL, M, C, eps,
                                     mom, relu, gws),
               "bn fwd train", what);
    same_bytes("bn determinism", "forward y", gy, gy2, (size_t)n * sizeof(float));
    same_bytes("bn determinism", "forward invstd", ginv, gi2, (size_t)C * sizeof(float));
    OK_OR_FAIL(gpu->bn_backward(gpu, gdx2, NULL, NULL, gdy, gx, gy, gg, gmean, ginv, M, C, relu,
                                0, gws),
               "bn bwd", what);
    same_bytes("bn determinism", "backward dx", gdx, gdx2, (size_t)n * sizeof(float));
out:
    gfree(gx), gfree(gres), gfree(gg), gfree(gb), gfree(grm), gfree(grv), gfree(gdy);
    if (!in_place) gfree(gy);
    gfree(gmean), gfree(ginv), gfree(gdx), gfree(gdg), gfree(gdb), gfree(gy2), gfree(gdx2);
    gfree(gm2), gfree(gi2), gfree(gws);
    free(x), free(res), free(gamma), free(beta), free(rm), free(rv), free(dy), free(dg0);
    free(db0), free(y), free(mean), free(invstd), free(dx), free(crm), free(crv), free(dg);
    free(db), free(hws), free(xin);
}

static void test_bn_eval(int M, int C, int relu, int with_res) {
    char what[64];
    snprintf(what, sizeof what, "M%d C%d relu=%d res=%d", M, C, relu, with_res);
    const int64_t n = (int64_t)M * C;
    float *x = randn(n, 1.0f, 0.5f), *res = with_res ? randn(n, 1.0f, 0.0f) : NULL;
    float *gamma = randn(C, 0.3f, 1.0f), *beta = randn(C, 0.3f, 0.0f);
    float *rm = randn(C, 0.3f, 0.0f), *rv = randn(C, 0.2f, 1.0f);
    for (int c = 0; c < C; c++) rv[c] = fabsf(rv[c]);
    float *y = xmalloc((size_t)n * sizeof(float));
    float *gx = upf(x, n), *gres = with_res ? upf(res, n) : NULL, *gg = upf(gamma, C);
    float *gb = upf(beta, C), *grm = upf(rm, C), *grv = upf(rv, C), *gy = nanf_dev(n);
    OK_OR_FAIL(cpu->bn_forward_eval(cpu, y, x, res, gamma, beta, rm, rv, M, C, 1e-5f, relu),
               "bn eval (cpu)", what);
    OK_OR_FAIL(gpu->bn_forward_eval(gpu, gy, gx, gres, gg, gb, grm, grv, M, C, 1e-5f, relu),
               "bn eval", what);
    compare("bn fwd eval", what, downf(gy, n), y, n, -1);
out:
    gfree(gx), gfree(gres), gfree(gg), gfree(gb), gfree(grm), gfree(grv), gfree(gy);
    free(x), free(res), free(gamma), free(beta), free(rm), free(rv), free(y);
}

/* Data-parallel batch norm with P - 1 simulated other processes: their contribution to each sum
 * is a fixed function of (call number, index), so the CPU's lt_bn_*_sync (the reference) and the
 * GPU see the same "other processes". Values are positive (a sum of squared deviations must be). */
typedef struct {
    int call, P;
} fake_procs;

static int fake_sum(void *ctx, double *x, int n) {
    fake_procs *f = ctx;
    for (int i = 0; i < n; i++) {
        uint64_t h = (uint64_t)(f->call * 1000003 + i) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
        x[i] += (f->P - 1) * (0.25 + (double)(h >> 11) * (1.0 / 9007199254740992.0));
    }
    f->call++;
    return 0;
}

static void test_bn_sync(int M, int C, int P, int relu, int with_res, int acc) {
    char what[96];
    snprintf(what, sizeof what, "M%d C%d P%d relu=%d res=%d acc=%d", M, C, P, relu, with_res, acc);
    const int64_t n = (int64_t)M * C;
    float *x = randn(n, 1.5f, 0.5f), *res = with_res ? randn(n, 1.0f, 0.0f) : NULL;
    float *gamma = randn(C, 0.3f, 1.0f), *beta = randn(C, 0.3f, 0.0f);
    float *rm = randn(C, 0.1f, 0.0f), *rv = randn(C, 0.1f, 1.0f);
    float *dy = randn(n, 1.0f, 0.0f), *dg0 = randn(C, 1.0f, 0.0f), *db0 = randn(C, 1.0f, 0.0f);
    float *y = xmalloc((size_t)n * sizeof(float)), *mean = xmalloc(C * sizeof(float));
    float *invstd = xmalloc(C * sizeof(float)), *dx = xmalloc((size_t)n * sizeof(float));
    float *crm = copyf(rm, C), *crv = copyf(rv, C), *dg = copyf(dg0, C), *db = copyf(db0, C);
    void *hws = host_ws(cpu->bn_ws_bytes(cpu, C));
    float *gx = upf(x, n), *gres = with_res ? upf(res, n) : NULL, *gg = upf(gamma, C);
    float *gb = upf(beta, C), *grm = upf(rm, C), *grv = upf(rv, C), *gdy = upf(dy, n);
    float *gy = nanf_dev(n), *gmean = nanf_dev(C), *ginv = nanf_dev(C), *gdx = nanf_dev(n);
    float *gdg = acc ? upf(dg0, C) : nanf_dev(C), *gdb = acc ? upf(db0, C) : nanf_dev(C);
    void *gws = dev(gpu->bn_ws_bytes(gpu, C));
    fake_procs fc = {0, P}, fg = {0, P};
    lt_bn_sync sc = {.sum = fake_sum, .ctx = &fc, .processes = P};
    lt_bn_sync sg = {.sum = fake_sum, .ctx = &fg, .processes = P};
    OK_OR_FAIL(lt_bn_forward_train_sync(y, x, res, gamma, beta, mean, invstd, crm, crv, M, C,
                                        1e-5f, 0.1f, relu, cpu->threads, hws, &sc),
               "bn sync fwd (cpu)", what);
    OK_OR_FAIL(lt_bn_backward_sync(dx, dg, db, dy, x, y, gamma, mean, invstd, M, C, relu, acc,
                                   cpu->threads, hws, &sc),
               "bn sync bwd (cpu)", what);
    gpu->bn_sync = &sg;
    OK_OR_FAIL(gpu->bn_forward_train(gpu, gy, gx, gres, gg, gb, gmean, ginv, grm, grv, M, C, 1e-5f,
                                     0.1f, relu, gws),
               "bn sync fwd", what);
    OK_OR_FAIL(gpu->bn_backward(gpu, gdx, gdg, gdb, gdy, gx, gy, gg, gmean, ginv, M, C, relu, acc,
                                gws),
               "bn sync bwd", what);
    expect(fg.call == fc.call, "bn sync", "as many sums over the processes as the CPU's");
    compare("bn sync fwd y", what, downf(gy, n), y, n, BN_FWD_THR);
    compare("bn sync mean", what, downf(gmean, C), mean, C, BN_FWD_THR);
    compare("bn sync invstd", what, downf(ginv, C), invstd, C, BN_FWD_THR);
    compare("bn sync running_var", what, downf(grv, C), crv, C, BN_FWD_THR);
    compare("bn sync bwd dx", what, downf(gdx, n), dx, n, BN_BWD_THR);
    compare("bn sync bwd dgamma", what, downf(gdg, C), dg, C, BN_BWD_THR);
    compare("bn sync bwd dbeta", what, downf(gdb, C), db, C, BN_BWD_THR);
out:
    gpu->bn_sync = NULL;
    gfree(gx), gfree(gres), gfree(gg), gfree(gb), gfree(grm), gfree(grv), gfree(gdy);
    gfree(gy), gfree(gmean), gfree(ginv), gfree(gdx), gfree(gdg), gfree(gdb), gfree(gws);
    free(x), free(res), free(gamma), free(beta), free(rm), free(rv), free(dy), free(dg0);
    free(db0), free(y), free(mean), free(invstd), free(dx), free(crm), free(crv), free(dg);
    free(db), free(hws);
}

static void bn_cases(void) {
    printf("-- batch norm\n");
    test_bn(3 * 7 * 7, 32, 1, 0, 0, 0.0f, 0);
    test_bn(3 * 7 * 7, 32, 1, 1, 1, 0.0f, 0);   /* block output: residual + ReLU, accumulate */
    test_bn(2 * 15 * 15, 64, 0, 0, 1, 20.0f, 0); /* |mean| >> std: the shifted sums */
    test_bn(2, 5, 0, 0, 0, 0.0f, 0);             /* the smallest batch norm there is */
    test_bn(8 * 2 * 2, 512, 1, 1, 0, 0.0f, 0);   /* layer 4 at 64x64, batch 8: M = 32 */
    test_bn(2 * 56 * 56, 64, 1, 0, 0, 0.0f, 0);  /* many row chunks */
    test_bn(1000, 40, 1, 1, 0, 0.0f, 1);         /* y = x in place, C not a multiple of 32 */
    test_bn_eval(3 * 7 * 7, 32, 1, 0);
    test_bn_eval(2 * 5 * 5, 48, 1, 1);
    test_bn_eval(17, 3, 0, 0);
    /* data parallel: the statistics of all processes (simulated others) */
    test_bn_sync(3 * 7 * 7, 32, 2, 1, 0, 0);
    test_bn_sync(2 * 15 * 15, 64, 3, 1, 1, 1);
    test_bn_sync(3 * 5 * 5, 40, 4, 0, 0, 1); /* C not a multiple of 32, more processes */
    /* refusals: one value per channel */
    float *g = nanf_dev(64), *gws = dev(gpu->bn_ws_bytes(gpu, 4));
    lt_err_clear();
    expect(gpu->bn_forward_train(gpu, g, g, NULL, g, g, g, g, NULL, NULL, 1, 4, 1e-5f, 0.1f, 0,
                                 gws) == -1 &&
               strstr(lt_err_msg(), "batch norm") != NULL,
           "bn fwd train", "M = 1: refused");
    gfree(g), gfree(gws);
}

/* ---- elementwise, pooling ---------------------------------------------------------------------------- */

static void elementwise_cases(void) {
    printf("-- elementwise, pooling\n");
    const int64_t n = 100003;
    float *a = randn(n, 1.0f, 0.0f), *b = randn(n, 1.0f, 0.0f), *r = xmalloc(n * sizeof(float));
    float *ga = upf(a, n), *gb = upf(b, n), *gr = nanf_dev(n);
    if (cpu->relu_backward(cpu, r, a, b, n) || gpu->relu_backward(gpu, gr, ga, gb, n))
        die("relu_backward");
    compare("relu_backward", "n 100003", downf(gr, n), r, n, -1);
    if (cpu->add(cpu, r, a, b, n) || gpu->add(gpu, ga, ga, gb, n)) die("add");
    compare("add", "n 100003, y = a in place", downf(ga, n), r, n, -1);
    gfree(ga), gfree(gb), gfree(gr);
    free(a), free(b), free(r);

    /* max pool 3×3/2 pad 1 on odd and even maps; integer-valued inputs make ties, which the
     * first maximum in window order must win */
    static const int pools[][5] = {{2, 15, 15, 16, 0}, {1, 7, 7, 3, 0}, {3, 16, 16, 64, 0},
                                   {2, 9, 11, 8, 1}};
    for (int k = 0; k < 4; k++) {
        lt_pool_dims d;
        const int ties = pools[k][4];
        if (lt_pool_dims_init(&d, pools[k][0], pools[k][1], pools[k][2], pools[k][3], 3, 2, 1))
            die("pool dims");
        char what[64];
        snprintf(what, sizeof what, "B%d %dx%dx%d k3 s2 p1%s", d.B, d.H, d.W, d.C,
                 ties ? " ties" : "");
        const int64_t ni = (int64_t)d.B * d.H * d.W * d.C, no = (int64_t)d.B * d.OH * d.OW * d.C;
        float *x = randn(ni, 1.0f, 0.0f), *dy = randn(no, 1.0f, 0.0f);
        if (ties)
            for (int64_t i = 0; i < ni; i++) x[i] = roundf(x[i]);
        float *y = xmalloc(no * sizeof(float)), *dx = xmalloc(ni * sizeof(float));
        int32_t *am = xmalloc(no * sizeof(int32_t));
        float *gx = upf(x, ni), *gy = nanf_dev(no), *gdy = upf(dy, no), *gdx = nanf_dev(ni);
        int32_t *am_init = xmalloc(no * sizeof(int32_t)); /* -1: an unwritten argmax fails */
        for (int64_t i = 0; i < no; i++) am_init[i] = -1;
        int32_t *gam = up(am_init, no * sizeof(int32_t));
        free(am_init);
        if (cpu->maxpool_forward(cpu, &d, y, am, x) || gpu->maxpool_forward(gpu, &d, gy, gam, gx))
            die("maxpool_forward");
        compare("maxpool fwd", what, downf(gy, no), y, no, -1);
        compare_i32("maxpool argmax", what, down(gam, no * sizeof(int32_t)), am, no);
        if (cpu->maxpool_backward(cpu, &d, dx, dy, am) ||
            gpu->maxpool_backward(gpu, &d, gdx, gdy, gam))
            die("maxpool_backward");
        compare("maxpool bwd", what, downf(gdx, ni), dx, ni, -1);
        gfree(gx), gfree(gy), gfree(gdy), gfree(gdx), gfree(gam);
        free(x), free(dy), free(y), free(dx), free(am);
    }

    /* global average pool */
    static const int avg[][3] = {{3, 49, 24}, {1, 4, 2048}, {8, 4, 512}};
    for (int k = 0; k < 3; k++) {
        const int B = avg[k][0], HW = avg[k][1], C = avg[k][2];
        char what[64];
        snprintf(what, sizeof what, "B%d HW%d C%d", B, HW, C);
        const int64_t ni = (int64_t)B * HW * C, no = (int64_t)B * C;
        float *x = randn(ni, 1.0f, 0.0f), *dy = randn(no, 1.0f, 0.0f);
        float *y = xmalloc(no * sizeof(float)), *dx = xmalloc(ni * sizeof(float));
        float *gx = upf(x, ni), *gy = nanf_dev(no), *gdy = upf(dy, no), *gdx = nanf_dev(ni);
        if (cpu->avgpool_forward(cpu, y, x, B, HW, C) ||
            gpu->avgpool_forward(gpu, gy, gx, B, HW, C) ||
            cpu->avgpool_backward(cpu, dx, dy, B, HW, C) ||
            gpu->avgpool_backward(gpu, gdx, gdy, B, HW, C))
            die("avgpool");
        compare("avgpool fwd", what, downf(gy, no), y, no, -1);
        compare("avgpool bwd", what, downf(gdx, ni), dx, ni, -1);
        gfree(gx), gfree(gy), gfree(gdy), gfree(gdx);
        free(x), free(dy), free(y), free(dx);
    }
}

/* ---- linear ------------------------------------------------------------------------------------------ */

static void test_linear(int M, int K, int N, int bias, int acc, int with_dx) {
    char what[80];
    snprintf(what, sizeof what, "M%d K%d N%d bias=%d acc=%d%s", M, K, N, bias, acc,
             with_dx ? "" : " no dx");
    float *x = randn((int64_t)M * K, 1.0f, 0.0f), *w = randn((int64_t)N * K, 0.05f, 0.0f);
    float *b = bias ? randn(N, 1.0f, 0.0f) : NULL, *dy = randn((int64_t)M * N, 1.0f, 0.0f);
    float *dw = randn((int64_t)N * K, 1.0f, 0.0f), *db = randn(N, 1.0f, 0.0f);
    float *y = xmalloc((size_t)M * N * 4), *dx = xmalloc((size_t)M * K * 4);
    float *gx = upf(x, (int64_t)M * K), *gw = upf(w, (int64_t)N * K), *gb = bias ? upf(b, N) : NULL;
    float *gdy = upf(dy, (int64_t)M * N), *gy = nanf_dev((int64_t)M * N);
    float *gdw = acc ? upf(dw, (int64_t)N * K) : nanf_dev((int64_t)N * K);
    float *gdb = acc ? upf(db, N) : nanf_dev(N), *gdx = nanf_dev((int64_t)M * K);
    if (cpu->linear_forward(cpu, y, x, w, b, M, K, N) ||
        gpu->linear_forward(gpu, gy, gx, gw, gb, M, K, N))
        die("linear_forward");
    compare("linear fwd", what, downf(gy, (int64_t)M * N), y, (int64_t)M * N, GEMM_THR);
    if (cpu->linear_backward(cpu, with_dx ? dx : NULL, dw, db, dy, x, w, M, K, N, acc) ||
        gpu->linear_backward(gpu, with_dx ? gdx : NULL, gdw, gdb, gdy, gx, gw, M, K, N, acc))
        die("linear_backward");
    compare("linear bwd dw", what, downf(gdw, (int64_t)N * K), dw, (int64_t)N * K, GEMM_THR);
    compare("linear bwd db", what, downf(gdb, N), db, N, -1);
    if (with_dx) compare("linear bwd dx", what, downf(gdx, (int64_t)M * K), dx, (int64_t)M * K,
                         GEMM_THR);
    gfree(gx), gfree(gw), gfree(gb), gfree(gdy), gfree(gy), gfree(gdw), gfree(gdb), gfree(gdx);
    free(x), free(w), free(b), free(dy), free(dw), free(db), free(y), free(dx);
}

/* ---- the input, the method ----------------------------------------------------------------------- */

static void test_mix(int B, int HW, int partner) {
    char what[64];
    snprintf(what, sizeof what, "B%d HW%d partner=%d", B, HW, partner);
    const int64_t n = (int64_t)B * HW * 3;
    uint8_t *a = xmalloc(n), *b = xmalloc(n);
    for (int64_t i = 0; i < n; i++) a[i] = (uint8_t)(next_u64() >> 56), b[i] = (uint8_t)(next_u64() >> 56);
    float *lambda = xmalloc(B * sizeof(float)), *x = xmalloc(n * sizeof(float));
    for (int i = 0; i < B; i++) lambda[i] = (float)uni();
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    uint8_t *ga = up(a, n), *gb = up(b, n);
    float *gl = upf(lambda, B), *gx = nanf_dev(n);
    if (cpu->mix_normalize(cpu, x, a, partner ? b : NULL, lambda, B, HW, mean, std) ||
        gpu->mix_normalize(gpu, gx, ga, partner ? gb : NULL, gl, B, HW, mean, std))
        die("mix_normalize");
    compare("mix_normalize", what, downf(gx, n), x, n, -1);
    gfree(ga), gfree(gb), gfree(gl), gfree(gx);
    free(a), free(b), free(lambda), free(x);
}

static void test_l2(int B, int D) {
    char what[64];
    snprintf(what, sizeof what, "B%d D%d (row 0 zero: clamped)", B, D);
    const int64_t n = (int64_t)B * D;
    float *x = randn(n, 1.0f, 0.0f), *dy = randn(n, 1.0f, 0.0f);
    for (int d = 0; d < D; d++) x[d] = 0.0f; /* ‖x‖ = 0 < eps */
    float *y = xmalloc(n * 4), *nrm = xmalloc(B * 4), *dx = xmalloc(n * 4);
    float *gx = upf(x, n), *gdy = upf(dy, n), *gy = nanf_dev(n), *gn = nanf_dev(B);
    float *gdx = nanf_dev(n), *gy2 = nanf_dev(n);
    if (cpu->l2norm_forward(cpu, y, nrm, x, B, D) || gpu->l2norm_forward(gpu, gy, gn, gx, B, D) ||
        gpu->l2norm_forward(gpu, gy2, NULL, gx, B, D))
        die("l2norm_forward");
    compare("l2norm fwd y", what, downf(gy, n), y, n, -1);
    compare("l2norm fwd norm", what, downf(gn, B), nrm, B, -1);
    compare("l2norm fwd y", "norm NULL", downf(gy2, n), y, n, -1);
    if (cpu->l2norm_backward(cpu, dx, dy, y, nrm, B, D) ||
        gpu->l2norm_backward(gpu, gdx, gdy, gy, gn, B, D))
        die("l2norm_backward");
    compare("l2norm bwd", what, downf(gdx, n), dx, n, -1);
    if (cpu->l2norm_backward(cpu, dy, dy, y, nrm, B, D) ||
        gpu->l2norm_backward(gpu, gdy, gdy, gy, gn, B, D))
        die("l2norm_backward");
    compare("l2norm bwd", "dx = dy in place", downf(gdy, n), dy, n, -1);
    gfree(gx), gfree(gdy), gfree(gy), gfree(gn), gfree(gdx), gfree(gy2);
    free(x), free(dy), free(y), free(nrm), free(dx);
}

static void test_queue(int Q, int D, int B) {
    char what[64];
    snprintf(what, sizeof what, "Q%d D%d B%d, three pushes", Q, D, B);
    float *q = randn((int64_t)Q * D, 1.0f, 0.0f);
    float *gq = upf(q, (int64_t)Q * D);
    for (int k = 0; k < 3; k++) {
        float *x = randn((int64_t)B * D, 1.0f, 0.0f), *gx = upf(x, (int64_t)B * D);
        if (cpu->queue_push(cpu, q, Q, D, x, B) || gpu->queue_push(gpu, gq, Q, D, gx, B))
            die("queue_push");
        gfree(gx);
        free(x);
    }
    compare("queue_push", what, downf(gq, (int64_t)Q * D), q, (int64_t)Q * D, -1);
    gfree(gq);
    free(q);
}

static void test_kd(int B, int Qn, int D, float tau, int zero_queue) {
    char what[80];
    snprintf(what, sizeof what, "B%d Q%d D%d tau %g%s", B, Qn, D, tau,
             zero_queue ? " zero queue" : "");
    float *t = randn((int64_t)B * D, 1.0f, 0.0f), *s = randn((int64_t)B * D, 1.0f, 0.0f);
    float *q = randn((int64_t)Qn * D, 1.0f, 0.0f);
    /* rows of unit norm, as the step gives them */
    float *rows[3] = {t, s, q};
    int nrows[3] = {B, B, Qn};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < nrows[k]; i++) {
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)rows[k][(int64_t)i * D + d] * rows[k][(int64_t)i * D + d];
            for (int d = 0; d < D; d++) rows[k][(int64_t)i * D + d] /= (float)sqrt(ss);
        }
    if (zero_queue) memset(q, 0, (size_t)Qn * D * sizeof(float));
    const int64_t np = 2 * (int64_t)B * Qn;
    float *probs = xmalloc(np * 4), *ds = xmalloc((size_t)B * D * 4);
    float *gt = upf(t, (int64_t)B * D), *gs = upf(s, (int64_t)B * D), *gq = upf(q, (int64_t)Qn * D);
    float *gp = nanf_dev(np), *gp2 = nanf_dev(np), *gds = nanf_dev((int64_t)B * D);
    double lc = NAN, lg = NAN, lg2 = NAN; /* a loss never written fails, even the zero one */
    if (cpu->kd_loss_forward(cpu, &lc, t, s, q, B, Qn, D, tau, probs) ||
        gpu->kd_loss_forward(gpu, &lg, gt, gs, gq, B, Qn, D, tau, gp) ||
        gpu->kd_loss_forward(gpu, &lg2, gt, gs, gq, B, Qn, D, tau, gp2))
        die("kd_loss_forward");
    char lw[160];
    if (zero_queue) {
        snprintf(lw, sizeof lw, "%s: loss cpu %g gpu %g (exactly 0)", what, lc, lg);
        expect(lc == 0.0 && lg == 0.0, "kd loss", lw);
    } else {
        snprintf(lw, sizeof lw, "%s: loss cpu %.9g gpu %.9g", what, lc, lg);
        expect(isfinite(lg) && fabs(lg - lc) <= 1e-5 * fabs(lc) + 1e-9, "kd loss", lw);
    }
    expect(memcmp(&lg, &lg2, sizeof lg) == 0, "kd determinism", "loss twice: same bits");
    same_bytes("kd determinism", "probs twice", gp, gp2, (size_t)np * sizeof(float));
    compare("kd probs p_t", what, downf(gp, B * (int64_t)Qn), probs, B * (int64_t)Qn, GEMM_THR);
    float *gpall = downf(gp, np);
    compare("kd probs ps-pt", what, copyf(gpall + (int64_t)B * Qn, (int64_t)B * Qn),
            probs + (int64_t)B * Qn, (int64_t)B * Qn, zero_queue ? -1 : 1e-9);
    free(gpall);
    /* the backward from the CPU's probabilities: the GEMM alone */
    float *gpc = upf(probs, np);
    if (cpu->kd_loss_backward(cpu, ds, probs, q, B, Qn, D, tau) ||
        gpu->kd_loss_backward(gpu, gds, gpc, gq, B, Qn, D, tau))
        die("kd_loss_backward");
    compare("kd loss bwd", what, downf(gds, (int64_t)B * D), ds, (int64_t)B * D,
            zero_queue ? -1 : GEMM_THR);
    lt_err_clear();
    expect(gpu->kd_loss_forward(gpu, &lg, gt, gs, gq, B, Qn, D, 0.0f, gp) == -1 &&
               strstr(lt_err_msg(), "temperature") != NULL,
           "kd loss", "tau 0: refused");
    gfree(gt), gfree(gs), gfree(gq), gfree(gp), gfree(gp2), gfree(gds), gfree(gpc);
    free(t), free(s), free(q), free(probs), free(ds);
}

/* ---- the optimizer ------------------------------------------------------------------------------ */

static void test_sumsq(int64_t n) {
    char what[64];
    snprintf(what, sizeof what, "n %lld", (long long)n);
    float *x = randn(n, 1.0f, 0.0f), *gx = n ? upf(x, n) : dev(sizeof(float));
    double c = -1, g = -1, g2 = -2;
    if (cpu->sumsq(cpu, x, n, &c) || gpu->sumsq(gpu, gx, n, &g) || gpu->sumsq(gpu, gx, n, &g2))
        die("sumsq");
    char lw[128];
    snprintf(lw, sizeof lw, "%s: cpu %.17g gpu %.17g", what, c, g);
    expect(fabs(g - c) <= 1e-12 * fabs(c) && (n > 0 || g == 0.0), "sumsq", lw);
    expect(memcmp(&g, &g2, sizeof g) == 0, "sumsq determinism", what);
    gfree(gx);
    free(x);
}

/* sumsq_many: each result bitwise what sumsq gives for that array (the same kernels) */
static void test_sumsq_many(void) {
    const int64_t ns[] = {3, 0, 65537, 1000003, 17, 65536};
    const int k = 6;
    float *hx[6], *gx[6];
    double each[6], many[6], cpu_many[6];
    for (int i = 0; i < k; i++) {
        hx[i] = randn(ns[i], 1.0f, 0.0f);
        gx[i] = ns[i] ? upf(hx[i], ns[i]) : dev(sizeof(float));
        if (gpu->sumsq(gpu, gx[i], ns[i], &each[i])) die("sumsq");
    }
    if (gpu->sumsq_many(gpu, (const float *const *)gx, ns, k, many) ||
        cpu->sumsq_many(cpu, (const float *const *)hx, ns, k, cpu_many))
        die("sumsq_many");
    int same = 1, close = 1;
    for (int i = 0; i < k; i++) {
        same &= memcmp(&each[i], &many[i], sizeof(double)) == 0;
        close &= fabs(many[i] - cpu_many[i]) <= 1e-12 * fabs(cpu_many[i]);
    }
    expect(same, "sumsq_many", "6 arrays (one empty): each = sumsq's, bit for bit");
    expect(close, "sumsq_many", "6 arrays: the CPU's within 1e-12");
    for (int i = 0; i < k; i++) gfree(gx[i]), free(hx[i]);
}

static void optimizer_cases(void) {
    printf("-- optimizer\n");
    const int64_t sizes[] = {0, 1, 65536, 65537, 1000003};
    for (int k = 0; k < 5; k++) test_sumsq(sizes[k]);
    test_sumsq_many();
    const int64_t n = 70001;
    float *w = randn(n, 0.1f, 0.0f), *g = randn(n, 0.01f, 0.0f), *buf = randn(n, 0.01f, 0.0f);
    float *m = randn(n, 0.01f, 0.0f), *v = randn(n, 0.001f, 0.0f);
    for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    float *gw = upf(w, n), *gg = upf(g, n), *gbuf = upf(buf, n), *gm = upf(m, n), *gv = upf(v, n);
    if (cpu->scale(cpu, g, n, 0.37f) || gpu->scale(gpu, gg, n, 0.37f)) die("scale");
    compare("scale", "n 70001", downf(gg, n), g, n, -1);
    /* momentum: no buffer, first step, later steps */
    if (cpu->momentum_update(cpu, w, g, NULL, n, 1.3f, 1e-4f, 0.9f, 0.05f, 0) ||
        gpu->momentum_update(gpu, gw, gg, NULL, n, 1.3f, 1e-4f, 0.9f, 0.05f, 0))
        die("momentum");
    compare("momentum", "no buffer: w", downf(gw, n), w, n, -1);
    for (int first = 1; first >= 0; first--) {
        if (cpu->momentum_update(cpu, w, g, buf, n, 0.7f, 1e-6f, 0.9f, 0.1f, first) ||
            gpu->momentum_update(gpu, gw, gg, gbuf, n, 0.7f, 1e-6f, 0.9f, 0.1f, first))
            die("momentum");
        compare("momentum", first ? "first: w" : "later: w", downf(gw, n), w, n, -1);
        compare("momentum", first ? "first: buf" : "later: buf", downf(gbuf, n), buf, n, -1);
    }
    for (int decay_on = 0; decay_on < 2; decay_on++) {
        lt_adamw_scalars k = {.decay_on = decay_on, .decay = 1.0f - 1e-3f * 0.05f, .b1 = 0.9f,
                              .b2 = 0.999f, .omb1 = 0.1f, .omb2 = 0.001f, .step_size = 1.3e-3f,
                              .bc2_sqrt = 0.0447f, .eps = 1e-8f};
        if (cpu->adamw_update(cpu, w, g, m, v, n, &k) || gpu->adamw_update(gpu, gw, gg, gm, gv, n, &k))
            die("adamw");
        const char *tag = decay_on ? "decay on" : "decay off";
        compare("adamw w", tag, downf(gw, n), w, n, -1);
        compare("adamw m", tag, downf(gm, n), m, n, -1);
        compare("adamw v", tag, downf(gv, n), v, n, -1);
    }
    gfree(gw), gfree(gg), gfree(gbuf), gfree(gm), gfree(gv);
    free(w), free(g), free(buf), free(m), free(v);
}

/* ---- bf16 activations (a backend at LT_PREC_BF16) --------------------------------------------------
 * There an activation buffer keeps its float size and holds bf16 values in its first half
 * (nn/backend.h). The CPU reference gets the same inputs rounded to bf16 (round to nearest even,
 * lt_cuda_f32_to_bf16, as the device's __float2bfloat16_rn), so the two differ only by what the
 * GPU rounds itself: its bf16 outputs, and the filter's bf16 copy inside a convolution. Bounds:
 *   bitwise, against the CPU's output rounded to bf16: relu_backward, add, max pool (values,
 *     argmax, gradient), avgpool (fp32 features; the gradient rounded), mix_normalize, batch norm
 *     in eval mode. Their fp32 arithmetic is the CPU's operation for operation (bitwise equal in
 *     fp32 above) and a bf16 output is that value rounded once, so nothing but the rounding may
 *     differ (a stricter check than the NMSE 1e-4 a single rounding would allow);
 *   batch norm training: y and dx NMSE <= 1e-4 against the CPU's fp32 outputs (one bf16 rounding:
 *     relative error <= 2^-8, NMSE ~5e-6; the statistics differ by float ulps as in fp32). The
 *     statistics, running statistics, dgamma and dbeta are fp32 computed from the same (rounded)
 *     values on both sides, and the ReLU mask of a bf16 y is the fp32 y's (rounding keeps the
 *     sign): the fp32 bounds above hold;
 *   conv2d y and dx: NMSE <= 1e-4: bf16 operands (the GPU also rounds the fp32 filter, ~5e-6),
 *     fp32 accumulation, one rounding of the output (~5e-6), as the teacher's bf16 products;
 *   conv2d dw (fp32 parameter gradient): NMSE <= 1e-3: the bf16 products are exact in fp32, but
 *     cuDNN's bf16 backward-filter writes dw_t in bf16 (~5e-6) and an algorithm may reduce over
 *     the batch's positions in bf16 partial sums; 1e-3 allows a handful of such roundings and
 *     still fails a wrong layout, half or flag (O(1)). */
#define BF16_ACT_THR 1e-4
#define BF16_DW_THR 1e-3
#define BF16_NAN 0x7fc0u

static float bf16r(float f) { return lt_cuda_bf16_to_f32(lt_cuda_f32_to_bf16(f)); }
static void round_bf16(float *h, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = bf16r(h[i]);
}
/* A device buffer of n floats' bytes (as the model allocates it): h as bf16 in its first half,
 * bf16 NaNs in the second (a kernel reading the wrong half fails) */
static float *upb(const float *h, int64_t n) {
    uint16_t *t = xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) t[i] = lt_cuda_f32_to_bf16(h[i]), t[n + i] = BF16_NAN;
    float *d = up(t, (size_t)n * 4);
    free(t);
    return d;
}
/* n floats' bytes of bf16 NaNs: an unwritten output element fails */
static float *nanb_dev(int64_t n) {
    uint16_t *t = xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < 2 * n; i++) t[i] = BF16_NAN;
    float *d = up(t, (size_t)n * 4);
    free(t);
    return d;
}
/* The n bf16 values in the first half of d, widened to float */
static float *downb(const float *d, int64_t n) {
    uint16_t *t = down(d, (size_t)n * 2);
    float *f = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) f[i] = lt_cuda_bf16_to_f32(t[i]);
    free(t);
    return f;
}
/* The second half of an output made by nanb_dev is untouched: the entry wrote bf16, not floats */
static void tail_intact(const char *op, const char *what, const float *d, int64_t n) {
    uint16_t *t = down(d, (size_t)n * 4);
    int64_t bad = 0;
    for (int64_t i = n; i < 2 * n; i++) bad += t[i] != BF16_NAN;
    char w[128];
    snprintf(w, sizeof w, "%s: second half untouched", what);
    expect(bad == 0, op, w);
    free(t);
}

static void test_conv_bf16(int B, int H, int W, int Cin, int Cout, int k, int stride, int pad) {
    lt_conv2d_dims d;
    char what[96];
    snprintf(what, sizeof what, "B%d %dx%dx%d->%d k%d s%d p%d", B, H, W, Cin, Cout, k, stride,
             pad);
    if (lt_conv2d_dims_init(&d, B, H, W, Cin, Cout, k, k, stride, pad)) die("conv dims");
    const int64_t nx = (int64_t)B * H * W * Cin, ny = (int64_t)B * d.OH * d.OW * Cout;
    const int64_t nw = (int64_t)Cout * Cin * k * k;
    float *x = randn(nx, 1.0f, 0.0f), *w = randn(nw, 0.2f, 0.0f), *dy = randn(ny, 1.0f, 0.0f);
    float *dx0 = randn(nx, 1.0f, 0.0f), *dw0 = randn(nw, 1.0f, 0.0f);
    round_bf16(x, nx), round_bf16(dy, ny), round_bf16(dx0, nx); /* the activations */
    size_t cws = cpu->conv2d_ws_bytes(cpu, &d), gws = gpu->conv2d_ws_bytes(gpu, &d);
    void *hws = host_ws(cws);
    float *y = xmalloc((size_t)ny * sizeof(float));
    float *gx = upb(x, nx), *gw = upf(w, nw), *gdy = upb(dy, ny), *gy = nanb_dev(ny);
    float *gdx = NULL, *gdw = NULL, *gdx2 = NULL, *gdw2 = NULL;
    void *gws_p = dev(gws ? gws : 1);
    OK_OR_FAIL(gws == 0 ? -1 : 0, "bf16 conv2d ws", what);
    OK_OR_FAIL(cpu->conv2d_forward(cpu, &d, y, x, w, hws), "conv2d fwd (cpu)", what);
    OK_OR_FAIL(gpu->conv2d_forward(gpu, &d, gy, gx, gw, gws_p), "bf16 conv2d fwd", what);
    compare("bf16 conv2d fwd", what, downb(gy, ny), y, ny, BF16_ACT_THR);
    tail_intact("bf16 conv2d fwd", what, gy, ny);
    for (int mode = 0; mode < 4; mode++) {
        /* 0: dw, dx written; 1: dw +=, dx +=; 2: dw only; 3: dx only (accumulate_dx) */
        const int acc = mode == 1, acc_dx = mode == 1 || mode == 3;
        const int with_dx = mode != 2, with_dw = mode != 3;
        float *dx = copyf(dx0, nx), *dw = copyf(dw0, nw);
        gdx = acc_dx ? upb(dx0, nx) : nanb_dev(nx);
        gdw = acc ? upf(dw0, nw) : nanf_dev(nw);
        char m[128];
        snprintf(m, sizeof m, "%s acc=%d acc_dx=%d%s%s", what, acc, acc_dx,
                 with_dx ? "" : " no dx", with_dw ? "" : " no dw");
        int rc = cpu->conv2d_backward(cpu, &d, with_dx ? dx : NULL, with_dw ? dw : NULL, dy, x, w,
                                      hws, acc, acc_dx);
        if (rc == 0)
            rc = gpu->conv2d_backward(gpu, &d, with_dx ? gdx : NULL, with_dw ? gdw : NULL, gdy,
                                      gx, gw, gws_p, acc, acc_dx);
        if (rc != 0) {
            printf("%-18s %-44s FAIL (%s)\n", "bf16 conv2d bwd", m, lt_err_msg());
            n_fail++;
        } else {
            if (with_dx) compare("bf16 conv2d dx", m, downb(gdx, nx), dx, nx, BF16_ACT_THR);
            if (with_dw) compare("bf16 conv2d dw", m, downf(gdw, nw), dw, nw, BF16_DW_THR);
        }
        free(dx);
        free(dw);
        gfree(gdx);
        gfree(gdw);
        gdx = gdw = NULL;
    }
    /* determinism: the same backward twice */
    gdx = nanb_dev(nx), gdw = nanf_dev(nw), gdx2 = nanb_dev(nx), gdw2 = nanf_dev(nw);
    OK_OR_FAIL(gpu->conv2d_backward(gpu, &d, gdx, gdw, gdy, gx, gw, gws_p, 0, 0),
               "bf16 conv2d bwd", what);
    OK_OR_FAIL(gpu->conv2d_backward(gpu, &d, gdx2, gdw2, gdy, gx, gw, gws_p, 0, 0),
               "bf16 conv2d bwd", what);
    same_bytes("bf16 conv2d determ.", what, gdx, gdx2, (size_t)nx * 2);
    same_bytes("bf16 conv2d determ.", what, gdw, gdw2, (size_t)nw * sizeof(float));
    tail_intact("bf16 conv2d dx", what, gdx, nx);
out:
    gfree(gx), gfree(gw), gfree(gdy), gfree(gy), gfree(gdx), gfree(gdw), gfree(gdx2), gfree(gdw2);
    gfree(gws_p);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(y), free(hws);
}

/* Training forward and backward (the backward from the GPU's own forward outputs, as the model
 * runs it), then the backward again with dx = dy in place (the walk's use), bitwise the first. */
static void test_bn_bf16(int M, int C, int relu, int with_res, int acc, float offset) {
    char what[96];
    snprintf(what, sizeof what, "M%d C%d relu=%d res=%d acc=%d mean~%g", M, C, relu, with_res,
             acc, offset);
    const int64_t n = (int64_t)M * C;
    const float eps = 1e-5f, mom = 0.1f;
    float *x = randn(n, 1.5f, offset), *res = with_res ? randn(n, 1.0f, 0.0f) : NULL;
    float *gamma = randn(C, 0.3f, 1.0f), *beta = randn(C, 0.3f, 0.0f);
    float *rm = randn(C, 0.1f, 0.0f), *rv = randn(C, 0.1f, 1.0f);
    float *dy = randn(n, 1.0f, 0.0f), *dg0 = randn(C, 1.0f, 0.0f), *db0 = randn(C, 1.0f, 0.0f);
    round_bf16(x, n), round_bf16(dy, n);
    if (res) round_bf16(res, n);
    float *y = xmalloc((size_t)n * sizeof(float)), *mean = xmalloc(C * sizeof(float));
    float *invstd = xmalloc(C * sizeof(float)), *dx = xmalloc((size_t)n * sizeof(float));
    float *crm = copyf(rm, C), *crv = copyf(rv, C), *dg = copyf(dg0, C), *db = copyf(db0, C);
    void *hws = host_ws(cpu->bn_ws_bytes(cpu, C));
    float *gx = upb(x, n), *gres = with_res ? upb(res, n) : NULL, *gg = upf(gamma, C);
    float *gb = upf(beta, C), *grm = upf(rm, C), *grv = upf(rv, C), *gdy = upb(dy, n);
    float *gy = nanb_dev(n), *gmean = nanf_dev(C), *ginv = nanf_dev(C), *gdx = nanb_dev(n);
    float *gdg = acc ? upf(dg0, C) : nanf_dev(C), *gdb = acc ? upf(db0, C) : nanf_dev(C);
    float *gdy2 = upb(dy, n);
    void *gws = dev(gpu->bn_ws_bytes(gpu, C));
    OK_OR_FAIL(cpu->bn_forward_train(cpu, y, x, res, gamma, beta, mean, invstd, crm, crv, M, C,
                                     eps, mom, relu, hws),
               "bn fwd (cpu)", what);
    OK_OR_FAIL(gpu->bn_forward_train(gpu, gy, gx, gres, gg, gb, gmean, ginv, grm, grv, M, C, eps,
                                     mom, relu, gws),
               "bf16 bn fwd train", what);
    compare("bf16 bn fwd y", what, downb(gy, n), y, n, BF16_ACT_THR);
    tail_intact("bf16 bn fwd y", what, gy, n);
    compare("bf16 bn mean", what, downf(gmean, C), mean, C, BN_FWD_THR);
    compare("bf16 bn invstd", what, downf(ginv, C), invstd, C, BN_FWD_THR);
    compare("bf16 bn running_mean", what, downf(grm, C), crm, C, BN_FWD_THR);
    compare("bf16 bn running_var", what, downf(grv, C), crv, C, BN_FWD_THR);
    OK_OR_FAIL(cpu->bn_backward(cpu, dx, dg, db, dy, x, y, gamma, mean, invstd, M, C, relu, acc,
                                hws),
               "bn bwd (cpu)", what);
    OK_OR_FAIL(gpu->bn_backward(gpu, gdx, gdg, gdb, gdy, gx, gy, gg, gmean, ginv, M, C, relu, acc,
                                gws),
               "bf16 bn bwd", what);
    if (M == 2) { /* dx a cancellation: measured against its terms (test_bn) */
        float *terms = xmalloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) terms[i] = gamma[i % C] * invstd[i % C] * dy[i];
        compare_scaled("bf16 bn bwd dx", what, downb(gdx, n), dx, terms, n, BN_BWD_M2_THR);
        free(terms);
    } else {
        compare("bf16 bn bwd dx", what, downb(gdx, n), dx, n, BF16_ACT_THR);
    }
    compare("bf16 bn bwd dgamma", what, downf(gdg, C), dg, C, BN_BWD_THR);
    compare("bf16 bn bwd dbeta", what, downf(gdb, C), db, C, BN_BWD_THR);
    OK_OR_FAIL(gpu->bn_backward(gpu, gdy2, NULL, NULL, gdy2, gx, gy, gg, gmean, ginv, M, C, relu,
                                0, gws),
               "bf16 bn bwd", what);
    same_bytes("bf16 bn bwd dx=dy", what, gdx, gdy2, (size_t)n * 2);
out:
    gfree(gx), gfree(gres), gfree(gg), gfree(gb), gfree(grm), gfree(grv), gfree(gdy);
    gfree(gy), gfree(gmean), gfree(ginv), gfree(gdx), gfree(gdg), gfree(gdb), gfree(gdy2);
    gfree(gws);
    free(x), free(res), free(gamma), free(beta), free(rm), free(rv), free(dy), free(dg0);
    free(db0), free(y), free(mean), free(invstd), free(dx), free(crm), free(crv), free(dg);
    free(db), free(hws);
}

static void test_bn_eval_bf16(int M, int C, int relu, int with_res) {
    char what[64];
    snprintf(what, sizeof what, "M%d C%d relu=%d res=%d", M, C, relu, with_res);
    const int64_t n = (int64_t)M * C;
    float *x = randn(n, 1.0f, 0.5f), *res = with_res ? randn(n, 1.0f, 0.0f) : NULL;
    float *gamma = randn(C, 0.3f, 1.0f), *beta = randn(C, 0.3f, 0.0f);
    float *rm = randn(C, 0.3f, 0.0f), *rv = randn(C, 0.2f, 1.0f);
    for (int c = 0; c < C; c++) rv[c] = fabsf(rv[c]);
    round_bf16(x, n);
    if (res) round_bf16(res, n);
    float *y = xmalloc((size_t)n * sizeof(float));
    float *gx = upb(x, n), *gres = with_res ? upb(res, n) : NULL, *gg = upf(gamma, C);
    float *gb = upf(beta, C), *grm = upf(rm, C), *grv = upf(rv, C), *gy = nanb_dev(n);
    OK_OR_FAIL(cpu->bn_forward_eval(cpu, y, x, res, gamma, beta, rm, rv, M, C, 1e-5f, relu),
               "bn eval (cpu)", what);
    OK_OR_FAIL(gpu->bn_forward_eval(gpu, gy, gx, gres, gg, gb, grm, grv, M, C, 1e-5f, relu),
               "bf16 bn eval", what);
    round_bf16(y, n);
    compare("bf16 bn fwd eval", what, downb(gy, n), y, n, -1);
out:
    gfree(gx), gfree(gres), gfree(gg), gfree(gb), gfree(grm), gfree(grv), gfree(gy);
    free(x), free(res), free(gamma), free(beta), free(rm), free(rv), free(y);
}

static void elementwise_cases_bf16(void) {
    const int64_t n = 100003;
    float *a = randn(n, 1.0f, 0.0f), *b = randn(n, 1.0f, 0.0f), *r = xmalloc(n * sizeof(float));
    round_bf16(a, n), round_bf16(b, n);
    float *ga = upb(a, n), *gb = upb(b, n), *gr = nanb_dev(n);
    if (cpu->relu_backward(cpu, r, a, b, n) || gpu->relu_backward(gpu, gr, ga, gb, n))
        die("relu_backward");
    compare("bf16 relu_backward", "n 100003", downb(gr, n), r, n, -1);
    tail_intact("bf16 relu_backward", "n 100003", gr, n);
    if (cpu->add(cpu, r, a, b, n) || gpu->add(gpu, ga, ga, gb, n)) die("add");
    round_bf16(r, n);
    compare("bf16 add", "n 100003, y = a in place", downb(ga, n), r, n, -1);
    gfree(ga), gfree(gb), gfree(gr);
    free(a), free(b), free(r);

    static const int pools[][5] = {{2, 15, 15, 16, 0}, {3, 16, 16, 64, 0}, {2, 9, 11, 8, 1}};
    for (int k = 0; k < 3; k++) {
        lt_pool_dims d;
        const int ties = pools[k][4];
        if (lt_pool_dims_init(&d, pools[k][0], pools[k][1], pools[k][2], pools[k][3], 3, 2, 1))
            die("pool dims");
        char what[64];
        snprintf(what, sizeof what, "B%d %dx%dx%d k3 s2 p1%s", d.B, d.H, d.W, d.C,
                 ties ? " ties" : "");
        const int64_t ni = (int64_t)d.B * d.H * d.W * d.C, no = (int64_t)d.B * d.OH * d.OW * d.C;
        float *x = randn(ni, 1.0f, 0.0f), *dy = randn(no, 1.0f, 0.0f);
        if (ties)
            for (int64_t i = 0; i < ni; i++) x[i] = roundf(x[i]);
        round_bf16(x, ni), round_bf16(dy, no);
        float *y = xmalloc(no * sizeof(float)), *dx = xmalloc(ni * sizeof(float));
        int32_t *am = xmalloc(no * sizeof(int32_t));
        float *gx = upb(x, ni), *gy = nanb_dev(no), *gdy = upb(dy, no), *gdx = nanb_dev(ni);
        int32_t *am_init = xmalloc(no * sizeof(int32_t));
        for (int64_t i = 0; i < no; i++) am_init[i] = -1;
        int32_t *gam = up(am_init, no * sizeof(int32_t));
        free(am_init);
        if (cpu->maxpool_forward(cpu, &d, y, am, x) || gpu->maxpool_forward(gpu, &d, gy, gam, gx))
            die("maxpool_forward");
        compare("bf16 maxpool fwd", what, downb(gy, no), y, no, -1);
        compare_i32("bf16 maxpool argmax", what, down(gam, no * sizeof(int32_t)), am, no);
        if (cpu->maxpool_backward(cpu, &d, dx, dy, am) ||
            gpu->maxpool_backward(gpu, &d, gdx, gdy, gam))
            die("maxpool_backward");
        round_bf16(dx, ni);
        compare("bf16 maxpool bwd", what, downb(gdx, ni), dx, ni, -1);
        tail_intact("bf16 maxpool bwd", what, gdx, ni);
        gfree(gx), gfree(gy), gfree(gdy), gfree(gdx), gfree(gam);
        free(x), free(dy), free(y), free(dx), free(am);
    }

    /* global average pool: x bf16, the features y and their gradient dy fp32, dx bf16 */
    static const int avg[][3] = {{3, 49, 24}, {8, 4, 512}};
    for (int k = 0; k < 2; k++) {
        const int B = avg[k][0], HW = avg[k][1], C = avg[k][2];
        char what[64];
        snprintf(what, sizeof what, "B%d HW%d C%d", B, HW, C);
        const int64_t ni = (int64_t)B * HW * C, no = (int64_t)B * C;
        float *x = randn(ni, 1.0f, 0.0f), *dy = randn(no, 1.0f, 0.0f);
        round_bf16(x, ni);
        float *y = xmalloc(no * sizeof(float)), *dx = xmalloc(ni * sizeof(float));
        float *gx = upb(x, ni), *gy = nanf_dev(no), *gdy = upf(dy, no), *gdx = nanb_dev(ni);
        if (cpu->avgpool_forward(cpu, y, x, B, HW, C) ||
            gpu->avgpool_forward(gpu, gy, gx, B, HW, C) ||
            cpu->avgpool_backward(cpu, dx, dy, B, HW, C) ||
            gpu->avgpool_backward(gpu, gdx, gdy, B, HW, C))
            die("avgpool");
        compare("bf16 avgpool fwd", what, downf(gy, no), y, no, -1);
        round_bf16(dx, ni);
        compare("bf16 avgpool bwd", what, downb(gdx, ni), dx, ni, -1);
        gfree(gx), gfree(gy), gfree(gdy), gfree(gdx);
        free(x), free(dy), free(y), free(dx);
    }
}

/* mix_normalize into the model's input, a bf16 activation */
static void test_mix_bf16(int B, int HW, int partner) {
    char what[64];
    snprintf(what, sizeof what, "B%d HW%d partner=%d", B, HW, partner);
    const int64_t n = (int64_t)B * HW * 3;
    uint8_t *a = xmalloc(n), *b = xmalloc(n);
    for (int64_t i = 0; i < n; i++) a[i] = (uint8_t)(next_u64() >> 56), b[i] = (uint8_t)(next_u64() >> 56);
    float *lambda = xmalloc(B * sizeof(float)), *x = xmalloc(n * sizeof(float));
    for (int i = 0; i < B; i++) lambda[i] = (float)uni();
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    uint8_t *ga = up(a, n), *gb = up(b, n);
    float *gl = upf(lambda, B), *gx = nanb_dev(n);
    if (cpu->mix_normalize(cpu, x, a, partner ? b : NULL, lambda, B, HW, mean, std) ||
        gpu->mix_normalize(gpu, gx, ga, partner ? gb : NULL, gl, B, HW, mean, std))
        die("mix_normalize");
    round_bf16(x, n);
    compare("bf16 mix_normalize", what, downb(gx, n), x, n, -1);
    tail_intact("bf16 mix_normalize", what, gx, n);
    gfree(ga), gfree(gb), gfree(gl), gfree(gx);
    free(a), free(b), free(lambda), free(x);
}

/* The bf16 section: gpu is a backend at LT_PREC_BF16 */
static void bf16_cases(void) {
    expect(gpu->act_bf16 == 1, "bf16 backend", "act_bf16 set");
    test_conv_bf16(2, 37, 37, 3, 16, 7, 2, 3);  /* the stem: Cin 3 */
    test_conv_bf16(3, 7, 7, 32, 32, 3, 1, 1);   /* 3×3/1 */
    test_conv_bf16(2, 15, 15, 16, 32, 3, 2, 1); /* 3×3/2, odd input */
    test_conv_bf16(4, 9, 9, 64, 128, 1, 1, 0);  /* 1×1/1 */
    test_conv_bf16(2, 13, 13, 32, 64, 1, 2, 0); /* 1×1/2 downsample */
    test_bn_bf16(3 * 7 * 7, 32, 1, 0, 0, 0.0f);
    test_bn_bf16(3 * 7 * 7, 32, 1, 1, 1, 0.0f);   /* block output: residual + ReLU, accumulate */
    test_bn_bf16(2 * 15 * 15, 64, 0, 0, 1, 20.0f); /* |mean| >> std */
    test_bn_bf16(2, 5, 0, 0, 0, 0.0f);
    test_bn_bf16(2 * 56 * 56, 64, 1, 0, 0, 0.0f);  /* many row chunks */
    test_bn_bf16(1000, 40, 1, 1, 0, 0.0f);         /* C not a multiple of 32 */
    test_bn_eval_bf16(3 * 7 * 7, 32, 1, 0);
    test_bn_eval_bf16(2 * 5 * 5, 48, 1, 1);
    elementwise_cases_bf16();
    test_mix_bf16(3, 37 * 37, 1);
    test_mix_bf16(2, 64 * 64, 0);
    expect(lt_backend_cuda_set_precision(gpu, LT_PREC_FP32) == -1 &&
               strstr(lt_err_msg(), "before the first convolution") != NULL,
           "bf16 backend", "precision after a convolution: refused");
}

/* ---- main --------------------------------------------------------------------------------------- */

int main(void) {
    if (!lt_cuda_available()) {
        printf("test_cuda_cnn: SKIP: no CUDA device (or a CPU-only build)\n");
        return 77;
    }
    char info[256];
    if (lt_cuda_device_info(info, sizeof info) == 0) printf("device: %s\n", info);
    cpu = lt_backend_cpu(lt_threads_set(4));
    gpu = lt_backend_cuda(0);
    if (!cpu || !gpu) {
        printf("test_cuda_cnn: FAIL: %s\n", lt_err_msg());
        return 1;
    }
    if (strcmp(gpu->name, "cuda") != 0 || gpu->mem != LT_MEM_DEVICE) {
        printf("test_cuda_cnn: FAIL: the CUDA backend is '%s', mem %d\n", gpu->name, gpu->mem);
        return 1;
    }
    seed_rng();
    conv_cases();
    bn_cases();
    elementwise_cases();
    printf("-- linear (the head)\n");
    test_linear(8, 512, 128, 1, 0, 1);
    test_linear(8, 512, 128, 1, 1, 1);
    test_linear(1, 2048, 64, 0, 0, 0);
    test_linear(37, 96, 33, 1, 1, 1);
    printf("-- the input, the method\n");
    test_mix(3, 37 * 37, 1);
    test_mix(2, 64 * 64, 0);
    test_l2(8, 128);
    test_l2(3, 1000);
    test_queue(16, 8, 5);  /* B < Q */
    test_queue(8, 4, 8);   /* B == Q */
    test_queue(6, 4, 9);   /* B > Q */
    test_queue(4096, 64, 1);
    test_kd(8, 64, 128, 0.07f, 0);
    test_kd(37, 300, 96, 0.2f, 0);
    test_kd(4, 16, 32, 0.07f, 1);
    optimizer_cases();
    /* tf32: the convolutions and the head's GEMM through the tensor cores */
    printf("-- tf32 (a second CUDA backend, --precision tf32)\n");
    lt_backend *fp32 = gpu;
    gpu = lt_backend_cuda(0);
    if (!gpu || lt_backend_cuda_set_precision(gpu, LT_PREC_TF32) != 0) {
        printf("tf32 backend %-34s FAIL (%s)\n", "", lt_err_msg());
        n_fail++;
    } else {
        conv_thr = 1e-5;
        test_conv(2, 15, 15, 16, 32, 3, 1, 1, 2);
        test_conv(3, 14, 14, 64, 64, 3, 1, 1, 3);
        test_conv(2, 17, 17, 32, 64, 1, 2, 0, 2);
        test_conv(1, 33, 33, 3, 64, 7, 2, 3, 1);
        conv_thr = 1e-9;
        expect(lt_backend_cuda_set_precision(gpu, LT_PREC_FP32) == -1 &&
                   strstr(lt_err_msg(), "before the first convolution") != NULL,
               "tf32 backend", "precision after a convolution: refused");
        gpu->destroy(gpu);
    }
    /* bf16: activations in bf16 (the first half of their buffers), parameters fp32 */
    printf("-- bf16 (a third CUDA backend, --precision bf16)\n");
    gpu = lt_backend_cuda(0);
    if (!gpu || lt_backend_cuda_set_precision(gpu, LT_PREC_BF16) != 0) {
        printf("bf16 backend %-34s FAIL (%s)\n", "", lt_err_msg());
        n_fail++;
    } else {
        bf16_cases();
    }
    if (gpu) gpu->destroy(gpu);
    gpu = fp32;
    expect(gpu->act_bf16 == 0, "fp32 backend", "act_bf16 clear");
    expect(lt_backend_cuda_set_precision(cpu, LT_PREC_TF32) == -1, "cpu backend",
           "tf32 refused");
    expect(lt_backend_cuda_set_precision(cpu, LT_PREC_BF16) == -1, "cpu backend",
           "bf16 refused");
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    printf("%d passed, %d failed\n", n_ok, n_fail);
    return n_fail ? 1 : 0;
}
