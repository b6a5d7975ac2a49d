/* test_cache.c: the cache writer/reader round trip (float16 and float32 embeddings, random images,
 * recipes and skipped files), the .partial/rename protocol, the zstd filter on its own (known and
 * unknown content size, concatenated frames, garbage), and clean errors for damaged caches (wrong
 * version or format, missing dataset, inconsistent shape, bad offsets, truncated, not HDF5,
 * corrupt compressed chunk); the resumable protocol (close_partial, reopen, raw rows) and the
 * SHA-256 check of stored images (lt_cache_verify_images). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "check.h"
#include "core/error.h"
#include "core/half.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "data/cache.h"
#include "data/h5zstd.h"

static char tmpdir[256];

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void tmp_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

/* ---- random content -------------------------------------------------------------------- */

typedef struct {
    int n, v, d, f32;
    char (*path)[64];
    uint8_t **bytes;
    size_t *n_bytes;
    int32_t *w, *h;
    int64_t *mtime;
    lt_sample *samples;
    float *emb;          /* (S, D) */
} dataset;

static void make_meta(lt_cache_meta *m, const dataset *ds) {
    memset(m, 0, sizeof *m);
    m->embed_dim = ds->d;
    m->image_size = 224;
    m->views_per_image = ds->v;
    m->seed = 0xfedcba9876543210ull;
    m->mixup = 1;
    m->emb_type = ds->f32 ? LT_EMB_F32 : LT_EMB_F16;
    m->zstd_level = 5;
    m->max_pixels = 123456789;
    lt_transform *t = &m->transform;
    t->image_size = 224;
    t->crop_scale[0] = 0.14f, t->crop_scale[1] = 1.0f;
    t->crop_ratio[0] = 0.75f, t->crop_ratio[1] = 4.0f / 3.0f;
    t->hflip_p = 0.5f, t->jitter_p = 0.8f, t->gray_p = 0.2f;
    t->jitter[0] = 0.4f, t->jitter[1] = 0.4f, t->jitter[2] = 0.2f, t->jitter[3] = 0.1f;
    t->blur_sigma[0] = 0.0f, t->blur_sigma[1] = 0.1f;
    t->mean[0] = 0.485f, t->mean[1] = 0.456f, t->mean[2] = 0.406f;
    t->std[0] = 0.229f, t->std[1] = 0.224f, t->std[2] = 0.225f;
    snprintf(m->teacher.file, sizeof m->teacher.file, "dinov2_vitb14.safetensors");
    lt_sha256_hex("teacher", 7, m->teacher.sha256);
    m->teacher.embed_dim = ds->d, m->teacher.depth = 12, m->teacher.heads = 12;
    m->teacher.patch = 14, m->teacher.n_reg = 4, m->teacher.pos_grid = 37;
    m->teacher.mlp_hidden = 3072, m->teacher.swiglu = 0;
    snprintf(m->tool_version, sizeof m->tool_version, "0.1.0-test");
}

static void make_recipe(lt_rng *r, lt_recipe *rc) {
    for (int k = 0; k < 4; k++) rc->crop[k] = (int32_t)lt_rng_below(r, 5000) - 10;
    rc->flip = (uint8_t)lt_rng_below(r, 2);
    rc->jitter = (uint8_t)lt_rng_below(r, 2);
    rc->gray = (uint8_t)lt_rng_below(r, 2);
    for (int k = 0; k < 4; k++) rc->order[k] = (uint8_t)lt_rng_below(r, 4);
    for (int k = 0; k < 4; k++) rc->factor[k] = (float)lt_rng_range(r, -0.5, 1.5);
    rc->blur_sigma = (float)lt_rng_uniform(r);
}

