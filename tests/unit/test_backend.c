/* test_backend.c: the backend seam of lt-train (nn/backend.h).
 *
 *  - lt_resnet_plan describes each student without allocating storage, and agrees with the
 *    model lt_resnet_create then builds (tensor count, parameter and buffer floats, width);
 *  - every byte a student and its training step use comes from the backend: a backend that wraps
 *    the CPU one and counts its alloc/free calls sees every buffer allocated through it and all of
 *    them freed, and a step run through the wrapper gives bit for bit the CPU backend's result;
 *  - an op given bad arguments returns an error instead of leaving its output unwritten;
 *  - --device names: cpu gives the CPU backend; without a usable GPU auto does too and cuda is
 *    refused with a message naming --device cuda; with one, both give the CUDA backend. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/resnet.h"
#include "nn/backend.h"
#include "nn/backend_profile.h"
#include "nn/ops_cuda.h" /* lt_cuda_available */
#include "train/step.h"

/* ---- a backend that counts its memory calls and forwards everything to the CPU backend ---- */

static int64_t live_allocs, total_bytes;

static void *counting_alloc(lt_backend *be, size_t bytes, const char *what) {
    lt_backend *cpu = be->impl;
    void *p = cpu->alloc(cpu, bytes, what);
    if (p) live_allocs++, total_bytes += (int64_t)bytes;
    return p;
}

static void counting_free(lt_backend *be, void *p) {
    lt_backend *cpu = be->impl;
    if (p) live_allocs--;
    cpu->free(cpu, p);
}

static lt_backend counting_backend(lt_backend *cpu) {
    lt_backend b = *cpu;
    b.name = "counting";
    b.impl = cpu;
    b.alloc = counting_alloc;
    b.free = counting_free;
    b.destroy = NULL;
    return b;
}

static void test_plan_matches_storage(lt_backend *cpu) {
    const char *archs[] = {"resnet18", "resnet34", "resnet50"};
    for (int k = 0; k < 3; k++) {
        lt_resnet_sizes p;
        CHECK_MSG(lt_resnet_plan(archs[k], 4, 64, 64, &p) == 0, "%s", lt_err_msg());
        lt_backend counting = counting_backend(cpu);
        live_allocs = total_bytes = 0;
        lt_resnet *m = lt_resnet_create(&counting, archs[k], 4, 64, 64);
        CHECK_MSG(m != NULL, "%s", lt_err_msg());
        if (!m) continue;
        CHECK(p.n_tensors == m->n_tensors && p.n_params == m->n_params &&
              p.n_buffers == m->n_buffers && p.C == m->C && p.n_bn == m->n_bn);
        CHECK(p.C == (k == 2 ? 2048 : 512));
        /* parameters + gradients + buffers at least, all through the backend */
        CHECK(total_bytes >= (int64_t)sizeof(float) * (2 * p.n_params + p.n_buffers));
        CHECK(live_allocs > 0);
        lt_resnet_free(m);
        CHECK_MSG(live_allocs == 0, "%s: %lld buffers not freed through the backend", archs[k],
                  (long long)live_allocs);
    }
    lt_resnet_sizes p;
    CHECK(lt_resnet_plan("resnet99", 4, 64, 64, &p) == -1);
}

/* One step through the counting wrapper, and through the profiling backend (nn/backend_profile.h),
 * equals one step on the CPU backend, bit for bit; the profile saw every op class a step runs. */
static void test_step_through_a_wrapper(lt_backend *cpu) {
    enum { B = 4, S = 32, D = 16, Q = 8 };
    const float mean[3] = {0.5f, 0.4f, 0.3f}, std[3] = {0.2f, 0.25f, 0.3f};
    uint8_t a[B * S * S * 3], b[B * S * S * 3];
    float lambda[B], t[B * D];
    lt_rng r;
    lt_rng_init(&r, 9, 8, 7, 6);
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)lt_rng_below(&r, 256);
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)lt_rng_below(&r, 256);
    for (int i = 0; i < B; i++) lambda[i] = (float)lt_rng_uniform(&r);
    for (int i = 0; i < B * D; i++) t[i] = (float)(lt_rng_uniform(&r) - 0.5);
    lt_optim_config cfg = lt_optim_defaults(LT_OPT_LARS);
    lt_backend counting = counting_backend(cpu);
    lt_backend *prof = lt_backend_profile(cpu);
    CHECK(prof != NULL);
    if (!prof) return;
    lt_backend *bes[3] = {cpu, &counting, prof};
    double loss[3][2], gnorm[3][2];
    float *head[3] = {NULL, NULL, NULL};
    live_allocs = 0;
    for (int k = 0; k < 3; k++) {
        lt_student st;
        CHECK_MSG(lt_student_init(&st, bes[k], "resnet18", B, S, D, Q, 3, &cfg, mean, std) == 0,
                  "%s", lt_err_msg());
        for (int step = 0; step < 2; step++)
            CHECK_MSG(lt_student_step(&st, a, b, lambda, t, B, 0.07, 1.0, 0.05, &loss[k][step],
                                      &gnorm[k][step]) == 0,
                      "%s", lt_err_msg());
        head[k] = malloc(sizeof(float) * D * st.C);
        memcpy(head[k], st.head_w, sizeof(float) * D * st.C);
        lt_student_free(&st);
    }
    CHECK_MSG(live_allocs == 0, "%lld buffers of the student not freed through the backend",
              (long long)live_allocs);
    for (int step = 0; step < 2; step++) {
        CHECK(isfinite(loss[0][step]) && loss[0][step] > 0);
        for (int k = 1; k < 3; k++)
            CHECK(loss[0][step] == loss[k][step] && gnorm[0][step] == gnorm[k][step]);
    }
    for (int k = 1; k < 3; k++)
        CHECK(memcmp(head[0], head[k], sizeof(float) * D * 512) == 0); /* resnet18: C = 512 */
    double ms[LT_PROF_CLASSES];
    int64_t calls[LT_PROF_CLASSES];
    lt_backend_profile_get(prof, ms, calls);
    /* two steps of resnet18: 20 convs forward and backward each, 20 batch norms, 3 pools... */
    CHECK(calls[LT_PROF_CONV_FWD] == 2 * 20 && calls[LT_PROF_CONV_BWD] == 2 * 20);
    CHECK(calls[LT_PROF_BN_FWD] == 2 * 20 && calls[LT_PROF_BN_BWD] == 2 * 20);
    CHECK(calls[LT_PROF_INPUT] == 2 && calls[LT_PROF_KD] == 2 * 3 && calls[LT_PROF_OPTIM] > 0);
    CHECK(calls[LT_PROF_POOL] > 0 && calls[LT_PROF_LINEAR] == 2 * 2 && calls[LT_PROF_L2] == 2 * 2);
    for (int c = 0; c < LT_PROF_CLASSES; c++)
        CHECK_MSG(ms[c] >= 0 && (calls[c] == 0 || ms[c] > 0 || c == LT_PROF_MEMORY), "%s",
                  lt_backend_profile_class(c));
    CHECK(ms[LT_PROF_CONV_FWD] > 0 && ms[LT_PROF_CONV_BWD] > 0);
    lt_backend_profile_reset(prof);
    lt_backend_profile_get(prof, ms, calls);
    CHECK(calls[LT_PROF_CONV_FWD] == 0 && ms[LT_PROF_CONV_FWD] == 0);
    prof->destroy(prof);
    for (int k = 0; k < 3; k++) free(head[k]);
}

