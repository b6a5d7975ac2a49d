/* eval_tool.c: drives lib/eval from tests/py/test_eval.py. Arrays are raw little-endian files
 * (float32 .f32, float64 .f64, int32 .i32) in a folder.
 *
 *   eval_tool knn DIR D K T C       train.f32 train_labels.i32 val.f32 val_labels.i32 ->
 *                                   prints "top1 X" and "pred p0 p1 ..."
 *   eval_tool fit DIR N D C WD      X.f64 (N, D), y.i32 -> DIR/wb.f64 (W (C, D), then b (C));
 *                                   prints "loss L gmax G iters I converged 0|1"
 *   eval_tool probe DIR D C         the four kNN files -> prints "holdout a0 .. a4", "n_holdout n",
 *                                   "wd X", "top1 X", "pred ..." (the default sweep)
 *   eval_tool split DIR N           train_labels.i32 -> prints "held h0 h1 ..."
 *   eval_tool preprocess SIZE IMAGE OUT   the evaluation transform of an image file -> OUT raw
 *                                   (SIZE, SIZE, 3) uint8
 *   eval_tool features ARCH WEIGHTS SIZE BATCH OUT.f32 ROOT FILE...   student features (n, C) of
 *                                   ROOT/FILE...; prints "skipped s0 s1 ..."
 * Exit 0 ok, 1 runtime error, 2 usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/threads.h"
#include "eval/features.h"
#include "eval/knn.h"
#include "eval/linear_probe.h"
#include "eval/student.h"
#include "image/decode.h"
#include "nn/backend.h"

static void *load(const char *dir, const char *name, size_t *n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *d = NULL;
    if (lt_read_file(path, (size_t)1 << 32, &d, n) != 0) {
        fprintf(stderr, "eval_tool: %s\n", lt_err_msg());
        exit(1);
    }
    return d;
}

static void print_i32(const char *tag, const int32_t *v, int64_t n) {
    printf("%s", tag);
    for (int64_t i = 0; i < n; i++) printf(" %d", v[i]);
    printf("\n");
}

static int fail(void) {
    fprintf(stderr, "eval_tool: %s\n", lt_err_msg());
    return 1;
}

int main(int argc, char **argv) {
    lt_log_init("eval_tool", 1);
    lt_threads_set(0);
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    if ((!strcmp(cmd, "knn") && argc == 7) || (!strcmp(cmd, "probe") && argc == 5)) {
        const char *dir = argv[2];
        int D = atoi(argv[3]);
        size_t nt, nl, nv, nvl;
        float *tr = load(dir, "train.f32", &nt), *va = load(dir, "val.f32", &nv);
        int32_t *yt = load(dir, "train_labels.i32", &nl), *yv = load(dir, "val_labels.i32", &nvl);
        int64_t n_train = (int64_t)(nl / 4), n_val = (int64_t)(nvl / 4);
        int32_t *pred = malloc((size_t)n_val * 4 + 4);
        if (!strcmp(cmd, "knn")) {
            double top1;
            if (lt_knn_top1(tr, yt, n_train, va, yv, n_val, D, atoi(argv[4]),
                            strtof(argv[5], NULL), atoi(argv[6]), pred, &top1) != 0)
                return fail();
            printf("top1 %.17g\n", top1);
        } else {
            lt_linprobe_result r;
            if (lt_linprobe_run(tr, yt, n_train, va, yv, n_val, D, atoi(argv[4]),
                                lt_linprobe_default_wd, 5, &r, pred) != 0)
                return fail();
            printf("holdout");
            for (int k = 0; k < 5; k++) printf(" %.17g", r.holdout_top1[k]);
            printf("\nn_holdout %d\nwd %.17g\ntop1 %.17g\n", r.n_holdout, r.wd, r.top1);
        }
        print_i32("pred", pred, n_val);
        return 0;
    }
    if (!strcmp(cmd, "fit") && argc == 7) {
        const char *dir = argv[2];
        int64_t N = atoll(argv[3]);
        int D = atoi(argv[4]), C = atoi(argv[5]);
        size_t nx, ny;
        double *X = load(dir, "X.f64", &nx);
        int32_t *y = load(dir, "y.i32", &ny);
        if (nx != (size_t)N * D * 8 || ny != (size_t)N * 4) return 2;
        double *wb = malloc(((size_t)C * D + C) * sizeof(double));
        lt_linprobe_fit_info info;
        if (lt_linprobe_fit(X, y, N, D, C, strtod(argv[6], NULL), wb, wb + (size_t)C * D, &info))
            return fail();
        char path[4096];
        snprintf(path, sizeof path, "%s/wb.f64", dir);
        if (lt_write_file_atomic(path, wb, ((size_t)C * D + C) * sizeof(double)) != 0)
            return fail();
        printf("loss %.17g gmax %.17g iters %d converged %d\n", info.loss, info.gmax, info.iters,
               info.converged);
        return 0;
    }
    if (!strcmp(cmd, "split") && argc == 4) {
        size_t n;
        int32_t *y = load(argv[2], "train_labels.i32", &n);
        int64_t N = (int64_t)(n / 4);
        uint8_t *held = malloc((size_t)N + 1);
        lt_linprobe_holdout(y, N, held);
        printf("held");
        for (int64_t i = 0; i < N; i++) printf(" %d", held[i]);
        printf("\n");
        return 0;
    }
    if (!strcmp(cmd, "preprocess") && argc == 5) {
        int size = atoi(argv[2]);
        uint8_t *bytes;
        size_t n;
        lt_image im;
        if (lt_read_file(argv[3], (size_t)1 << 31, &bytes, &n) != 0 ||
            lt_image_decode(bytes, n, LT_DEFAULT_MAX_PIXELS, &im) != 0)
            return fail();
        uint8_t *out = malloc((size_t)size * size * 3);
        if (lt_eval_preprocess(&im, size, out) != 0 ||
            lt_write_file_atomic(argv[4], out, (size_t)size * size * 3) != 0)
            return fail();
        return 0;
    }
    if (!strcmp(cmd, "features") && argc >= 9) {
        int size = atoi(argv[4]), batch = atoi(argv[5]);
        lt_backend *be = lt_backend_cpu(lt_threads_get());
        lt_resnet *m = lt_eval_student_load(be, argv[2], argv[3], batch, size);
        if (!m) return fail();
        size_t n = (size_t)(argc - 8);
        uint8_t *skipped = calloc(n, 1);
        float *out = malloc(n * (size_t)m->C * sizeof(float));
        lt_eval_images src = {.root = argv[7], .paths = argv + 8, .n = n,
                              .max_pixels = LT_DEFAULT_MAX_PIXELS, .skipped = skipped};
        static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
        if (lt_eval_features_student(m, &src, mean, std, out, 0) != 0 ||
            lt_write_file_atomic(argv[6], out, n * (size_t)m->C * sizeof(float)) != 0)
            return fail();
        printf("skipped");
        for (size_t i = 0; i < n; i++) printf(" %d", skipped[i]);
        printf("\n");
        return 0;
    }
    fprintf(stderr, "eval_tool: bad command line (see the comment at the top of eval_tool.c)\n");
    return 2;
}
