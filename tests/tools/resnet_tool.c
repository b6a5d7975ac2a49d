/* resnet_tool.c: drives the CNN ops (nn/cnn.h) and the ResNet student (models/resnet.h) for the
 * PyTorch reference tests (tests/py/test_resnet.py).
 *
 * Why it exists: the tests compare every op and the whole model against torch on fresh random
 * inputs; this tool is the C side. Tensors travel as raw little-endian float32 files in a
 * directory (x.f32, w.f32, ...), dimensions on the command line:
 *
 *   resnet_tool conv    DIR B H W Cin Cout kh kw stride pad
 *       in x (B,H,W,Cin) w (Cout,Cin,kh,kw) dy (B,OH,OW,Cout)
 *       out y, dx, dw, and dx2, dw2 = a second backward accumulated onto the first (= 2·dx, 2·dw)
 *   resnet_tool bn      DIR M C relu has_res
 *       in x (M,C) gamma beta rm rv (C) dy (M,C) [res (M,C)]
 *       out y, rm, rv (updated), dx, dgamma, dbeta, [dres], yeval (eval mode, updated stats)
 *   resnet_tool maxpool DIR B H W C k stride pad      in x, dy   out y, dx
 *   resnet_tool avgpool DIR B HW C                    in x, dy   out y, dx
 *   resnet_tool linear  DIR M K N                     in x, w, b, dy   out y, dx, dw, db
 *   resnet_tool relu    DIR n                         in x, dy   out y, dx
 *   resnet_tool manifest ARCH                         prints "name kind ndim dims..." per tensor
 *   resnet_tool model   DIR ARCH B H W load|init SEED
 *       load: load.f32 holds every tensor in manifest order (counters as floats), set by name;
 *       init: lt_resnet_init_weights(SEED). Writes init.f32 (all tensors, as used), then with
 *       x (B,H,W,3), dfeat (B,C): feat, grads (params in order), dinput, after (all tensors after
 *       the training step), feateval (eval-mode features after the step), relu + argmax (the
 *       forward's ReLU outputs and max-pool winners), grads2 (a second backward accumulated).
 *   resnet_tool bench   ARCH B H W STEPS              seconds per forward+backward
 *
 * The thread count comes from LT_THREADS (default 2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/threads.h"
#include "nn/backend.h"
#include "models/resnet.h"
#include "nn/cnn.h"

static const char *g_dir;

static void die(const char *what) {
    fprintf(stderr, "resnet_tool: error: %s: %s\n", what, lt_err_msg());
    exit(1);
}

static float *rd(const char *name, int64_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.f32", g_dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) {
        lt_err_set("cannot open %s", p);
        die("read");
    }
    float *b = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!b || fread(b, sizeof(float), (size_t)n, f) != (size_t)n || fgetc(f) != EOF) {
        lt_err_set("%s does not hold exactly %lld floats", p, (long long)n);
        die("read");
    }
    fclose(f);
    return b;
}

static int exists(const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.f32", g_dir, name);
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void wr(const char *name, const float *b, int64_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.f32", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(b, sizeof(float), (size_t)n, f) != (size_t)n || fclose(f)) {
        lt_err_set("cannot write %s", p);
        die("write");
    }
}

/* Every op and the model run through the CPU backend (nn/backend.h), as lt-train runs them. */
static lt_backend *be;

static float *zalloc(int64_t n) {
    float *b = calloc((size_t)(n ? n : 1), sizeof(float));
    if (!b) die("calloc");
    return b;
}

