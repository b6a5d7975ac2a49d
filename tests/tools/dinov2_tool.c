/* dinov2_tool.c: runs the DINOv2 teacher on raw float32 input, for the Python reference tests.
 *
 *   dinov2_tool WEIGHTS INPUT.f32 B H W OUT.f32 [--threads N] [--repeat N]
 *
 * --repeat N runs the forward N more times and prints the mean forward time (for benchmarks).
 * INPUT.f32: B·H·W·3 float32 (NHWC, normalised); OUT.f32: B·D float32 L2-normalised CLS
 * embeddings. Prints the model config on stdout. Exit 0 ok, 1 runtime error (message on stderr
 * naming the file), 2 usage error. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/threads.h"
#include "models/dinov2.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int usage(void) {
    fprintf(stderr, "usage: dinov2_tool WEIGHTS INPUT.f32 B H W OUT.f32 [--threads N] [--repeat N]\n");
    return 2;
}

static int parse_pos(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v <= 0 || v > 1000000) return -1;
    *out = (int)v;
    return 0;
}

static int fail(void) {
    fprintf(stderr, "dinov2_tool: error: %s\n", lt_err_msg());
    return 1;
}

int main(int argc, char **argv) {
    int threads = 0, repeat = 0, B, H, W;
    const char *pos[6];
    int np = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            if (parse_pos(argv[++i], &threads)) return usage();
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            if (parse_pos(argv[++i], &repeat)) return usage();
        } else if (np < 6) {
            pos[np++] = argv[i];
        } else {
            return usage();
        }
    }
    if (np != 6 || parse_pos(pos[2], &B) || parse_pos(pos[3], &H) || parse_pos(pos[4], &W))
        return usage();
    lt_threads_set(threads);

    lt_dinov2 *m;
    if (lt_dinov2_load(pos[0], &m)) return fail();
    const lt_dinov2_config *c = lt_dinov2_config_of(m);
    printf("dinov2: embed_dim=%d depth=%d heads=%d patch=%d registers=%d pos_grid=%d "
           "mlp_hidden=%d mlp=%s names=%s threads=%d\n",
           c->embed_dim, c->depth, c->heads, c->patch, c->n_reg, c->pos_grid, c->mlp_hidden,
           c->swiglu ? "swiglu" : "gelu", c->hf_names ? "hf" : "original", lt_threads_get());

    size_t want = (size_t)B * H * W * 3 * sizeof(float);
    uint8_t *in;
    size_t n;
    if (lt_read_file(pos[1], want + 1, &in, &n)) {
        lt_dinov2_free(m);
        return fail();
    }
    if (n != want) {
        lt_err_set("%s: %zu bytes, expected %zu (B=%d H=%d W=%d, float32 NHWC)", pos[1], n, want,
                   B, H, W);
        free(in);
        lt_dinov2_free(m);
        return fail();
    }
    float *out = lt_malloc((size_t)B * c->embed_dim * sizeof(float), "output");
    int rc = !out || lt_dinov2_forward(m, (const float *)in, B, H, W, out) ||
             lt_write_file_atomic(pos[5], out, (size_t)B * c->embed_dim * sizeof(float));
    if (!rc && repeat > 0) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < repeat && !rc; i++)
            rc = lt_dinov2_forward(m, (const float *)in, B, H, W, out);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / repeat;
        printf("forward: %.1f ms per batch of %d (%.1f img/s)\n", ms, B, B * 1e3 / ms);
    }
    free(in);
    free(out);
    lt_dinov2_free(m);
    return rc ? fail() : 0;
}