/* big: one image larger than the 1 MiB staging buffer. */
static dataset make_dataset(int n, int v, int d, int f32, int big, uint64_t seed) {
    dataset ds = {n, v, d, f32, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    lt_rng r;
    lt_rng_init(&r, seed, 1, 2, 3);
    ds.path = calloc((size_t)n, sizeof *ds.path);
    ds.bytes = calloc((size_t)n, sizeof *ds.bytes);
    ds.n_bytes = calloc((size_t)n, sizeof *ds.n_bytes);
    ds.w = calloc((size_t)n, 4), ds.h = calloc((size_t)n, 4);
    ds.mtime = calloc((size_t)n, 8);
    for (int i = 0; i < n; i++) {
        snprintf(ds.path[i], 64, "dir %d/ünïcode_%04d.jpg", i % 3, i);
        ds.n_bytes[i] = big && i == 1 ? (size_t)(2.5 * 1048576) : 1 + lt_rng_below(&r, 3000);
        ds.bytes[i] = malloc(ds.n_bytes[i]);
        for (size_t k = 0; k < ds.n_bytes[i]; k++) ds.bytes[i][k] = (uint8_t)lt_rng_u32(&r);
        ds.w[i] = 1 + (int32_t)lt_rng_below(&r, 4000);
        ds.h[i] = 1 + (int32_t)lt_rng_below(&r, 4000);
        ds.mtime[i] = (int64_t)lt_rng_u64(&r) >> 2;
    }
    int64_t s = (int64_t)n * v;
    ds.samples = calloc((size_t)s, sizeof *ds.samples);
    for (int64_t k = 0; k < s; k++) {
        lt_sample *sm = &ds.samples[k];
        sm->image[0] = (int32_t)(k / v);
        sm->image[1] = k % 4 == 0 ? -1 : (int32_t)lt_rng_below(&r, (uint64_t)n);
        sm->lambda = sm->image[1] < 0 ? 1.0f : (float)lt_rng_uniform(&r);
        make_recipe(&r, &sm->r[0]);
        if (sm->image[1] >= 0) make_recipe(&r, &sm->r[1]);
    }
    ds.emb = malloc((size_t)s * (size_t)d * sizeof(float));
    for (int64_t k = 0; k < s * d; k++) ds.emb[k] = (float)lt_rng_range(&r, -1.0, 1.0);
    ds.emb[0] = 65504.0f, ds.emb[1] = 1e-7f, ds.emb[2] = -0.0f; /* half edge cases */
    return ds;
}

static void free_dataset(dataset *ds) {
    for (int i = 0; i < ds->n; i++) free(ds->bytes[i]);
    free(ds->path), free(ds->bytes), free(ds->n_bytes), free(ds->w), free(ds->h);
    free(ds->mtime), free(ds->samples), free(ds->emb);
}

/* ---- writing ---------------------------------------------------------------------------- */

static int add_images(lt_cache_writer *w, const dataset *ds) {
    for (int i = 0; i < ds->n; i++) {
        lt_cache_image im = {ds->path[i], ds->bytes[i], ds->n_bytes[i], ds->w[i], ds->h[i],
                             ds->mtime[i], "", 0, ""};
        if (i % 2) lt_sha256_hex(ds->bytes[i], ds->n_bytes[i], im.sha256); /* else: computed */
        if (lt_cache_writer_add_image(w, &im) < 0) return -1;
    }
    return 0;
}

/* Writes the embeddings in uneven batches, last batch first. */
static int put_all_embeddings(lt_cache_writer *w, const dataset *ds) {
    int64_t s = (int64_t)ds->n * ds->v, cut[5] = {0, 1, s / 3, s / 2 + 1, s}; /* s >= 6 */
    for (int b = 3; b >= 0; b--) {
        int64_t first = cut[b], count = cut[b + 1] - cut[b];
        if (count > 0 &&
            lt_cache_writer_put_embeddings(w, first, count, ds->emb + first * ds->d) < 0)
            return -1;
    }
    return 0;
}

static int write_cache(const char *path, const dataset *ds, int n_skipped) {
    lt_cache_meta meta;
    make_meta(&meta, ds);
    lt_cache_writer *w;
    if (lt_cache_writer_create(path, &meta, &w) < 0) return -1;
    int r = add_images(w, ds);
    for (int k = 0; r == 0 && k < n_skipped; k++) {
        char p[64], why[64];
        snprintf(p, sizeof p, "bad/%d.txt", k);
        snprintf(why, sizeof why, "not a JPEG or PNG (%d)", k);
        r = lt_cache_writer_add_skipped(w, p, why);
    }
    /* Bytes read back from the file being written equal the input. */
    uint8_t *b = NULL;
    size_t nb = 0;
    if (r == 0) r = lt_cache_writer_image_bytes(w, ds->n - 1, &b, &nb);
    if (r == 0) CHECK(nb == ds->n_bytes[ds->n - 1] && memcmp(b, ds->bytes[ds->n - 1], nb) == 0);
    free(b);
    if (r == 0) r = lt_cache_writer_set_samples(w, ds->samples, (int64_t)ds->n * ds->v);
    if (r == 0) r = put_all_embeddings(w, ds);
    if (r < 0) {
        lt_cache_writer_abort(w);
        return -1;
    }
    return lt_cache_writer_finish(w);
}

/* ---- checking --------------------------------------------------------------------------- */

static int recipe_equal(const lt_recipe *a, const lt_recipe *b) {
    return memcmp(a->crop, b->crop, 16) == 0 && a->flip == b->flip && a->jitter == b->jitter &&
           a->gray == b->gray && memcmp(a->order, b->order, 4) == 0 &&
           memcmp(a->factor, b->factor, 16) == 0 && a->blur_sigma == b->blur_sigma;
}

static void check_meta(const lt_cache *c, const dataset *ds) {
    lt_cache_meta want;
    make_meta(&want, ds);
    const lt_cache_meta *m = lt_cache_meta_of(c);
    CHECK(m->embed_dim == ds->d && m->views_per_image == ds->v && m->image_size == 224);
    CHECK(m->seed == want.seed && m->mixup == 1 && m->emb_type == (ds->f32 ? LT_EMB_F32 : LT_EMB_F16));
    CHECK(m->zstd_level == 5 && m->max_pixels == 123456789);
    CHECK(strcmp(m->tool_version, want.tool_version) == 0);
    CHECK(memcmp(&m->teacher, &want.teacher, sizeof want.teacher) == 0);
    CHECK(memcmp(&m->transform, &want.transform, sizeof want.transform) == 0);
}

static void check_images(lt_cache *c, const dataset *ds) {
    CHECK(lt_cache_n_images(c) == ds->n);
    for (int i = 0; i < ds->n; i++) {
        int32_t w, h;
        lt_cache_image_size(c, i, &w, &h);
        CHECK_MSG(strcmp(lt_cache_image_path(c, i), ds->path[i]) == 0, "path %d", i);
        CHECK(w == ds->w[i] && h == ds->h[i]);
        uint8_t *b = NULL;
        size_t n = 0;
        CHECK(lt_cache_image_bytes(c, i, &b, &n) == 0);
        CHECK_MSG(n == ds->n_bytes[i] && b && memcmp(b, ds->bytes[i], n) == 0, "bytes %d", i);
        free(b);
        lt_cache_image rec;
        char sha[65];
        lt_sha256_hex(ds->bytes[i], ds->n_bytes[i], sha);
        CHECK(lt_cache_image_record(c, i, &rec) == 0);
        CHECK(strcmp(rec.sha256, sha) == 0 && rec.mtime_ns == ds->mtime[i]);
        CHECK(rec.n_bytes == ds->n_bytes[i] && strcmp(rec.path, ds->path[i]) == 0);
    }
    uint8_t *b = NULL;
    size_t n;
    CHECK(lt_cache_image_bytes(c, ds->n, &b, &n) == -1 && b == NULL);
}

static void check_samples(lt_cache *c, const dataset *ds) {
    int64_t s = (int64_t)ds->n * ds->v;
    CHECK(lt_cache_n_samples(c) == s);
    lt_sample *got = calloc((size_t)s, sizeof *got);
    CHECK(lt_cache_samples(c, 0, s, got) == 0);
    int bad = 0;
    for (int64_t k = 0; k < s; k++) {
        const lt_sample *a = &ds->samples[k], *b = &got[k];
        bad += a->image[0] != b->image[0] || a->image[1] != b->image[1] ||
               a->lambda != b->lambda || !recipe_equal(&a->r[0], &b->r[0]) ||
               !recipe_equal(&a->r[1], &b->r[1]);
    }
    CHECK_MSG(bad == 0, "%d samples differ", bad);
    CHECK(lt_cache_samples(c, s - 3, 3, got) == 0 && recipe_equal(&got[2].r[0],
                                                                   &ds->samples[s - 1].r[0]));
    CHECK(lt_cache_samples(c, s - 3, 4, got) == -1);
    free(got);
}

static void check_embeddings(lt_cache *c, const dataset *ds) {
    int64_t s = (int64_t)ds->n * ds->v;
    size_t total = (size_t)s * (size_t)ds->d;
    float *got = malloc(total * sizeof(float));
    CHECK(lt_cache_embeddings(c, 0, s, got) == 0);
    size_t bad = 0;
    for (size_t k = 0; k < total; k++) {
        float want = ds->f32 ? ds->emb[k] : lt_f16_to_f32(lt_f32_to_f16(ds->emb[k]));
        bad += memcmp(&want, &got[k], 4) != 0;
    }
    CHECK_MSG(bad == 0, "%zu embedding values differ (f32 %d)", bad, ds->f32);
    /* A sub-range straddling chunk boundaries. */
    int64_t first = s / 3, count = s / 2;
    CHECK(lt_cache_embeddings(c, first, count, got) == 0);
    float want = ds->f32 ? ds->emb[first * ds->d + 1]
                         : lt_f16_to_f32(lt_f32_to_f16(ds->emb[first * ds->d + 1]));
    CHECK(got[1] == want);
    CHECK(lt_cache_embeddings(c, s, 1, got) == -1);
    free(got);
}

static void check_skipped(const lt_cache *c, int n_skipped) {
    CHECK(lt_cache_n_skipped(c) == n_skipped);
    for (int k = 0; k < n_skipped && k < lt_cache_n_skipped(c); k++) {
        const char *p, *why;
        char wp[64], ww[64];
        lt_cache_skipped(c, k, &p, &why);
        snprintf(wp, sizeof wp, "bad/%d.txt", k);
        snprintf(ww, sizeof ww, "not a JPEG or PNG (%d)", k);
        CHECK(strcmp(p, wp) == 0 && strcmp(why, ww) == 0);
    }
}

static void test_round_trip(int n, int v, int d, int f32, int big, int n_skipped) {
    char path[512], partial[600];
    tmp_path(path, sizeof path, f32 ? "rt32.h5" : "rt16.h5");
    snprintf(partial, sizeof partial, "%s.partial", path);
    FILE *stale = fopen(partial, "w"); /* a stale .partial is replaced */
    if (stale) fputs("stale", stale), fclose(stale);
    dataset ds = make_dataset(n, v, d, f32, big, (uint64_t)(n * 31 + d));
    int wr = write_cache(path, &ds, n_skipped);
    CHECK_MSG(wr == 0, "write: %s", lt_err_msg());
    CHECK(!exists(partial) && exists(path));
    lt_cache *c = NULL;
    int rr = lt_cache_open(path, &c);
    CHECK_MSG(rr == 0, "open: %s", lt_err_msg());
    if (rr == 0) {
        check_meta(c, &ds);
        check_images(c, &ds);
        check_samples(c, &ds);
        check_embeddings(c, &ds);
        check_skipped(c, n_skipped);
        lt_cache_close(c);
    }
    free_dataset(&ds);
}

/* ---- writer failure paths --------------------------------------------------------------- */

static void test_abort(void) {
    char path[512], partial[600];
    tmp_path(path, sizeof path, "abort.h5");
    snprintf(partial, sizeof partial, "%s.partial", path);
    dataset ds = make_dataset(3, 2, 8, 0, 0, 5);
    lt_cache_meta meta;
    make_meta(&meta, &ds);
    lt_cache_writer *w;
    CHECK(lt_cache_writer_create(path, &meta, &w) == 0);
    CHECK(exists(partial));
    CHECK(add_images(w, &ds) == 0);
    lt_cache_writer_abort(w);
    CHECK(!exists(partial) && !exists(path));

    /* finish with missing rows fails and leaves nothing; a row written twice is refused */
    CHECK(lt_cache_writer_create(path, &meta, &w) == 0);
    CHECK(add_images(w, &ds) == 0);
    CHECK(lt_cache_writer_set_samples(w, ds.samples, 5) == -1); /* 3 x 2 expected */
    lt_cache_writer_abort(w);
    CHECK(lt_cache_writer_create(path, &meta, &w) == 0);
    CHECK(add_images(w, &ds) == 0);
    CHECK(lt_cache_writer_set_samples(w, ds.samples, 6) == 0);
    CHECK(lt_cache_writer_put_embeddings(w, 0, 2, ds.emb) == 0);
    CHECK(lt_cache_writer_finish(w) == -1);
    CHECK_MSG(strstr(lt_err_msg(), "only 2 of 6") != NULL, "%s", lt_err_msg());
    CHECK(!exists(partial) && !exists(path));
    CHECK(lt_cache_writer_create(path, &meta, &w) == 0);
    CHECK(add_images(w, &ds) == 0);
    CHECK(lt_cache_writer_set_samples(w, ds.samples, 6) == 0);
    CHECK(lt_cache_writer_put_embeddings(w, 0, 2, ds.emb) == 0);
    CHECK(lt_cache_writer_put_embeddings(w, 1, 2, ds.emb) == -1);
    CHECK(strstr(lt_err_msg(), "written twice") != NULL);
    lt_cache_writer_abort(w);

    /* An aborted rewrite leaves the existing complete cache intact. */
    CHECK(write_cache(path, &ds, 0) == 0);
    CHECK(lt_cache_writer_create(path, &meta, &w) == 0);
    lt_cache_writer_abort(w);
    lt_cache *c;
    CHECK(lt_cache_open(path, &c) == 0);
    lt_cache_close(c);
    CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);
    unlink(path);
    free_dataset(&ds);
}

