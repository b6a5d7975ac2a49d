/* test_optim_emu.cpp: the multi-tensor optimizer step of the CUDA backend
 * (lib/nn/optim_multi_cuda.cu) run on the CPU through tests/unit/cuda_emu.h, against optim.c's
 * clipping and LARS / SGD / AdamW on the CPU backend (themselves tested against torch.optim by
 * tests/py/test_optim.py).
 *
 * Why it exists: CI has no GPU, and on a GPU the training step replaces optim.c's host-side
 * scalars with this file's kernels. Every `make test` then checks their tables (chunks across
 * tensor ends, empty tensors), the order of clip → norms → trust ratios → update, the gate on a
 * non-finite loss or gradient norm, and the per-step scalars taken from pinned memory.
 *
 * Bounds, and why. The element updates are the same functions (optim_rules.h) on the same float
 * operations, so where no sum of squares feeds a scalar (SGD and AdamW without clipping) the
 * results must be bitwise equal. Elsewhere the sums differ in order (the kernel: MT_THREADS
 * strided slices and a tree per chunk; the CPU: each chunk left to right), about 1e-16 relative
 * in double; the clipping factor and trust ratios are rounded to float from them, so they are
 * equal unless a value sits within 1e-16 of a float rounding boundary, and then one ulp apart.
 * Bound: every element within 4 float ulps relative (4.8e-7) of the CPU's after 3 steps, and
 * the gradient norms within 1e-12 relative. Fresh random inputs each run (LT_TEST_SEED repeats
 * one). */
#define EMU_THREADED "mt_sumsq_part"
#include "cuda_emu.h"

#define MT_THREADS 16 /* fewer emulated threads than the GPU's 256: same code, fewer barriers */
#include "nn/optim_multi_cuda.cu"

extern "C" {
#include "core/error.h"
#include "core/threads.h"
#include "nn/backend.h"
#include "train/optim.h"
}

#include "../cuda/test_rng.h"

#include <cmath>
#include <cstdio>
#include <vector>

static int n_fail, n_ok;

