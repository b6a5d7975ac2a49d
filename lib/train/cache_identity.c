/* cache_identity.c: the digest a checkpoint records of the cache it was trained on, so that
 * lt-train refuses to continue a run on another cache (see cache_identity.h). Only the public
 * reader API of the cache is used; fields are hashed one by one, never struct bytes (padding). */
#include "train/cache_identity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/sha256.h"

static void put_u32(lt_sha256 *h, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    lt_sha256_update(h, b, 4);
}

static void put_u64(lt_sha256 *h, uint64_t v) {
    put_u32(h, (uint32_t)v);
    put_u32(h, (uint32_t)(v >> 32));
}

static void put_f32(lt_sha256 *h, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(h, v);
}

static void put_recipe(lt_sha256 *h, const lt_recipe *r) {
    for (int k = 0; k < 4; k++) put_u32(h, (uint32_t)r->crop[k]);
    uint8_t flags[3] = {r->flip, r->jitter, r->gray};
    lt_sha256_update(h, flags, 3);
    lt_sha256_update(h, r->order, 4);
    for (int k = 0; k < 4; k++) put_f32(h, r->factor[k]);
    put_f32(h, r->blur_sigma);
}

int lt_cache_identity(lt_cache *c, const char *name, char hex[65]) {
    const int64_t N = lt_cache_n_images(c), S = lt_cache_n_samples(c), block = 4096;
    lt_sha256 h;
    lt_sha256_init(&h);
    put_u64(&h, (uint64_t)N);
    put_u64(&h, (uint64_t)S);
    char *sha = lt_malloc((size_t)(N < block ? N : block) * 64 + 1, "image hashes");
    if (!sha) return -1;
    int rc = 0;
    for (int64_t i0 = 0; i0 < N && rc == 0; i0 += block) { /* the hashes, in blocks */
        int64_t n = N - i0 < block ? N - i0 : block;
        if ((rc = lt_cache_image_sha256s(c, i0, n, sha)) == 0)
            lt_sha256_update(&h, sha, (size_t)n * 64);
    }
    free(sha);
    if (rc != 0) return -1;
    lt_sample *s = lt_malloc((size_t)(S < block ? S : block) * sizeof *s + 1, "sample recipes");
    if (!s) return -1;
    for (int64_t s0 = 0; s0 < S && rc == 0; s0 += block) {
        int64_t n = S - s0 < block ? S - s0 : block;
        if ((rc = lt_cache_samples(c, s0, n, s)) != 0) break;
        for (int64_t k = 0; k < n; k++) {
            const lt_sample *x = &s[k];
            if (!(x->lambda >= 0.0f && x->lambda <= 1.0f)) { /* also NaN */
                int V = lt_cache_meta_of(c)->views_per_image;
                rc = lt_err_set("%s: sample %lld (image %lld, view %lld): its stored mixup "
                                "weight lambda = %g is not in [0, 1]: the cache is damaged; "
                                "rebuild it with lt-embed --overwrite",
                                name, (long long)(s0 + k), (long long)((s0 + k) / V),
                                (long long)((s0 + k) % V), (double)x->lambda);
                break;
            }
            put_u32(&h, (uint32_t)x->image[0]);
            put_u32(&h, (uint32_t)x->image[1]);
            put_f32(&h, x->lambda);
            put_recipe(&h, &x->r[0]);
            put_recipe(&h, &x->r[1]);
        }
    }
    free(s);
    if (rc != 0) return -1;
    uint8_t d[32];
    lt_sha256_final(&h, d);
    lt_sha256_tohex(d, hex);
    return 0;
}