static void test_ops_report_errors(lt_backend *cpu) {
    float x[8] = {0}, y[8];
    float mean[1], invstd[1], g[1] = {1}, bb[1] = {0};
    lt_err_clear();
    /* batch norm of one value per channel: refused (PyTorch refuses it too) */
    void *ws = cpu->alloc(cpu, cpu->bn_ws_bytes(cpu, 1), "ws");
    CHECK(cpu->bn_forward_train(cpu, y, x, NULL, g, bb, mean, invstd, NULL, NULL, 1, 1, 1e-5f,
                                0.1f, 0, ws) == -1);
    CHECK(strstr(lt_err_msg(), "batch norm") != NULL);
    /* no scratch where one is needed */
    CHECK(cpu->bn_forward_train(cpu, y, x, NULL, g, bb, mean, invstd, NULL, NULL, 8, 1, 1e-5f,
                                0.1f, 0, NULL) == -1);
    lt_conv2d_dims d;
    CHECK(lt_conv2d_dims_init(&d, 1, 4, 4, 2, 2, 3, 3, 1, 1) == 0);
    CHECK(cpu->conv2d_ws_bytes(cpu, &d) > 0);
    CHECK(cpu->conv2d_forward(cpu, &d, y, x, x, NULL) == -1);
    CHECK(strstr(lt_err_msg(), "scratch") != NULL);
    /* the loss with a bad temperature */
    double loss;
    CHECK(cpu->kd_loss_forward(cpu, &loss, x, x, x, 1, 1, 1, 0.0f, y) == -1);
    cpu->free(cpu, ws);
}

static void test_device_names(void) {
    lt_backend *be = lt_backend_open("cpu", 2);
    CHECK(be && !strcmp(be->name, "cpu") && be->threads == 2 && be->mem == LT_MEM_HOST);
    if (be) be->destroy(be);
    lt_err_clear();
    if (!lt_cuda_available()) { /* no GPU, or a build without CUDA: auto is the CPU */
        be = lt_backend_open("auto", 2);
        CHECK(be && !strcmp(be->name, "cpu") && be->threads == 2 && be->mem == LT_MEM_HOST);
        if (be) be->destroy(be);
        lt_err_clear();
        CHECK(lt_backend_open("cuda", 2) == NULL);
        CHECK(strstr(lt_err_msg(), "--device cuda") != NULL);
        CHECK(lt_backend_cuda(0) == NULL);
    } else { /* a GPU: auto and cuda give the CUDA backend */
        const char *names[2] = {"auto", "cuda"};
        for (int k = 0; k < 2; k++) {
            be = lt_backend_open(names[k], 2);
            CHECK_MSG(be && !strcmp(be->name, "cuda") && be->mem == LT_MEM_DEVICE, "%s: %s",
                      names[k], lt_err_msg());
            if (be) be->destroy(be);
        }
    }
    CHECK(lt_backend_open("tpu", 2) == NULL);
    CHECK(strstr(lt_err_msg(), "expected auto, cpu or cuda") != NULL);
    CHECK(lt_backend_cpu(0) == NULL);
}

int main(void) {
    lt_backend *cpu = lt_backend_cpu(lt_threads_set(2));
    CHECK(cpu != NULL);
    if (!cpu) CHECK_DONE();
    test_plan_matches_storage(cpu);
    test_step_through_a_wrapper(cpu);
    test_ops_report_errors(cpu);
    test_device_names();
    cpu->destroy(cpu);
    CHECK_DONE();
}
