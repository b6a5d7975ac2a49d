/* lt-eval: scores frozen features on a labelled image folder (DIR/train/<class>/…,
 * DIR/val/<class>/…) by weighted kNN and a linear probe, for a trained student, the teacher
 * and/or an untrained student. Parses and validates the options, loads the models, runs the work
 * of lib/eval model by model, prints the table and writes the JSON report. All logic lives in
 * lib/. */
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/threads.h"
#include "core/version.h"
#include "eval/features.h"
#include "eval/imagefolder.h"
#include "eval/knn.h"
#include "eval/linear_probe.h"
#include "eval/student.h"
#include "image/recipe.h"
#include "models/dinov2.h"
#include "nn/backend.h"
#include "nn/blas_select.h"

static void usage(FILE *f) {
    fputs(
        "Usage: lt-eval [options] DATA_DIR\n"
        "\n"
        "Scores frozen features on a labelled image folder, DATA_DIR/train/<class>/<image> and\n"
        "DATA_DIR/val/<class>/<image> (.jpg, .jpeg, .png; a class is a folder name, the same\n"
        "classes in both), by weighted kNN (DINO's protocol) and a linear probe (logistic\n"
        "regression with a weight-decay sweep on a held-out 20 % of train). One row per model:\n"
        "a trained student (--weights), the teacher (--teacher), an untrained student\n"
        "(--random-init); at least one is needed. Images get torchvision's evaluation transform:\n"
        "short side resized to int(size/0.875), centre crop of size, ImageNet normalisation.\n"
        "\n"
        "Options:\n"
        "  --weights FILE        student weights: lt-train's student.safetensors, an lt-train\n"
        "                        checkpoint, or torchvision-named weights as safetensors\n"
        "  --student NAME        architecture of --weights and --random-init: resnet18\n"
        "                        (default), resnet34 or resnet50\n"
        "  --teacher FILE        DINOv2 weights (.safetensors), its CLS embedding as features\n"
        "  --random-init         also score an untrained --student (torchvision's init, --seed)\n"
        "  --seed N              seed of --random-init (default 0)\n"
        "  --image-size N        crop side in pixels (default 224; with --teacher a multiple of\n"
        "                        its patch size, 14)\n"
        "  --batch-size N        images per forward pass (default 32)\n"
        "  --knn-k N             neighbours of the kNN vote (default 20)\n"
        "  --knn-temperature X   temperature T of the vote weights exp(sim/T) (default 0.07)\n"
        "  --no-linear           skip the linear probe\n"
        "  --json FILE           also write the report as one JSON object (atomically)\n"
        "  --max-pixels N        skip images with more pixels (default 268435456)\n"
        "  --threads N           CPU threads, 0 = all cores (default 0)\n"
        "  -q, --quiet           errors only (the table is still printed)\n"
        "  -v, --verbose         more detail (the sweep's held-out accuracies)\n"
        "  -h, --help            this help\n"
        "  -V, --version         print the version\n"
        "\n"
        "Exit status: 0 ok, 1 runtime error (bad data folder, weights or images), 2 usage error.\n",
        f);
}

enum {
    OPT_WEIGHTS = 256, OPT_STUDENT, OPT_TEACHER, OPT_RANDOM, OPT_SEED, OPT_SIZE, OPT_BATCH,
    OPT_K, OPT_TEMP, OPT_NOLIN, OPT_JSON, OPT_MAXPIX, OPT_THREADS
};

