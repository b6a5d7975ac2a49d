/* test_cuda_student.c: whole training steps of the student on the CUDA backend against the CPU
 * backend: lt_student_init + lt_student_step (lib/train/step.c, the code lt-train runs), with
 * mixup (a partner view and random λ), gradient clipping that bites (clip 0.5), LARS, a queue
 * longer than the batch, at 64x64 and batch 8: resnet18 for 3 steps, resnet50 for 1, and the loss
 * curve of resnet18 over 50 steps; then resnet18 for 3 and for 50 steps on a CUDA backend at
 * --precision bf16 against the same CPU fp32 runs.
 *
 * Why it exists: test_cuda_cnn checks each backend entry alone; this checks that the entries
 * are called as the CPU's are in a real step (buffer roles, aliasing, scratch shared between
 * conv and batch norm, the upload of views, λ and teacher rows, the optimizer's host scalars
 * from device sums), and that the errors of each op stay small through the whole network and a
 * few updates.
 *
 * What is compared: the loss and the gradient norm of each step (relative difference); after the
 * steps the change of every parameter from its initial value (w_end − w_0: the weights
 * themselves would hide a wrong update behind their size) over all backbone parameters and over
 * the head, and the running statistics (NMSE); the queue (teacher rows, only moved) bitwise.
 *
 * The inputs are fresh random views each run (LT_TEST_SEED repeats one). The bounds were sized
 * with LT_TEST_CPU_PAIR=1 (below), which runs the same comparison between the CPU backend with 1
 * and with 3 threads: only reduction orders differ there, as between CPU and GPU (which also
 * differ in conv algorithms, so expect them 10-100x further apart). Largest values over 8 seeds:
 *   resnet18, 3 steps: loss 2.0e-6 relative, gradient norm 4.8e-4 (the norm is dominated by a
 *     few layers whose gradients are mostly rounding noise: conv weights just before a batch
 *     norm), backbone update NMSE 9.7e-6, head update NMSE 9.5e-9, running statistics 7.8e-13.
 *     Bounds: loss 1e-4, gradient norm 2e-2, backbone 5e-4, head and statistics 1e-6.
 *   resnet50, 1 step: this small input is ill-conditioned for it (gradient norm ~3000; layer 4
 *     normalises 32 rows): loss 8.0e-6, gradient norm 5.1e-3, backbone NMSE 7.2e-4, head 1.2e-7,
 *     statistics 4.7e-12. Bounds 1e-3, 0.1, 1e-2 and 1e-4 only catch gross errors (a wrong
 *     layout or flag gives O(1)); resnet18 and test_cuda_cnn carry the tight checks.
 * (Sized on one fixed input set, earlier bounds of 1e-4 on the gradient norm and 1e-6 on the
 * backbone NMSE failed the CPU pair itself on 5 of 8 fresh seeds.)
 * bf16 (activations and their gradients bf16, the rest fp32) against the CPU's fp32: sized with
 * LT_TEST_CPU_PAIR=bf16, which runs the CPU backend with the GPU's bf16 roundings emulated
 * (emu_bf16 below) against the plain CPU over 7 input sets: loss rel ≤ 9e-3, gradient norm rel
 * ≤ 6.3e-2 (the norm of a few noisy layers), backbone update cosine 0.956..0.961, head update
 * cosine ≥ 0.9994, running statistics NMSE ≤ 1.9e-6. Bounds: loss 3e-2, gradient norm 0.15,
 * cosines 0.9 (backbone) and 0.99 (head), statistics NMSE 1e-4 (the GPU adds only fp32
 * summation-order differences to the emulation's). A wrong half, layout or flag gives O(1).
 * The bf16 backend also refuses a host array of floats as lt_resnet_forward's input.
 * AdamW is not run here: its first updates are ≈ lr·sign(g), which turns rounding noise in
 * gradients that vanish mathematically (e.g. conv weights just before a batch norm) into ±lr
 * (CPU pair: update NMSE 1e-3); its kernel is checked bitwise in test_cuda_cnn.
 *
 * Then, on the GPU alone, the step's variants bit for bit (variants_case).
 *
 * Exit 0 all passed, 1 a failure, 77 no GPU (unless LT_TEST_CPU_PAIR=1 or bf16: CPU only). */