/* ---- the filter alone ------------------------------------------------------------------- */

typedef size_t (*filter_fn)(unsigned, size_t, const unsigned[], size_t, size_t *, void **);

static filter_fn the_filter(void) {
    return ((const H5Z_class2_t *)lt_h5zstd_class())->filter;
}

/* Runs the filter on a copy of data (n bytes); returns the output length, *out = the buffer. */
static size_t run_filter(unsigned flags, const void *data, size_t n, void **out) {
    void *buf = H5allocate_memory(n ? n : 1, 0);
    memcpy(buf, data, n);
    size_t size = n;
    unsigned level = 3;
    size_t r = the_filter()(flags, 1, &level, n, &size, &buf);
    *out = buf;
    return r;
}

static void test_filter(void) {
    const H5Z_class2_t *cls = lt_h5zstd_class();
    CHECK(cls->id == 32015 && cls->encoder_present && cls->decoder_present);
    CHECK(lt_h5zstd_register() == 0 && lt_h5zstd_register() == 0);
    CHECK(H5Zfilter_avail(32015) > 0);
    size_t n = 100000;
    uint8_t *data = malloc(n);
    for (size_t k = 0; k < n; k++) data[k] = (uint8_t)(k % 251 < 100 ? k % 7 : k * 2654435761u);
    void *comp, *back;
    size_t nc = run_filter(0, data, n, &comp);
    CHECK(nc > 0 && nc < n && ZSTD_getFrameContentSize(comp, nc) == n);
    size_t nb = run_filter(H5Z_FLAG_REVERSE, comp, nc, &back);
    CHECK(nb == n && memcmp(back, data, n) == 0);
    H5free_memory(comp), H5free_memory(back);

    /* Two frames without a content size (streamed), concatenated. */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    size_t cap = ZSTD_compressBound(n) * 2;
    uint8_t *two = malloc(cap);
    size_t a = ZSTD_compress2(cc, two, cap, data, n / 2);
    size_t b = ZSTD_compress2(cc, two + a, cap - a, data + n / 2, n - n / 2);
    ZSTD_freeCCtx(cc);
    CHECK(!ZSTD_isError(a) && !ZSTD_isError(b));
    CHECK(ZSTD_getFrameContentSize(two, a + b) == ZSTD_CONTENTSIZE_UNKNOWN);
    nb = run_filter(H5Z_FLAG_REVERSE, two, a + b, &back);
    CHECK(nb == n && memcmp(back, data, n) == 0);
    H5free_memory(back);
    /* Truncated and garbage input fail with 0. */
    CHECK(run_filter(H5Z_FLAG_REVERSE, two, a / 2, &back) == 0);
    H5free_memory(back);
    CHECK(run_filter(H5Z_FLAG_REVERSE, data, 1000, &back) == 0);
    H5free_memory(back);
    free(two);
    free(data);
}