static int cmd_conv(char **a) {
    lt_conv2d_dims d;
    if (lt_conv2d_dims_init(&d, atoi(a[0]), atoi(a[1]), atoi(a[2]), atoi(a[3]), atoi(a[4]),
                            atoi(a[5]), atoi(a[6]), atoi(a[7]), atoi(a[8])))
        die("conv");
    int64_t nx = (int64_t)d.B * d.H * d.W * d.Cin, nw = (int64_t)d.Cout * d.Cin * d.kh * d.kw,
            ny = (int64_t)d.B * d.OH * d.OW * d.Cout;
    float *x = rd("x", nx), *w = rd("w", nw), *dy = rd("dy", ny);
    float *y = zalloc(ny), *dx = zalloc(nx), *dw = zalloc(nw);
    void *ws = malloc(be->conv2d_ws_bytes(be, &d) + 1);
    if (be->conv2d_forward(be, &d, y, x, w, ws) ||
        be->conv2d_backward(be, &d, dx, dw, dy, x, w, ws, 0, 0))
        die("conv");
    wr("y", y, ny), wr("dx", dx, nx), wr("dw", dw, nw);
    if (be->conv2d_backward(be, &d, dx, dw, dy, x, w, ws, 1, 1)) die("conv");
    wr("dx2", dx, nx), wr("dw2", dw, nw);
    return 0;
}

static int cmd_bn(char **a) {
    int M = atoi(a[0]), C = atoi(a[1]), relu = atoi(a[2]), has_res = atoi(a[3]);
    int64_t n = (int64_t)M * C;
    float *x = rd("x", n), *g = rd("gamma", C), *b = rd("beta", C), *rm = rd("rm", C),
          *rv = rd("rv", C), *dy = rd("dy", n), *res = has_res ? rd("res", n) : NULL;
    float *y = zalloc(n), *mean = zalloc(C), *invstd = zalloc(C), *dx = zalloc(n),
          *dg = zalloc(C), *db = zalloc(C), *ye = zalloc(n);
    void *ws = malloc(be->bn_ws_bytes(be, C));
    if (be->bn_forward_train(be, y, x, res, g, b, mean, invstd, rm, rv, M, C, 1e-5f, 0.1f, relu,
                             ws))
        die("bn");
    wr("y", y, n), wr("rm", rm, C), wr("rv", rv, C);
    if (has_res) {
        /* the block's way: mask once, the masked gradient is also the residual's */
        float *gm = zalloc(n);
        if (relu && be->relu_backward(be, gm, dy, y, n)) die("relu");
        if (!relu) memcpy(gm, dy, sizeof(float) * n);
        wr("dres", gm, n);
        if (be->bn_backward(be, dx, dg, db, gm, x, NULL, g, mean, invstd, M, C, 0, 0, ws))
            die("bn backward");
    } else if (be->bn_backward(be, dx, dg, db, dy, x, y, g, mean, invstd, M, C, relu, 0, ws)) {
        die("bn backward");
    }
    wr("dx", dx, n), wr("dgamma", dg, C), wr("dbeta", db, C);
    if (be->bn_forward_eval(be, ye, x, res, g, b, rm, rv, M, C, 1e-5f, relu)) die("bn eval");
    wr("yeval", ye, n);
    return 0;
}

static int cmd_maxpool(char **a) {
    lt_pool_dims d;
    if (lt_pool_dims_init(&d, atoi(a[0]), atoi(a[1]), atoi(a[2]), atoi(a[3]), atoi(a[4]),
                          atoi(a[5]), atoi(a[6])))
        die("maxpool");
    int64_t nx = (int64_t)d.B * d.H * d.W * d.C, ny = (int64_t)d.B * d.OH * d.OW * d.C;
    float *x = rd("x", nx), *dy = rd("dy", ny), *y = zalloc(ny), *dx = zalloc(nx);
    int32_t *am = malloc(sizeof(int32_t) * ny);
    if (be->maxpool_forward(be, &d, y, am, x) || be->maxpool_backward(be, &d, dx, dy, am))
        die("maxpool");
    wr("y", y, ny), wr("dx", dx, nx);
    return 0;
}

static int cmd_avgpool(char **a) {
    int B = atoi(a[0]), HW = atoi(a[1]), C = atoi(a[2]);
    int64_t nx = (int64_t)B * HW * C, ny = (int64_t)B * C;
    float *x = rd("x", nx), *dy = rd("dy", ny), *y = zalloc(ny), *dx = zalloc(nx);
    if (be->avgpool_forward(be, y, x, B, HW, C) || be->avgpool_backward(be, dx, dy, B, HW, C))
        die("avgpool");
    wr("y", y, ny), wr("dx", dx, nx);
    return 0;
}

