/* embed.c: the lt-embed pipeline (see embed.h).
 *
 * Pass 1 reads and fully decodes every scanned file on all cores (a file that does not decode is
 * skipped with one warning and recorded under /skipped), and stores the bytes of the usable ones
 * in the cache. The recipes of all S = N * V samples are then drawn (they need every image's size
 * for the crops and the mixup partners) and stored. Pass 2 walks the samples in batches: the
 * stored bytes are read back from the cache, decoded, rendered (primary and partner views), mixed
 * and normalised, and the teacher embeds the batch. The teacher input of a sample therefore comes
 * from exactly the bytes and recipe lt-train will use. The cache is written as CACHE.partial and
 * renamed when complete. */
#include "embed/embed.h"

#include <errno.h>
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
#include "data/cache.h"
#include "data/scan.h"
#include "image/decode.h"
#include "image/render.h"
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

typedef struct {
    uint8_t *bytes;
    size_t n;
    int w, h;
    int64_t mtime_ns;
    char sha[65];
    char reason[512]; /* empty if usable */
} pass1_item;

static void pass1_load(const char *root, const char *rel, int64_t max_pixels, pass1_item *it) {
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
        free(it->bytes);
        it->bytes = NULL;
        return;
    }
    it->w = im.w;
    it->h = im.h;
    lt_image_free(&im);
    lt_sha256_hex(it->bytes, it->n, it->sha);
}

static void scan_warn(const char *msg, void *ctx) {
    (void)ctx;
    lt_warn("%s", msg);
}

/* Reads and validates every file; stores the usable ones. Fills widths/heights (n_images). */
static int pass1(const lt_embed_opts *o, const lt_filelist *files, lt_cache_writer *w,
                 int32_t **widths, int32_t **heights, int64_t *n_images, int64_t *n_skipped) {
    *widths = lt_malloc(files->n * sizeof(int32_t), "image sizes");
    *heights = lt_malloc(files->n * sizeof(int32_t), "image sizes");
    pass1_item *items = lt_calloc(PASS1_CHUNK, sizeof *items, "pass 1 buffers");
    if (!*widths || !*heights || !items) {
        free(items);
        return -1;
    }
    lt_progress pr;
    lt_progress_start(&pr, "files", (int64_t)files->n);
    int64_t n = 0, skipped = 0;
    for (size_t first = 0; first < files->n; first += PASS1_CHUNK) {
        if (stopped(o)) break;
        int count = (int)(files->n - first < PASS1_CHUNK ? files->n - first : PASS1_CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < count; k++)
            pass1_load(o->data_dir, files->paths[first + k], o->max_pixels, &items[k]);
        int rc = 0;
        for (int k = 0; k < count; k++) {
            pass1_item *it = &items[k];
            const char *rel = files->paths[first + k];
            if (rc == 0 && it->reason[0]) {
                lt_warn("skipping %s: %s", rel, it->reason);
                skipped++;
                rc = lt_cache_writer_add_skipped(w, rel, it->reason);
            } else if (rc == 0) {
                lt_cache_image ci = {.path = rel, .bytes = it->bytes, .n_bytes = it->n,
                                     .width = it->w, .height = it->h, .mtime_ns = it->mtime_ns};
                memcpy(ci.sha256, it->sha, sizeof ci.sha256);
                rc = lt_cache_writer_add_image(w, &ci);
                (*widths)[n] = it->w;
                (*heights)[n] = it->h;
                n++;
            }
            free(it->bytes);
            it->bytes = NULL;
        }
        if (rc != 0) {
            free(items);
            return -1;
        }
        lt_progress_update(&pr, (int64_t)(first + count));
    }
    lt_progress_end(&pr);
    free(items);
    *n_images = n;
    *n_skipped = skipped;
    return 0;
}

/* ---- pass 2: render + teacher ---- */

typedef struct {
    int64_t index; /* image index, -1 if the slot is free */
    lt_image im;
} decoded_slot;

/* Decodes every image the batch needs (primary and partner), each once. */
static int decode_batch(lt_cache_writer *w, const lt_sample *smp, int count, int64_t max_pixels,
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
                if (lt_cache_writer_image_bytes(w, img, &bytes[found], &nbytes[found]) != 0) goto fail;
            }
            slot_of[2 * s + k] = found;
        }
    }
    int bad = -1;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int j = 0; j < ns; j++) {
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
    for (int j = 0; j < ns; j++) lt_image_free(&slots[j].im);
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
    float *lambda;      /* (count_max) */
    decoded_slot *slots;/* (2 * count_max) */
    int *slot_of;       /* (count_max, 2) */
} batch_buffers;

