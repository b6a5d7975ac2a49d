/* embed.c: the lt-embed pipeline (see embed.h).
 *
 * Phase A reads and fully decodes every scanned file on all cores (a file that does not decode is
 * skipped with one warning and recorded under /skipped), and stores the bytes of the usable ones
 * in CACHE.partial. The recipes of all S = N * V samples are then drawn (they need every image's
 * size for the crops and the mixup partners) and stored, and CACHE.partial is closed and synced:
 * from then on it is a valid cache whose embeddings are still zeros. The embedding log
 * CACHE.partial.emb is created next. Phase B walks the samples to embed in batches: the stored
 * bytes are read back from CACHE.partial, decoded, rendered (primary and partner views), mixed
 * and normalised, the teacher embeds the batch and the rows are appended to the log. The teacher
 * input of a sample therefore comes from exactly the bytes and recipe lt-train will use. Phase C
 * copies the log's rows (and, with --append, the old cache's) into /embeddings and renames
 * CACHE.partial to CACHE.
 *
 * A rerun after an interruption finds the log, checks that its settings are this run's, reuses
 * CACHE.partial (or rebuilds it, identically, when it was being assembled or is damaged) and
 * embeds only the rows the log lacks. With --append the samples are laid out for the new V
 * (s = i * V + v); the work rows are the samples that are new, in increasing s. */
#include "embed/embed.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "core/version.h"
#include "data/cache_check.h"
#include "data/image_pool.h"
#include "embed/internal.h"
#include "image/decode.h"
#include "image/render.h"
#include "image/render_cuda.h"
#include "image/shrink.h"
#include "models/dinov2.h"
#include "models/dinov2_cuda.h"

#define LT_MAX_FILE_BYTES ((size_t)1 << 31) /* 2 GiB: no image file we accept is larger */
#define PASS1_CHUNK 64                      /* files read + decoded per parallel round */

void lt_embed_defaults(lt_embed_opts *o) {
    memset(o, 0, sizeof *o);
    o->views = 8;
    o->batch_size = 0;
    o->precision = LT_PREC_BF16;
    o->mixup = 1;
    o->zstd_level = 3;
    o->device = LT_DEVICE_AUTO;
    o->max_pixels = LT_DEFAULT_MAX_PIXELS;
    lt_transform_default(&o->transform);
}

static int stopped(const lt_embed_opts *o) { return o->stop && *o->stop; }

/* ---- pass 1: read, validate, store ---- */

void lt_embed_load_file(const char *root, const char *rel, int64_t max_pixels, int max_side,
                        lt_embed_file *it) {
    memset(it, 0, sizeof *it);
    char *full = lt_path_join(root, rel);
    if (!full) {
        snprintf(it->reason, sizeof it->reason, "%s", lt_err_msg());
        return;
    }
    struct stat st;
    if (stat(full, &st) == 0) it->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (lt_read_file(full, LT_MAX_FILE_BYTES, &it->bytes, &it->n) != 0) {
        /* lt_read_file names the full path; the warning names the relative one. */
        const char *m = lt_err_msg();
        const char *colon = strstr(m, ": ");
        snprintf(it->reason, sizeof it->reason, "%s", colon ? colon + 2 : m);
        free(full);
        return;
    }
    free(full);
    lt_image im;
    if (lt_image_decode(it->bytes, it->n, max_pixels, &im) != 0) {
        snprintf(it->reason, sizeof it->reason, "%s", lt_err_msg());
        int w, h;
        it->too_large = lt_image_probe(it->bytes, it->n, &w, &h) == 0 &&
                        (int64_t)w * h > max_pixels;
        free(it->bytes);
        it->bytes = NULL;
        return;
    }
    it->w = im.w;
    it->h = im.h;
    it->src_n = it->n;
    lt_sha256_hex(it->bytes, it->n, it->src_sha);
    uint8_t *png = NULL;
    size_t n_png = 0;
    int shrunk = lt_shrink_png(&im, max_side, &png, &n_png, &it->w, &it->h);
    lt_image_free(&im);
    if (shrunk < 0) { /* out of memory: this file is skipped, the run goes on */
        snprintf(it->reason, sizeof it->reason, "cannot store a resized copy (--max-side %d): %s",
                 max_side, lt_err_msg());
        free(it->bytes);
        it->bytes = NULL;
        return;
    }
    if (shrunk) {
        free(it->bytes);
        it->bytes = png;
        it->n = n_png;
        lt_sha256_hex(it->bytes, it->n, it->sha);
    } else {
        memcpy(it->sha, it->src_sha, sizeof it->sha);
    }
}

int lt_embed_shrink_bytes(uint8_t **bytes, size_t *n, int64_t max_pixels, int max_side, int *w,
                          int *h) {
    lt_image im;
    if (lt_image_decode(*bytes, *n, max_pixels, &im) != 0) return -1;
    uint8_t *png = NULL;
    size_t n_png = 0;
    *w = im.w;
    *h = im.h;
    int shrunk = lt_shrink_png(&im, max_side, &png, &n_png, w, h);
    lt_image_free(&im);
    if (shrunk == 1) {
        free(*bytes);
        *bytes = png;
        *n = n_png;
    }
    return shrunk;
}

static void scan_warn(const char *msg, void *ctx) {
    (void)ctx;
    lt_warn("%s", msg);
}

/* Reads and validates every file of files and stores the usable ones after those already in w;
 * widths/heights (room for files->n) receive their decoded sizes, in order. */
static int pass1(const lt_embed_opts *o, const lt_filelist *files, lt_cache_writer *w,
                 int32_t *widths, int32_t *heights, int64_t *n_images, int64_t *n_skipped,
                 int64_t *n_too_large) {
    *n_images = *n_skipped = *n_too_large = 0;
    if (files->n == 0) return 0;
    lt_embed_file *items = lt_calloc(PASS1_CHUNK, sizeof *items, "pass 1 buffers");
    if (!items) return -1;
    lt_progress pr;
    lt_progress_start(&pr, "files", (int64_t)files->n);
    int64_t n = 0, skipped = 0, too_large = 0, resized = 0, src_bytes = 0, stored_bytes = 0;
    for (size_t first = 0; first < files->n; first += PASS1_CHUNK) {
        if (stopped(o)) break;
        int count = (int)(files->n - first < PASS1_CHUNK ? files->n - first : PASS1_CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < count; k++)
            lt_embed_load_file(o->data_dir, files->paths[first + k], o->max_pixels, o->max_side,
                               &items[k]);
        int rc = 0;
        for (int k = 0; k < count; k++) {
            lt_embed_file *it = &items[k];
            const char *rel = files->paths[first + k];
            if (rc == 0 && it->reason[0]) {
                lt_warn("skipping %s: %s", rel, it->reason);
                skipped++;
                too_large += it->too_large;
                rc = lt_cache_writer_add_skipped(w, rel, it->reason);
            } else if (rc == 0) {
                lt_cache_image ci = {.path = rel, .bytes = it->bytes, .n_bytes = it->n,
                                     .width = it->w, .height = it->h, .mtime_ns = it->mtime_ns,
                                     .source_size = (int64_t)it->src_n};
                memcpy(ci.sha256, it->sha, sizeof ci.sha256);
                memcpy(ci.source_sha256, it->src_sha, sizeof ci.source_sha256);
                rc = lt_cache_writer_add_image(w, &ci);
                widths[n] = it->w;
                heights[n] = it->h;
                n++;
                resized += it->n != it->src_n || strcmp(it->sha, it->src_sha) != 0;
                src_bytes += (int64_t)it->src_n;
                stored_bytes += (int64_t)it->n;
            }
            free(it->bytes);
            it->bytes = NULL;
        }
        if (rc != 0) {
            lt_progress_end(&pr); /* the display must not outlive pr (an error message clears it) */
            free(items);
            return -1;
        }
        lt_progress_update(&pr, (int64_t)(first + count));
    }
    lt_progress_end(&pr);
    free(items);
    if (o->max_side > 0) {
        char a[32], b[32];
        lt_human_bytes((double)src_bytes, a, sizeof a);
        lt_human_bytes((double)stored_bytes, b, sizeof b);
        lt_info("--max-side %d: %lld of %lld images stored resized (PNG), %s of files stored "
                "as %s", o->max_side, (long long)resized, (long long)n, a, b);
    }
    *n_images = n;
    *n_skipped = skipped;
    *n_too_large = too_large;
    return 0;
}