#include "core/error.h"
#include "core/threads.h"
#include "models/resnet.h"
#include "nn/backend.h"
#include "nn/ops_cuda.h"
#include "train/step.h"
#include "test_rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 8, S = 64, D = 64, Q = 32, STEPS = 3 };

static int n_fail, n_ok;

static void expect(int cond, const char *what) {
    printf("%-72s %s\n", what, cond ? "OK" : "FAIL");
    cond ? n_ok++ : n_fail++;
}


/* The inputs of every step, the same for both backends. */
typedef struct {
    uint8_t a[STEPS][B * S * S * 3], b[STEPS][B * S * S * 3];
    float lambda[STEPS][B], t[STEPS][B * D];
} inputs;

/* One view (S, S, 3): a colour, a gradient and a wave of its own, plus a little noise. Images
 * this different from each other keep the batch statistics well conditioned; views of pure
 * noise are all alike to the deep layers, whose batch norms (32 rows in layer 4) then divide
 * rounding noise by a tiny spread and no two summation orders agree. */
static void make_view(uint8_t *v) {
    double base[3], grad[3], amp[3];
    for (int c = 0; c < 3; c++)
        base[c] = 40 + 170 * uni(), grad[c] = 80 * (uni() - 0.5), amp[c] = 60 * uni();
    const double fx = 0.05 + 0.4 * uni(), fy = 0.05 + 0.4 * uni(), ph = 6.283 * uni();
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++) {
                double u = base[c] + grad[c] * (x - y) / S + amp[c] * sin(fx * x + fy * y + ph) +
                           8 * (uni() - 0.5);
                v[(y * S + x) * 3 + c] = (uint8_t)(u < 0 ? 0 : u > 255 ? 255 : u);
            }
}

static void make_inputs(inputs *in) {
    for (int k = 0; k < STEPS; k++) {
        for (int i = 0; i < B; i++) {
            make_view(in->a[k] + (size_t)i * S * S * 3);
            make_view(in->b[k] + (size_t)i * S * S * 3);
        }
        for (int i = 0; i < B; i++) in->lambda[k][i] = (float)(0.2 + 0.6 * uni());
        for (int i = 0; i < B; i++) { /* unit teacher rows, as the cache holds them */
            double ss = 0;
            float *r = in->t[k] + i * D;
            for (int d = 0; d < D; d++) r[d] = (float)(uni() - 0.5), ss += (double)r[d] * r[d];
            for (int d = 0; d < D; d++) r[d] /= (float)sqrt(ss);
        }
    }
}

/* What a run leaves to compare. */
typedef struct {
    double loss[STEPS], gnorm[STEPS];
    float *p0, *p1;     /* backbone parameters before / after (n_params) */
    float *h0, *h1;     /* head weight before / after (D·C) */
    float *buf;         /* running statistics after (n_buffers) */
    float *queue;       /* (Q, D) after */
    int64_t n_params, n_buffers, n_head;
    int64_t nbt;        /* Σ of the batch norms' num_batches_tracked after */
    int ok;
} result;

static void result_free(result *r) {
    free(r->p0), free(r->p1), free(r->h0), free(r->h1), free(r->buf), free(r->queue);
    memset(r, 0, sizeof *r);
}

static float *fetch(lt_backend *be, const float *src, int64_t n) {
    float *h = malloc((size_t)n * sizeof(float));
    if (h && be->download(be, h, src, (size_t)n * sizeof(float)) != 0) {
        free(h);
        return NULL;
    }
    return h;
}

