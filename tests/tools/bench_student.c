/* bench_student: times one full lt-train step on the CPU for `make bench`: ResNet forward and
 * backward, projection head, L2 norm, queue + KL loss and its gradient, clipping and a LARS update,
 * on random input (no data loading).
 *
 *   bench_student ARCH BATCH SIZE REPEATS [--threads N]   prints {"times": [...], "batch": B} */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/resnet.h"
#include "nn/cnn.h"
#include "train/method.h"
#include "train/optim.h"

#define D 768
#define Q 8192

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 7 && !strcmp(argv[5], "--threads"))) {
        fprintf(stderr, "usage: bench_student ARCH BATCH SIZE REPEATS [--threads N]\n");
        return 2;
    }
    int B = atoi(argv[2]), S = atoi(argv[3]), R = atoi(argv[4]);
    lt_threads_set(argc == 7 ? atoi(argv[6]) : 0);
    lt_resnet *m = lt_resnet_create(argv[1], B, S, S);
    if (!m || B <= 0 || R <= 0) {
        fprintf(stderr, "bench_student: error: %s\n", lt_err_msg());
        return 1;
    }
    lt_resnet_init_weights(m, 0);
    const int C = m->C;
    float *x = malloc((size_t)B * S * S * 3 * sizeof(float)), *t = malloc((size_t)B * D * 4);
    float *hw = calloc((size_t)D * C, 4), *hb = calloc(D, 4), *dhw = malloc((size_t)D * C * 4),
          *dhb = malloc(D * 4), *z = malloc((size_t)B * D * 4), *zn = malloc(B * 4),
          *s = malloc((size_t)B * D * 4), *ds = malloc((size_t)B * D * 4),
          *dz = malloc((size_t)B * D * 4), *df = malloc((size_t)B * C * 4),
          *probs = malloc((size_t)2 * B * Q * 4);
    lt_rng r;
    lt_rng_init(&r, 1, 2, 3, 4);
    for (int64_t i = 0; i < (int64_t)B * S * S * 3; i++) x[i] = (float)(lt_rng_uniform(&r) * 4 - 2);
    for (int64_t i = 0; i < (int64_t)D * C; i++) hw[i] = (float)(lt_rng_uniform(&r) - 0.5) * 0.04f;
    for (int64_t i = 0; i < (int64_t)B * D; i++) t[i] = (float)(lt_rng_uniform(&r) - 0.5);
    float tn[1024];
    lt_l2norm_forward(t, tn, t, B, D);
    lt_queue q;
    lt_queue_init(&q, Q, D);
    for (int k = 0; k < Q / B + 1; k++) lt_queue_push(&q, t, B); /* a full queue */
    lt_param *ps = calloc((size_t)m->n_tensors + 2, sizeof *ps);
    int np = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_buffer)
            ps[np++] = (lt_param){.name = m->tensors[i].name, .w = m->tensors[i].data,
                                  .g = m->tensors[i].grad, .n = m->tensors[i].numel,
                                  .weight_decay = m->tensors[i].weight_decay};
    ps[np++] = (lt_param){.name = "head.weight", .w = hw, .g = dhw, .n = (int64_t)D * C, .weight_decay = 1};
    ps[np++] = (lt_param){.name = "head.bias", .w = hb, .g = dhb, .n = D, .weight_decay = 0};
    lt_optim o;
    lt_optim_config cfg = lt_optim_defaults(LT_OPT_LARS);
    lt_optim_init(&o, &cfg, ps, np);
    printf("{\"batch\": %d, \"times\": [", B);
    for (int it = 0; it <= R; it++) {
        double t0 = lt_now(), loss;
        lt_resnet_forward(m, x, B, 1);
        lt_linear_forward(z, m->features, hw, hb, B, C, D);
        lt_l2norm_forward(s, zn, z, B, D);
        lt_queue_push(&q, t, B);
        lt_kd_loss_forward(&loss, t, s, q.data, B, Q, D, 0.07f, probs);
        lt_kd_loss_backward(ds, probs, q.data, B, Q, D, 0.07f);
        lt_l2norm_backward(dz, ds, s, zn, B, D);
        lt_linear_backward(df, dhw, dhb, dz, m->features, hw, B, C, D, 0);
        lt_resnet_backward(m, df, NULL, 0);
        lt_clip_grad_norm(o.params, o.nparams, 1.0);
        lt_optim_step(&o, 0.1);
        if (it > 0) printf("%s%.6f", it > 1 ? ", " : "", lt_now() - t0); /* first = warm-up */
        fflush(stdout);
    }
    printf("]}\n");
    return 0;
}