static void batch_free(batch_buffers *b) {
    free(b->va);
    free(b->vb);
    free(b->x);
    free(b->emb);
    free(b->lambda);
    free(b->slots);
    free(b->slot_of);
}

static int batch_alloc(batch_buffers *b, int count_max, int size, int D) {
    memset(b, 0, sizeof *b);
    size_t px = (size_t)size * size * 3;
    b->size = size;
    b->count_max = count_max;
    b->D = D;
    b->va = lt_malloc(count_max * px, "rendered views");
    b->vb = lt_malloc(count_max * px, "rendered views");
    b->x = lt_malloc(count_max * px * sizeof(float), "teacher input");
    b->emb = lt_malloc((size_t)count_max * D * sizeof(float), "embeddings");
    b->lambda = lt_malloc((size_t)count_max * sizeof(float), "mixup weights");
    b->slots = lt_calloc((size_t)count_max * 2, sizeof *b->slots, "decoded images");
    b->slot_of = lt_malloc((size_t)count_max * 2 * sizeof(int), "decoded images");
    if (!b->va || !b->vb || !b->x || !b->emb || !b->lambda || !b->slots || !b->slot_of) {
        batch_free(b);
        return -1;
    }
    return 0;
}

/* Renders samples [0, count) of smp into va/vb (count, size, size, 3) and their lambdas; with
 * x != NULL also mixes and normalises into x (the CPU teacher's input; the GPU does that step
 * itself). A sample without partner gets lambda 1 and an all-zero partner view. Dumps views if
 * asked. */