static int run(lt_backend *be, const char *arch, lt_opt_kind kind, int steps, const inputs *in,
               result *r) {
    memset(r, 0, sizeof *r);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    lt_optim_config cfg = lt_optim_defaults(kind);
    lt_student st;
    if (lt_student_init(&st, be, arch, B, S, D, Q, 11, &cfg, mean, std) != 0) {
        printf("%s on %s: %s\n", arch, be->name, lt_err_msg());
        lt_student_free(&st);
        return -1;
    }
    const lt_resnet *m = st.model;
    r->n_params = m->n_params, r->n_buffers = m->n_buffers, r->n_head = (int64_t)D * st.C;
    r->p0 = fetch(be, m->params, r->n_params);
    r->h0 = fetch(be, st.head_w, r->n_head);
    int rc = r->p0 && r->h0 ? 0 : -1;
    const double lr = kind == LT_OPT_ADAMW ? 5e-4 : 0.02, clip = 0.5, tau = 0.07;
    for (int k = 0; k < steps && rc == 0; k++)
        rc = lt_student_step(&st, in->a[k], in->b[k], in->lambda[k], in->t[k], B, tau, clip, lr,
                             &r->loss[k], &r->gnorm[k]);
    if (rc == 0) {
        r->p1 = fetch(be, m->params, r->n_params);
        r->h1 = fetch(be, st.head_w, r->n_head);
        r->buf = fetch(be, m->buffers, r->n_buffers);
        r->queue = fetch(be, st.queue.data, (int64_t)Q * D);
        for (int i = 0; i < m->n_bn; i++) r->nbt += m->nbt[i];
        rc = r->p1 && r->h1 && r->buf && r->queue ? 0 : -1;
    }
    if (rc != 0) printf("%s on %s: %s\n", arch, be->name, lt_err_msg());
    lt_student_free(&st);
    r->ok = rc == 0;
    return rc;
}

/* ---- bf16: the CUDA backend at LT_PREC_BF16, and its emulation on the CPU ----
 * The emulation (LT_TEST_CPU_PAIR=bf16) is the CPU backend with every activation an entry writes
 * rounded to bf16 (round to nearest even, as __float2bfloat16_rn) and the filter of a convolution
 * rounded to bf16 on its way in, the weight gradient on its way out (cuDNN's bf16 dw_t): the
 * roundings of the GPU's bf16 mode at the same places, on the CPU's arithmetic. It sizes the bf16
 * bounds without a GPU; the real backend differs from it further only by fp32 summation orders. */
static lt_backend emu_base; /* the CPU backend's entries */

static void emu_round(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = lt_cuda_bf16_to_f32(lt_cuda_f32_to_bf16(x[i]));
}
static int64_t conv_out_n(const lt_conv2d_dims *d) { return (int64_t)d->B * d->OH * d->OW * d->Cout; }
static int64_t conv_in_n(const lt_conv2d_dims *d) { return (int64_t)d->B * d->H * d->W * d->Cin; }
static int64_t conv_w_n(const lt_conv2d_dims *d) { return (int64_t)d->Cout * d->Cin * d->kh * d->kw; }