static const struct option long_opts[] = {
    {"weights", required_argument, 0, OPT_WEIGHTS}, {"student", required_argument, 0, OPT_STUDENT},
    {"teacher", required_argument, 0, OPT_TEACHER}, {"random-init", no_argument, 0, OPT_RANDOM},
    {"seed", required_argument, 0, OPT_SEED},       {"image-size", required_argument, 0, OPT_SIZE},
    {"batch-size", required_argument, 0, OPT_BATCH}, {"knn-k", required_argument, 0, OPT_K},
    {"knn-temperature", required_argument, 0, OPT_TEMP},
    {"no-linear", no_argument, 0, OPT_NOLIN},       {"json", required_argument, 0, OPT_JSON},
    {"max-pixels", required_argument, 0, OPT_MAXPIX},
    {"threads", required_argument, 0, OPT_THREADS}, {"quiet", no_argument, 0, 'q'},
    {"verbose", no_argument, 0, 'v'},               {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'},               {0, 0, 0, 0}};

typedef struct {
    const char *weights, *student, *teacher, *json;
    int random_init, image_size, batch, k, linear, threads;
    uint64_t seed;
    float temperature;
    int64_t max_pixels;
} opts;

static int apply(int c, const char *arg, opts *o, int *verbosity) {
    switch (c) {
    case OPT_WEIGHTS: o->weights = arg; return 0;
    case OPT_STUDENT:
        if (strcmp(arg, "resnet18") && strcmp(arg, "resnet34") && strcmp(arg, "resnet50"))
            return lt_err_set("--student: expected resnet18, resnet34 or resnet50, got '%s'", arg);
        o->student = arg;
        return 0;
    case OPT_TEACHER: o->teacher = arg; return 0;
    case OPT_RANDOM: o->random_init = 1; return 0;
    case OPT_SEED: return lt_parse_u64("seed", arg, &o->seed);
    case OPT_SIZE: return lt_parse_int("image-size", arg, 8, 4096, &o->image_size);
    case OPT_BATCH: return lt_parse_int("batch-size", arg, 1, 4096, &o->batch);
    case OPT_K: return lt_parse_int("knn-k", arg, 1, 100000, &o->k);
    case OPT_TEMP: return lt_parse_float("knn-temperature", arg, 1e-4, 100, &o->temperature);
    case OPT_NOLIN: o->linear = 0; return 0;
    case OPT_JSON: o->json = arg; return 0;
    case OPT_MAXPIX: return lt_parse_i64("max-pixels", arg, 1, INT64_C(1) << 40, &o->max_pixels);
    case OPT_THREADS: return lt_parse_int("threads", arg, 0, 4096, &o->threads);
    case 'q': *verbosity = 0; return 0;
    case 'v': *verbosity = 2; return 0;
    }
    return lt_err_set("unknown option");
}

/* One row of the report. */
typedef struct {
    const char *name, *arch, *weights;
    int dim;
    double knn, linear, wd, per_s;
} row;

/* A growing text buffer for the JSON report. */
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) LT_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s ? t->s + t->n : NULL, t->s ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (t->s && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        size_t cap = (t->cap + (size_t)k + 1) * 2;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->oom = 1;
            return;
        }
        t->s = s, t->cap = cap;
    }
}

/* s as a JSON string (quotes, backslashes and control bytes escaped), or null. */
static void put_str(text *t, const char *s) {
    if (!s) {
        put(t, "null");
        return;
    }
    put(t, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') put(t, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) put(t, "\\u%04x", *p);
        else put(t, "%c", *p);
    }
    put(t, "\"");
}

static int write_json(const char *path, const opts *o, const char *dir, const lt_imagefolder *f,
                      int64_t n_train, int64_t n_val, int64_t skipped, const row *rows, int n) {
    text t = {0};
    put(&t, "{\"models\": [");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        put(&t, "%s{\"name\": ", i ? ", " : "");
        put_str(&t, r->name);
        put(&t, ", \"arch\": ");
        put_str(&t, r->arch);
        put(&t, ", \"weights\": ");
        put_str(&t, r->weights);
        put(&t, ", \"feature_dim\": %d, \"knn_top1\": %.6f, \"linear_top1\": ", r->dim, r->knn);
        if (o->linear) put(&t, "%.6f, \"linear_weight_decay\": %g", r->linear, r->wd);
        else put(&t, "null, \"linear_weight_decay\": null");
        put(&t, ", \"features_per_s\": %.3f}", r->per_s);
    }
    put(&t, "], \"data\": {\"dir\": ");
    put_str(&t, dir);
    put(&t, ", \"classes\": %d, \"train_images\": %lld, \"val_images\": %lld, \"skipped\": %lld}",
        f->n_classes, (long long)n_train, (long long)n_val, (long long)skipped);
    put(&t, ", \"image_size\": %d, \"knn_k\": %d, \"knn_temperature\": %g}\n", o->image_size, o->k,
        (double)o->temperature);
    int rc = t.oom ? lt_err_set("out of memory (JSON report)")
                   : lt_write_file_atomic(path, t.s, t.n);
    free(t.s);
    return rc;
}

/* The whole run's data: every path (train then val), the skip flags, the features. */
typedef struct {
    const lt_imagefolder *f;
    char **paths;          /* (n) train paths then val paths (borrowed) */
    size_t n, n_train;
    uint8_t *skipped;      /* (n) */
    lt_eval_images src;
    float mean[3], std[3];
} dataset;

