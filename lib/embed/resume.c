/* resume.c: the checks that keep resumed and appended caches consistent (see internal.h).
 *
 * A run's settings are written as "key=value" lines into the embedding log; a rerun compares its
 * own and refuses on the first difference, naming the option. --append compares this run's
 * settings with the existing cache's and classifies the scanned files into known, new and changed
 * (size differs, or mtime differs and the SHA-256 too, both of the source file: with --max-side
 * the stored bytes are a resized copy); changed files are refused. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/sha256.h"
#include "embed/internal.h"

/* ---- settings ---- */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} text_buf;

static void add(text_buf *t, const char *fmt, ...) LT_PRINTF(2, 3);

static void add(text_buf *t, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (len < 0 || t->oom) return;
    if (t->n + (size_t)len + 1 > t->cap) {
        size_t cap = (t->cap + (size_t)len + 1) * 2;
        char *g = realloc(t->s, cap);
        if (!g) {
            t->oom = 1;
            return;
        }
        t->s = g;
        t->cap = cap;
    }
    memcpy(t->s + t->n, line, (size_t)len + 1);
    t->n += (size_t)len;
}

char *lt_embed_settings_text(const lt_cache_meta *m, const char *listing, const char *base) {
    const lt_transform *x = &m->transform;
    text_buf t = {0};
    add(&t, "teacher=%s\n", m->teacher.sha256);
    add(&t, "views=%d\nimage-size=%d\nseed=%llu\n", m->views_per_image, m->image_size,
        (unsigned long long)m->seed);
    add(&t, "mixup=%s\ndtype=%s\n", m->mixup ? "on" : "off (--no-mixup)",
        lt_emb_type_short(m->emb_type));
    add(&t, "max-pixels=%lld\nzstd-level=%d\n", (long long)m->max_pixels, m->zstd_level);
    /* only when on, so that the settings of a run without it are those of older versions */
    if (m->max_side > 0) add(&t, "max-side=%d\n", m->max_side);
    add(&t, "crop-scale=%.9g,%.9g\ncrop-ratio=%.9g,%.9g\n", x->crop_scale[0], x->crop_scale[1],
        x->crop_ratio[0], x->crop_ratio[1]);
    add(&t, "hflip-p=%.9g\njitter-p=%.9g\n", x->hflip_p, x->jitter_p);
    add(&t, "jitter=%.9g,%.9g,%.9g,%.9g\n", x->jitter[0], x->jitter[1], x->jitter[2],
        x->jitter[3]);
    add(&t, "gray-p=%.9g\nblur-sigma=%.9g,%.9g\n", x->gray_p, x->blur_sigma[0], x->blur_sigma[1]);
    add(&t, "mean=%.9g,%.9g,%.9g\nstd=%.9g,%.9g,%.9g\n", x->mean[0], x->mean[1], x->mean[2],
        x->std[0], x->std[1], x->std[2]);
    if (listing) add(&t, "data=%s\n", listing);
    if (base) add(&t, "append-to=%s\n", base);
    if (t.oom || !t.s) {
        free(t.s);
        lt_err_set("out of memory (settings text)");
        return NULL;
    }
    return t.s;
}

int lt_embed_listing_digest(const char *root, const lt_filelist *files, char hex[65]) {
    lt_sha256 h;
    lt_sha256_init(&h);
    for (size_t k = 0; k < files->n; k++) {
        char *full = lt_path_join(root, files->paths[k]);
        if (!full) return -1;
        struct stat st;
        long long size = -1, mtime = -1;
        if (stat(full, &st) == 0) {
            size = (long long)st.st_size;
            mtime = (long long)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        }
        free(full);
        char line[64];
        int n = snprintf(line, sizeof line, "%c%lld %lld\n", 0, size, mtime);
        lt_sha256_update(&h, files->paths[k], strlen(files->paths[k]));
        lt_sha256_update(&h, line, (size_t)n);
    }
    uint8_t d[32];
    lt_sha256_final(&h, d);
    lt_sha256_tohex(d, hex);
    return 0;
}

int lt_embed_check_same_settings(const char *partial, const char *was, const char *now) {
    char key[64], a[256], b[256];
    if (!lt_settings_diff(was, now, key, sizeof key, a, b, sizeof a)) return 0;
    const char *fix = "rerun with the settings of the interrupted run to continue it, or pass "
                      "--overwrite to discard it and start over";
    if (!strcmp(key, "data"))
        return lt_err_set("%s was started on other data: image files under DATA_DIR were added, "
                          "removed or modified since; %s", partial, fix);
    if (!strcmp(key, "append-to"))
        return lt_err_set("%s was started %s; %s", partial,
                          !strcmp(a, "(none)") ? "as a new cache, not by --append"
                          : !strcmp(b, "(none)") ? "by --append, this run is not one"
                                                 : "by --append to another version of the cache",
                          fix);
    if (!strcmp(key, "replaces"))
        return lt_err_set("%s was started %s; the cache there now (%s) is not the one it was to "
                          "replace. Move that cache away to continue, or pass --overwrite to "
                          "discard the interrupted run and replace it", partial,
                          !strcmp(a, "(none)") ? "when there was no cache to replace"
                                               : "to replace another cache", b);
    if (!strcmp(key, "teacher"))
        return lt_err_set("%s was started with another teacher (--teacher: weights SHA-256 %.12s..."
                          " then, %.12s... now); %s", partial, a, b, fix);
    lt_embed_setting_shown(key, a, sizeof a);
    lt_embed_setting_shown(key, b, sizeof b);
    return lt_err_set("%s was started with other settings: --%s was %s, now %s; %s", partial, key,
                      a, b, fix);
}

