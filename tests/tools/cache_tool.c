/* cache_tool.c: writes and checks caches for tests/py/test_cache.py, which reads them with stock
 * h5py / h5dump to prove the file is standard HDF5 with a working 32015 plugin.
 *
 *   cache_tool write CACHE N V D f16|f32|i8 SEED [LEVEL]
 *       random images, recipes and embeddings; also writes CACHE.emb.f32, the embeddings as raw
 *       little-endian float32 (S, D), and prints one line per image: "<sha256> <size> <path>"
 *   cache_tool check CACHE
 *       opens CACHE with lt's reader: prints "ok <N> <S> <D> <dtype>" or the error (exit 1)
 *   cache_tool emb CACHE OUT
 *       writes every embedding as lt's reader decodes it (lt_cache_embeddings) to OUT, raw
 *       little-endian float32 (S, D) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "data/cache.h"

static void fill_meta(lt_cache_meta *m, int v, int d, lt_emb_type et, uint64_t seed, int level) {
    memset(m, 0, sizeof *m);
    m->embed_dim = d;
    m->image_size = 224;
    m->views_per_image = v;
    m->seed = seed;
    m->mixup = 1;
    m->emb_type = et;
    m->zstd_level = level;
    m->max_pixels = 50000000;
    lt_transform *t = &m->transform;
    t->image_size = 224;
    t->crop_scale[0] = 0.14f, t->crop_scale[1] = 1.0f;
    t->crop_ratio[0] = 0.75f, t->crop_ratio[1] = 4.0f / 3.0f;
    t->hflip_p = 0.5f, t->jitter_p = 0.8f, t->gray_p = 0.2f;
    t->jitter[0] = 0.4f, t->jitter[1] = 0.4f, t->jitter[2] = 0.2f, t->jitter[3] = 0.1f;
    t->blur_sigma[1] = 0.1f;
    t->mean[0] = 0.485f, t->mean[1] = 0.456f, t->mean[2] = 0.406f;
    t->std[0] = 0.229f, t->std[1] = 0.224f, t->std[2] = 0.225f;
    snprintf(m->teacher.file, sizeof m->teacher.file, "dinov2_vitb14.safetensors");
    lt_sha256_hex("teacher", 7, m->teacher.sha256);
    m->teacher.embed_dim = d, m->teacher.depth = 12, m->teacher.heads = 12;
    m->teacher.patch = 14, m->teacher.pos_grid = 37, m->teacher.mlp_hidden = 3072;
    snprintf(m->tool_version, sizeof m->tool_version, "cache_tool");
}

static int add_images(lt_cache_writer *w, lt_rng *r, int n) {
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "img/%05d.jpg", i);
        size_t len = 1 + lt_rng_below(r, 5000);
        uint8_t *b = malloc(len);
        if (!b) return -1;
        for (size_t k = 0; k < len; k++) b[k] = (uint8_t)lt_rng_u32(r);
        lt_cache_image im = {path, b, len, 64 + i, 48 + i, 1700000000000000000ll + i, "", 0, ""};
        lt_sha256_hex(b, len, im.sha256);
        printf("%s %zu %s\n", im.sha256, len, path);
        int rc = lt_cache_writer_add_image(w, &im);
        free(b);
        if (rc < 0) return -1;
    }
    return 0;
}

static lt_sample *make_samples(lt_rng *r, int n, int v) {
    lt_sample *s = calloc((size_t)n * (size_t)v, sizeof *s);
    for (int64_t k = 0; s && k < (int64_t)n * v; k++) {
        s[k].image[0] = (int32_t)(k / v);
        s[k].image[1] = n > 1 ? (int32_t)((k / v + 1) % n) : -1;
        s[k].lambda = n > 1 ? (float)lt_rng_uniform(r) : 1.0f;
        for (int q = 0; q < (n > 1 ? 2 : 1); q++) {
            lt_recipe *rc = &s[k].r[q];
            rc->crop[2] = rc->crop[3] = 32;
            rc->flip = (uint8_t)lt_rng_below(r, 2);
            for (int j = 0; j < 4; j++) rc->order[j] = (uint8_t)j, rc->factor[j] = 1.0f;
        }
    }
    return s;
}

static int write_raw(const char *cache, const float *emb, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s.emb.f32", cache);
    FILE *f = fopen(path, "wb");
    if (!f) return lt_err_set("%s: cannot create", path);
    size_t put = fwrite(emb, sizeof(float), n, f);
    return fclose(f) == 0 && put == n ? 0 : lt_err_set("%s: write failed", path);
}

static int cmd_write(int argc, char **argv) {
    if (argc < 8) return lt_err_set("usage: cache_tool write CACHE N V D f16|f32|i8 SEED [LEVEL]");
    const char *cache = argv[2];
    int n = atoi(argv[3]), v = atoi(argv[4]), d = atoi(argv[5]);
    lt_emb_type et;
    if (lt_emb_type_parse(argv[6], &et) != 0) return lt_err_set("%s: not f16, f32 or i8", argv[6]);
    uint64_t seed = strtoull(argv[7], NULL, 10);
    lt_cache_meta meta;
    fill_meta(&meta, v, d, et, seed, argc > 8 ? atoi(argv[8]) : 0);
    lt_rng r;
    lt_rng_init(&r, seed, 0, 0, 0);
    int64_t s = (int64_t)n * v;
    lt_sample *smp = make_samples(&r, n, v);
    float *emb = malloc((size_t)s * (size_t)d * sizeof(float));
    for (int64_t k = 0; emb && k < s * d; k++) emb[k] = (float)lt_rng_range(&r, -1.0, 1.0);
    lt_cache_writer *w = NULL;
    int rc = smp && emb ? lt_cache_writer_create(cache, &meta, &w) : -1;
    if (rc == 0) rc = add_images(w, &r, n);
    if (rc == 0) rc = lt_cache_writer_add_skipped(w, "notes.txt", "not a JPEG or PNG");
    if (rc == 0) rc = lt_cache_writer_set_samples(w, smp, s);
    for (int64_t first = 0; rc == 0 && first < s; first += 100) {
        int64_t cnt = s - first < 100 ? s - first : 100;
        rc = lt_cache_writer_put_embeddings(w, first, cnt, emb + first * d);
    }
    if (w) {
        if (rc == 0) rc = lt_cache_writer_finish(w);
        else lt_cache_writer_abort(w);
    }
    if (rc == 0) rc = write_raw(cache, emb, (size_t)(s * d));
    free(smp);
    free(emb);
    return rc;
}

static int cmd_check(const char *cache) {
    lt_cache *c;
    if (lt_cache_open(cache, &c) < 0) return -1;
    const lt_cache_meta *m = lt_cache_meta_of(c);
    printf("ok %lld %lld %d %s\n", (long long)lt_cache_n_images(c),
           (long long)lt_cache_n_samples(c), m->embed_dim, lt_emb_type_name(m->emb_type));
    lt_cache_close(c);
    return 0;
}

static int cmd_emb(const char *cache, const char *out) {
    lt_cache *c;
    if (lt_cache_open(cache, &c) < 0) return -1;
    int64_t n = lt_cache_n_samples(c) * lt_cache_meta_of(c)->embed_dim;
    float *e = malloc((size_t)n * sizeof *e);
    int rc = e ? lt_cache_embeddings(c, 0, lt_cache_n_samples(c), e) : -1;
    if (rc == 0) {
        FILE *f = fopen(out, "wb");
        size_t put = f ? fwrite(e, sizeof *e, (size_t)n, f) : 0;
        if (!f || fclose(f) != 0 || put != (size_t)n) rc = lt_err_set("%s: write failed", out);
    }
    free(e);
    lt_cache_close(c);
    return rc;
}

int main(int argc, char **argv) {
    int rc = -1;
    if (argc >= 3 && !strcmp(argv[1], "write")) rc = cmd_write(argc, argv);
    else if (argc == 3 && !strcmp(argv[1], "check")) rc = cmd_check(argv[2]);
    else if (argc == 4 && !strcmp(argv[1], "emb")) rc = cmd_emb(argv[2], argv[3]);
    else lt_err_set("usage: cache_tool write CACHE N V D f16|f32|i8 SEED [LEVEL] | check CACHE | "
                    "emb CACHE OUT");
    if (rc < 0) {
        fprintf(stderr, "cache_tool: error: %s\n", lt_err_msg());
        return 1;
    }
    return 0;
}