static float *emu_filter(const lt_conv2d_dims *d, const float *w) {
    float *wb = malloc((size_t)conv_w_n(d) * sizeof(float));
    if (!wb) return NULL;
    memcpy(wb, w, (size_t)conv_w_n(d) * sizeof(float));
    emu_round(wb, conv_w_n(d));
    return wb;
}
static int emu_conv_fwd(lt_backend *be, const lt_conv2d_dims *d, float *y, const float *x,
                        const float *w, void *ws) {
    float *wb = emu_filter(d, w);
    int rc = !wb || emu_base.conv2d_forward(be, d, y, x, wb, ws);
    free(wb);
    if (!rc) emu_round(y, conv_out_n(d));
    return rc ? -1 : 0;
}
static int emu_conv_bwd(lt_backend *be, const lt_conv2d_dims *d, float *dx, float *dw,
                        const float *dy, const float *x, const float *w, void *ws, int acc,
                        int acc_dx) {
    float *wb = emu_filter(d, w), *g = dw ? malloc((size_t)conv_w_n(d) * sizeof(float)) : NULL;
    int rc = !wb || (dw && !g) || emu_base.conv2d_backward(be, d, dx, g, dy, x, wb, ws, 0, acc_dx);
    if (!rc && dx) emu_round(dx, conv_in_n(d));
    if (!rc && dw) { /* dw (+)= the bf16 gradient, in fp32 */
        emu_round(g, conv_w_n(d));
        for (int64_t i = 0; i < conv_w_n(d); i++) dw[i] = acc ? dw[i] + g[i] : g[i];
    }
    free(wb), free(g);
    return rc ? -1 : 0;
}
static int emu_bn_fwd_train(lt_backend *be, float *y, const float *x, const float *res,
                            const float *gamma, const float *beta, float *mean, float *invstd,
                            float *rm, float *rv, int M, int C, float eps, float momentum,
                            int relu, void *ws) {
    int rc = emu_base.bn_forward_train(be, y, x, res, gamma, beta, mean, invstd, rm, rv, M, C,
                                       eps, momentum, relu, ws);
    if (!rc) emu_round(y, (int64_t)M * C);
    return rc;
}
static int emu_bn_fwd_eval(lt_backend *be, float *y, const float *x, const float *res,
                           const float *gamma, const float *beta, const float *rm,
                           const float *rv, int M, int C, float eps, int relu) {
    int rc = emu_base.bn_forward_eval(be, y, x, res, gamma, beta, rm, rv, M, C, eps, relu);
    if (!rc) emu_round(y, (int64_t)M * C);
    return rc;
}
static int emu_bn_bwd(lt_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy,
                      const float *x, const float *y, const float *gamma, const float *mean,
                      const float *invstd, int M, int C, int relu, int acc, void *ws) {
    int rc = emu_base.bn_backward(be, dx, dgamma, dbeta, dy, x, y, gamma, mean, invstd, M, C,
                                  relu, acc, ws);
    if (!rc) emu_round(dx, (int64_t)M * C);
    return rc;
}
static int emu_add(lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
    int rc = emu_base.add(be, y, a, b, n);
    if (!rc) emu_round(y, n);
    return rc;
}
static int emu_maxpool_bwd(lt_backend *be, const lt_pool_dims *d, float *dx, const float *dy,
                           const int32_t *argmax) {
    int rc = emu_base.maxpool_backward(be, d, dx, dy, argmax);
    if (!rc) emu_round(dx, (int64_t)d->B * d->H * d->W * d->C);
    return rc;
}
static int emu_avgpool_bwd(lt_backend *be, float *dx, const float *dy, int B, int HW, int C) {
    int rc = emu_base.avgpool_backward(be, dx, dy, B, HW, C);
    if (!rc) emu_round(dx, (int64_t)B * HW * C);
    return rc;
}
static int emu_mix(lt_backend *be, float *x, const uint8_t *a, const uint8_t *b,
                   const float *lambda, int B, int HW, const float mean[3], const float std[3]) {
    int rc = emu_base.mix_normalize(be, x, a, b, lambda, B, HW, mean, std);
    if (!rc) emu_round(x, (int64_t)B * HW * 3);
    return rc;
}

/* The CPU backend be turned into the bf16 emulation (relu_backward and max pool forward only
 * move bf16 values: nothing to round) */
static void emu_bf16(lt_backend *be) {
    emu_base = *be;
    be->conv2d_forward = emu_conv_fwd, be->conv2d_backward = emu_conv_bwd;
    be->bn_forward_train = emu_bn_fwd_train, be->bn_forward_eval = emu_bn_fwd_eval;
    be->bn_backward = emu_bn_bwd, be->add = emu_add, be->maxpool_backward = emu_maxpool_bwd;
    be->avgpool_backward = emu_avgpool_bwd, be->mix_normalize = emu_mix;
}

/* NMSE of (a1 − a0) against (b1 − b0), or of a1 against b1 when a0 is NULL */
static double nmse_delta(const float *a0, const float *a1, const float *b0, const float *b1,
                         int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        const double da = a0 ? (double)a1[i] - a0[i] : a1[i];
        const double db = b0 ? (double)b1[i] - b0[i] : b1[i];
        if (!isfinite(da)) return INFINITY;
        num += (da - db) * (da - db);
        den += db * db;
    }
    return den > 0 ? num / den : num;
}

/* cosine of (a1 − a0) and (b1 − b0) */
static double cos_delta(const float *a0, const float *a1, const float *b0, const float *b1,
                        int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        const double da = (double)a1[i] - a0[i], db = (double)b1[i] - b0[i];
        ab += da * db, aa += da * da, bb += db * db;
    }
    const double c = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
    return isfinite(c) ? c : 0.0;
}

/* The bf16 bounds (resnet18, LARS, 3 steps; see the top comment) */
#define BF16_LOSS_REL 3e-2
#define BF16_GNORM_REL 0.15
#define BF16_COS_BACKBONE 0.9
#define BF16_COS_HEAD 0.99
#define BF16_STATS_NMSE 1e-4

/* ---- what both comparisons check the same way ---- */