/* ---- damaged caches --------------------------------------------------------------------- */

static int copy_file(const char *from, const char *to, double fraction) {
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    if (!f || !g) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f), keep = (long)(n * fraction);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    size_t got = fread(buf, 1, (size_t)n, f);
    fwrite(buf, 1, (size_t)keep, g);
    free(buf);
    fclose(f);
    fclose(g);
    return got == (size_t)n ? 0 : -1;
}

/* Opening `path` fails with a message containing the path and `want`. */
static void expect_open_error(const char *path, const char *want, const char *label) {
    lt_cache *c = NULL;
    lt_err_clear();
    int r = lt_cache_open(path, &c);
    CHECK_MSG(r == -1 && c == NULL, "%s: opened", label);
    CHECK_MSG(strstr(lt_err_msg(), path) != NULL, "%s: message lacks the path: %s", label,
              lt_err_msg());
    CHECK_MSG(strstr(lt_err_msg(), want) != NULL, "%s: message lacks '%s': %s", label, want,
              lt_err_msg());
    if (c) lt_cache_close(c);
}

static hid_t open_rw(const char *path) {
    return H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
}

static void set_int_attr(const char *path, const char *name, hid_t mtype, const void *v) {
    hid_t f = open_rw(path);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, mtype, v) >= 0);
    H5Aclose(a);
    H5Fclose(f);
}

