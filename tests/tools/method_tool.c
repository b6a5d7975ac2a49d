/* method_tool.c: a command-line window on lib/train/method and lib/train/optim for the Python
 * tests (tests/py/test_method.py, tests/py/test_optim.py), which compare the results with PyTorch.
 * Inputs and outputs are raw little-endian float32 files (float64 where noted).
 *
 *   method_tool loss B Q D TAU STEPS IN OUT
 *       IN: per step t_raw (B,D) then s_raw (B,D). The queue starts at zero; per step:
 *       t = l2norm(t_raw), s = l2norm(s_raw), push t, loss, dL/ds, dL/ds_raw.
 *       OUT per step: loss (1 float64), t (B,D), s (B,D), queue after the push (Q,D),
 *       dL/ds (B,D), dL/ds_raw (B,D).
 *   method_tool zeroloss B Q D TAU IN       IN: t (B,D), s (B,D); loss against an all-zero queue;
 *                                           prints "loss max|ds|".
 *   method_tool l2 B D IN OUT               IN: x (B,D), dy (B,D); OUT: y (B,D), dx (B,D)
 *   method_tool autoq N...                  prints lt_queue_size_auto(N) per line
 *   method_tool checkq Q N                  exit 0 if valid, else 1 with the message on stderr
 *   method_tool optim KIND STEPS MAXNORM MOM WD TC EPS B1 B2 LRS RESUME_AT SPEC IN OUT
 *       KIND lars|adamw|sgd; LRS comma-separated lr per step; SPEC comma-separated n:wdflag per
 *       tensor. IN: initial weights (all tensors concatenated), then per step the gradients
 *       (concatenated). RESUME_AT k > 0: after k steps the weights, state and step count are
 *       copied into a fresh optimizer which does the remaining steps (checks the state is complete).
 *       OUT per step: clip norm (1 float64), weights (concatenated); then the final m
 *       (concatenated; zeros if none) and v (likewise). Prints the final step count.
 *   method_tool sched SPE EPOCHS WARMUP_EPOCHS  prints W, then the multiplier of each of the
 *                                               SPE·EPOCHS steps (%.17g); WARMUP_EPOCHS < 0 = default
 *   method_tool lr KIND B                   prints lt_default_lr
 *
 * Errors: "method_tool: error: <message>" on stderr, exit 1; usage errors exit 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/threads.h"
#include "nn/backend.h"
#include "nn/kd.h"
#include "train/optim.h"

static int usage(void) {
    fprintf(stderr, "usage: method_tool loss|zeroloss|l2|autoq|checkq|optim|sched|lr ... "
                    "(see tests/tools/method_tool.c)\n");
    return 2;
}

static int fail(void) {
    fprintf(stderr, "method_tool: error: %s\n", lt_err_msg());
    return 1;
}

static float *read_floats(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lt_err_set("%s: cannot open", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *buf = lt_malloc(sz > 0 ? (size_t)sz : 1, "input");
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
        lt_err_set("%s: short read", path);
    }
    fclose(f);
    *n = (size_t)sz / sizeof(float);
    return buf;
}

static FILE *create(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) lt_err_set("%s: cannot create", path);
    return f;
}

static int put(FILE *f, const void *p, size_t bytes) {
    return fwrite(p, 1, bytes, f) == bytes ? 0 : lt_err_set("write failed");
}

static int cmd_loss(int argc, char **argv) {
    if (argc != 9) return usage();
    int B = atoi(argv[2]), Q = atoi(argv[3]), D = atoi(argv[4]);
    float tau = strtof(argv[5], NULL);
    int steps = atoi(argv[6]);
    size_t n;
    float *in = read_floats(argv[7], &n);
    if (!in) return fail();
    size_t bd = (size_t)B * D;
    if (n != (size_t)steps * 2 * bd) {
        free(in);
        lt_err_set("%s: %zu floats, expected %zu", argv[7], n, (size_t)steps * 2 * bd);
        return fail();
    }
    lt_queue q;
    if (lt_queue_init(&q, Q, D)) return fail();
    float *t = malloc(bd * 4), *s = malloc(bd * 4), *ds = malloc(bd * 4), *dx = malloc(bd * 4);
    float *tn = malloc(B * 4), *sn = malloc(B * 4), *probs = malloc((size_t)2 * B * Q * 4);
    FILE *f = create(argv[8]);
    if (!f) return fail();
    int rc = 0;
    for (int k = 0; k < steps && rc == 0; k++) {
        const float *traw = in + (size_t)k * 2 * bd, *sraw = traw + bd;
        double loss;
        lt_op_l2norm(t, tn, traw, B, D);
        lt_op_l2norm(s, sn, sraw, B, D);
        if (lt_queue_push(&q, t, B) ||
            lt_kd_loss_forward(&loss, t, s, q.data, B, Q, D, tau, probs)) {
            rc = -1;
            break;
        }
        lt_kd_loss_backward(ds, probs, q.data, B, Q, D, tau);
        lt_op_l2norm_backward(dx, ds, s, sn, B, D);
        rc = put(f, &loss, 8) || put(f, t, bd * 4) || put(f, s, bd * 4) ||
             put(f, q.data, (size_t)Q * D * 4) || put(f, ds, bd * 4) || put(f, dx, bd * 4);
    }
    fclose(f);
    free(in), free(t), free(s), free(ds), free(dx), free(tn), free(sn), free(probs);
    lt_queue_free(&q);
    return rc ? fail() : 0;
}

static int cmd_zeroloss(int argc, char **argv) {
    if (argc != 7) return usage();
    int B = atoi(argv[2]), Q = atoi(argv[3]), D = atoi(argv[4]);
    float tau = strtof(argv[5], NULL);
    size_t n, bd = (size_t)B * D;
    float *in = read_floats(argv[6], &n);
    if (!in) return fail();
    lt_queue q;
    if (lt_queue_init(&q, Q, D)) return fail();
    float *ds = malloc(bd * 4), *probs = malloc((size_t)2 * B * Q * 4);
    double loss;
    if (lt_kd_loss_forward(&loss, in, in + bd, q.data, B, Q, D, tau, probs)) return fail();
    lt_kd_loss_backward(ds, probs, q.data, B, Q, D, tau);
    float mx = 0;
    for (size_t i = 0; i < bd; i++) mx = ds[i] > mx ? ds[i] : (-ds[i] > mx ? -ds[i] : mx);
    printf("%.17g %.17g\n", loss, (double)mx);
    free(in), free(ds), free(probs);
    lt_queue_free(&q);
    return 0;
}

static int cmd_l2(int argc, char **argv) {
    if (argc != 6) return usage();
    int B = atoi(argv[2]), D = atoi(argv[3]);
    size_t n, bd = (size_t)B * D;
    float *in = read_floats(argv[4], &n);
    if (!in) return fail();
    float *y = malloc(bd * 4), *dx = malloc(bd * 4), *nrm = malloc(B * 4);
    lt_op_l2norm(y, nrm, in, B, D);
    lt_op_l2norm_backward(dx, in + bd, y, nrm, B, D);
    FILE *f = create(argv[5]);
    if (!f) return fail();
    int rc = put(f, y, bd * 4) || put(f, dx, bd * 4);
    fclose(f);
    free(in), free(y), free(dx), free(nrm);
    return rc ? fail() : 0;
}

static int cmd_optim(int argc, char **argv) {
    if (argc != 16) return usage();
    lt_opt_kind kind;
    if (lt_opt_kind_parse(argv[2], &kind)) return fail();
    int steps = atoi(argv[3]);
    double maxnorm = atof(argv[4]);
    lt_optim_config cfg = lt_optim_defaults(kind);
    cfg.momentum = atof(argv[5]);
    cfg.weight_decay = atof(argv[6]);
    cfg.trust_coef = atof(argv[7]);
    cfg.eps = atof(argv[8]);
    cfg.beta1 = atof(argv[9]);
    cfg.beta2 = atof(argv[10]);
    double lrs[64];
    int nl = 0;
    for (char *tok = strtok(argv[11], ","); tok && nl < 64; tok = strtok(NULL, ","))
        lrs[nl++] = atof(tok);
    int resume_at = atoi(argv[12]);
    lt_param ps[64];
    int np = 0;
    int64_t total = 0;
    for (char *tok = strtok(argv[13], ","); tok && np < 64; tok = strtok(NULL, ",")) {
        memset(&ps[np], 0, sizeof ps[np]);
        ps[np].n = atoll(tok);
        char *c = strchr(tok, ':');
        ps[np].weight_decay = c ? atoi(c + 1) : 1;
        total += ps[np].n;
        np++;
    }
    if (nl != steps) {
        lt_err_set("%d learning rates for %d steps", nl, steps);
        return fail();
    }
    size_t n;
    float *in = read_floats(argv[14], &n);
    if (!in) return fail();
    if (n != (size_t)total * (size_t)(steps + 1)) {
        lt_err_set("%s: %zu floats, expected %zu", argv[14], n, (size_t)total * (steps + 1));
        return fail();
    }
    float *w = malloc((size_t)total * 4), *g = malloc((size_t)total * 4);
    memcpy(w, in, (size_t)total * 4);
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        ps[i].w = w + off;
        ps[i].g = g + off;
        off += ps[i].n;
    }
    lt_backend *be = lt_backend_cpu(lt_threads_get());
    if (!be) return fail();
    lt_optim o;
    if (lt_optim_init(&o, be, &cfg, ps, np)) return fail();
    FILE *f = create(argv[15]);
    if (!f) return fail();
    int rc = 0;
    for (int k = 0; k < steps && rc == 0; k++) {
        if (resume_at > 0 && k == resume_at) {
            /* What a checkpoint round trip does: a fresh optimizer, state and step restored. */
            lt_optim o2;
            if (lt_optim_init(&o2, be, &cfg, ps, np)) return fail();
            for (int i = 0; i < np; i++) {
                if (o.params[i].m) memcpy(o2.params[i].m, o.params[i].m, ps[i].n * 4);
                if (o.params[i].v) memcpy(o2.params[i].v, o.params[i].v, ps[i].n * 4);
            }
            o2.step = o.step;
            lt_optim_free(&o);
            o = o2;
        }
        memcpy(g, in + (size_t)total * (k + 1), (size_t)total * 4);
        double norm = 0;
        if (lt_clip_grad_norm(&o, maxnorm, &norm) || lt_optim_step(&o, lrs[k])) rc = -1;
        else rc = put(f, &norm, 8) || put(f, w, (size_t)total * 4);
    }
    float *zeros = calloc((size_t)total + 1, 4);
    for (int which = 0; which < 2 && rc == 0; which++)
        for (int i = 0; i < np && rc == 0; i++) {
            float *buf = which == 0 ? o.params[i].m : o.params[i].v;
            rc = put(f, buf ? buf : zeros, (size_t)ps[i].n * 4);
        }
    fclose(f);
    printf("%lld\n", (long long)o.step);
    lt_optim_free(&o);
    be->destroy(be);
    free(in), free(w), free(g), free(zeros);
    return rc ? fail() : 0;
}