/* Both runs completed (else one failed check, and 0). */
static int both_completed(const char *label, const result *x, const result *ref) {
    if (x->ok && ref->ok) return 1;
    char w[160];
    snprintf(w, sizeof w, "%s: both runs completed", label);
    expect(0, w);
    return 0;
}

/* The loss and the gradient norm of each step: finite, and within loss_rel and gnorm_rel of the
 * reference's (relative). */
static void compare_steps(const char *label, int steps, double loss_rel, double gnorm_rel,
                          const result *x, const result *ref) {
    char w[160];
    for (int k = 0; k < steps; k++) {
        const double el = fabs(x->loss[k] - ref->loss[k]) / fabs(ref->loss[k]);
        const double eg = fabs(x->gnorm[k] - ref->gnorm[k]) / fabs(ref->gnorm[k]);
        snprintf(w, sizeof w, "%s step %d: loss %.7g vs %.7g (rel %.1e), gnorm %.5g (rel %.1e)",
                 label, k, x->loss[k], ref->loss[k], el, ref->gnorm[k], eg);
        expect(isfinite(x->loss[k]) && isfinite(x->gnorm[k]) && el <= loss_rel &&
                   eg <= gnorm_rel,
               w);
    }
}

/* What no activation reaches: the queue (teacher rows, only moved) and the initial weights,
 * bitwise. */
static void compare_untouched(const char *label, const result *x, const result *ref) {
    char w[160];
    snprintf(w, sizeof w, "%s: queue bitwise equal", label);
    expect(!memcmp(x->queue, ref->queue, sizeof(float) * Q * D), w);
    snprintf(w, sizeof w, "%s: initial weights bitwise equal", label);
    expect(!memcmp(x->p0, ref->p0, sizeof(float) * (size_t)ref->n_params) &&
               !memcmp(x->h0, ref->h0, sizeof(float) * (size_t)ref->n_head),
           w);
}

/* bf16 against fp32 (bounds BF16_*, above): loss and gradient norm per step (relative, finite),
 * the updates' directions (cosine), the running statistics (NMSE); the queue and the initial
 * weights bitwise (no activation reaches them). */
static void compare_bf16(const char *label, int steps, const result *x, const result *ref) {
    char w[160];
    if (!both_completed(label, x, ref)) return;
    compare_steps(label, steps, BF16_LOSS_REL, BF16_GNORM_REL, x, ref);
    double c = cos_delta(x->p0, x->p1, ref->p0, ref->p1, ref->n_params);
    double e = nmse_delta(x->p0, x->p1, ref->p0, ref->p1, ref->n_params);
    snprintf(w, sizeof w, "%s: backbone updates cosine %.6f >= %.2f (nmse %.1e)", label, c,
             BF16_COS_BACKBONE, e);
    expect(c >= BF16_COS_BACKBONE, w);
    c = cos_delta(x->h0, x->h1, ref->h0, ref->h1, ref->n_head);
    e = nmse_delta(x->h0, x->h1, ref->h0, ref->h1, ref->n_head);
    snprintf(w, sizeof w, "%s: head updates cosine %.6f >= %.2f (nmse %.1e)", label, c,
             BF16_COS_HEAD, e);
    expect(c >= BF16_COS_HEAD, w);
    e = nmse_delta(NULL, x->buf, NULL, ref->buf, ref->n_buffers);
    snprintf(w, sizeof w, "%s: running statistics nmse %.2e <= %.0e", label, e, BF16_STATS_NMSE);
    expect(e <= BF16_STATS_NMSE, w);
    compare_untouched(label, x, ref);
}

/* the bounds of one fp32 comparison (see the top comment) */
typedef struct {
    double loss_rel, gnorm_rel; /* per step, relative */
    double update_nmse;         /* the backbone's updates */
    double small_nmse;          /* the head's updates and the running statistics */
} bounds;