/* Scores the features (n, dim) of one model: compacts away skipped rows, kNN, linear probe. */
static int score(const dataset *d, const opts *o, const float *feat, int dim, row *r) {
    lt_eval_feature_split sp;
    if (lt_eval_split_features(feat, dim, d->skipped, d->f->train.labels, d->n_train,
                               d->f->val.labels, d->n - d->n_train, &sp) != 0)
        return -1;
    const float *tr = sp.train, *va = sp.val;
    const int32_t *yt = sp.train_labels, *yv = sp.val_labels;
    int64_t nt = sp.n_train, nv = sp.n_val;
    int rc = lt_knn_top1(tr, yt, nt, va, yv, nv, dim, o->k, o->temperature, d->f->n_classes, NULL,
                         &r->knn);
    if (rc == 0 && o->linear) {
        lt_linprobe_result lr;
        rc = lt_linprobe_run(tr, yt, nt, va, yv, nv, dim, d->f->n_classes, lt_linprobe_default_wd,
                             5, &lr, NULL);
        if (rc == 0) {
            r->linear = lr.top1;
            r->wd = lr.wd;
            for (int k = 0; k < 5; k++)
                lt_debug("%s: linear probe, weight decay %g: held-out top-1 %.4f (%d images)",
                         r->name, lt_linprobe_default_wd[k], lr.holdout_top1[k], lr.n_holdout);
            if (!lr.fit.converged)
                lt_warn("%s: the linear probe stopped at %d iterations with a gradient of %.2g "
                        "(not fully converged)", r->name, lr.fit.iters, lr.fit.gmax);
        }
    }
    lt_eval_split_free(&sp);
    return rc;
}

static int run_student(const dataset *d, const opts *o, lt_resnet *m, row *r) {
    float *feat = lt_malloc(d->n * (size_t)m->C * sizeof(float) + 1, "features");
    if (!feat) return -1;
    lt_info("%s (%s): features of %zu images", r->name, m->arch, d->n);
    double t0 = lt_now();
    int rc = lt_eval_features_student(m, &d->src, d->mean, d->std, feat, 1);
    r->per_s = (double)d->n / (lt_now() - t0 + 1e-9);
    r->dim = m->C;
    if (rc == 0) rc = score(d, o, feat, m->C, r);
    free(feat);
    return rc;
}

static int run_teacher(const dataset *d, const opts *o, lt_dinov2 *t, row *r) {
    int D = lt_dinov2_config_of(t)->embed_dim;
    float *feat = lt_malloc(d->n * (size_t)D * sizeof(float) + 1, "features");
    if (!feat) return -1;
    lt_info("teacher: features of %zu images", d->n);
    double t0 = lt_now();
    int rc = lt_eval_features_teacher(t, o->batch, o->image_size, &d->src, d->mean, d->std, feat,
                                      1);
    r->per_s = (double)d->n / (lt_now() - t0 + 1e-9);
    r->dim = D;
    if (rc == 0) rc = score(d, o, feat, D, r);
    free(feat);
    return rc;
}

static void scan_warn(const char *msg, void *ctx) {
    (void)ctx;
    lt_warn("%s", msg);
}

/* The folder of path must exist and be writable, checked before the long work. */
static int check_json_path(const char *path) {
    char *copy = strdup(path);
    if (!copy) return lt_err_set("out of memory");
    const char *dir = dirname(copy);
    int rc = access(dir, W_OK) == 0
                 ? 0
                 : lt_err_set("--json %s: cannot write into the folder %s", path, dir);
    free(copy);
    return rc;
}