static int cmd_sched(int argc, char **argv) {
    if (argc != 5) return usage();
    int64_t spe = atoll(argv[2]);
    double epochs = atof(argv[3]), we = atof(argv[4]);
    int64_t W = lt_sched_warmup_steps(spe, epochs, we);
    int64_t T = (int64_t)(spe * epochs);
    printf("%lld\n", (long long)W);
    for (int64_t k = 0; k < T; k++) printf("%.17g\n", lt_sched_multiplier(k, T, W));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *c = argv[1];
    if (!strcmp(c, "loss")) return cmd_loss(argc, argv);
    if (!strcmp(c, "zeroloss")) return cmd_zeroloss(argc, argv);
    if (!strcmp(c, "l2")) return cmd_l2(argc, argv);
    if (!strcmp(c, "optim")) return cmd_optim(argc, argv);
    if (!strcmp(c, "sched")) return cmd_sched(argc, argv);
    if (!strcmp(c, "autoq")) {
        for (int i = 2; i < argc; i++) printf("%d\n", lt_queue_size_auto(atoll(argv[i])));
        return 0;
    }
    if (!strcmp(c, "checkq")) {
        if (argc != 4) return usage();
        return lt_queue_size_check(atoll(argv[2]), atoll(argv[3])) ? fail() : 0;
    }
    if (!strcmp(c, "lr")) {
        if (argc != 4) return usage();
        lt_opt_kind kind;
        if (lt_opt_kind_parse(argv[2], &kind)) return fail();
        printf("%.17g\n", lt_default_lr(kind, atoll(argv[3])));
        return 0;
    }
    return usage();
}