/* ---- the work rows: which samples the teacher embeds in this run ---- */

/* A fresh run embeds every sample, in order. --append on a cache of N0 images x V0 views embeds
 * views V0..V-1 of images 0..N0-1 and every view of images N0..N-1, in increasing sample index
 * s = i * V + v. Work row k is the k-th of those. */
static int64_t work_first_of_image(const embed_run *R, int64_t i) {
    int64_t V = R->o->views, add = V - R->V0;
    return i < R->N0 ? i * add : R->N0 * add + (i - R->N0) * V;
}

static int64_t work_total(const embed_run *R) { return work_first_of_image(R, R->N); }

static int64_t work_sample(const embed_run *R, int64_t k) {
    int64_t V = R->o->views, add = V - R->V0, old = R->N0 * add;
    if (k < old) return (k / add) * V + R->V0 + k % add;
    return (R->N0 + (k - old) / V) * V + (k - old) % V;
}

/* ---- phase B: render + teacher ---- */

typedef struct {
    int64_t index; /* image index, -1 if the slot is free */
    lt_image im;
    int borrowed;  /* im is the pool's (never freed here) */
} decoded_slot;

static void slot_free(decoded_slot *s) {
    if (!s->borrowed) lt_image_free(&s->im);
    s->borrowed = 0;
}

/* The stored bytes of image img, as lt-train will read them: from CACHE.partial, or (--shard) from
 * the part that holds it. */
static int image_bytes(embed_run *R, int64_t img, uint8_t **bytes, size_t *n) {
    if (R->o->shard_count) return lt_shard_image_bytes(R, img, bytes, n);
    return lt_cache_image_bytes(R->part, img, bytes, n);
}

/* Decodes every image the batch needs (primary and partner), each once. */
static int decode_batch(embed_run *R, const lt_sample *smp, int count, int64_t max_pixels,
                        decoded_slot *slots, int *n_slots, int *slot_of /* (count, 2) */) {
    int ns = 0;
    uint8_t **bytes = lt_calloc((size_t)count * 2, sizeof *bytes, "batch bytes");
    size_t *nbytes = lt_calloc((size_t)count * 2, sizeof *nbytes, "batch bytes");
    if (!bytes || !nbytes) goto fail;
    for (int s = 0; s < count; s++) {
        for (int k = 0; k < 2; k++) {
            int64_t img = smp[s].image[k];
            slot_of[2 * s + k] = -1;
            if (img < 0) continue;
            int found = -1;
            for (int j = 0; j < ns; j++)
                if (slots[j].index == img) found = j;
            if (found < 0) {
                found = ns++;
                slots[found].index = img;
                slots[found].im.rgb = NULL;
                slots[found].borrowed = 0;
                if (R->pool && R->pool->block) { /* decoded already (--image-pool host) */
                    slots[found].im = lt_image_pool_image(R->pool, img);
                    slots[found].borrowed = 1;
                } else if (image_bytes(R, img, &bytes[found], &nbytes[found]) != 0) {
                    goto fail;
                }
            }
            slot_of[2 * s + k] = found;
        }
    }
    int bad = -1;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int j = 0; j < ns; j++) {
        if (slots[j].borrowed) continue;
        if (lt_image_decode(bytes[j], nbytes[j], max_pixels, &slots[j].im) != 0) {
#pragma omp critical
            {
                bad = j;
                snprintf(msg, sizeof msg, "%s", lt_err_msg());
            }
        }
    }
    if (bad >= 0) {
        lt_err_set("stored image %lld no longer decodes: %s", (long long)slots[bad].index, msg);
        goto fail;
    }
    for (int j = 0; j < ns; j++) free(bytes[j]);
    free(bytes);
    free(nbytes);
    *n_slots = ns;
    return 0;
fail:
    if (bytes)
        for (int j = 0; j < ns; j++) free(bytes[j]);
    for (int j = 0; j < ns; j++) slot_free(&slots[j]);
    free(bytes);
    free(nbytes);
    *n_slots = 0;
    return -1;
}

static int dump_view(const char *dir, int64_t s, const char *tag, const uint8_t *rgb, int size) {
    char name[64];
    snprintf(name, sizeof name, "%08lld_%s.png", (long long)s, tag);
    char *p = lt_path_join(dir, name);
    if (!p) return -1;
    int rc = lt_png_write(p, rgb, size, size);
    free(p);
    return rc;
}

typedef struct {
    int size, count_max, D;
    uint8_t *va, *vb;   /* (count_max, size, size, 3) rendered primary / partner views */
    float *x;           /* (count_max, size, size, 3) teacher input */
    float *emb;         /* (count_max, D) */
    uint8_t *stored;    /* (count_max) rows of the embeddings in the stored type */
    float *lambda;      /* (count_max) */
    lt_sample *smp;     /* (count_max) the batch's recipes */
    int64_t *sidx;      /* (count_max) their sample indices */
    decoded_slot *slots;/* (2 * count_max) */
    int *slot_of;       /* (count_max, 2) */
} batch_buffers;

static void batch_free(batch_buffers *b) {
    free(b->va);
    free(b->vb);
    free(b->x);
    free(b->emb);
    free(b->stored);
    free(b->lambda);
    free(b->smp);
    free(b->sidx);
    free(b->slots);
    free(b->slot_of);
}

static int batch_alloc(batch_buffers *b, int count_max, int size, int D, size_t row_bytes) {
    memset(b, 0, sizeof *b);
    size_t px = (size_t)size * size * 3;
    b->size = size;
    b->count_max = count_max;
    b->D = D;
    b->va = lt_malloc(count_max * px, "rendered views");
    b->vb = lt_malloc(count_max * px, "rendered views");
    b->x = lt_malloc(count_max * px * sizeof(float), "teacher input");
    b->emb = lt_malloc((size_t)count_max * D * sizeof(float), "embeddings");
    b->stored = lt_malloc((size_t)count_max * row_bytes, "embeddings");
    b->lambda = lt_malloc((size_t)count_max * sizeof(float), "mixup weights");
    b->smp = lt_malloc((size_t)count_max * sizeof *b->smp, "batch recipes");
    b->sidx = lt_malloc((size_t)count_max * sizeof *b->sidx, "batch recipes");
    b->slots = lt_calloc((size_t)count_max * 2, sizeof *b->slots, "decoded images");
    b->slot_of = lt_malloc((size_t)count_max * 2 * sizeof(int), "decoded images");
    if (!b->va || !b->vb || !b->x || !b->emb || !b->stored || !b->lambda || !b->smp || !b->sidx ||
        !b->slots || !b->slot_of) {
        batch_free(b);
        return -1;
    }
    return 0;
}