static void compare_runs(const char *label, int steps, const bounds *bd, const result *x,
                         const result *ref) {
    char w[160];
    if (!both_completed(label, x, ref)) return;
    compare_steps(label, steps, bd->loss_rel, bd->gnorm_rel, x, ref);
    /* clipping bit (gnorm > clip) in at least one step, or the test would not cover it */
    int clipped = 0;
    for (int k = 0; k < steps; k++) clipped |= ref->gnorm[k] > 0.5;
    snprintf(w, sizeof w, "%s: gradient clipping took effect", label);
    expect(clipped, w);
    double e = nmse_delta(x->p0, x->p1, ref->p0, ref->p1, ref->n_params);
    snprintf(w, sizeof w, "%s: backbone updates (w_end - w_0) nmse %.2e <= %.0e", label, e,
             bd->update_nmse);
    expect(e <= bd->update_nmse, w);
    e = nmse_delta(x->h0, x->h1, ref->h0, ref->h1, ref->n_head);
    snprintf(w, sizeof w, "%s: head updates nmse %.2e <= %.0e", label, e, bd->small_nmse);
    expect(e <= bd->small_nmse, w);
    e = nmse_delta(NULL, x->buf, NULL, ref->buf, ref->n_buffers);
    snprintf(w, sizeof w, "%s: running statistics nmse %.2e <= %.0e", label, e, bd->small_nmse);
    expect(e <= bd->small_nmse, w);
    compare_untouched(label, x, ref);
}

/* bf16 (be: the CUDA backend at LT_PREC_BF16, or the CPU emulation) against the CPU's fp32 */
static void bf16_case(lt_backend *ref, lt_backend *be, const inputs *in) {
    result a, r;
    lt_threads_set(ref->threads);
    run(ref, "resnet18", LT_OPT_LARS, STEPS, in, &r);
    run(be, "resnet18", LT_OPT_LARS, STEPS, in, &a);
    compare_bf16("resnet18 LARS bf16, 3 steps", STEPS, &a, &r);
    result_free(&a);
    result_free(&r);
}

/* ---- the loss curve of CURVE steps ----
 * resnet18, LARS, clipping, the STEPS input sets in turn for CURVE steps (the loss falls from
 * ~4.2 as the student fits them). Over many steps the runs of two summation orders drift apart
 * (training amplifies each step's rounding differences), so the curve is compared through its
 * means over windows of CURVE_W steps: the largest relative difference of a window's mean from
 * the reference's, and both curves must fall (the last window's mean at most 0.8 of the
 * first's). The difference is measured as a fraction of the reference's first window mean (the
 * losses fall ~300x, so a fraction of each window's own mean would weigh the last windows'
 * noise most). Bounds, sized without a GPU (the modes in main's comment):
 *   CPU pair (1 vs 3 threads, only summation orders differ, as CPU vs GPU fp32): 1.5e-5 ..
 *     1.6e-4 over 12 seeds; bound for the GPU fp32 run 5e-3;
 *   bf16 emulation vs the CPU's fp32: 6.7e-3 .. 1.04e-2 over 4 seeds; bound for the GPU's bf16
 *     run 5e-2 (the GPU adds only fp32 summation-order differences to the emulation's).
 * A wrong update, a missing step of the method or a layout error moves the curve by O(1). */
enum { CURVE = 50, CURVE_W = 10 };

/* the losses of CURVE steps of a fresh student on be; 0 or -1 */
static int curve_run(lt_backend *be, const inputs *in, double *loss) {
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    lt_optim_config cfg = lt_optim_defaults(LT_OPT_LARS);
    lt_student st;
    int rc = lt_student_init(&st, be, "resnet18", B, S, D, Q, 11, &cfg, mean, std);
    for (int k = 0; k < CURVE && rc == 0; k++) {
        const int i = k % STEPS;
        double gn;
        rc = lt_student_step(&st, in->a[i], in->b[i], in->lambda[i], in->t[i], B, 0.07, 0.5, 0.02,
                             &loss[k], &gn);
        if (rc == 0 && !(isfinite(loss[k]) && isfinite(gn))) rc = lt_err_set("step %d: loss %g", k, loss[k]);
    }
    if (rc != 0) printf("curve on %s: %s\n", be->name, lt_err_msg());
    lt_student_free(&st);
    return rc;
}

