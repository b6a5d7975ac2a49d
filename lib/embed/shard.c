/* shard.c: lt-embed --shard K/N, one part of a cache made on several machines at once.
 *
 * The sorted scan of DATA_DIR is cut into N contiguous ranges of files; shard K (1..N) stores the
 * usable images of range K, the files of that range it skipped, and the recipes and embeddings
 * of its images' samples. Everything else is what the one-process run computes: an image's index
 * counts the usable files before it in the whole listing, and the recipes and mixup partners are
 * drawn by (seed, image, view) with the whole listing's image count and sizes. So every shard
 * reads and decodes every file once (the survey: which files are usable, their sizes and
 * hashes), but stores and embeds only its own. A partner may be another part's image: the
 * teacher renders it from its file, checked against the survey's SHA-256, i.e. from the bytes
 * that part stores (with --max-side the resized copy is made again from the file and checked
 * against the SHA-256 of the copy that part stores). lt-embed --merge (merge.c) checks that all parts saw the same images (the
 * digest images_sha256) and concatenates them into the cache the one-process run makes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/version.h"
#include "embed/internal.h"

#define SURVEY_CHUNK 64             /* files read + decoded per parallel round */
#define MAX_FILE_BYTES ((size_t)1 << 31)

static int stopped(const embed_run *R) { return R->o->stop && *R->o->stop; }

void lt_shard_digest_image(lt_sha256 *h, const char *path, const char *sha, int32_t w,
                           int32_t h_px) {
    char tail[96];
    int n = snprintf(tail, sizeof tail, "%c%.64s %d %d\n", 0, sha, (int)w, (int)h_px);
    lt_sha256_update(h, path, strlen(path));
    lt_sha256_update(h, tail, (size_t)n);
}

void lt_shard_survey_free(lt_shard_survey *s) {
    for (int64_t k = 0; k < s->n_skipped; k++) free(s->reasons[k]);
    free(s->images);
    free(s->skipped);
    free(s->reasons);
    memset(s, 0, sizeof *s);
}

/* Records file f's outcome: a usable image of the listing, or (in this shard's range) a skip. */
static int survey_record(embed_run *R, size_t f, const lt_embed_file *it) {
    lt_shard_survey *s = &R->shard;
    const lt_cache_part *d = &s->desc;
    int own = (int64_t)f >= d->first_file && (int64_t)f < d->first_file + d->files;
    if (it->reason[0]) {
        s->all_skipped++;
        s->all_too_large += it->too_large;
        if (!own) return 0;
        lt_warn("skipping %s: %s", R->files.paths[f], it->reason);
        s->too_large += it->too_large;
        s->reasons[s->n_skipped] = strdup(it->reason);
        if (!s->reasons[s->n_skipped]) return lt_err_set("out of memory (skipped files)");
        s->skipped[s->n_skipped++] = f;
        return 0;
    }
    lt_shard_image *im = &s->images[s->desc.total_images++];
    im->file = f;
    im->w = it->w;
    im->h = it->h;
    im->mtime_ns = it->mtime_ns;
    memcpy(im->sha, it->sha, sizeof im->sha);
    im->src_n = it->src_n;
    memcpy(im->src_sha, it->src_sha, sizeof im->src_sha);
    if ((int64_t)f < d->first_file) s->desc.first_image++;
    return 0;
}