static int render_views(const lt_embed_opts *o, const lt_sample *smp, int64_t first, int count,
                        batch_buffers *b, uint8_t *va, uint8_t *vb, float *lambda, float *x) {
    const int size = b->size;
    const size_t px = (size_t)size * size * 3;
    int failed = 0;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < count; s++) {
        const lt_sample *sm = &smp[s];
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
                ok = dump_view(o->dump_views_dir, first + s, "a", a, size) == 0;
                if (ok && mixed) ok = dump_view(o->dump_views_dir, first + s, "b", bb, size) == 0;
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

/* Decodes the images batch [first, first + count) needs and renders its views into va/vb
 * (and the normalised input into x when not NULL), timing both. */
static int prepare_batch(const lt_embed_opts *o, lt_cache_writer *w, const lt_sample *samples,
                         int64_t first, int count, batch_buffers *b, uint8_t *va, uint8_t *vb,
                         float *lambda, float *x, lt_embed_report *rep) {
    double t0 = lt_now();
    int n_slots = 0;
    int rc = decode_batch(w, samples + first, count, o->max_pixels, b->slots, &n_slots, b->slot_of);
    double t1 = lt_now();
    if (rc == 0) rc = render_views(o, samples + first, first, count, b, va, vb, lambda, x);
    for (int j = 0; j < n_slots; j++) lt_image_free(&b->slots[j].im);
    rep->t_decode += t1 - t0;
    rep->t_render += lt_now() - t1;
    return rc;
}

static int put_timed(lt_cache_writer *w, int64_t first, int count, const float *emb,
                     lt_embed_report *rep) {
    double t0 = lt_now();
    int rc = lt_cache_writer_put_embeddings(w, first, count, emb);
    rep->t_write += lt_now() - t0;
    return rc;
}

static int pass2_cpu(const lt_embed_opts *o, lt_dinov2 *teacher, lt_cache_writer *w,
                     const lt_sample *samples, int64_t S, int B, lt_embed_report *rep) {
    const int D = lt_dinov2_config_of(teacher)->embed_dim;
    const int size = o->transform.image_size;
    batch_buffers b;
    if (batch_alloc(&b, B, size, D) != 0) return -1;
    lt_progress pr;
    lt_progress_start(&pr, "views", S);
    int rc = 0;
    for (int64_t first = 0; first < S && rc == 0; first += B) {
        if (stopped(o)) break;
        int count = (int)(S - first < B ? S - first : B);
        rc = prepare_batch(o, w, samples, first, count, &b, b.va, b.vb, b.lambda, b.x, rep);
        double t0 = lt_now();
        if (rc == 0) rc = lt_dinov2_forward(teacher, b.x, count, size, size, b.emb);
        rep->t_teacher += lt_now() - t0;
        if (rc == 0) rc = put_timed(w, first, count, b.emb, rep);
        lt_progress_update(&pr, first + count);
    }
    lt_progress_end(&pr);
    batch_free(&b);
    return rc;
}

/* The GPU teacher, double-buffered: batch k+1 is decoded and rendered into pinned buffers while
 * the GPU runs batch k; the GPU normalises and mixes the uint8 views itself. */
static int pass2_gpu(const lt_embed_opts *o, lt_dinov2 *teacher, lt_cache_writer *w,
                     const lt_sample *samples, int64_t S, int B, lt_embed_report *rep) {
    const int D = lt_dinov2_config_of(teacher)->embed_dim;
    const int size = o->transform.image_size;
    const size_t view = (size_t)B * size * size * 3;
    lt_dinov2_gpu *g = NULL;
    batch_buffers b;
    uint8_t *va[2] = {0}, *vb[2] = {0};
    int64_t slot_first[2] = {-1, -1};
    int slot_count[2] = {0, 0};
    if (batch_alloc(&b, B, size, D) != 0) return -1;
    int rc = lt_dinov2_gpu_create(teacher, (lt_precision)o->precision, B, size, size, &g);
    for (int k = 0; k < 2 && rc == 0; k++) {
        rc = lt_cuda_host_alloc((void **)&va[k], view, "pinned views");
        if (rc == 0) rc = lt_cuda_host_alloc((void **)&vb[k], view, "pinned views");
    }
    lt_progress pr;
    lt_progress_start(&pr, "views", S);
    int64_t k = 0;
    for (int64_t first = 0; first < S && rc == 0; first += B, k++) {
        if (stopped(o)) break;
        int slot = (int)(k & 1), other = slot ^ 1;
        int count = (int)(S - first < B ? S - first : B);
        rc = prepare_batch(o, w, samples, first, count, &b, va[slot], vb[slot], b.lambda, NULL, rep);
        if (rc == 0)
            rc = lt_dinov2_gpu_submit_views(g, slot, va[slot], o->mixup ? vb[slot] : NULL, b.lambda,
                                            o->transform.mean, o->transform.std, count, size, size);
        if (rc == 0) {
            slot_first[slot] = first;
            slot_count[slot] = count;
        }
        if (rc == 0 && slot_first[other] >= 0) {
            rc = lt_dinov2_gpu_wait(g, other, b.emb);
            if (rc == 0) rc = put_timed(w, slot_first[other], slot_count[other], b.emb, rep);
            slot_first[other] = -1;
            lt_progress_update(&pr, slot_first[slot]);
        }
    }
    for (int s = 0; s < 2 && rc == 0; s++) { /* the batch still in flight */
        if (slot_first[s] < 0) continue;
        rc = lt_dinov2_gpu_wait(g, s, b.emb);
        if (rc == 0) rc = put_timed(w, slot_first[s], slot_count[s], b.emb, rep);
        slot_first[s] = -1;
    }
    if (rc == 0) lt_progress_update(&pr, S);
    lt_progress_end(&pr);
    if (g) {
        lt_dinov2_gpu_stats st;
        lt_dinov2_gpu_get_stats(g, &st);
        rep->t_copy = st.copy_ms / 1e3;
        rep->t_teacher = st.teacher_ms / 1e3;
    }
    /* waits for anything still running before its buffers go */
    lt_dinov2_gpu_free(g);
    for (int s = 0; s < 2; s++) {
        lt_cuda_host_free(va[s]);
        lt_cuda_host_free(vb[s]);
    }
    batch_free(&b);
    return rc;
}

/* ---- the run ---- */

static int check_output(const lt_embed_opts *o) {
    struct stat st;
    if (stat(o->cache_path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return lt_err_set("%s is a directory; give a file name for the cache", o->cache_path);
        if (!o->overwrite)
            return lt_err_set("%s already exists; pass --overwrite to replace it", o->cache_path);
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
    m->emb_f32 = o->emb_f32;
    m->zstd_level = o->zstd_level;
    m->max_pixels = o->max_pixels;
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

int lt_embed_run(const lt_embed_opts *o, lt_embed_report *rep) {
    double t0 = lt_now();
    memset(rep, 0, sizeof *rep);
    int threads = lt_threads_set(o->threads);
    int gpu = o->device == LT_DEVICE_CUDA || (o->device == LT_DEVICE_AUTO && lt_cuda_available());
    if (o->device == LT_DEVICE_CUDA && !lt_cuda_available())
        return lt_err_set("--device cuda: no usable CUDA device (or this build has no CUDA "
                          "backend); use --device cpu"), LT_EXIT_ERROR;
    int B = o->batch_size > 0 ? o->batch_size : gpu ? 256 : 32;
    if (gpu) {
        char info[80] = "";
        if (lt_cuda_device_info(info, sizeof info) != 0) info[0] = 0;
        snprintf(rep->device, sizeof rep->device, "cuda %s (%s)",
                 lt_precision_name((lt_precision)o->precision), info);
    } else {
        snprintf(rep->device, sizeof rep->device, "cpu fp32 (%d threads)", threads);
    }
    if (check_output(o) != 0) return LT_EXIT_ERROR;

    /* The teacher first: a bad weights file should fail before any long scan. */
    lt_dinov2 *teacher = NULL;
    char sha[65];
    if (lt_dinov2_load(o->teacher_path, &teacher) != 0) return LT_EXIT_ERROR;
    const lt_dinov2_config *cfg = lt_dinov2_config_of(teacher);
    if (o->transform.image_size < cfg->patch) {
        lt_err_set("--image-size %d is smaller than the teacher's patch size %d",
                   o->transform.image_size, cfg->patch);
        lt_dinov2_free(teacher);
        return LT_EXIT_ERROR;
    }
    if (lt_sha256_file(o->teacher_path, sha) != 0) {
        lt_dinov2_free(teacher);
        return LT_EXIT_ERROR;
    }
    lt_info("teacher %s: ViT D=%d depth=%d heads=%d patch=%d registers=%d%s, on %s, batch %d",
            o->teacher_path, cfg->embed_dim, cfg->depth, cfg->heads, cfg->patch, cfg->n_reg,
            cfg->swiglu ? " SwiGLU" : "", rep->device, B);

    lt_filelist files = {0};
    if (lt_scan_dir(o->data_dir, &files, scan_warn, NULL) != 0) {
        lt_dinov2_free(teacher);
        return LT_EXIT_ERROR;
    }
    rep->files = (int64_t)files.n;
    if (files.n == 0) {
        lt_err_set("%s: no images found (looked for .jpg, .jpeg and .png files in every "
                   "subfolder)", o->data_dir);
        lt_dinov2_free(teacher);
        lt_filelist_free(&files);
        return LT_EXIT_ERROR;
    }
    lt_info("%zu image files in %s, %d views each", files.n, o->data_dir, o->views);

    lt_cache_meta meta;
    fill_meta(o, cfg, sha, &meta);
    lt_cache_writer *w = NULL;
    int32_t *widths = NULL, *heights = NULL;
    lt_sample *samples = NULL;
    int rc = LT_EXIT_ERROR;
    if (lt_cache_writer_create(o->cache_path, &meta, &w) != 0) goto done;

    int64_t N = 0, skipped = 0;
    if (pass1(o, &files, w, &widths, &heights, &N, &skipped) != 0) goto done;
    rep->images = N;
    rep->skipped = skipped;
    rep->seconds_scan = lt_now() - t0;
    if (stopped(o)) {
        rc = LT_EXIT_INTERRUPTED;
        goto done;
    }
    if (N == 0) {
        lt_err_set("%s: none of the %zu image files could be decoded (see the warnings above)",
                   o->data_dir, files.n);
        goto done;
    }
    if (N > INT32_MAX / o->views) {
        lt_err_set("too many samples: %lld images x %d views", (long long)N, o->views);
        goto done;
    }

    int64_t S = N * o->views;
    samples = lt_malloc((size_t)S * sizeof *samples, "sample recipes");
    if (!samples) goto done;
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < S; s++)
        lt_sample_draw(&o->transform, o->seed, o->mixup, (uint32_t)N, widths, heights,
                       (uint32_t)(s / o->views), (uint32_t)(s % o->views), &samples[s]);
    if (lt_cache_writer_set_samples(w, samples, S) != 0) goto done;

    double t1 = lt_now();
    if ((gpu ? pass2_gpu : pass2_cpu)(o, teacher, w, samples, S, B, rep) != 0) goto done;
    rep->seconds_embed = lt_now() - t1;
    if (stopped(o)) {
        rc = LT_EXIT_INTERRUPTED;
        goto done;
    }
    rep->samples = S;
    rep->embed_dim = cfg->embed_dim;
    rep->bytes_per_embedding = cfg->embed_dim * (o->emb_f32 ? 4 : 2);
    int frc = lt_cache_writer_finish(w);
    w = NULL;
    if (frc != 0) goto done;
    struct stat st;
    if (stat(o->cache_path, &st) == 0) rep->cache_bytes = st.st_size;
    rc = LT_EXIT_OK;
done:
    if (w) lt_cache_writer_abort(w);
    rep->seconds_total = lt_now() - t0;
    free(samples);
    free(widths);
    free(heights);
    lt_filelist_free(&files);
    lt_dinov2_free(teacher);
    return rc;
}
