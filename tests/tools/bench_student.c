/* bench_student: times one full lt-train step for `make bench` (CPU backend) and the device check
 * (--device cuda): the training step of lib/train/step.c (ResNet forward and backward, projection
 * head, L2 norm, queue + KL loss and its gradient, clipping and a LARS update) on random input
 * (no data loading; on a GPU the uint8 views are already in its memory, as lt-train's
 * --image-pool device makes them, and the step is the recorded CUDA graph after two warm-up
 * steps). Each step ends with its loss on the host, so the wall time of a step is the device's
 * too. LT_CUDA_GRAPH=0 times it without the graph.
 *
 *   bench_student ARCH BATCH SIZE REPEATS [--threads N] [--device cpu|cuda] [--precision P]
 *                 [--profile]
 *   prints {"times": [...], "batch": B, "device": "..."}; with --profile the steps run through
 *   the profiling backend (nn/backend_profile.h: each op waited for, so slower than plain steps)
 *   and "profile" adds the milliseconds per step of each op class, and "profile_calls". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/threads.h"
#include "nn/backend.h"
#include "nn/backend_profile.h"
#include "nn/kd.h"
#include "train/step.h"
#include "nn/blas_select.h"

#define D 768
#define Q 8192

int main(int argc, char **argv) {
    lt_blas_ensure(argv); /* the kernels lt-embed and lt-train use */
    int threads = 0, bad = argc < 5, profile = 0;
    const char *device = "cpu", *prec = NULL;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) prec = argv[++i];
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else bad = 1;
    }
    if (bad) {
        fprintf(stderr, "usage: bench_student ARCH BATCH SIZE REPEATS [--threads N] "
                        "[--device cpu|cuda] [--precision fp32|tf32|bf16] [--profile]\n");
        return 2;
    }
    int B = atoi(argv[2]), S = atoi(argv[3]), R = atoi(argv[4]);
    lt_backend *be = lt_backend_open(device, lt_threads_set(threads));
    lt_precision pr = LT_PREC_FP32;
    if (be && prec && (lt_precision_parse(prec, &pr) != 0 ||
                       (pr != LT_PREC_FP32 && lt_backend_cuda_set_precision(be, pr) != 0))) {
        fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
        return 1;
    }
    lt_backend *inner = be;
    if (be && profile && !(be = lt_backend_profile(inner))) {
        fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
        return 1;
    }
    lt_student st;
    lt_optim_config cfg = lt_optim_defaults(LT_OPT_LARS);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    if (!be || B <= 0 || R <= 0 ||
        lt_student_init(&st, be, argv[1], B, S, D, Q, 0, &cfg, mean, std) != 0) {
        fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
        return 1;
    }
    size_t views = (size_t)B * S * S * 3;
    uint8_t *a = malloc(views), *b = malloc(views);
    float *lambda = malloc((size_t)B * 4), *t = malloc((size_t)B * D * 4), *tn = malloc((size_t)B * 4);
    lt_rng r;
    lt_rng_init(&r, 1, 2, 3, 4);
    for (size_t i = 0; i < views; i++) a[i] = (uint8_t)lt_rng_below(&r, 256), b[i] = (uint8_t)i;
    for (int i = 0; i < B; i++) lambda[i] = (float)lt_rng_uniform(&r);
    for (int64_t i = 0; i < (int64_t)B * D; i++) t[i] = (float)(lt_rng_uniform(&r) - 0.5);
    lt_op_l2norm(t, tn, t, B, D);
    float *qh = malloc((size_t)Q * D * sizeof *qh); /* a full queue: the batch's rows repeated */
    for (int64_t i = 0; i < (int64_t)Q * D; i++) qh[i] = t[i % ((int64_t)B * D)];
    if (be->upload(be, st.queue.data, qh, (size_t)Q * D * sizeof *qh) != 0) {
        fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
        return 1;
    }
    free(qh);
    printf("{\"batch\": %d, \"device\": \"%s\", \"precision\": \"%s\", \"times\": [", B, be->name,
           lt_precision_name(pr));
    /* On a GPU the views stay in its memory, as lt-train's --image-pool device renders them there
     * (and as the PyTorch benchmark's input is made there): they go up once, and the step is
     * given NULL views. Warm-up: one step, and on a GPU a second, which records the CUDA graph. */
    const int gpu = be->mem != LT_MEM_HOST, warm = gpu ? 2 : 1;
    if (gpu && (be->upload(be, st.a, a, views) != 0 || be->upload(be, st.b, b, views) != 0)) {
        fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
        return 1;
    }
    for (int it = 0; it < R + warm; it++) {
        double t0 = lt_now(), loss, gnorm;
        if (lt_student_step(&st, gpu ? NULL : a, gpu ? NULL : b, lambda, t, B, 0.07, 1.0, 0.1,
                            &loss, &gnorm) != 0) {
            fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
            return 1;
        }
        if (it >= warm) printf("%s%.6f", it > warm ? ", " : "", lt_now() - t0);
        else if (profile) lt_backend_profile_reset(be);
        fflush(stdout);
    }
    printf("]");
    if (profile) {
        double ms[LT_PROF_CLASSES];
        int64_t calls[LT_PROF_CLASSES];
        lt_backend_profile_get(be, ms, calls);
        printf(", \"profile\": {");
        for (int c = 0; c < LT_PROF_CLASSES; c++)
            printf("%s\"%s\": %.3f", c ? ", " : "", lt_backend_profile_class(c), ms[c] / R);
        printf("}, \"profile_calls\": {");
        for (int c = 0; c < LT_PROF_CLASSES; c++)
            printf("%s\"%s\": %lld", c ? ", " : "", lt_backend_profile_class(c),
                   (long long)(calls[c] / R));
        printf("}");
    }
    printf("}\n");
    lt_student_free(&st);
    if (be != inner) be->destroy(be);
    inner->destroy(inner);
    return 0;
}