void lt_embed_setting_shown(const char *key, char *value, size_t cap) {
    if (!strcmp(key, "max-side") && !strcmp(value, "(none)")) snprintf(value, cap, "off");
}

/* ---- --append ---- */

static const embed_run *g_sort_run; /* qsort has no context argument */

static int cmp_base_path(const void *x, const void *y) {
    return strcmp(lt_cache_image_path(g_sort_run->base, *(const int64_t *)x),
                  lt_cache_image_path(g_sort_run->base, *(const int64_t *)y));
}

/* Index of path among the base's images (order: base images sorted by path), or -1. */
static int64_t find_base(const embed_run *R, const int64_t *order, const char *path) {
    int64_t lo = 0, hi = R->N0;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(lt_cache_image_path(R->base, order[mid]), path);
        if (c == 0) return order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* NULL if the file under DATA_DIR is the source of stored image i (the file itself, or with
 * --max-side the file its resized copy was made from); else what changed. */
static const char *change_of(const embed_run *R, int64_t i, const char *rel) {
    lt_cache_image rec;
    if (lt_cache_image_record(R->base, i, &rec) != 0) return "unreadable record";
    char *full = lt_path_join(R->o->data_dir, rel);
    struct stat st;
    const char *why = NULL;
    if (!full || stat(full, &st) != 0) why = "cannot stat";
    else if ((int64_t)st.st_size != rec.source_size) why = "size";
    else if ((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec != rec.mtime_ns) {
        char sha[65];
        if (lt_sha256_file(full, sha) != 0) why = "cannot read";
        else if (strcmp(sha, rec.source_sha256) != 0) why = "content";
    }
    free(full);
    return why;
}

/* Splits the scan into known files (checked for changes) and new ones (into R->fresh). */
static int classify(embed_run *R, const int64_t *order) {
    char *seen = lt_calloc((size_t)R->N0 + 1, 1, "append bookkeeping");
    R->fresh.paths = lt_malloc((R->files.n + 1) * sizeof(char *), "append file list");
    if (!seen || !R->fresh.paths) {
        free(seen);
        return -1;
    }
    char names[600] = "";
    int64_t changed = 0, missing = 0;
    for (size_t k = 0; k < R->files.n; k++) {
        const char *rel = R->files.paths[k];
        int64_t i = find_base(R, order, rel);
        if (i < 0) {
            R->fresh.paths[R->fresh.n++] = R->files.paths[k];
            continue;
        }
        seen[i] = 1;
        const char *why = change_of(R, i, rel);
        if (why && changed++ < 5) {
            size_t n = strlen(names);
            snprintf(names + n, sizeof names - n, "%s%s (%s)", n ? ", " : "", rel, why);
        }
    }
    for (int64_t i = 0; i < R->N0; i++) missing += !seen[i];
    free(seen);
    if (missing)
        lt_warn("%lld image%s of %s %s no longer under %s; %s kept in the cache",
                (long long)missing, missing == 1 ? "" : "s", R->o->cache_path,
                missing == 1 ? "is" : "are", R->o->data_dir, missing == 1 ? "it is" : "they are");
    if (changed)
        return lt_err_set("%lld image%s under %s changed since %s was made: %s%s. --append only "
                          "adds files: give changed images new names, or rebuild the cache with "
                          "--overwrite", (long long)changed, changed == 1 ? "" : "s",
                          R->o->data_dir, R->o->cache_path, names, changed > 5 ? ", ..." : "");
    return 0;
}

/* The base cache's settings must be this run's, except --views (which may only grow). */
static int check_base_settings(embed_run *R) {
    const lt_cache_meta *bm = lt_cache_meta_of(R->base);
    if (R->o->views < bm->views_per_image)
        return lt_err_set("--views %d is fewer than the %d views per image %s holds; --append "
                          "can only add views", R->o->views, bm->views_per_image,
                          R->o->cache_path);
    lt_cache_meta was = *bm;
    was.views_per_image = R->meta.views_per_image;
    was.zstd_level = R->meta.zstd_level; /* the new file may compress differently */
    char *a = lt_embed_settings_text(&was, NULL, NULL);
    char *b = lt_embed_settings_text(&R->meta, NULL, NULL);
    char key[64], va[256], vb[256];
    int r = a && b ? 0 : -1;
    if (r == 0 && lt_settings_diff(a, b, key, sizeof key, va, vb, sizeof va)) {
        if (!strcmp(key, "teacher"))
            r = lt_err_set("%s was made with another teacher (weights SHA-256 %.12s... there, "
                           "%.12s... now); --append must use the same --teacher", R->o->cache_path,
                           va, vb);
        else if (!strcmp(key, "max-side")) {
            lt_embed_setting_shown(key, va, sizeof va);
            lt_embed_setting_shown(key, vb, sizeof vb);
            r = lt_err_set("%s was made with --max-side %s, this run asks for %s: every image of "
                           "a cache is stored under one --max-side; leave --max-side out to use "
                           "the cache's", R->o->cache_path, va, vb);
        } else
            r = lt_err_set("%s was made with other settings: --%s was %s, now %s; --append takes "
                           "the cache's settings when they are not given: leave --%s out (only "
                           "--views may grow)", R->o->cache_path, key, va, vb, key);
    }
    free(a);
    free(b);
    return r;
}

int lt_embed_base_defaults(embed_run *R) {
    if (lt_cache_open(R->opts.cache_path, &R->base) != 0) return -1;
    const lt_cache_meta *m = lt_cache_meta_of(R->base);
    lt_embed_opts *o = &R->opts;
    lt_transform *t = &o->transform;
    const lt_transform *x = &m->transform;
    unsigned g = o->given;
    if (!(g & LT_GIVEN_VIEWS)) o->views = m->views_per_image;
    if (!(g & LT_GIVEN_IMAGE_SIZE)) t->image_size = m->image_size;
    if (!(g & LT_GIVEN_SEED)) o->seed = m->seed;
    if (!(g & LT_GIVEN_MIXUP)) o->mixup = m->mixup;
    if (!(g & LT_GIVEN_DTYPE)) o->emb_type = m->emb_type;
    if (!(g & LT_GIVEN_ZSTD)) o->zstd_level = m->zstd_level;
    if (!(g & LT_GIVEN_MAX_PIXELS)) o->max_pixels = m->max_pixels;
    if (!(g & LT_GIVEN_MAX_SIDE)) o->max_side = m->max_side;
    if (!(g & LT_GIVEN_CROP_SCALE)) memcpy(t->crop_scale, x->crop_scale, sizeof t->crop_scale);
    if (!(g & LT_GIVEN_CROP_RATIO)) memcpy(t->crop_ratio, x->crop_ratio, sizeof t->crop_ratio);
    if (!(g & LT_GIVEN_HFLIP)) t->hflip_p = x->hflip_p;
    if (!(g & LT_GIVEN_JITTER_P)) t->jitter_p = x->jitter_p;
    if (!(g & LT_GIVEN_JITTER)) memcpy(t->jitter, x->jitter, sizeof t->jitter);
    if (!(g & LT_GIVEN_GRAY)) t->gray_p = x->gray_p;
    if (!(g & LT_GIVEN_BLUR)) memcpy(t->blur_sigma, x->blur_sigma, sizeof t->blur_sigma);
    if (!(g & LT_GIVEN_MEAN)) memcpy(t->mean, x->mean, sizeof t->mean);
    if (!(g & LT_GIVEN_STD)) memcpy(t->std, x->std, sizeof t->std);
    return 0;
}

int lt_embed_open_base(embed_run *R) {
    R->N0 = lt_cache_n_images(R->base);
    R->V0 = lt_cache_meta_of(R->base)->views_per_image;
    if (check_base_settings(R) != 0) return -1;
    /* Every stored row is copied into the grown cache, which gets fresh checksums: a damaged row
     * must be caught now, or it would pass every later --verify. */
    double t0 = lt_now();
    if (lt_cache_verify_rows(R->base, 0, R->N0 * R->V0) != 0) return -1;
    lt_debug("checked the %lld stored recipes and embeddings of %s (%.1f s)",
             (long long)(R->N0 * R->V0), R->o->cache_path, lt_now() - t0);
    struct stat st;
    if (stat(R->o->cache_path, &st) != 0)
        return lt_err_set("%s: cannot stat: %s", R->o->cache_path, strerror(errno));
    snprintf(R->base_desc, sizeof R->base_desc, "%lld images x %d views, %lld bytes, mtime %lld",
             (long long)R->N0, R->V0, (long long)st.st_size,
             (long long)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    int64_t *order = lt_malloc((size_t)(R->N0 + 1) * sizeof *order, "append bookkeeping");
    if (!order) return -1;
    for (int64_t i = 0; i < R->N0; i++) order[i] = i;
    g_sort_run = R;
    qsort(order, (size_t)R->N0, sizeof *order, cmp_base_path);
    int r = classify(R, order);
    free(order);
    return r;
}