/* Renders the batch's count samples (b->smp) into va/vb (count, size, size, 3) and their
 * lambdas; with x != NULL also mixes and normalises into x (the CPU teacher's input; the GPU
 * does that step itself). A sample without partner gets lambda 1 and an all-zero partner view.
 * Dumps views if asked, named by sample index. */
static int render_views(const lt_embed_opts *o, int64_t s_base, int count, batch_buffers *b,
                        uint8_t *va, uint8_t *vb, float *lambda, float *x) {
    const int size = b->size;
    const size_t px = (size_t)size * size * 3;
    int failed = 0;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < count; s++) {
        const lt_sample *sm = &b->smp[s];
        uint8_t *a = va + s * px, *bb = vb + s * px;
        int ok = lt_render(&b->slots[b->slot_of[2 * s]].im, &sm->r[0], size, a) == 0;
        int mixed = sm->image[1] >= 0;
        if (ok && mixed) ok = lt_render(&b->slots[b->slot_of[2 * s + 1]].im, &sm->r[1], size, bb) == 0;
        if (!mixed) memset(bb, 0, px);
        lambda[s] = mixed ? sm->lambda : 1.0f;
        if (ok) {
            if (x)
                lt_mix_normalize(a, mixed ? bb : NULL, lambda[s], o->transform.mean,
                                 o->transform.std, (int64_t)size * size, x + s * px);
            if (o->dump_views_dir) {
                ok = dump_view(o->dump_views_dir, s_base + b->sidx[s], "a", a, size) == 0;
                if (ok && mixed)
                    ok = dump_view(o->dump_views_dir, s_base + b->sidx[s], "b", bb, size) == 0;
            }
        }
        if (!ok) {
#pragma omp critical
            {
                failed = 1;
                snprintf(msg, sizeof msg, "%s", lt_err_msg());
            }
        }
    }
    if (failed) return lt_err_set("%s", msg);
    return 0;
}

/* The whole cache's index of this cache's sample 0: not 0 only for a part (--shard). */
static int64_t sample_base(const embed_run *R) {
    return R->o->shard_count ? R->shard.desc.first_image * R->o->views : 0;
}

/* Gathers the recipes of work rows [k, k + count), decodes the images they need and renders
 * their views into va/vb (and the normalised input into x when not NULL), timing both. */
static int prepare_batch(embed_run *R, int64_t k, int count, batch_buffers *b, uint8_t *va,
                         uint8_t *vb, float *lambda, float *x) {
    for (int j = 0; j < count; j++) {
        b->sidx[j] = work_sample(R, k + j);
        b->smp[j] = R->samples[b->sidx[j]];
    }
    double t0 = lt_now();
    int n_slots = 0;
    int rc = decode_batch(R, b->smp, count, R->o->max_pixels, b->slots, &n_slots,
                          b->slot_of);
    double t1 = lt_now();
    if (rc == 0) rc = render_views(R->o, sample_base(R), count, b, va, vb, lambda, x);
    for (int j = 0; j < n_slots; j++) slot_free(&b->slots[j]);
    R->rep->t_decode += t1 - t0;
    R->rep->t_render += lt_now() - t1;
    return rc;
}


/* Names sample s (its image and view) in bad_row's message. */
static void describe_sample(const embed_run *R, int64_t s, char *buf, size_t n) {
    int64_t i = s / R->o->views, base = sample_base(R);
    snprintf(buf, n, "sample %lld (image %lld, %s, view %lld)", (long long)(base + s),
             (long long)(base / R->o->views + i), lt_cache_image_path(R->part, i),
             (long long)(s % R->o->views));
}

static int bad_row(const embed_run *R, int64_t k, float value) {
    char what[600];
    describe_sample(R, work_sample(R, k), what, sizeof what);
    if (isfinite(value))
        return lt_err_set("the teacher's embedding of %s holds %g, beyond the float16 range: "
                          "store float32 embeddings (--overwrite --dtype f32)", what, value);
    return lt_err_set("the teacher's embedding of %s is not finite (%s): the teacher weights %s "
                      "are suspect (check that file for NaN or Inf values); nothing non-finite "
                      "was stored", what, isnan(value) ? "NaN" : "Inf", R->o->teacher_path);
}

/* Stores the embeddings (float32) of work rows [k, k + count) in the log, in the stored type,
 * where it lacks them (a batch recomputed after a resume adds only its missing rows). A row that
 * is not finite (or overflows float16) stops the run: the rows before it are stored. */
static int emit_rows(embed_run *R, batch_buffers *b, int64_t k, int count, const float *emb) {
    int good = 0;
    float value = 0;
    size_t rb = lt_emb_row_bytes(R->o->emb_type, b->D);
    double t0 = lt_now();
    while (good < count && lt_emb_encode_row(R->o->emb_type, emb + (size_t)good * b->D, b->D,
                                             b->stored + (size_t)good * rb, &value) == 0)
        good++;
    int rc = lt_emblog_put(R->log, k, b->stored, good);
    R->rep->t_write += lt_now() - t0;
    if (rc == 0 && good < count) rc = bad_row(R, k + good, value);
    return rc;
}

/* Start of the next batch with a row the log lacks, from work row `from` on; W if none. Batches
 * start at multiples of the batch size, as in an uninterrupted run, so the teacher sees the same
 * batches (its arithmetic may depend on the batch): a batch with a few missing rows (a log cut
 * mid-batch, damaged rows) is recomputed whole and only the missing rows are stored. */
static int64_t next_batch(const embed_run *R, int64_t from) {
    int64_t W = lt_emblog_total(R->log), k = lt_emblog_next_missing(R->log, from);
    return k < W ? k / R->B * R->B : W;
}

/* The progress display counts the views embedded by this run (done0: those found in the log). */
static int pass2_cpu(embed_run *R, int64_t done0, int64_t W) {
    const int size = R->o->transform.image_size, B = R->B;
    batch_buffers b;
    if (batch_alloc(&b, B, size, R->cfg->embed_dim,
                    lt_emb_row_bytes(R->o->emb_type, R->cfg->embed_dim)) != 0)
        return -1;
    lt_progress pr;
    lt_progress_start(&pr, "views", W - done0);
    int rc = 0;
    for (int64_t k = next_batch(R, 0); k < W && rc == 0; k = next_batch(R, k + B)) {
        if (stopped(R->o)) break;
        int count = (int)(W - k < B ? W - k : B);
        rc = prepare_batch(R, k, count, &b, b.va, b.vb, b.lambda, b.x);
        double t0 = lt_now();
        if (rc == 0) rc = lt_dinov2_forward(R->teacher, b.x, count, size, size, b.emb);
        R->rep->t_teacher += lt_now() - t0;
        if (rc == 0) rc = emit_rows(R, &b, k, count, b.emb);
        lt_progress_update(&pr, lt_emblog_rows(R->log) - done0);
    }
    lt_progress_end(&pr);
    batch_free(&b);
    return rc;
}

/* With the views rendered on the GPU: decodes the images of work rows [k, k + count) on the CPU,
 * then uploads them and renders the slot's views on the teacher's input stream (rg: the slot's
 * upload buffers) and enqueues the forward. */
