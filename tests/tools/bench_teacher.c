/* bench_teacher: times the CPU DINOv2 forward for `make bench` (scripts/bench/bench.py).
 *
 *   bench_teacher WEIGHTS BATCH SIZE REPEATS [--threads N]
 *
 * Random normal-ish input (B, SIZE, SIZE, 3); one warm-up forward, then REPEATS timed forwards.
 * Prints one JSON line: {"times": [seconds...], "batch": B, "embed_dim": D}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/dinov2.h"
#include "nn/blas_select.h"

int main(int argc, char **argv) {
    lt_blas_ensure(argv); /* the kernels lt-embed and lt-train use */
    if (argc != 5 && !(argc == 7 && !strcmp(argv[5], "--threads"))) {
        fprintf(stderr, "usage: bench_teacher WEIGHTS BATCH SIZE REPEATS [--threads N]\n");
        return 2;
    }
    int B = atoi(argv[2]), S = atoi(argv[3]), R = atoi(argv[4]);
    lt_threads_set(argc == 7 ? atoi(argv[6]) : 0);
    if (B <= 0 || S <= 0 || R <= 0) return 2;
    lt_dinov2 *m;
    if (lt_dinov2_load(argv[1], &m) != 0) {
        fprintf(stderr, "bench_teacher: error: %s\n", lt_err_msg());
        return 1;
    }
    size_t n = (size_t)B * S * S * 3;
    int D = lt_dinov2_config_of(m)->embed_dim;
    float *x = malloc(n * sizeof *x), *out = malloc((size_t)B * D * sizeof *out);
    lt_rng r;
    lt_rng_init(&r, 1, 2, 3, 4);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lt_rng_uniform(&r) * 4 - 2);
    if (lt_dinov2_forward(m, x, B, S, S, out) != 0) {
        fprintf(stderr, "bench_teacher: error: %s\n", lt_err_msg());
        return 1;
    }
    printf("{\"batch\": %d, \"embed_dim\": %d, \"times\": [", B, D);
    for (int i = 0; i < R; i++) {
        double t0 = lt_now();
        lt_dinov2_forward(m, x, B, S, S, out);
        printf("%s%.6f", i ? ", " : "", lt_now() - t0);
        fflush(stdout);
    }
    printf("]}\n");
    free(x);
    free(out);
    lt_dinov2_free(m);
    return 0;
}