static int cmd_linear(char **a) {
    int M = atoi(a[0]), K = atoi(a[1]), N = atoi(a[2]);
    float *x = rd("x", (int64_t)M * K), *w = rd("w", (int64_t)N * K), *b = rd("b", N),
          *dy = rd("dy", (int64_t)M * N);
    float *y = zalloc((int64_t)M * N), *dx = zalloc((int64_t)M * K), *dw = zalloc((int64_t)N * K),
          *db = zalloc(N);
    if (be->linear_forward(be, y, x, w, b, M, K, N) ||
        be->linear_backward(be, dx, dw, db, dy, x, w, M, K, N, 0))
        die("linear");
    wr("y", y, (int64_t)M * N), wr("dx", dx, (int64_t)M * K), wr("dw", dw, (int64_t)N * K);
    wr("db", db, N);
    return 0;
}

static int cmd_relu(char **a) {
    int64_t n = atoll(a[0]);
    float *x = rd("x", n), *dy = rd("dy", n), *y = zalloc(n), *dx = zalloc(n);
    if (lt_relu_forward(y, x, n) || be->relu_backward(be, dx, dy, y, n)) die("relu");
    wr("y", y, n), wr("dx", dx, n);
    return 0;
}

static void print_manifest(FILE *f, const lt_resnet *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        const lt_resnet_tensor *t = &m->tensors[i];
        fprintf(f, "%s %s %d", t->name, t->data_i64 ? "i64" : t->is_buffer ? "buffer" : "param",
                t->ndim);
        for (int k = 0; k < t->ndim; k++) fprintf(f, " %lld", (long long)t->shape[k]);
        fprintf(f, " %d\n", t->weight_decay);
    }
}

static int64_t all_numel(const lt_resnet *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += m->tensors[i].numel;
    return n;
}

/* every tensor in manifest order, counters as floats */
static void dump_all(const char *name, const lt_resnet *m) {
    float *b = zalloc(all_numel(m)), *p = b;
    for (int i = 0; i < m->n_tensors; i++) {
        const lt_resnet_tensor *t = &m->tensors[i];
        if (t->data_i64) *p = (float)*t->data_i64;
        else memcpy(p, t->data, sizeof(float) * t->numel);
        p += t->numel;
    }
    wr(name, b, all_numel(m));
    free(b);
}

/* relu.f32: every ReLU output of the last forward (torchvision's order), concatenated;
 * argmax.f32: the max pool's winners (as floats, exact below 2^24). The test lets the torch
 * reference follow these discrete decisions (see tests/py/test_resnet.py). */
static void dump_decisions(const lt_resnet *m) {
    int64_t total = 0, shape[4];
    const float *p;
    for (int i = 0; (p = lt_resnet_relu_output(m, i, shape)); i++)
        total += shape[0] * shape[1] * shape[2] * shape[3];
    float *b = zalloc(total), *q = b;
    for (int i = 0; (p = lt_resnet_relu_output(m, i, shape)); i++) {
        int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
        memcpy(q, p, sizeof(float) * n);
        q += n;
    }
    wr("relu", b, total);
    free(b);
    const int32_t *am = lt_resnet_maxpool_argmax(m, shape);
    int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    float *f = zalloc(n);
    for (int64_t i = 0; i < n; i++) f[i] = (float)am[i];
    wr("argmax", f, n);
    free(f);
}