static int submit_gpu_rendered(embed_run *R, lt_dinov2_gpu *g, lt_render_gpu *rg, int slot,
                               int64_t k, int count, batch_buffers *b) {
    const lt_embed_opts *o = R->o;
    const int size = o->transform.image_size;
    for (int j = 0; j < count; j++) {
        b->sidx[j] = work_sample(R, k + j);
        b->smp[j] = R->samples[b->sidx[j]];
        b->lambda[j] = b->smp[j].image[1] >= 0 ? b->smp[j].lambda : 1.0f;
    }
    if (R->dev_block) { /* every image is on the GPU already (--image-pool device) */
        int64_t *img = lt_malloc((size_t)count * 2 * sizeof *img, "batch images");
        uint8_t *da = NULL, *db = NULL;
        void *stream = NULL;
        int rc = img ? 0 : -1;
        for (int j = 0; rc == 0 && j < count; j++)
            img[2 * j] = b->smp[j].image[0], img[2 * j + 1] = b->smp[j].image[1];
        if (rc == 0) rc = lt_dinov2_gpu_slot_views(g, slot, count, size, size, &da, &db, &stream);
        if (rc == 0)
            rc = lt_render_gpu_pairs_resident(rg, R->dev_block, R->pool->offset, R->pool->width,
                                              R->pool->height, R->pool->n, b->smp, img, count,
                                              size, da, o->mixup ? db : NULL, stream);
        if (rc == 0)
            rc = lt_dinov2_gpu_submit_filled(g, slot, o->mixup, b->lambda, o->transform.mean,
                                             o->transform.std, count, size, size);
        free(img);
        return rc;
    }
    double t0 = lt_now();
    int n_slots = 0;
    int rc = decode_batch(R, b->smp, count, o->max_pixels, b->slots, &n_slots, b->slot_of);
    R->rep->t_decode += lt_now() - t0;
    if (rc != 0) return -1;
    lt_image *ims = lt_malloc((size_t)(n_slots ? n_slots : 1) * sizeof *ims, "decoded images");
    uint8_t *da = NULL, *db = NULL;
    void *stream = NULL;
    rc = ims ? 0 : -1;
    for (int j = 0; rc == 0 && j < n_slots; j++) ims[j] = b->slots[j].im;
    if (rc == 0) rc = lt_dinov2_gpu_slot_views(g, slot, count, size, size, &da, &db, &stream);
    t0 = lt_now();
    if (rc == 0)
        rc = lt_render_gpu_pairs(rg, ims, n_slots, b->smp, b->slot_of, count, size, da,
                                 o->mixup ? db : NULL, stream);
    R->rep->t_render += lt_now() - t0; /* the host's part: copying into pinned staging */
    if (rc == 0)
        rc = lt_dinov2_gpu_submit_filled(g, slot, o->mixup, b->lambda, o->transform.mean,
                                         o->transform.std, count, size, size);
    free(ims);
    for (int j = 0; j < n_slots; j++) slot_free(&b->slots[j]);
    return rc;
}

/* --dump-views of a batch rendered on the GPU: its views, copied back from the slot. */
static int dump_gpu_views(embed_run *R, lt_dinov2_gpu *g, int slot, int64_t k, int count,
                          batch_buffers *b) {
    const int size = R->o->transform.image_size;
    if (lt_dinov2_gpu_download_views(g, slot, b->va, R->o->mixup ? b->vb : NULL, count, size,
                                     size) != 0)
        return -1;
    const size_t px = (size_t)size * size * 3;
    for (int j = 0; j < count; j++) {
        int64_t s = work_sample(R, k + j);
        if (dump_view(R->o->dump_views_dir, sample_base(R) + s, "a", b->va + j * px, size) != 0 ||
            (R->samples[s].image[1] >= 0 &&
             dump_view(R->o->dump_views_dir, sample_base(R) + s, "b", b->vb + j * px, size) != 0))
            return -1;
    }
    return 0;
}

/* The GPU teacher, double-buffered: batch k+1 is decoded and rendered into pinned buffers while
 * the GPU runs batch k; the GPU normalises and mixes the uint8 views itself. With gpu_render the
 * CPU only decodes: the decoded images go up and the GPU renders the views. */
static int pass2_gpu(embed_run *R, int64_t done0, int64_t W) {
    const lt_embed_opts *o = R->o;
    const int size = o->transform.image_size, B = R->B;
    const size_t view = (size_t)B * size * size * 3;
    lt_dinov2_gpu *g = NULL;
    lt_render_gpu *rg[2] = {0};
    batch_buffers b;
    uint8_t *va[2] = {0}, *vb[2] = {0};
    int64_t slot_first[2] = {-1, -1};
    int slot_count[2] = {0, 0};
    if (batch_alloc(&b, B, size, R->cfg->embed_dim,
                    lt_emb_row_bytes(R->o->emb_type, R->cfg->embed_dim)) != 0)
        return -1;
    int rc = lt_dinov2_gpu_create(R->teacher, (lt_precision)o->precision, B, size, size, &g);
    for (int k = 0; k < 2 && rc == 0; k++) {
        if (R->gpu_render) {
            rc = lt_render_gpu_create(&rg[k]);
            continue;
        }
        rc = lt_cuda_host_alloc((void **)&va[k], view, "pinned views");
        if (rc == 0) rc = lt_cuda_host_alloc((void **)&vb[k], view, "pinned views");
    }
    lt_progress pr;
    lt_progress_start(&pr, "views", W - done0);
    int64_t n = 0;
    for (int64_t k = next_batch(R, 0); k < W && rc == 0; k = next_batch(R, k + B), n++) {
        if (stopped(o)) break;
        int slot = (int)(n & 1), other = slot ^ 1;
        int count = (int)(W - k < B ? W - k : B);
        if (R->gpu_render) {
            rc = submit_gpu_rendered(R, g, rg[slot], slot, k, count, &b);
        } else {
            rc = prepare_batch(R, k, count, &b, va[slot], vb[slot], b.lambda, NULL);
            if (rc == 0)
                rc = lt_dinov2_gpu_submit_views(g, slot, va[slot], o->mixup ? vb[slot] : NULL,
                                                b.lambda, o->transform.mean, o->transform.std,
                                                count, size, size);
        }
        if (rc == 0) {
            slot_first[slot] = k;
            slot_count[slot] = count;
        }
        if (rc == 0 && slot_first[other] >= 0) {
            rc = lt_dinov2_gpu_wait(g, other, b.emb);
            if (rc == 0 && R->gpu_render && o->dump_views_dir)
                rc = dump_gpu_views(R, g, other, slot_first[other], slot_count[other], &b);
            if (rc == 0) rc = emit_rows(R, &b, slot_first[other], slot_count[other], b.emb);
            slot_first[other] = -1;
            lt_progress_update(&pr, lt_emblog_rows(R->log) - done0);
        }
    }
    /* the batch still in flight (also when stopped: its rows are worth keeping) */
    for (int s = 0; s < 2 && rc == 0; s++) {
        if (slot_first[s] < 0) continue;
        rc = lt_dinov2_gpu_wait(g, s, b.emb);
        if (rc == 0 && R->gpu_render && o->dump_views_dir)
            rc = dump_gpu_views(R, g, s, slot_first[s], slot_count[s], &b);
        if (rc == 0) rc = emit_rows(R, &b, slot_first[s], slot_count[s], b.emb);
        slot_first[s] = -1;
    }
    if (rc == 0) lt_progress_update(&pr, lt_emblog_rows(R->log) - done0);
    lt_progress_end(&pr);
    if (g) {
        lt_dinov2_gpu_stats st;
        lt_dinov2_gpu_get_stats(g, &st);
        R->rep->t_copy = st.copy_ms / 1e3;
        R->rep->t_teacher = st.teacher_ms / 1e3;
    }
    /* each waits for anything still running before its buffers go (the renderers first: their
     * work is on the teacher's input stream) */
    for (int s = 0; s < 2; s++) lt_render_gpu_free(rg[s]);
    lt_dinov2_gpu_free(g);
    for (int s = 0; s < 2; s++) {
        lt_cuda_host_free(va[s]);
        lt_cuda_host_free(vb[s]);
    }
    batch_free(&b);
    return rc;
}