static void curve_case(const char *label, lt_backend *ref, lt_backend *be, const inputs *in,
                       double bound) {
    double lr_[CURVE], lb[CURVE];
    lt_threads_set(ref->threads);
    int ok = curve_run(ref, in, lr_) == 0;
    lt_threads_set(be->threads);
    ok = ok && curve_run(be, in, lb) == 0;
    lt_threads_set(ref->threads);
    double worst = 0, first_r = 0, first_b = 0, last_r = 0, last_b = 0;
    for (int w0 = 0; ok && w0 + CURVE_W <= CURVE; w0++) {
        double mr = 0, mb = 0;
        for (int k = w0; k < w0 + CURVE_W; k++) mr += lr_[k], mb += lb[k];
        mr /= CURVE_W, mb /= CURVE_W;
        if (w0 == 0) first_r = mr, first_b = mb;
        worst = fmax(worst, fabs(mb - mr) / fabs(first_r));
        last_r = mr, last_b = mb;
    }
    char what[200];
    snprintf(what, sizeof what, "%s: %d-step means within %g of the reference's (%.3g)", label,
             CURVE_W, bound, worst);
    printf("  %s: window means %.4g .. %.4g, reference %.4g .. %.4g\n", label, first_b, last_b,
           first_r, last_r);
    expect(ok && worst <= bound, what);
    snprintf(what, sizeof what, "%s: the loss falls (%.3g -> %.3g; reference %.3g -> %.3g)", label,
             first_b, last_b, first_r, last_r);
    expect(ok && last_b <= 0.8 * first_b && last_r <= 0.8 * first_r, what);
}

/* ---- the device step's variants on one GPU: bit for bit ----
 * The step on a CUDA backend keeps its scalars on the device (nn/optim_multi.h) and replays a
 * recorded CUDA graph from its second batch on (lib/train/step.c). Both are claimed to change no
 * bit: the graph replays the same kernels on the same buffers, and the multi-tensor optimizer
 * takes the same sums in the same order and the same element updates as the host-scalar path
 * (optim.c over the backend's sumsq_many, scale and updates). Compared: the same run with the
 * graph, without it (LT_CUDA_GRAPH=0), and through the host-scalar path (the backend's
 * device-step entries hidden), for LARS, SGD and AdamW. */
static int same_f(const float *a, const float *b, int64_t n) {
    return a && b && memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static int same_run(const result *a, const result *b) {
    return a->ok && b->ok && !memcmp(a->loss, b->loss, sizeof a->loss) &&
           !memcmp(a->gnorm, b->gnorm, sizeof a->gnorm) && same_f(a->p1, b->p1, a->n_params) &&
           same_f(a->h1, b->h1, a->n_head) && same_f(a->buf, b->buf, a->n_buffers) &&
           same_f(a->queue, b->queue, (int64_t)Q * D) && a->nbt == b->nbt;
}

static void variants_case(lt_backend *be, const inputs *in) {
    static const struct {
        lt_opt_kind kind;
        const char *name;
    } kinds[] = {{LT_OPT_LARS, "LARS"}, {LT_OPT_SGD, "SGD"}, {LT_OPT_ADAMW, "AdamW"}};
    lt_backend host_path = *be; /* the same backend without the device-step entries */
    host_path.kd_loss_forward_dev = NULL;
    host_path.mt_create = NULL;
    char what[256];
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        result g, e, h;
        run(be, "resnet18", kinds[k].kind, STEPS, in, &g);
        setenv("LT_CUDA_GRAPH", "0", 1);
        run(be, "resnet18", kinds[k].kind, STEPS, in, &e);
        unsetenv("LT_CUDA_GRAPH");
        run(&host_path, "resnet18", kinds[k].kind, STEPS, in, &h);
        snprintf(what, sizeof what, "resnet18 %s, %d steps: graph replay = no graph, bit for bit",
                 kinds[k].name, STEPS);
        expect(same_run(&g, &e), what);
        snprintf(what, sizeof what,
                 "resnet18 %s, %d steps: device optimizer = host-scalar path, bit for bit",
                 kinds[k].name, STEPS);
        expect(same_run(&e, &h), what);
        snprintf(what, sizeof what, "resnet18 %s: num_batches_tracked counted by every step (%lld)",
                 kinds[k].name, (long long)g.nbt);
        expect(g.ok && g.nbt == h.nbt && g.nbt > 0 && g.nbt % STEPS == 0, what);
        result_free(&g);
        result_free(&e);
        result_free(&h);
    }
}

