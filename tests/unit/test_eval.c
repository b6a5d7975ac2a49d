/* test_eval.c: what lt-train's evaluation relies on in lib/eval (features.h, student.h).
 *
 *  - extracting features of a live model changes nothing of it: parameters, running
 *    statistics and num_batches_tracked are bitwise the same after lt_eval_features_student;
 *  - a copy for another image size (lt_eval_student_like) gives bit for bit the features of the
 *    same weights built at that size directly (same batch: the batch sets how the ops split);
 *  - the extraction goes through the backend only: a backend that says its memory is a device's
 *    (host memory underneath, so the test can run anywhere) takes the upload/download paths and
 *    gives bit for bit the CPU backend's features, and every buffer it allocated is freed;
 *  - a file that does not decode is flagged as skipped and its row is zero. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/error.h"
#include "core/log.h"
#include "core/threads.h"
#include "eval/features.h"
#include "eval/student.h"
#include "image/decode.h"
#include "models/resnet.h"
#include "nn/backend.h"

static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};

/* ---- a "device" backend: the CPU one, but its memory is declared LT_MEM_DEVICE ---- */

static int64_t live_allocs;
static void *dev_alloc(lt_backend *be, size_t bytes, const char *what) {
    lt_backend *cpu = be->impl;
    void *p = cpu->alloc(cpu, bytes, what);
    if (p) live_allocs++;
    return p;
}
static void dev_free(lt_backend *be, void *p) {
    lt_backend *cpu = be->impl;
    if (p) live_allocs--;
    cpu->free(cpu, p);
}

/* A snapshot of everything a model holds. */
typedef struct {
    float *p, *b;
    int64_t *nbt;
} state;

static state snap(const lt_resnet *m) {
    state s = {malloc((size_t)m->n_params * 4), malloc((size_t)m->n_buffers * 4),
               malloc((size_t)m->n_bn * 8)};
    memcpy(s.p, m->params, (size_t)m->n_params * 4);
    memcpy(s.b, m->buffers, (size_t)m->n_buffers * 4);
    memcpy(s.nbt, m->nbt, (size_t)m->n_bn * 8);
    return s;
}

static int same_state(const lt_resnet *m, const state *s) {
    return !memcmp(s->p, m->params, (size_t)m->n_params * 4) &&
           !memcmp(s->b, m->buffers, (size_t)m->n_buffers * 4) &&
           !memcmp(s->nbt, m->nbt, (size_t)m->n_bn * 8);
}

static void free_state(state *s) { free(s->p), free(s->b), free(s->nbt); }

int main(void) {
    lt_log_init("test_eval", 0);
    lt_threads_set(2);
    char dir[] = "/tmp/lt_test_eval_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    /* five images of assorted sizes, and one file that is not an image */
    enum { N = 6 };
    char *paths[N];
    uint32_t seed = 12345;
    for (int i = 0; i < N; i++) {
        paths[i] = malloc(32);
        snprintf(paths[i], 32, i == 3 ? "bad%d.png" : "img%d.png", i);
        char full[128];
        snprintf(full, sizeof full, "%s/%s", dir, paths[i]);
        if (i == 3) {
            FILE *f = fopen(full, "wb");
            fputs("not a png", f);
            fclose(f);
            continue;
        }
        int w = 37 + 9 * i, h = 45 - 3 * i;
        uint8_t *px = malloc((size_t)w * h * 3);
        for (int k = 0; k < w * h * 3; k++) px[k] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 24);
        CHECK(lt_png_write(full, px, w, h) == 0);
        free(px);
    }
    uint8_t skipped[N] = {0};
    lt_eval_images src = {.root = dir, .paths = paths, .n = N,
                          .max_pixels = LT_DEFAULT_MAX_PIXELS, .skipped = skipped};

    lt_backend *cpu = lt_backend_cpu(2);
    lt_resnet *live = lt_resnet_create(cpu, "resnet18", 4, 32, 32);
    CHECK(live != NULL);
    lt_resnet_init_weights(live, 7);
    for (int i = 0; i < live->n_bn; i++) live->nbt[i] = 100 + i;
    for (int64_t i = 0; i < live->n_buffers; i++) live->buffers[i] += 0.01f * (float)(i % 7);
    state before = snap(live);
    float *f32 = calloc((size_t)N * 512, sizeof(float)), *f40 = calloc((size_t)N * 512, 4);
    float *g40 = calloc((size_t)N * 512, 4), *d40 = calloc((size_t)N * 512, 4);
    CHECK(lt_eval_features_student(live, &src, MEAN, STD, f32, 0) == 0);
    CHECK_MSG(same_state(live, &before), "the forward changed the model");
    CHECK(skipped[3] == 1 && skipped[0] == 0 && skipped[5] == 0);
    int zero = 1, nonzero = 0;
    for (int k = 0; k < 512; k++) zero &= f32[3 * 512 + k] == 0, nonzero |= f32[k] != 0;
    CHECK(zero && nonzero);

    /* a copy at 40 px, batch 2, against the same weights built at 40 px directly */
    lt_resnet *copy = lt_eval_student_like(live, cpu, 2, 40);
    lt_resnet *direct = lt_resnet_create(cpu, "resnet18", 2, 40, 40);
    CHECK(copy && direct);
    lt_resnet_init_weights(direct, 7);
    CHECK(lt_eval_student_copy(direct, live) == 0);
    CHECK(lt_eval_features_student(copy, &src, MEAN, STD, f40, 0) == 0);
    CHECK(lt_eval_features_student(direct, &src, MEAN, STD, g40, 0) == 0);
    CHECK_MSG(!memcmp(f40, g40, (size_t)N * 512 * 4), "copy and direct model disagree");
    CHECK(memcmp(f40, f32, (size_t)N * 512 * 4) != 0); /* another size: other features */
    CHECK(same_state(live, &before));

    /* the same through a backend that declares device memory */
    lt_backend dev = *cpu;
    dev.impl = cpu;
    dev.mem = LT_MEM_DEVICE;
    dev.alloc = dev_alloc;
    dev.free = dev_free;
    lt_resnet *on_dev = lt_eval_student_like(live, &dev, 2, 40);
    CHECK(on_dev != NULL);
    CHECK(lt_eval_features_student(on_dev, &src, MEAN, STD, d40, 0) == 0);
    CHECK_MSG(!memcmp(f40, d40, (size_t)N * 512 * 4), "device-memory backend disagrees");
    lt_resnet_free(on_dev);
    /* random init on a device backend goes through a host twin: same weights as on the CPU */
    lt_resnet *r_dev = lt_eval_student_random(&dev, "resnet18", 7, 1, 32);
    lt_resnet *r_cpu = lt_eval_student_random(cpu, "resnet18", 7, 1, 32);
    CHECK(r_dev && r_cpu && !memcmp(r_dev->params, r_cpu->params, (size_t)r_cpu->n_params * 4));
    lt_resnet_free(r_dev);
    lt_resnet_free(r_cpu);
    CHECK_MSG(live_allocs == 0, "%lld buffers of the device backend not freed",
              (long long)live_allocs);

    free_state(&before);
    lt_resnet_free(copy), lt_resnet_free(direct), lt_resnet_free(live);
    cpu->destroy(cpu);
    for (int i = 0; i < N; i++) {
        char full[128];
        snprintf(full, sizeof full, "%s/%s", dir, paths[i]);
        unlink(full);
        free(paths[i]);
    }
    rmdir(dir);
    free(f32), free(f40), free(g40), free(d40);
    CHECK_DONE();
}