/* --image-pool: where the embedding pass finds the decoded images. auto: lt_pool_auto_kind (in
 * GPU memory when the views are rendered there and there is room, else in host memory when they
 * fit the budget, else decoded per batch: stream). A part (--shard) reads
 * partners from other parts' files: stream only. The kind and the sizes are said at start. */
static int setup_pool(embed_run *R) {
    const lt_embed_opts *o = R->o;
    lt_pool_kind kind = (lt_pool_kind)o->image_pool;
    const int64_t need = lt_pool_decoded_bytes(R->part);
    const int64_t budget = o->pool_memory > 0 ? o->pool_memory : lt_pool_default_budget();
    const int64_t dev_free = R->gpu_render ? (int64_t)lt_render_gpu_free_memory() : 0;
    char need_s[32], budget_s[32], dev_s[32];
    lt_human_bytes((double)need, need_s, sizeof need_s);
    lt_human_bytes((double)budget, budget_s, sizeof budget_s);
    lt_human_bytes((double)dev_free, dev_s, sizeof dev_s);
    if (kind == LT_POOL_HOST && need > budget)
        return lt_err_set("--image-pool host: the decoded images take %s (%lld bytes), more than "
                          "the budget of %s (--pool-memory); raise it or use --image-pool stream",
                          need_s, (long long)need, budget_s);
    if (kind == LT_POOL_AUTO)
        kind = o->shard_count ? LT_POOL_STREAM : lt_pool_auto_kind(need, budget, dev_free);
    if (kind == LT_POOL_STREAM) {
        lt_info("image pool: stream (each batch decodes its images; all of them decoded would "
                "take %s, budget %s)", need_s, budget_s);
        return 0;
    }
    lt_image_pool *p = NULL;
    if (lt_image_pool_build(R->part, lt_threads_get(), 1, &p) != 0) return -1;
    R->pool = p;
    lt_debug("image pool: %lld images decoded in %.2f s on %d threads", (long long)p->n,
             p->decode_s, p->threads);
    if (kind == LT_POOL_HOST) {
        lt_info("image pool: host, %lld images decoded, %s of %s budget", (long long)p->n, need_s,
                budget_s);
        return 0;
    }
    if (lt_render_gpu_upload_block(p->block, (size_t)p->bytes, &R->dev_block) != 0)
        return lt_err_prefix("--image-pool device (%s of %s free on the GPU)", need_s, dev_s);
    free(p->block); /* the GPU renders from its copy; the host keeps the offsets and sizes */
    p->block = NULL;
    lt_info("image pool: device, %lld images decoded, %s of GPU memory (%s free)", (long long)p->n,
            need_s, dev_s);
    return 0;
}

/* Phase B: embeds the work rows the log lacks. LT_EXIT_*. */
static int embed_views(embed_run *R) {
    lt_embed_report *rep = R->rep;
    int64_t W = lt_emblog_total(R->log), done = lt_emblog_rows(R->log);
    rep->views_total = W;
    rep->views_resumed = rep->views_done = done;
    if (done > 0)
        lt_info("continuing an interrupted run: %lld of %lld views were embedded already",
                (long long)done, (long long)W);
    if (done < W && setup_pool(R) != 0) return LT_EXIT_ERROR;
    int rc = done < W ? (R->gpu ? pass2_gpu : pass2_cpu)(R, done, W) : 0;
    rep->views_done = lt_emblog_rows(R->log);
    if (rc == 0) rc = lt_emblog_sync(R->log);
    else lt_emblog_sync(R->log); /* keep what was embedded; the first error is reported */
    if (rc != 0) return LT_EXIT_ERROR;
    if (stopped(R->o)) return LT_EXIT_INTERRUPTED;
    return LT_EXIT_OK;
}

/* ---- phase C: assemble /embeddings, rename ---- */

#define MERGE_ROWS 4096 /* sample rows per block written to /embeddings */

/* Writes /embeddings block by block: per image, its old rows (--append) then its new ones. */
static int merge_rows(embed_run *R, lt_cache_writer *w) {
    const int64_t V = R->o->views, V0 = R->V0;
    const size_t rb = (size_t)lt_emblog_row_bytes(R->log);
    int64_t per = MERGE_ROWS / V > 0 ? MERGE_ROWS / V : 1; /* images per block */
    uint8_t *buf = lt_malloc((size_t)(per * V) * rb, "embedding rows");
    uint8_t *fresh = lt_malloc((size_t)(per * V) * rb, "embedding rows");
    uint8_t *old = V0 ? lt_malloc((size_t)(per * V0) * rb, "embedding rows") : NULL;
    int rc = buf && fresh && (old || !V0) ? 0 : -1;
    for (int64_t i0 = 0; rc == 0 && i0 < R->N; i0 += per) {
        int64_t i1 = i0 + per < R->N ? i0 + per : R->N, o1 = i1 < R->N0 ? i1 : R->N0;
        if (i0 < o1) rc = lt_cache_embeddings_raw(R->base, i0 * V0, (o1 - i0) * V0, old);
        int64_t k0 = work_first_of_image(R, i0), k1 = work_first_of_image(R, i1);
        if (rc == 0) rc = lt_emblog_read(R->log, k0, k1 - k0, fresh);
        size_t nk = 0;
        for (int64_t i = i0; rc == 0 && i < i1; i++) {
            int64_t vo = i < R->N0 ? V0 : 0;
            uint8_t *dst = buf + (size_t)((i - i0) * V) * rb;
            if (vo) memcpy(dst, old + (size_t)((i - i0) * V0) * rb, (size_t)vo * rb);
            memcpy(dst + (size_t)vo * rb, fresh + nk * rb, (size_t)(V - vo) * rb);
            nk += (size_t)(V - vo);
        }
        if (rc == 0) rc = lt_cache_writer_put_embeddings_raw(w, i0 * V, (i1 - i0) * V, buf);
    }
    free(buf);
    free(fresh);
    free(old);
    return rc;
}

/* Phase C. The log is marked "assembling" first: a run killed during this phase left
 * CACHE.partial half-written, and its rerun rebuilds it before assembling again. */
static int assemble(embed_run *R) {
    if (lt_emblog_set_state(R->log, LT_EMBLOG_ASSEMBLING) != 0) return LT_EXIT_ERROR;
    lt_cache_close(R->part);
    R->part = NULL;
    lt_cache_writer *w = NULL;
    if (lt_cache_writer_reopen(R->o->cache_path, &w) != 0) return LT_EXIT_ERROR;
    if (merge_rows(R, w) != 0) {
        lt_cache_writer_abort(w);
        return LT_EXIT_ERROR;
    }
    lt_cache_close(R->base); /* CACHE is about to be replaced */
    R->base = NULL;
    if (lt_cache_writer_finish(w) != 0) return LT_EXIT_ERROR;
    lt_emblog_close(R->log);
    R->log = NULL;
    unlink(R->log_path);
    R->rep->resumable = 0;
    struct stat st;
    if (stat(R->o->cache_path, &st) == 0) R->rep->cache_bytes = st.st_size;
    return LT_EXIT_OK;
}

/* ---- phase A: images and recipes into CACHE.partial ---- */