int lt_shard_survey_run(embed_run *R) {
    const lt_embed_opts *o = R->o;
    lt_shard_survey *s = &R->shard;
    lt_cache_part *d = &s->desc;
    const int64_t F = (int64_t)R->files.n, K = o->shard_index, N = o->shard_count;
    d->index = o->shard_index;
    d->count = o->shard_count;
    d->total_files = F;
    d->first_file = (K - 1) * F / N;
    d->files = K * F / N - d->first_file;
    memcpy(d->listing_sha256, R->listing, sizeof d->listing_sha256);
    s->images = lt_malloc((size_t)F * sizeof *s->images, "image table");
    s->skipped = lt_malloc((size_t)d->files * sizeof *s->skipped, "skipped files");
    s->reasons = lt_calloc((size_t)d->files, sizeof *s->reasons, "skipped files");
    lt_embed_file *items = lt_calloc(SURVEY_CHUNK, sizeof *items, "survey buffers");
    int rc = s->images && s->skipped && s->reasons && items ? 0 : -1;
    lt_info("shard %d of %d: %lld of the %lld files, from file %lld; reading all of them (the "
            "image indices and mixup partners depend on every usable image)", d->index, d->count,
            (long long)d->files, (long long)F, (long long)d->first_file);
    lt_progress pr;
    lt_progress_start(&pr, "files", F);
    for (int64_t first = 0; rc == 0 && first < F && !stopped(R); first += SURVEY_CHUNK) {
        int count = (int)(F - first < SURVEY_CHUNK ? F - first : SURVEY_CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < count; k++)
            lt_embed_load_file(o->data_dir, R->files.paths[first + k], o->max_pixels, o->max_side,
                               &items[k]);
        for (int k = 0; k < count; k++) {
            if (rc == 0) rc = survey_record(R, (size_t)(first + k), &items[k]);
            free(items[k].bytes);
            items[k].bytes = NULL;
        }
        lt_progress_update(&pr, first + count);
    }
    lt_progress_end(&pr);
    free(items);
    if (rc != 0 || stopped(R)) return rc;
    int64_t n_img = d->total_images;
    if (n_img == 0)
        return lt_err_set("%s: none of the %lld image files can be used (%lld larger than "
                          "--max-pixels %lld, the others could not be decoded)", o->data_dir,
                          (long long)F, (long long)s->all_too_large, (long long)o->max_pixels);
    if (n_img > INT32_MAX / o->views)
        return lt_err_set("too many samples: %lld images x %d views", (long long)n_img, o->views);
    lt_sha256 h;
    lt_sha256_init(&h);
    for (int64_t i = 0; i < n_img; i++)
        lt_shard_digest_image(&h, R->files.paths[s->images[i].file], s->images[i].sha,
                              s->images[i].w, s->images[i].h);
    uint8_t dg[32];
    lt_sha256_final(&h, dg);
    lt_sha256_tohex(dg, d->images_sha256);
    int64_t own = d->files - s->n_skipped;
    lt_info("shard %d of %d: %lld of the %lld images, from image %lld (%lld of its files "
            "skipped)%s", d->index, d->count, (long long)own, (long long)n_img,
            (long long)d->first_image, (long long)s->n_skipped,
            own ? "" : "; the part holds no image, which --merge accepts");
    return 0;
}

/* Image i of the listing, read again from its file (with --max-side, made into its resized
 * copy again); refused if it is not the surveyed one. */
static int read_checked(embed_run *R, int64_t i, uint8_t **bytes, size_t *n) {
    const lt_shard_image *im = &R->shard.images[i];
    const char *rel = R->files.paths[im->file];
    char *full = lt_path_join(R->o->data_dir, rel);
    if (!full) return -1;
    int rc = lt_read_file(full, MAX_FILE_BYTES, bytes, n);
    free(full);
    if (rc != 0) return -1;
    char sha[65];
    lt_sha256_hex(*bytes, *n, sha);
    if (strcmp(sha, im->src_sha) != 0) {
        free(*bytes);
        *bytes = NULL;
        return lt_err_set("%s changed while lt-embed ran (its SHA-256 is not the one it had when "
                          "DATA_DIR was read); every shard must see the same files: rerun once "
                          "DATA_DIR no longer changes", rel);
    }
    if (strcmp(im->sha, im->src_sha) == 0) return 0; /* stored verbatim */
    int w = 0, h = 0;
    rc = lt_embed_shrink_bytes(bytes, n, R->o->max_pixels, R->o->max_side, &w, &h);
    if (rc < 0) {
        lt_err_prefix("%s", rel);
    } else if (rc == 0) {
        lt_err_set("%s: lt-embed resized it when DATA_DIR was read (--max-side %d), not now", rel,
                   R->o->max_side);
    } else {
        lt_sha256_hex(*bytes, *n, sha);
        if (strcmp(sha, im->sha) == 0 && w == im->w && h == im->h) return 0;
        lt_err_set("%s: its resized copy (--max-side %d) is not the one made when DATA_DIR was "
                   "read (SHA-256 %.12s..., %dx%d then; %.12s..., %dx%d now)", rel,
                   R->o->max_side, im->sha, im->w, im->h, sha, w, h);
    }
    free(*bytes);
    *bytes = NULL;
    return -1;
}

int lt_shard_image_bytes(embed_run *R, int64_t img, uint8_t **bytes, size_t *n) {
    const lt_cache_part *d = &R->shard.desc;
    if (img >= d->first_image && img < d->first_image + R->N)
        return lt_cache_image_bytes(R->part, img - d->first_image, bytes, n);
    if (img < 0 || img >= d->total_images)
        return lt_err_set("image %lld requested, the listing has %lld", (long long)img,
                          (long long)d->total_images);
    return read_checked(R, img, bytes, n);
}