/* Writes value at index i of the uint64 dataset name. */
static void set_u64(const char *path, const char *name, hsize_t i, uint64_t value) {
    hid_t f = open_rw(path);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hsize_t one = 1;
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &i, NULL, &one, NULL);
    CHECK(H5Dwrite(d, H5T_NATIVE_UINT64, ms, fs, H5P_DEFAULT, &value) >= 0);
    H5Sclose(ms), H5Sclose(fs), H5Dclose(d), H5Fclose(f);
}

/* Replaces the format attribute by a variable-length string, as version 1 stored it. */
static void set_vlen_format(const char *path) {
    hid_t f = open_rw(path);
    H5Adelete(f, "format");
    hid_t s = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    const char *v = "lt-cache";
    hid_t a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(H5Awrite(a, t, &v) >= 0);
    H5Aclose(a), H5Tclose(t), H5Sclose(s), H5Fclose(f);
}

static void test_bad_files(const char *good) {
    char p[512];
    tmp_path(p, sizeof p, "bad.h5");

    copy_file(good, p, 1.0);
    int32_t version = 4;
    set_int_attr(p, "version", H5T_NATIVE_INT32, &version);
    expect_open_error(p, "cache version 4, this lt reads version 3: re-run lt-embed", "version");
    /* version 2 had no 'complete' mark and no checksums */
    copy_file(good, p, 1.0);
    version = 2;
    set_int_attr(p, "version", H5T_NATIVE_INT32, &version);
    expect_open_error(p, "cache version 2, this lt reads version 3: re-run lt-embed", "v2");

    /* Without the 'complete' mark (or with it 0) a cache is unfinished: refused, named. */
    copy_file(good, p, 1.0);
    int32_t zero = 0;
    set_int_attr(p, "complete", H5T_NATIVE_INT32, &zero);
    expect_open_error(p, "is not a finished lt cache", "complete 0");
    copy_file(good, p, 1.0);
    hid_t fc = open_rw(p);
    CHECK(H5Adelete(fc, "complete") >= 0);
    H5Fclose(fc);
    expect_open_error(p, "is not a finished lt cache", "no complete");

    /* An absurd view size is a validation error, not an allocation. */
    copy_file(good, p, 1.0);
    int32_t big = 100000;
    set_int_attr(p, "image_size", H5T_NATIVE_INT32, &big);
    expect_open_error(p, "image_size 100000", "image_size");

    /* A version-1 cache (format a variable-length string) is refused by its version number; a
     * variable-length string where version 2 has a fixed-length one is refused unread. */
    copy_file(good, p, 1.0);
    set_vlen_format(p);
    version = 1;
    set_int_attr(p, "version", H5T_NATIVE_INT32, &version);
    expect_open_error(p, "cache version 1, this lt reads version 3: re-run lt-embed", "v1");
    copy_file(good, p, 1.0);
    set_vlen_format(p);
    expect_open_error(p, "attribute 'format' is a variable-length string", "vlen format");

    copy_file(good, p, 1.0);
    hid_t f = open_rw(p);
    H5Adelete(f, "format");
    hid_t s = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 8);
    hid_t a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "other!!!");
    H5Aclose(a), H5Tclose(t), H5Sclose(s), H5Fclose(f);
    expect_open_error(p, "format is 'other!!!'", "format");

    copy_file(good, p, 1.0);
    f = open_rw(p);
    CHECK(H5Ldelete(f, "samples/jitter_order", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_open_error(p, "dataset samples/jitter_order is missing", "missing dataset");

    copy_file(good, p, 1.0);
    f = open_rw(p);
    CHECK(H5Ldelete(f, "embeddings", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_open_error(p, "dataset embeddings is missing", "missing embeddings");

    copy_file(good, p, 1.0);
    int32_t dim = 17;
    set_int_attr(p, "embed_dim", H5T_NATIVE_INT32, &dim);
    expect_open_error(p, "dataset embeddings has the wrong shape", "embed_dim");

    copy_file(good, p, 1.0);
    int32_t views = 1;
    set_int_attr(p, "views_per_image", H5T_NATIVE_INT32, &views);
    expect_open_error(p, "num_samples", "views");

    copy_file(good, p, 1.0);
    set_u64(p, "images/offset", 2, 1ull << 40);
    expect_open_error(p, "/images/offset", "offsets");

    copy_file(good, p, 1.0);
    set_u64(p, "images/path_offset", 2, 1ull << 40);
    expect_open_error(p, "images/path_offset: entry 1 is longer than", "path offsets");
    copy_file(good, p, 1.0);
    set_u64(p, "images/path_offset", 0, 1);
    expect_open_error(p, "images/path_offset[0] is 1, not 0", "path offset 0");
    copy_file(good, p, 1.0);
    set_u64(p, "images/path_offset", 150, 1ull << 15);
    expect_open_error(p, "images/path_offset ends at 32768, past the", "path offsets end");

    copy_file(good, p, 0.5);
    expect_open_error(p, "truncated or damaged", "truncated");

    FILE *g = fopen(p, "w");
    fputs("this is not an HDF5 file\n", g);
    fclose(g);
    expect_open_error(p, "not an HDF5 file", "not hdf5");

    tmp_path(p, sizeof p, "does-not-exist.h5");
    expect_open_error(p, "No such file", "missing file");
    /* Failed opens leave no HDF5 object (file, dataset, type...) open. */
    CHECK_MSG(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0, "%zd HDF5 objects still open",
              H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL));
}

/* A compressed chunk overwritten with garbage: open works, reading its rows fails cleanly. */
static void test_corrupt_chunk(const char *good) {
    char p[512];
    tmp_path(p, sizeof p, "chunk.h5");
    copy_file(good, p, 1.0);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "embeddings", H5P_DEFAULT);
    hsize_t off[2] = {0, 0};
    unsigned mask;
    haddr_t addr = 0;
    hsize_t size = 0;
    CHECK(H5Dget_chunk_info_by_coord(d, off, &mask, &addr, &size) >= 0 && size > 0);
    H5Dclose(d), H5Fclose(f);
    FILE *g = fopen(p, "r+b");
    char *junk = malloc(size);
    memset(junk, 0xAA, size);
    fseek(g, (long)addr, SEEK_SET);
    fwrite(junk, 1, size, g);
    fclose(g);
    free(junk);
    lt_cache *c;
    CHECK(lt_cache_open(p, &c) == 0);
    float row[4096];
    CHECK(lt_cache_embeddings(c, 0, 1, row) == -1);
    CHECK_MSG(strstr(lt_err_msg(), p) && strstr(lt_err_msg(), "embeddings"), "%s",
              lt_err_msg());
    lt_cache_close(c);
}

/* ---- resumable protocol and --verify ------------------------------------------------------ */

static void test_partial_reopen(void) {
    char path[512], partial[600];
    tmp_path(path, sizeof path, "reopen.h5");
    snprintf(partial, sizeof partial, "%s.partial", path);
    dataset ds = make_dataset(4, 3, 16, 0, 0, 77);
    lt_cache_meta meta;
    make_meta(&meta, &ds);
    lt_cache_writer *w;
    CHECK(lt_cache_writer_create(path, &meta, &w) == 0);
    CHECK(add_images(w, &ds) == 0);
    CHECK(lt_cache_writer_set_samples(w, ds.samples, 12) == 0);
    CHECK_MSG(lt_cache_writer_close_partial(w) == 0, "%s", lt_err_msg());
    CHECK(exists(partial) && !exists(path));
    /* the partial is a valid cache whose embeddings read as zeros, for lt-embed only: the reader
     * of finished caches refuses it */
    lt_cache *c = NULL;
    CHECK(lt_cache_open(partial, &c) == -1 && c == NULL);
    CHECK_MSG(strstr(lt_err_msg(), "not a finished lt cache") != NULL, "%s", lt_err_msg());
    CHECK_MSG(lt_cache_open_partial(partial, &c) == 0, "%s", lt_err_msg());
    float row[16] = {1};
    CHECK(c && lt_cache_embeddings(c, 11, 1, row) == 0 && row[0] == 0 && row[15] == 0);
    lt_cache_close(c);
    /* reopened, written from stored-type rows, finished: equals the float rows rounded */
    uint16_t *h = malloc(12 * 16 * sizeof *h);
    for (int k = 0; k < 12 * 16; k++) h[k] = lt_f32_to_f16(ds.emb[k]);
    CHECK_MSG(lt_cache_writer_reopen(path, &w) == 0, "%s", lt_err_msg());
    CHECK(lt_cache_writer_put_embeddings_raw(w, 0, 5, h) == 0);
    CHECK(lt_cache_writer_put_embeddings_raw(w, 5, 7, h + 5 * 16) == 0);
    CHECK_MSG(lt_cache_writer_finish(w) == 0, "%s", lt_err_msg());
    CHECK(!exists(partial) && exists(path));
    CHECK(lt_cache_open(path, &c) == 0);
    uint16_t *got = calloc(12 * 16, sizeof *got);
    CHECK(c && lt_cache_embeddings_raw(c, 0, 12, got) == 0);
    CHECK(memcmp(got, h, 12 * 16 * sizeof *h) == 0);
    check_images(c, &ds);
    check_samples(c, &ds);
    int64_t n = 0;
    CHECK(lt_cache_verify_images(c, 1.0, 0, &n) == 0 && n == 4);
    CHECK(lt_cache_verify_images(c, 0.01, 3, &n) == 0 && n == 1); /* at least one */
    lt_cache_close(c);
    free(h);
    free(got);
    free_dataset(&ds);

    /* a flipped byte in /images/bytes: verify names the image */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "images/bytes", H5P_DEFAULT);
    uint8_t b;
    hsize_t at = 0, one = 1;
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &at, NULL, &one, NULL);
    H5Dread(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, &b);
    b ^= 1;
    H5Dwrite(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, &b);
    H5Sclose(ms), H5Sclose(fs), H5Dclose(d), H5Fclose(f);
    CHECK(lt_cache_open(path, &c) == 0);
    CHECK(c && lt_cache_verify_images(c, 1.0, 0, &n) == -1 && n == 0);
    CHECK_MSG(strstr(lt_err_msg(), "image 0 (") && strstr(lt_err_msg(), "damaged"), "%s",
              lt_err_msg());
    lt_cache_close(c);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lt_test_cache_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_filter();
    test_round_trip(7, 3, 40, 1, 1, 3);    /* float32, one 2.5 MiB image, 3 skipped */
    test_round_trip(150, 5, 768, 0, 0, 0); /* float16, several chunks, nothing skipped */
    test_abort();
    test_partial_reopen();
    char good[512];
    tmp_path(good, sizeof good, "rt16.h5");
    test_bad_files(good);
    test_corrupt_chunk(good);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    CHECK_DONE();
}