/* --append: the existing cache's images, copied as they are (bytes, hash, mtime). */
static int copy_base_images(embed_run *R, lt_cache_writer *w, int32_t *widths, int32_t *heights) {
    lt_info("copying the %lld images of %s", (long long)R->N0, R->o->cache_path);
    for (int64_t i = 0; i < R->N0 && !stopped(R->o); i++) {
        lt_cache_image rec;
        uint8_t *bytes = NULL;
        size_t n = 0;
        if (lt_cache_image_record(R->base, i, &rec) != 0 ||
            lt_cache_image_bytes(R->base, i, &bytes, &n) != 0)
            return -1;
        rec.bytes = bytes;
        rec.n_bytes = n;
        int rc = lt_cache_writer_add_image(w, &rec);
        free(bytes);
        if (rc != 0) return -1;
        widths[i] = rec.width;
        heights[i] = rec.height;
    }
    return 0;
}

/* The recipes of all S samples: the base cache's where it has them, drawn for the others. */
static int draw_samples(embed_run *R, const int32_t *widths, const int32_t *heights) {
    const lt_embed_opts *o = R->o;
    const int64_t V = o->views, V0 = R->V0, N0 = R->N0;
    lt_sample *old = NULL;
    if (N0 * V0 > 0) {
        old = lt_malloc((size_t)(N0 * V0) * sizeof *old, "sample recipes");
        if (!old || lt_cache_samples(R->base, 0, N0 * V0, old) != 0) {
            free(old);
            return -1;
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < R->S; s++) {
        int64_t i = s / V, v = s % V;
        if (i < N0 && v < V0) R->samples[s] = old[i * V0 + v];
        else lt_sample_draw(&o->transform, o->seed, o->mixup, (uint32_t)R->N, widths, heights,
                            (uint32_t)i, (uint32_t)v, &R->samples[s]);
    }
    free(old);
    return 0;
}

/* Stores the images (copied from the base cache, then read from DATA_DIR) and the recipes;
 * fills R->N, R->S, R->samples. LT_EXIT_*. */
static int fill_partial(embed_run *R, lt_cache_writer *w, int32_t *widths, int32_t *heights) {
    const lt_embed_opts *o = R->o;
    int64_t n_new = 0, skipped = 0, too_large = 0;
    if (R->base && copy_base_images(R, w, widths, heights) != 0) return LT_EXIT_ERROR;
    if (pass1(o, &R->fresh, w, widths + R->N0, heights + R->N0, &n_new, &skipped,
              &too_large) != 0)
        return LT_EXIT_ERROR;
    R->N = R->N0 + n_new;
    R->rep->images = R->N;
    R->rep->skipped = skipped;
    if (stopped(o)) return LT_EXIT_INTERRUPTED;
    if (R->N == 0 && too_large && too_large == skipped)
        return lt_err_set("%s: all %lld image files were skipped as larger than --max-pixels "
                          "%lld (see the warnings above)", o->data_dir, (long long)skipped,
                          (long long)o->max_pixels), LT_EXIT_ERROR;
    if (R->N == 0 && too_large)
        return lt_err_set("%s: none of the %lld image files can be used: %lld are larger than "
                          "--max-pixels %lld, the other %lld could not be decoded (see the "
                          "warnings above)", o->data_dir, (long long)skipped, (long long)too_large,
                          (long long)o->max_pixels, (long long)(skipped - too_large)),
               LT_EXIT_ERROR;
    if (R->N == 0)
        return lt_err_set("%s: none of the %zu image files could be decoded (see the warnings "
                          "above)", o->data_dir, R->fresh.n), LT_EXIT_ERROR;
    if (R->N > INT32_MAX / o->views)
        return lt_err_set("too many samples: %lld images x %d views", (long long)R->N, o->views),
               LT_EXIT_ERROR;
    R->S = R->N * o->views;
    R->samples = lt_malloc((size_t)R->S * sizeof *R->samples, "sample recipes");
    if (!R->samples || draw_samples(R, widths, heights) != 0 ||
        lt_cache_writer_set_samples(w, R->samples, R->S) != 0)
        return LT_EXIT_ERROR;
    return LT_EXIT_OK;
}

static int build_partial(embed_run *R) {
    size_t cap = (size_t)R->N0 + R->fresh.n + 1;
    int32_t *widths = lt_malloc(cap * sizeof(int32_t), "image sizes");
    int32_t *heights = lt_malloc(cap * sizeof(int32_t), "image sizes");
    lt_cache_writer *w = NULL;
    int rc = LT_EXIT_ERROR;
    if (widths && heights && lt_cache_writer_create(R->o->cache_path, &R->meta, &w) == 0)
        rc = fill_partial(R, w, widths, heights);
    if (rc == LT_EXIT_OK) {
        rc = lt_cache_writer_close_partial(w) == 0 ? LT_EXIT_OK : LT_EXIT_ERROR;
        w = NULL;
    }
    if (w) lt_cache_writer_abort(w);
    free(widths);
    free(heights);
    return rc;
}

/* Reuses the CACHE.partial of an interrupted run (its images and recipes). */
static int reuse_partial(embed_run *R) {
    struct stat st;
    if (stat(R->partial, &st) != 0) return lt_err_set("%s is missing", R->partial);
    /* In a child first: a crash or hang of libhdf5 on a damaged partial means "rebuild it". The
     * worker pools are idle here and no other thread is in HDF5 (see cache_check.h). */
    if (lt_cache_check_isolated(R->partial, 0) != 0) return -1;
    if (lt_cache_open_partial(R->partial, &R->part) != 0) return -1;
    R->N = lt_cache_n_images(R->part);
    R->S = lt_cache_n_samples(R->part);
    if (lt_cache_meta_of(R->part)->views_per_image != R->o->views || R->N < R->N0 ||
        work_total(R) != lt_emblog_total(R->log))
        return lt_err_set("%s does not match %s", R->partial, R->log_path);
    if (R->o->shard_count && lt_shard_check_partial(R) != 0) return -1;
    R->samples = lt_malloc((size_t)R->S * sizeof *R->samples, "sample recipes");
    if (!R->samples || lt_cache_samples(R->part, 0, R->S, R->samples) != 0) return -1;
    R->rep->images = R->N;
    R->rep->skipped = lt_cache_n_skipped(R->part);
    lt_info("continuing %s: its %lld images and %lld recipes are reused", R->partial,
            (long long)R->N, (long long)R->S);
    return 0;
}

/* Creates the log for the partial just built, or checks the one of the interrupted run. */
static int start_log(embed_run *R) {
    int64_t W = work_total(R);
    int rb = (int)lt_emb_row_bytes(R->o->emb_type, R->cfg->embed_dim);
    if (R->log) {
        if (lt_emblog_total(R->log) != W || lt_emblog_row_bytes(R->log) != rb)
            return lt_err_set("%s holds %lld rows of %d bytes, this run needs %lld of %d; pass "
                              "--overwrite to discard it and start over", R->log_path,
                              (long long)lt_emblog_total(R->log), lt_emblog_row_bytes(R->log),
                              (long long)W, rb);
        return lt_emblog_set_state(R->log, LT_EMBLOG_EMBEDDING);
    }
    if (lt_emblog_create(R->log_path, R->settings, W, rb, &R->log) != 0) return -1;
    R->rep->resumable = 1;
    return 0;
}

/* Phase A, or the reuse of an interrupted run's phase A. LT_EXIT_*. */
static int prepare_partial(embed_run *R) {
    if (R->log && lt_emblog_state(R->log) == LT_EMBLOG_EMBEDDING) {
        if (reuse_partial(R) == 0) return LT_EXIT_OK;
        lt_warn("%s; rebuilding it (the %lld views embedded in %s are kept)", lt_err_msg(),
                (long long)lt_emblog_rows(R->log), R->log_path);
        lt_cache_close(R->part);
        R->part = NULL;
        free(R->samples);
        R->samples = NULL;
    } else if (R->log) {
        lt_info("an interrupted run was assembling %s; rebuilding it (the %lld views embedded "
                "in %s are kept)", R->partial, (long long)lt_emblog_rows(R->log), R->log_path);
    }
    int rc = R->o->shard_count ? lt_shard_build_partial(R) : build_partial(R);
    if (rc != LT_EXIT_OK) return rc;
    if (lt_cache_open_partial(R->partial, &R->part) != 0 || start_log(R) != 0) return LT_EXIT_ERROR;
    return LT_EXIT_OK;
}

/* ---- the run ---- */

static char *with_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path), m = strlen(suffix);
    char *s = lt_malloc(n + m + 1, "file name");
    if (s) {
        memcpy(s, path, n);
        memcpy(s + n, suffix, m + 1);
    }
    return s;
}