static void expect(bool cond, const char *what) {
    if (cond) {
        n_ok++;
    } else {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

/* tensor lengths: empty, tiny, one chunk exactly, one element over a chunk, several chunks */
static const int64_t kLens[] = {0, 1, 7, 1000, 65536, 65537, 150001, 3};

struct Case {
    int kind;
    double clip;
    double momentum;
    double weight_decay;
    const char *label;
};

static double rel(double a, double b) {
    const double d = std::fabs(a - b), m = std::fmax(std::fabs(a), std::fabs(b));
    return m > 0 ? d / m : d;
}

/* the largest |a − b| / max(|a|, |b|, 1e-30) over n, and whether all are bitwise equal */
static double max_rel(const float *a, const float *b, int64_t n, bool *same) {
    double r = 0;
    *same = true;
    for (int64_t i = 0; i < n; i++) {
        if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) *same = false;
        const double m = std::fmax(std::fmax(std::fabs(a[i]), std::fabs(b[i])), 1e-30);
        r = std::fmax(r, std::fabs((double)a[i] - b[i]) / m);
    }
    return r;
}

/* Three steps of the case on both sides; a NaN loss (bad == 1) or an infinite gradient
 * (bad == 2) at step 2 must leave everything as it was. */
static void run_case(const Case &c, int bad) {
    const int n = (int)(sizeof kLens / sizeof kLens[0]);
    lt_backend *cpu = lt_backend_cpu(1);
    lt_optim_config cfg = lt_optim_defaults((lt_opt_kind)c.kind);
    cfg.momentum = c.kind == LT_MT_ADAMW ? cfg.momentum : c.momentum;
    cfg.weight_decay = c.weight_decay;
    std::vector<std::vector<float>> w(n), g(n), w2(n), m2(n), v2(n);
    std::vector<lt_param> ps(n);
    std::vector<lt_mt_param> mps(n);
    for (int i = 0; i < n; i++) {
        const int64_t len = kLens[i];
        w[i].resize(len + 1);
        g[i].resize(len + 1);
        for (int64_t j = 0; j < len; j++) w[i][j] = 0.05f * gauss();
        /* one all-zero decayed tensor: LARS's no-trust-ratio case */
        if (i == 7) std::fill(w[i].begin(), w[i].end(), 0.0f);
        w2[i] = w[i];
        m2[i].assign(len + 1, 0.0f);
        v2[i].assign(len + 1, 0.0f);
        ps[i] = lt_param{"t", w[i].data(), g[i].data(), len, (i % 3) != 1, NULL, NULL};
    }
    lt_optim o;
    if (!cpu || lt_optim_init(&o, cpu, &cfg, ps.data(), n) != 0) {
        expect(false, lt_err_msg());
        return;
    }
    for (int i = 0; i < n; i++)
        mps[i] = lt_mt_param{w2[i].data(), g[i].data(), o.params[i].m ? m2[i].data() : NULL,
                             o.params[i].v ? v2[i].data() : NULL, kLens[i], ps[i].weight_decay};
    const lt_mt_config mc = {c.kind, cfg.weight_decay, cfg.trust_coef, cfg.eps,
                             (float)cfg.momentum};
    lt_mt *mt = lt_mt_create(NULL, &mc, mps.data(), n);
    if (!mt) {
        expect(false, lt_err_msg());
        lt_optim_free(&o);
        cpu->destroy(cpu);
        return;
    }
    lt_mt_io *io = lt_mt_io_of(mt);
    const double lr = c.kind == LT_MT_ADAMW ? 5e-4 : 0.3;
    bool all_same = true;
    double worst = 0, worst_norm = 0;
    char what[256];
    for (int step = 0; step < 3; step++) {
        const bool broken = bad && step == 1;
        for (int i = 0; i < n; i++)
            for (int64_t j = 0; j < kLens[i]; j++) g[i][j] = (i == 4 ? 3.0f : 0.2f) * gauss();
        if (broken && bad == 2) g[5][17] = INFINITY;
        std::vector<std::vector<float>> gcopy = g; /* both sides start from these gradients */
        std::vector<std::vector<float>> w_before = w2;
        io->lr = (float)lr;
        io->clip = c.clip;
        io->first = o.step == 0;
        lt_optim_adamw_scalars(&o, lr, 0, &io->adam[0]);
        lt_optim_adamw_scalars(&o, lr, 1, &io->adam[1]);
        /* the CPU: clip (the norm before it), then the update unless something is not finite */
        double gn = 0;
        const double loss = broken && bad == 1 ? NAN : 1.25;
        bool cpu_updated = false;
        if (std::isfinite(loss)) {
            if (lt_clip_grad_norm(&o, c.clip, &gn) != 0) expect(false, lt_err_msg());
            if (std::isfinite(gn)) {
                if (lt_optim_step(&o, lr) != 0) expect(false, lt_err_msg());
                cpu_updated = true;
            }
        }
        /* the kernels, from the same gradients */
        g = gcopy; /* same sizes: the storage, and so every pointer into it, stays */
        if (lt_mt_step(mt, &loss) != 0) expect(false, lt_err_msg());
        snprintf(what, sizeof what, "%s%s step %d: updated %d as the CPU (%d)", c.label,
                 bad == 1 ? " (NaN loss)" : bad == 2 ? " (inf gradient)" : "", step + 1,
                 io->updated, (int)cpu_updated);
        expect((io->updated != 0) == cpu_updated, what);
        snprintf(what, sizeof what, "%s step %d: loss read back", c.label, step + 1);
        expect(std::memcmp(&io->loss, &loss, sizeof loss) == 0, what);
        if (!std::isfinite(loss)) {
            snprintf(what, sizeof what, "%s step %d: gradient norm 0 after a NaN loss (%g)",
                     c.label, step + 1, io->gnorm);
            expect(io->gnorm == 0.0, what);
        } else if (!std::isfinite(gn)) {
            snprintf(what, sizeof what, "%s step %d: gradient norm %g as the CPU's %g", c.label,
                     step + 1, io->gnorm, gn);
            expect(!std::isfinite(io->gnorm), what);
        } else {
            worst_norm = std::fmax(worst_norm, rel(io->gnorm, gn));
        }
        if (!cpu_updated) {
            bool same = true;
            for (int i = 0; i < n; i++)
                same = same && std::memcmp(w2[i].data(), w_before[i].data(),
                                           (size_t)kLens[i] * sizeof(float)) == 0;
            snprintf(what, sizeof what, "%s step %d: nothing updated", c.label, step + 1);
            expect(same, what);
        }
    }
    for (int i = 0; i < n; i++) {
        bool same;
        worst = std::fmax(worst, max_rel(w2[i].data(), w[i].data(), kLens[i], &same));
        all_same = all_same && same;
        if (o.params[i].m) {
            worst = std::fmax(worst, max_rel(m2[i].data(), o.params[i].m, kLens[i], &same));
            all_same = all_same && same;
        }
        if (o.params[i].v) {
            worst = std::fmax(worst, max_rel(v2[i].data(), o.params[i].v, kLens[i], &same));
            all_same = all_same && same;
        }
    }
    const bool exact = (c.kind != LT_MT_LARS) && c.clip <= 0.0;
    printf("  %-34s%s: worst element %.3g relative (%s), gradient norm %.3g\n", c.label,
           bad == 1 ? " NaN loss" : bad == 2 ? " inf grad" : "", worst,
           all_same ? "bitwise equal" : "not bitwise", worst_norm);
    snprintf(what, sizeof what, "%s: weights and state within 4.8e-7 of the CPU's (%.3g)%s",
             c.label, worst, exact ? " and bitwise equal" : "");
    expect(worst <= 4.8e-7 && (!exact || all_same), what);
    snprintf(what, sizeof what, "%s: gradient norms within 1e-12 (%.3g)", c.label, worst_norm);
    expect(worst_norm <= 1e-12, what);
    lt_mt_free(mt);
    lt_optim_free(&o);
    cpu->destroy(cpu);
}

int main(void) {
    seed_rng();
    lt_threads_set(1);
    static const Case cases[] = {
        {LT_MT_LARS, 0.0, 0.9, 1e-6, "LARS"},
        {LT_MT_LARS, 1.0, 0.9, 1e-6, "LARS, clip 1 (active)"},
        {LT_MT_LARS, 1e9, 0.9, 1e-6, "LARS, clip 1e9 (inactive)"},
        {LT_MT_LARS, 1.0, 0.0, 1e-6, "LARS, momentum 0"},
        {LT_MT_LARS, 0.0, 0.9, 0.0, "LARS, weight decay 0"},
        {LT_MT_SGD, 0.0, 0.9, 1e-4, "SGD"},
        {LT_MT_SGD, 1.0, 0.0, 1e-4, "SGD, momentum 0, clip 1"},
        {LT_MT_ADAMW, 0.0, 0.9, 0.05, "AdamW"},
        {LT_MT_ADAMW, 1.0, 0.9, 0.05, "AdamW, clip 1"},
    };
    printf("the multi-tensor optimizer (emulated) against optim.c on the CPU backend, 3 steps:\n");
    for (const Case &c : cases) run_case(c, 0);
    run_case(cases[1], 1);
    run_case(cases[1], 2);
    run_case(cases[7], 2);
    printf("%d passed, %d failed\n", n_ok, n_fail);
    return n_fail ? 1 : 0;
}