int main(int argc, char **argv) {
    opts o = {.student = "resnet18", .image_size = 224, .batch = 32, .k = 20, .linear = 1,
              .temperature = 0.07f, .max_pixels = LT_DEFAULT_MAX_PIXELS};
    int verbosity = 1, c;
    lt_blas_ensure(argv); /* the GEMM kernels this CPU can run (may restart the program) */
    lt_log_init("lt-eval", 1);
    while ((c = getopt_long(argc, argv, "qvhV", long_opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return LT_EXIT_OK;
        }
        if (c == 'V') {
            printf("lt-eval %s\n", LT_VERSION);
            return LT_EXIT_OK;
        }
        if (c == '?') {
            fprintf(stderr, "Try 'lt-eval --help'.\n");
            return LT_EXIT_USAGE;
        }
        if (apply(c, optarg, &o, &verbosity) != 0) {
            lt_error("%s", lt_err_msg());
            return LT_EXIT_USAGE;
        }
    }
    lt_log_init("lt-eval", verbosity);
    if (argc - optind != 1) {
        lt_error("expected one DATA_DIR argument, got %d (try 'lt-eval --help')", argc - optind);
        return LT_EXIT_USAGE;
    }
    if (!o.weights && !o.teacher && !o.random_init) {
        lt_error("no model given: pass --weights FILE (with --student), --teacher FILE and/or "
                 "--random-init");
        return LT_EXIT_USAGE;
    }
    const char *dir = argv[optind];
    if (o.json && check_json_path(o.json) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    lt_threads_set(o.threads);

    lt_imagefolder f;
    if (lt_imagefolder_open(dir, &f, scan_warn, NULL) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    dataset d = {.f = &f, .n_train = f.train.n, .n = f.train.n + f.val.n};
    lt_transform tf;
    lt_transform_default(&tf);
    memcpy(d.mean, tf.mean, sizeof d.mean);
    memcpy(d.std, tf.std, sizeof d.std);
    d.paths = lt_malloc(d.n * sizeof(char *), "file list");
    d.skipped = lt_calloc(d.n, 1, "file list");
    lt_backend *be = lt_backend_open("cpu", lt_threads_get());
    lt_resnet *student = NULL;
    lt_dinov2 *teacher = NULL;
    row rows[3];
    int n_rows = 0, rc = d.paths && d.skipped && be ? 0 : -1;
    if (rc == 0) {
        memcpy(d.paths, f.train.paths, f.train.n * sizeof(char *));
        memcpy(d.paths + f.train.n, f.val.paths, f.val.n * sizeof(char *));
        d.src = (lt_eval_images){.root = dir, .paths = d.paths, .n = d.n,
                                 .max_pixels = o.max_pixels, .skipped = d.skipped};
        lt_info("%s: %d classes, %zu train and %zu val images", dir, f.n_classes, f.train.n,
                f.val.n);
    }
    /* every model is loaded and checked before any long work */
    if (rc == 0 && o.teacher) {
        rc = lt_dinov2_load(o.teacher, &teacher);
        if (rc == 0) rc = lt_eval_teacher_check_size(teacher, o.image_size);
    }
    if (rc == 0 && o.weights)
        rc = (student = lt_eval_student_load(be, o.student, o.weights, o.batch, o.image_size))
                 ? 0
                 : -1;
    if (rc == 0 && student) {
        rows[n_rows] = (row){.name = "student", .arch = o.student, .weights = o.weights};
        rc = run_student(&d, &o, student, &rows[n_rows++]);
        lt_resnet_free(student);
    }
    if (rc == 0 && teacher) {
        rows[n_rows] = (row){.name = "teacher", .arch = "dinov2", .weights = o.teacher};
        rc = run_teacher(&d, &o, teacher, &rows[n_rows++]);
    }
    if (rc == 0 && o.random_init) {
        lt_resnet *m = lt_eval_student_random(be, o.student, o.seed, o.batch, o.image_size);
        rows[n_rows] = (row){.name = "random-init", .arch = o.student};
        rc = m ? run_student(&d, &o, m, &rows[n_rows++]) : -1;
        lt_resnet_free(m);
    }
    int64_t skipped = 0, n_train = 0, n_val = 0;
    for (size_t i = 0; i < d.n; i++) {
        skipped += d.skipped[i];
        if (!d.skipped[i]) *(i < d.n_train ? &n_train : &n_val) += 1;
    }
    if (rc == 0) {
        printf("data: %s: %d classes, %lld train and %lld val images used, %lld skipped; "
               "image size %d, kNN k %d, T %g\n", dir, f.n_classes, (long long)n_train,
               (long long)n_val, (long long)skipped, o.image_size, o.k, (double)o.temperature);
        printf("%-12s %-9s %6s %11s %13s %9s\n", "model", "arch", "dim", "kNN top-1",
               "linear top-1", "images/s");
        for (int i = 0; i < n_rows; i++) {
            char lin[32] = "-";
            if (o.linear) snprintf(lin, sizeof lin, "%.2f%%", 100 * rows[i].linear);
            printf("%-12s %-9s %6d %10.2f%% %13s %9.1f\n", rows[i].name, rows[i].arch,
                   rows[i].dim, 100 * rows[i].knn, lin, rows[i].per_s);
        }
        fflush(stdout);
    }
    if (rc == 0 && o.json)
        rc = write_json(o.json, &o, dir, &f, n_train, n_val, skipped, rows, n_rows);
    if (rc != 0) lt_error("%s", lt_err_msg());
    if (teacher) lt_dinov2_free(teacher);
    if (be) be->destroy(be);
    free(d.paths);
    free(d.skipped);
    lt_imagefolder_free(&f);
    return rc == 0 ? LT_EXIT_OK : LT_EXIT_ERROR;
}
