/* bench_data: times lt-train's data path alone for `make bench` (scripts/bench/bench.py): for each
 * sample of a cache, read the primary and the partner image's stored bytes from the cache, decode
 * both, render both views with lt_render and mix + normalise them with lt_mix_normalize, exactly as
 * the loader's workers do (lib/train/loader.c), with no training behind it.
 *
 *   bench_data CACHE SAMPLES REPEATS [--threads N] [--hash] [--pool]
 *
 * SAMPLES samples (cycling over the cache's samples) are split over N threads (default 1), each
 * with its own scratch; one warm-up pass, then REPEATS timed passes. Prints one JSON line:
 * {"samples": S, "threads": N, "times": [seconds per pass...]}. --hash adds "hash": a digest of
 * every rendered view and mixed input of the last pass (independent of N), to check that a speed
 * change to the renderer leaves its output bit-identical. --pool first decodes every image of the
 * cache into lt-train's host image pool (data/image_pool.h) on N threads, timed apart as
 * "pool_s", then renders every view from the pool instead of decoding: lt-train --image-pool host
 * against stream; the hash is the same either way. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "data/cache.h"
#include "image/decode.h"
#include "image/render.h"
#include "data/image_pool.h"

typedef struct {
    lt_cache *c;
    const lt_cache_meta *m;
    const lt_sample *samples;
    int64_t n_samples, first, count;
    int failed;
    uint64_t hash; /* sum over samples of a per-sample FNV-1a digest */
} job;

static const lt_image_pool *pool; /* --pool */

static int view(const job *j, int64_t img, const lt_recipe *r, uint8_t *out) {
    if (pool) {
        lt_image im = lt_image_pool_image(pool, img);
        return lt_render(&im, r, j->m->image_size, out);
    }
    uint8_t *bytes = NULL;
    size_t n = 0;
    if (lt_cache_image_bytes(j->c, img, &bytes, &n) != 0) return -1;
    lt_image im;
    int rc = lt_image_decode(bytes, n, j->m->max_pixels, &im);
    free(bytes);
    if (rc != 0) return -1;
    rc = lt_render(&im, r, j->m->image_size, out);
    lt_image_free(&im);
    return rc;
}

static int want_hash;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static void *run(void *arg) {
    job *j = arg;
    const int64_t px = (int64_t)j->m->image_size * j->m->image_size;
    uint8_t *va = malloc((size_t)px * 3), *vb = malloc((size_t)px * 3);
    float *x = malloc((size_t)px * 3 * sizeof *x);
    if (!va || !vb || !x) j->failed = 1;
    for (int64_t k = 0; k < j->count && !j->failed; k++) {
        const lt_sample *s = &j->samples[(j->first + k) % j->n_samples];
        int mixed = s->image[1] >= 0;
        if (view(j, s->image[0], &s->r[0], va) != 0 ||
            (mixed && view(j, s->image[1], &s->r[1], vb) != 0)) {
            j->failed = 1;
            break;
        }
        lt_mix_normalize(va, mixed ? vb : NULL, mixed ? s->lambda : 1.0f, j->m->transform.mean,
                         j->m->transform.std, px, x);
        if (want_hash) {
            uint64_t h = fnv(0xcbf29ce484222325ULL ^ (uint64_t)(j->first + k), va, (size_t)px * 3);
            if (mixed) h = fnv(h, vb, (size_t)px * 3);
            j->hash += fnv(h, x, (size_t)px * 3 * sizeof *x);
        }
    }
    free(va);
    free(vb);
    free(x);
    return NULL;
}

static uint64_t digest;

static int pass(lt_cache *c, const lt_sample *samples, int64_t n_samples, int64_t S, int T) {
    pthread_t th[64];
    job jobs[64];
    for (int t = 0; t < T; t++) {
        jobs[t] = (job){.c = c, .m = lt_cache_meta_of(c), .samples = samples,
                        .n_samples = n_samples, .first = S * t / T,
                        .count = S * (t + 1) / T - S * t / T};
        if (pthread_create(&th[t], NULL, run, &jobs[t]) != 0) return -1;
    }
    int bad = 0;
    digest = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        bad |= jobs[t].failed;
        digest += jobs[t].hash;
    }
    return bad ? -1 : 0;
}

int main(int argc, char **argv) {
    int T = 1, want_pool = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--hash")) want_hash = 1;
        else if (!strcmp(argv[i], "--pool")) want_pool = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) T = atoi(argv[++i]);
        else argc = 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: bench_data CACHE SAMPLES REPEATS [--threads N] [--hash] [--pool]\n");
        return 2;
    }
    int64_t S = atoll(argv[2]);
    int R = atoi(argv[3]);
    if (S <= 0 || R <= 0 || T <= 0 || T > 64) return 2;
    lt_cache *c;
    if (lt_cache_open(argv[1], &c) != 0) {
        fprintf(stderr, "bench_data: error: %s\n", lt_err_msg());
        return 1;
    }
    int64_t n = lt_cache_n_samples(c);
    lt_sample *samples = malloc((size_t)n * sizeof *samples);
    if (!samples || lt_cache_samples(c, 0, n, samples) != 0) {
        fprintf(stderr, "bench_data: error: %s\n", lt_err_msg());
        return 1;
    }
    lt_image_pool *built = NULL;
    if (want_pool) {
        if (lt_image_pool_build(c, T, 0, &built) != 0) {
            fprintf(stderr, "bench_data: error: %s\n", lt_err_msg());
            return 1;
        }
        pool = built;
    }
    printf("{\"samples\": %lld, \"threads\": %d, ", (long long)S, T);
    if (built) printf("\"pool_s\": %.6f, \"pool_bytes\": %lld, ", built->decode_s,
                      (long long)built->bytes);
    printf("\"times\": [");
    for (int it = 0; it <= R; it++) {
        double t0 = lt_now();
        if (pass(c, samples, n, S, T) != 0) {
            fprintf(stderr, "bench_data: error: %s\n", lt_err_msg());
            return 1;
        }
        if (it > 0) printf("%s%.6f", it > 1 ? ", " : "", lt_now() - t0); /* first = warm-up */
        fflush(stdout);
    }
    printf("]");
    if (want_hash) printf(", \"hash\": \"%016llx\"", (unsigned long long)digest);
    printf("}\n");
    free(samples);
    lt_image_pool_free(built);
    lt_cache_close(c);
    return 0;
}