int main(void) {
    const char *pair = getenv("LT_TEST_CPU_PAIR");
    const int cpu_pair = pair && !strcmp(pair, "1"), emu = pair && !strcmp(pair, "bf16");
    if (!cpu_pair && !emu && !lt_cuda_available()) {
        printf("test_cuda_student: SKIP: no CUDA device (or a CPU-only build)\n");
        return 77;
    }
    seed_rng();
    static inputs in;
    make_inputs(&in);
    if (emu) { /* the bf16 bounds on the CPU: the emulation against fp32 */
        lt_backend *ref = lt_backend_cpu(lt_threads_set(4)), *be = lt_backend_cpu(4);
        if (!ref || !be) {
            printf("test_cuda_student: FAIL: %s\n", lt_err_msg());
            return 1;
        }
        emu_bf16(be);
        printf("comparing the CPU's bf16 emulation against the CPU backend (fp32)\n");
        bf16_case(ref, be, &in);
        curve_case("resnet18 LARS bf16 (emulated) loss curve", ref, be, &in, 5e-2);
        be->destroy(be);
        ref->destroy(ref);
        printf("%d passed, %d failed\n", n_ok, n_fail);
        return n_fail ? 1 : 0;
    }
    lt_backend *ref = lt_backend_cpu(lt_threads_set(cpu_pair ? 1 : 4));
    lt_backend *be = cpu_pair ? lt_backend_cpu(3) : lt_backend_cuda(0);
    if (!ref || !be) {
        printf("test_cuda_student: FAIL: %s\n", lt_err_msg());
        return 1;
    }
    printf("comparing %s%s against the CPU backend with %d thread%s\n", be->name,
           cpu_pair ? " with 3 threads" : "", ref->threads, ref->threads == 1 ? "" : "s");
    /* bounds: see the top comment */
    static const struct {
        const char *arch;
        lt_opt_kind kind;
        int steps;
        bounds bd;
        const char *label;
    } cases[] = {{"resnet18", LT_OPT_LARS, 3, {1e-4, 2e-2, 5e-4, 1e-6}, "resnet18 LARS, 3 steps"},
                 {"resnet50", LT_OPT_LARS, 1, {1e-3, 1e-1, 1e-2, 1e-4}, "resnet50 LARS, 1 step"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        result a, r;
        /* the CPU runs with the thread count the reference backend was made for */
        if (!cpu_pair) lt_threads_set(ref->threads);
        run(ref, cases[c].arch, cases[c].kind, cases[c].steps, &in, &r);
        if (cpu_pair) lt_threads_set(be->threads);
        run(be, cases[c].arch, cases[c].kind, cases[c].steps, &in, &a);
        if (cpu_pair) lt_threads_set(ref->threads);
        compare_runs(cases[c].label, cases[c].steps, &cases[c].bd, &a,
                     &r);
        result_free(&a);
        result_free(&r);
    }
    curve_case("resnet18 LARS loss curve", ref, be, &in, 5e-3);
    if (!cpu_pair) {
        printf("comparing the CUDA step's variants (graph, no graph, host scalars) bit for bit\n");
        variants_case(be, &in);
    }
    be->destroy(be);
    if (!cpu_pair) { /* bf16 activations on the GPU */
        printf("comparing cuda --precision bf16 against the CPU backend (fp32)\n");
        lt_backend *bf = lt_backend_cuda(0);
        if (!bf || lt_backend_cuda_set_precision(bf, LT_PREC_BF16) != 0) {
            expect(0, "a CUDA backend at bf16");
        } else {
            bf16_case(ref, bf, &in);
            curve_case("resnet18 LARS bf16 loss curve", ref, bf, &in, 5e-2);
            /* its activations are bf16: a host array of floats as the input is refused */
            lt_resnet *m = lt_resnet_create(bf, "resnet18", 2, S, S);
            float *x = calloc((size_t)2 * S * S * 3, sizeof(float));
            lt_err_clear();
            expect(m && x && lt_resnet_forward(m, x, 2, 1) == -1 &&
                       strstr(lt_err_msg(), "mix_normalize") != NULL,
                   "bf16: lt_resnet_forward of host floats refused");
            free(x);
            lt_resnet_free(m);
        }
        if (bf) bf->destroy(bf);
    }
    ref->destroy(ref);
    printf("%d passed, %d failed\n", n_ok, n_fail);
    return n_fail ? 1 : 0;
}