int lt_shard_check_partial(const embed_run *R) {
    const lt_cache_part *p = lt_cache_part_of(R->part), *d = &R->shard.desc;
    if (!p || p->index != d->index || p->count != d->count || p->first_file != d->first_file ||
        p->files != d->files || p->total_files != d->total_files ||
        p->first_image != d->first_image || p->total_images != d->total_images ||
        strcmp(p->images_sha256, d->images_sha256) != 0 ||
        R->N != d->files - R->shard.n_skipped)
        return lt_err_set("%s is not the part this survey of DATA_DIR describes", R->partial);
    return 0;
}

/* This shard's images (read again and checked), then its skipped files. */
static int store_images(embed_run *R, lt_cache_writer *w) {
    const lt_shard_survey *s = &R->shard;
    const int64_t g0 = s->desc.first_image, n = s->desc.files - s->n_skipped;
    for (int64_t i = g0; i < g0 + n && !stopped(R); i++) {
        const lt_shard_image *im = &s->images[i];
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (read_checked(R, i, &bytes, &len) != 0) return -1;
        lt_cache_image ci = {.path = R->files.paths[im->file], .bytes = bytes, .n_bytes = len,
                             .width = im->w, .height = im->h, .mtime_ns = im->mtime_ns,
                             .source_size = (int64_t)im->src_n};
        memcpy(ci.sha256, im->sha, sizeof ci.sha256);
        memcpy(ci.source_sha256, im->src_sha, sizeof ci.source_sha256);
        int rc = lt_cache_writer_add_image(w, &ci);
        free(bytes);
        if (rc != 0) return -1;
    }
    for (int64_t k = 0; k < s->n_skipped; k++)
        if (lt_cache_writer_add_skipped(w, R->files.paths[s->skipped[k]], s->reasons[k]) != 0)
            return -1;
    return 0;
}

/* The recipes of this part's samples: sample (i, v) of the whole listing for its images i. */
static int draw_samples(embed_run *R) {
    const lt_embed_opts *o = R->o;
    const lt_shard_survey *s = &R->shard;
    const int64_t N = s->desc.total_images, g0 = s->desc.first_image, V = o->views;
    int32_t *wd = lt_malloc((size_t)N * sizeof *wd, "image sizes");
    int32_t *ht = lt_malloc((size_t)N * sizeof *ht, "image sizes");
    R->samples = lt_malloc((size_t)R->S * sizeof *R->samples, "sample recipes");
    int rc = wd && ht && R->samples ? 0 : -1;
    for (int64_t i = 0; rc == 0 && i < N; i++) {
        wd[i] = s->images[i].w;
        ht[i] = s->images[i].h;
    }
    if (rc == 0) {
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < R->S; k++)
            lt_sample_draw(&o->transform, o->seed, o->mixup, (uint32_t)N, wd, ht,
                           (uint32_t)(g0 + k / V), (uint32_t)(k % V), &R->samples[k]);
    }
    free(wd);
    free(ht);
    return rc;
}

int lt_shard_build_partial(embed_run *R) {
    lt_cache_writer *w = NULL;
    R->N = R->shard.desc.files - R->shard.n_skipped;
    R->S = R->N * R->o->views;
    R->rep->images = R->N;
    R->rep->skipped = R->shard.n_skipped;
    if (lt_cache_writer_create(R->o->cache_path, &R->meta, &w) != 0) return LT_EXIT_ERROR;
    int rc = lt_cache_writer_set_part(w, &R->shard.desc) == 0 && store_images(R, w) == 0
                 ? LT_EXIT_OK : LT_EXIT_ERROR;
    if (rc == LT_EXIT_OK && stopped(R)) rc = LT_EXIT_INTERRUPTED;
    if (rc == LT_EXIT_OK && (draw_samples(R) != 0 ||
                             lt_cache_writer_set_samples(w, R->samples, R->S) != 0))
        rc = LT_EXIT_ERROR;
    if (rc == LT_EXIT_OK) {
        rc = lt_cache_writer_close_partial(w) == 0 ? LT_EXIT_OK : LT_EXIT_ERROR;
        w = NULL;
    }
    if (w) lt_cache_writer_abort(w);
    return rc;
}