static int check_output(embed_run *R) {
    const lt_embed_opts *o = R->o;
    struct stat st;
    int exists = stat(o->cache_path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return lt_err_set("%s is a directory; give a file name for the cache", o->cache_path);
    if (!o->append && exists)
        snprintf(R->replaces, sizeof R->replaces, "%lld bytes, mtime %lld",
                 (long long)st.st_size,
                 (long long)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    if (lt_scan_is_image_name(lt_path_base(o->cache_path)) &&
        lt_scan_contains(o->data_dir, o->cache_path))
        return lt_err_set("%s lies under DATA_DIR %s and has an image's name: the next scan of "
                          "%s would take it for an image; give the cache a name ending in .h5, "
                          "or put it outside %s", o->cache_path, o->data_dir, o->data_dir,
                          o->data_dir);
    if (o->dump_views_dir && lt_scan_contains(o->data_dir, o->dump_views_dir))
        return lt_err_set("--dump-views %s lies under DATA_DIR %s: the dumped views would be "
                          "taken for images by the next scan of it (e.g. by --append); choose a "
                          "folder outside %s", o->dump_views_dir, o->data_dir, o->data_dir);
    if (o->append && !exists)
        return lt_err_set("--append: %s does not exist; run lt-embed without --append to create "
                          "it", o->cache_path);
    R->partial = with_suffix(o->cache_path, ".partial");
    R->log_path = with_suffix(o->cache_path, ".partial.emb");
    if (!R->partial || !R->log_path) return -1;
    /* An interrupted run may be continued without --overwrite: open_log checks that it was
     * started to replace this very cache. */
    if (!o->append && exists && !o->overwrite && stat(R->log_path, &st) != 0)
        return lt_err_set("%s already exists; pass --overwrite to replace it (or --append to add "
                          "new images or views to it)", o->cache_path);
    if (lt_embed_check_folder_writable(o->cache_path) != 0) return -1;
    if ((!o->append && exists &&
         lt_embed_check_replaceable(o->cache_path, LT_FILE_HDF5, "cache") != 0) ||
        lt_embed_check_replaceable(R->partial, LT_FILE_HDF5, "partial") != 0 ||
        (o->overwrite && lt_embed_check_replaceable(R->log_path, LT_FILE_EMBLOG, "log") != 0))
        return -1;
    if (o->overwrite) {
        if (stat(R->log_path, &st) == 0 || stat(R->partial, &st) == 0)
            lt_info("--overwrite: discarding the interrupted run in %s", R->partial);
        if ((unlink(R->log_path) != 0 && errno != ENOENT) ||
            (unlink(R->partial) != 0 && errno != ENOENT))
            return lt_err_set("%s: cannot remove: %s", R->partial, strerror(errno));
    }
    if (o->dump_views_dir && lt_mkdir_p(o->dump_views_dir) != 0) return -1;
    return 0;
}

static void fill_meta(const lt_embed_opts *o, const lt_dinov2_config *cfg, const char *sha,
                      lt_cache_meta *m) {
    memset(m, 0, sizeof *m);
    m->embed_dim = cfg->embed_dim;
    m->image_size = o->transform.image_size;
    m->views_per_image = o->views;
    m->seed = o->seed;
    m->mixup = o->mixup;
    m->emb_type = o->emb_type;
    m->zstd_level = o->zstd_level ? o->zstd_level : 3;
    m->max_pixels = o->max_pixels;
    m->max_side = o->max_side;
    m->transform = o->transform;
    snprintf(m->teacher.file, sizeof m->teacher.file, "%s", lt_path_base(o->teacher_path));
    memcpy(m->teacher.sha256, sha, 65);
    m->teacher.embed_dim = cfg->embed_dim;
    m->teacher.depth = cfg->depth;
    m->teacher.heads = cfg->heads;
    m->teacher.patch = cfg->patch;
    m->teacher.n_reg = cfg->n_reg;
    m->teacher.pos_grid = cfg->pos_grid;
    m->teacher.mlp_hidden = cfg->mlp_hidden;
    m->teacher.swiglu = cfg->swiglu;
    snprintf(m->tool_version, sizeof m->tool_version, "%s", LT_VERSION);
}

static int setup_device(embed_run *R) {
    const lt_embed_opts *o = R->o;
    int threads = lt_threads_set(o->threads);
    R->gpu = o->device == LT_DEVICE_CUDA || (o->device == LT_DEVICE_AUTO && lt_cuda_available());
    if (o->device == LT_DEVICE_CUDA && !lt_cuda_available())
        return lt_err_set("--device cuda: no usable CUDA device (or this build has no CUDA "
                          "backend); use --device cpu");
    if (o->render == LT_RENDER_GPU && !R->gpu)
        return lt_err_set("--render gpu: the views are rendered on the GPU only when the teacher "
                          "runs there (--device cuda)");
    R->gpu_render = R->gpu && o->render != LT_RENDER_CPU;
    const lt_pool_kind kind = (lt_pool_kind)o->image_pool;
    if (o->shard_count && kind != LT_POOL_AUTO && kind != LT_POOL_STREAM)
        return lt_err_set("--image-pool %s: a part (--shard) reads the partners of its samples "
                          "from the other parts' files, so its images are decoded per batch; use "
                          "--image-pool stream or auto", lt_pool_kind_name(kind));
    if (kind == LT_POOL_DEVICE && !R->gpu_render)
        return lt_err_set("--image-pool device: the images are kept in GPU memory only when the "
                          "views are rendered there (--device cuda, --render auto or gpu)");
    R->B = o->batch_size > 0 ? o->batch_size : R->gpu ? 256 : 32;
    R->rep->gpu = R->gpu;
    R->rep->gpu_render = R->gpu_render;
    if (R->gpu) {
        char info[80] = "";
        if (lt_cuda_device_info(info, sizeof info) != 0) info[0] = 0;
        snprintf(R->rep->device, sizeof R->rep->device, "cuda %s (%s), views rendered on the %s",
                 lt_precision_name((lt_precision)o->precision), info,
                 R->gpu_render ? "GPU" : "CPU");
    } else {
        snprintf(R->rep->device, sizeof R->rep->device, "cpu fp32 (%d threads)", threads);
    }
    return 0;
}

static int load_teacher(embed_run *R) {
    const lt_embed_opts *o = R->o;
    if (lt_dinov2_load(o->teacher_path, &R->teacher) != 0 ||
        lt_sha256_file(o->teacher_path, R->teacher_sha) != 0) {
        if (o->teacher_from_env) lt_err_prefix("LT_TEACHER=%s", o->teacher_path);
        return -1;
    }
    R->cfg = lt_dinov2_config_of(R->teacher);
    const int size = o->transform.image_size, p = R->cfg->patch;
    if (size < p)
        return lt_err_set("--image-size %d is smaller than the teacher's patch size %d", size, p);
    /* The teacher cuts a view into whole patches, as DINOv2's patch convolution does: the pixels
     * past the last whole patch (right and bottom) never reach it. */
    if (size % p)
        lt_warn("--image-size %d is not a multiple of the teacher's patch size %d: the teacher sees "
                "the top-left %dx%d pixels of each %dx%d view (lt-train's student sees it all); "
                "%d or %d would use every pixel", size, p, size / p * p, size / p * p, size, size,
                size / p * p, (size / p + 1) * p);
    const lt_dinov2_config *cfg = R->cfg;
    lt_info("teacher %s: ViT D=%d depth=%d heads=%d patch=%d registers=%d%s, on %s, batch %d",
            o->teacher_path, cfg->embed_dim, cfg->depth, cfg->heads, cfg->patch, cfg->n_reg,
            cfg->swiglu ? " SwiGLU" : "", R->rep->device, R->B);
    return 0;
}

static int scan(embed_run *R) {
    const lt_embed_opts *o = R->o;
    if (lt_scan_dir(o->data_dir, &R->files, scan_warn, NULL) != 0) return -1;
    R->rep->files = (int64_t)R->files.n;
    if (R->files.n == 0 && !o->append)
        return lt_err_set("%s: no images found (looked for .jpg, .jpeg and .png files in every "
                          "subfolder)", o->data_dir);
    lt_info("%zu image files in %s, %d views each", R->files.n, o->data_dir, o->views);
    if (!o->append) R->fresh = R->files;
    return lt_embed_listing_digest(o->data_dir, &R->files, R->listing);
}

/* Adds "replaces=<the cache this run replaces>" to the settings. */
static int add_replaces(embed_run *R) {
    if (!R->replaces[0]) return 0;
    char *s = NULL;
    if (asprintf(&s, "%sreplaces=%s\n", R->settings, R->replaces) < 0)
        return lt_err_set("out of memory (settings text)");
    free(R->settings);
    R->settings = s;
    return 0;
}

/* --shard: adds "shard=K/N" to the settings (a part is resumed only as the same shard). */
static int add_shard(embed_run *R) {
    if (!R->o->shard_count) return 0;
    char *s = NULL;
    if (asprintf(&s, "%sshard=%d/%d\n", R->settings, R->o->shard_index, R->o->shard_count) < 0)
        return lt_err_set("out of memory (settings text)");
    free(R->settings);
    R->settings = s;
    return 0;
}

/* Opens the embedding log of an interrupted run, if there is one, and checks its settings. A run
 * that replaces an existing CACHE (--overwrite) records which in its settings, so that the same
 * command without --overwrite continues it and replaces that cache, and only that one. */
static int open_log(embed_run *R) {
    struct stat st;
    if (stat(R->log_path, &st) != 0) return add_replaces(R);
    if (lt_emblog_open(R->log_path, &R->log) != 0) return -1;
    /* no cache there now: whatever the interrupted run was to replace is gone */
    if (!R->replaces[0] && !R->o->append)
        lt_settings_value(lt_emblog_settings(R->log), "replaces", R->replaces,
                          sizeof R->replaces);
    if (add_replaces(R) != 0 ||
        lt_embed_check_same_settings(R->partial, lt_emblog_settings(R->log), R->settings) != 0) {
        lt_emblog_close(R->log);
        R->log = NULL;
        return -1;
    }
    R->rep->resumable = 1;
    R->rep->views_total = lt_emblog_total(R->log);
    R->rep->views_done = R->rep->views_resumed = lt_emblog_rows(R->log);
    return 0;
}

/* The cheap checks of the inputs and outputs come first, the teacher next: a bad weights file
 * should fail before any long scan. */
static int run_all(embed_run *R, double t0) {
    const lt_embed_opts *o = R->o;
    if (lt_scan_check_root(o->data_dir) != 0 || setup_device(R) != 0 || check_output(R) != 0 ||
        (o->append && lt_embed_base_defaults(R) != 0))
        return LT_EXIT_ERROR;
    if (o->max_side > 0 && o->max_side < o->transform.image_size)
        return lt_err_set("--max-side %d is smaller than the view size %d (--image-size): every "
                          "view would be enlarged from a smaller copy; give --max-side %d or more",
                          o->max_side, o->transform.image_size, o->transform.image_size),
               LT_EXIT_ERROR;
    if (load_teacher(R) != 0 || scan(R) != 0) return LT_EXIT_ERROR;
    fill_meta(o, R->cfg, R->teacher_sha, &R->meta);
    if (o->append) {
        if (lt_embed_open_base(R) != 0) return LT_EXIT_ERROR;
        if (R->fresh.n == 0 && o->views == R->V0) {
            R->rep->nothing_to_do = 1;
            R->rep->views = R->V0;
            R->rep->images = R->N0;
            R->rep->samples = R->N0 * R->V0;
            return LT_EXIT_OK;
        }
        lt_info("appending to %s (%lld images x %d views): %zu new files, %d views per image",
                o->cache_path, (long long)R->N0, R->V0, R->fresh.n, o->views);
    }
    R->settings = lt_embed_settings_text(&R->meta, R->listing, o->append ? R->base_desc : NULL);
    if (!R->settings || add_shard(R) != 0 || open_log(R) != 0 ||
        (o->shard_count && lt_shard_survey_run(R) != 0))
        return LT_EXIT_ERROR;
    if (stopped(o)) return LT_EXIT_INTERRUPTED;
    int rc = prepare_partial(R);
    R->rep->seconds_scan = lt_now() - t0;
    if (rc != LT_EXIT_OK) return rc;
    double t1 = lt_now();
    rc = embed_views(R);
    R->rep->seconds_embed = lt_now() - t1;
    if (rc != LT_EXIT_OK) return rc;
    R->rep->samples = R->S;
    R->rep->views = o->views;
    R->rep->embed_dim = R->cfg->embed_dim;
    R->rep->bytes_per_embedding = (int)lt_emb_row_bytes(o->emb_type, R->cfg->embed_dim);
    return assemble(R);
}

static void run_free(embed_run *R) {
    lt_shard_survey_free(&R->shard);
    if (R->fresh.paths != R->files.paths) free(R->fresh.paths);
    lt_filelist_free(&R->files);
    lt_emblog_close(R->log);
    lt_cache_close(R->part);
    lt_cache_close(R->base);
    lt_dinov2_free(R->teacher);
    lt_render_gpu_free_block(R->dev_block);
    lt_image_pool_free(R->pool);
    free(R->samples);
    free(R->settings);
    free(R->partial);
    free(R->log_path);
}

int lt_embed_run(const lt_embed_opts *o, lt_embed_report *rep) {
    double t0 = lt_now();
    memset(rep, 0, sizeof *rep);
    embed_run R;
    memset(&R, 0, sizeof R);
    R.opts = *o;
    R.o = &R.opts;
    R.rep = rep;
    int rc = run_all(&R, t0);
    rep->seconds_total = lt_now() - t0;
    run_free(&R);
    return rc;
}