static int cmd_model(char **a) {
    const char *arch = a[0];
    int B = atoi(a[1]), H = atoi(a[2]), W = atoi(a[3]);
    lt_resnet *m = lt_resnet_create(be, arch, B, H, W);
    if (!m) die("create");
    if (!strcmp(a[4], "load")) {
        float *b = rd("load", all_numel(m)), *p = b;
        for (int i = 0; i < m->n_tensors; i++) {
            if (lt_resnet_set(m, m->tensors[i].name, p, m->tensors[i].numel)) die("set");
            p += m->tensors[i].numel;
        }
        free(b);
    } else {
        lt_resnet_init_weights(m, strtoull(a[5], NULL, 0));
    }
    dump_all("init", m);
    float *x = rd("x", (int64_t)B * H * W * 3), *df = rd("dfeat", (int64_t)B * m->C);
    float *dinput = zalloc((int64_t)B * H * W * 3);
    if (lt_resnet_forward(m, x, B, 1)) die("forward");
    wr("feat", m->features, (int64_t)B * m->C);
    dump_decisions(m);
    memset(m->grads, 0x7f, sizeof(float) * m->n_params); /* garbage: backward must overwrite */
    if (lt_resnet_backward(m, df, dinput, 0)) die("backward");
    wr("grads", m->grads, m->n_params);
    wr("dinput", dinput, (int64_t)B * H * W * 3);
    dump_all("after", m);
    if (lt_resnet_forward(m, x, B, 0)) die("eval forward");
    wr("feateval", m->features, (int64_t)B * m->C);
    if (exists("dfeat")) {
        /* a second backward on top: accumulate must double every gradient (checked by the test) */
        if (lt_resnet_forward(m, x, B, 1)) die("forward");
        if (lt_resnet_backward(m, df, NULL, 0) || lt_resnet_backward(m, df, NULL, 1))
            die("backward");
        wr("grads2", m->grads, m->n_params);
    }
    lt_resnet_free(m);
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmd_bench(char **a) {
    int B = atoi(a[1]), H = atoi(a[2]), W = atoi(a[3]), steps = atoi(a[4]);
    lt_resnet *m = lt_resnet_create(be, a[0], B, H, W);
    if (!m) die("create");
    float *x = zalloc((int64_t)B * H * W * 3), *df = zalloc((int64_t)B * m->C);
    for (int64_t i = 0; i < (int64_t)B * H * W * 3; i++) x[i] = (float)((i * 7919) % 255) / 255;
    for (int64_t i = 0; i < (int64_t)B * m->C; i++) df[i] = (float)((i % 13) - 6) / 100;
    double best = 1e30, tf_best = 0;
    for (int s = 0; s <= steps; s++) {
        double t0 = now();
        if (lt_resnet_forward(m, x, B, 1)) die("forward");
        double t1 = now();
        if (lt_resnet_backward(m, df, NULL, 0)) die("backward");
        double t2 = now();
        if (s > 0 && t2 - t0 < best) best = t2 - t0, tf_best = t1 - t0;
        fprintf(stderr, "step %d: forward %.3f s, backward %.3f s\n", s, t1 - t0, t2 - t1);
    }
    printf("%s B=%d %dx%d threads=%d: best step %.3f s (forward %.3f s), %.1f img/s\n", a[0], B,
           H, W, lt_threads_get(), best, tf_best, B / best);
    lt_resnet_free(m);
    return 0;
}

int main(int argc, char **argv) {
    const char *th = getenv("LT_THREADS");
    be = lt_backend_cpu(lt_threads_set(th ? atoi(th) : 2));
    if (!be) die("backend");
    if (argc >= 3 && !strcmp(argv[1], "manifest")) {
        lt_resnet *m = lt_resnet_create(be, argv[2], 1, 64, 64);
        if (!m) die("create");
        print_manifest(stdout, m);
        lt_resnet_free(m);
        return 0;
    }
    if (argc >= 7 && !strcmp(argv[1], "bench")) return cmd_bench(argv + 2);
    static const struct {
        const char *name;
        int nargs;
        int (*fn)(char **);
    } cmds[] = {{"conv", 9, cmd_conv},       {"bn", 4, cmd_bn},         {"maxpool", 7, cmd_maxpool},
                {"avgpool", 3, cmd_avgpool}, {"linear", 3, cmd_linear}, {"relu", 1, cmd_relu},
                {"model", 6, cmd_model}};
    for (size_t i = 0; argc >= 3 && i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) {
            if (argc != 3 + cmds[i].nargs) {
                fprintf(stderr, "resnet_tool: %s takes DIR and %d numbers\n", cmds[i].name,
                        cmds[i].nargs);
                return 2;
            }
            g_dir = argv[2];
            return cmds[i].fn(argv + 3);
        }
    fprintf(stderr, "usage: resnet_tool conv|bn|maxpool|avgpool|linear|relu|model DIR ... | "
                    "manifest ARCH | bench ARCH B H W STEPS\n");
    return 2;
}
