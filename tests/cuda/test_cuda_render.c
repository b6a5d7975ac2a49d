/* test_cuda_render.c: the CUDA renderer (image/render_cuda.h) against lt_render (image/render.h),
 * byte for byte, over thousands of random recipes.
 *
 * Why it exists: views rendered on the GPU must be exactly the bytes the CPU renders (lt-train
 * re-renders what lt-embed's teacher saw, on either backend), and CI has no GPU: `make test-cuda`
 * runs this on a GPU machine (tests/run-cuda.sh). Tolerance: none, every byte must be equal.
 *
 * Coverage: source images from 1x1 to 2600x1900 (odd sizes, single rows and columns, smooth and
 * noisy content); when LT_RENDER_TEST_IMAGES names a folder, every image file in it too, decoded
 * by image/decode.h (run-cuda.sh fills it with grey, CMYK and RGB JPEGs and 8/16-bit, palette,
 * grey and RGBA PNGs); recipes drawn by lt_recipe_draw with random transform settings: crop
 * scales down to 1e-4 of the image and up to all of it, ratios 1/5..5, flips, every jitter op at
 * strengths up to the maximum (hue ±0.5), every order, grayscale, blur sigma 0..4; output sizes
 * 224 and odd ones (1, 2, 7, 63, 97, 255). lt_render_gpu_pairs (host images up, primary and
 * partner views, zeros for samples without a partner) twice on one object. Also: a crop outside
 * its image and too little scratch are refused with a message.
 *
 * The same source is also the CPU test tests/unit/test_render_emu.cpp: compiled as C++ with
 * LT_CUDA_EMULATE, "device" memory is host memory and the kernels run on the CPU (cuda_emu.h),
 * with fewer views, so CI checks the kernels' indexing on every run.
 *
 * Inputs from a seed taken from /dev/urandom (printed; LT_TEST_SEED=N repeats a run).
 * Output: one line per batch; exit 0 all equal, 1 a difference or an error, 77 no GPU. */
#ifdef __cplusplus
extern "C" {
#endif
#include "core/error.h"
#include "image/decode.h"
#include "image/recipe.h"
#include "image/render.h"
#include "image/render_cuda.h"
#ifndef LT_CUDA_EMULATE
#include "nn/ops_cuda.h"
#endif
#ifdef __cplusplus
}
#endif
#include "test_rng.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int irange(int lo, int hi) { return lo + (int)(next_u64() % (uint64_t)(hi - lo + 1)); }


/* ---- device memory: the GPU's, or host memory when the kernels are emulated ---------------- */

#ifndef LT_CUDA_EMULATE
#define TEST_NAME "test_cuda_render"
#define N_BATCHES 40 /* of 64 views at 224, then 48 views at each odd size */
#define BATCH 64
#define ODD_BATCH 48
static lt_cuda_ctx *ctx;
static int dev_open(void) {
    if (!lt_cuda_available()) return 77;
    char info[256];
    if (lt_cuda_device_info(info, sizeof info) == 0) printf("device: %s\n", info);
    return lt_cuda_ctx_create(&ctx) ? -1 : 0;
}
static void dev_close(void) { lt_cuda_ctx_free(ctx); }
static void *dev_stream(void) { return lt_cuda_ctx_stream(ctx); }
static int dev_alloc(void **p, size_t n) { return lt_cuda_malloc(p, n, "test buffer"); }
static void dev_free(void *p) { lt_cuda_free(p); }
static int dev_up(void *d, const void *h, size_t n) {
    return lt_cuda_upload(ctx, d, h, n) || lt_cuda_sync(ctx);
}
static int dev_sync(void) { return lt_cuda_sync(ctx); }
static int dev_down(void *h, const void *d, size_t n) {
    return lt_cuda_download(ctx, h, d, n) || lt_cuda_sync(ctx);
}
#else
#define TEST_NAME "test_render_emu"
#define N_BATCHES 4
#define BATCH 24
#define ODD_BATCH 8
static int dev_open(void) { return 0; }
static void dev_close(void) {}
static void *dev_stream(void) { return NULL; }
static int dev_alloc(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (*p) memset(*p, 0xA5, n); /* not zero: the kernels must write what they read */
    return *p ? 0 : lt_err_set("out of memory");
}
static void dev_free(void *p) { free(p); }
static int dev_up(void *d, const void *h, size_t n) { return memcpy(d, h, n), 0; }
static int dev_sync(void) { return 0; }
static int dev_down(void *h, const void *d, size_t n) { return memcpy(h, d, n), 0; }
#endif

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf(TEST_NAME ": FAIL: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- source images: host RGB and its device copy ---------------------------------------------- */

typedef struct {
    lt_image im;
    uint8_t *dev;
    char name[96];
} source;

static source *srcs;
static int n_srcs, cap_srcs;

static int add_source(lt_image im, const char *name) {
    if (n_srcs == cap_srcs) {
        cap_srcs = cap_srcs ? 2 * cap_srcs : 32;
        srcs = (source *)realloc(srcs, (size_t)cap_srcs * sizeof *srcs);
        if (!srcs) return -1;
    }
    source *s = &srcs[n_srcs];
    s->im = im;
    snprintf(s->name, sizeof s->name, "%s", name);
    size_t bytes = (size_t)im.w * im.h * 3;
    if (dev_alloc((void **)&s->dev, bytes) || dev_up(s->dev, im.rgb, bytes)) return -1;
    n_srcs++;
    return 0;
}

/* Smooth colour gradients plus noise of random amplitude (0: pure gradients, 255: noise). */
static int add_synthetic(int w, int h) {
    lt_image im = {.w = w, .h = h, .rgb = (uint8_t *)xmalloc((size_t)w * h * 3)};
    int amp = irange(0, 3) == 0 ? 255 : irange(0, 40);
    int fx[3], fy[3];
    for (int c = 0; c < 3; c++) fx[c] = irange(0, 300), fy[c] = irange(0, 300);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int v = (x * fx[c] / (w + 1) + y * fy[c] / (h + 1)) % 256;
                if (amp) v += (int)(next_u64() % (uint64_t)(amp + 1)) - amp / 2;
                im.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    char name[64];
    snprintf(name, sizeof name, "synthetic %dx%d noise %d", w, h, amp);
    return add_source(im, name);
}

static int add_folder(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        printf(TEST_NAME ": FAIL: cannot open LT_RENDER_TEST_IMAGES=%s\n", dir);
        return -1;
    }
    struct dirent *e;
    int added = 0, rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = (uint8_t *)xmalloc((size_t)(n > 0 ? n : 1));
        size_t got = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
        fclose(f);
        lt_image im;
        if (got == (size_t)n && lt_image_decode(buf, got, LT_DEFAULT_MAX_PIXELS, &im) == 0) {
            rc = add_source(im, e->d_name);
            added++;
        } else {
            printf("  (not an image: %s)\n", e->d_name);
        }
        free(buf);
    }
    closedir(d);
    printf("%d decoded images from %s\n", added, dir);
    return rc;
}

/* ---- random recipes ---------------------------------------------------------------------------- */

static void random_transform(lt_transform *t, int size) {
    lt_transform_default(t);
    t->image_size = size;
    double smin = uni() < 0.2 ? 1e-4 : 0.01 + 0.5 * uni();
    t->crop_scale[0] = (float)smin;
    t->crop_scale[1] = (float)(smin + (1.0 - smin) * uni());
    double rmin = 0.2 + 0.8 * uni();
    t->crop_ratio[0] = (float)rmin;
    t->crop_ratio[1] = (float)(1.0 + 4.0 * uni());
    t->hflip_p = 0.5f;
    t->jitter_p = (float)(0.5 + 0.5 * uni());
    t->jitter[0] = (float)(0.95 * uni());
    t->jitter[1] = (float)(0.95 * uni());
    t->jitter[2] = (float)uni();
    t->jitter[3] = (float)(0.5 * uni());
    t->gray_p = (float)(0.4 * uni());
    int b = irange(0, 3);
    t->blur_sigma[0] = 0.0f;
    t->blur_sigma[1] = b == 0 ? 0.0f : b == 1 ? 0.1f : b == 2 ? 1.0f : 4.0f;
}

/* ---- one batch: render on both sides, compare ---------------------------------------------- */

static int n_fail, n_views;

static void describe(const lt_render_job *j, const source *s) {
    const lt_recipe *r = &j->r;
    printf("    image %s; crop x %d y %d w %d h %d; flip %d; jitter %d order %d%d%d%d factors %g %g "
           "%g %g; gray %d; blur %g\n",
           s->name, r->crop[0], r->crop[1], r->crop[2], r->crop[3], r->flip, r->jitter,
           r->order[0], r->order[1], r->order[2], r->order[3], r->factor[0], r->factor[1],
           r->factor[2], r->factor[3], r->gray, r->blur_sigma);
}

static void batch(int n, int size, int batch_no) {
    lt_render_job *jobs = (lt_render_job *)xmalloc((size_t)n * sizeof *jobs);
    int *which = (int *)xmalloc((size_t)n * sizeof *which);
    for (int k = 0; k < n; k++) {
        which[k] = irange(0, n_srcs - 1);
        const source *s = &srcs[which[k]];
        lt_transform t;
        random_transform(&t, size);
        jobs[k].rgb = s->dev;
        jobs[k].w = s->im.w;
        jobs[k].h = s->im.h;
        jobs[k].out = NULL;
        lt_recipe_draw(&t, next_u64(), (uint32_t)next_u64(), (uint32_t)irange(0, 99),
                       (uint32_t)irange(0, 1), s->im.w, s->im.h, &jobs[k].r);
    }
    size_t view = (size_t)size * size * 3, ws_bytes = lt_render_cuda_ws_bytes(jobs, n, size);
    uint8_t *d_out = NULL, *d_ws = NULL;
    uint8_t *got = (uint8_t *)xmalloc(view * n), *ref = (uint8_t *)xmalloc(view);
    int ok = ws_bytes > 0 && dev_alloc((void **)&d_out, view * n) == 0 &&
             dev_alloc((void **)&d_ws, ws_bytes) == 0 &&
             lt_render_cuda(jobs, n, size, d_out, d_ws, ws_bytes, dev_stream()) == 0 &&
             dev_sync() == 0 && dev_down(got, d_out, view * n) == 0;
    if (!ok) {
        printf("batch %3d: %d views at %d: FAIL (%s)\n", batch_no, n, size, lt_err_msg());
        n_fail++;
    } else {
        int bad = 0;
        for (int k = 0; k < n; k++) {
            if (lt_render(&srcs[which[k]].im, &jobs[k].r, size, ref) != 0) {
                printf("  CPU render failed: %s\n", lt_err_msg());
                bad++;
                continue;
            }
            const uint8_t *g = got + view * k;
            size_t diff = 0, first = 0;
            for (size_t i = 0; i < view; i++)
                if (g[i] != ref[i] && diff++ == 0) first = i;
            if (diff) {
                if (bad < 5) {
                    size_t px = first / 3;
                    printf("  view %d: %zu bytes differ; first at y %zu x %zu c %zu: gpu %d cpu %d\n",
                           k, diff, px / size, px % size, first % 3, g[first], ref[first]);
                    describe(&jobs[k], &srcs[which[k]]);
                }
                bad++;
            }
        }
        printf("batch %3d: %3d views at %3d, %8.1f MiB scratch: %s\n", batch_no, n, size,
               ws_bytes / 1048576.0, bad ? "FAIL" : "equal");
        if (bad) n_fail++;
        n_views += n - bad;
    }
    dev_free(d_out);
    dev_free(d_ws);
    free(got);
    free(ref);
    free(jobs);
    free(which);
}

/* The source images as one device block, as an uploaded decoded-image pool: image i at
 * pool + pool_off[i] (pool_w[i] x pool_h[i]). */
static uint8_t *pool;
static int64_t *pool_off;
static int32_t *pool_w, *pool_h;

static int make_pool(void) {
    pool_off = (int64_t *)xmalloc((size_t)(n_srcs + 1) * sizeof *pool_off);
    pool_w = (int32_t *)xmalloc((size_t)n_srcs * sizeof *pool_w);
    pool_h = (int32_t *)xmalloc((size_t)n_srcs * sizeof *pool_h);
    pool_off[0] = 0;
    for (int i = 0; i < n_srcs; i++) {
        pool_w[i] = srcs[i].im.w, pool_h[i] = srcs[i].im.h;
        pool_off[i + 1] = pool_off[i] + (int64_t)srcs[i].im.w * srcs[i].im.h * 3;
    }
    uint8_t *host = (uint8_t *)xmalloc((size_t)pool_off[n_srcs]);
    for (int i = 0; i < n_srcs; i++)
        memcpy(host + pool_off[i], srcs[i].im.rgb, (size_t)(pool_off[i + 1] - pool_off[i]));
    int rc = dev_alloc((void **)&pool, (size_t)pool_off[n_srcs]) ||
             dev_up(pool, host, (size_t)pool_off[n_srcs]);
    free(host);
    return rc;
}

/* lt_render_gpu_pairs: host images up, primary and partner views of samples (some without a
 * partner: zeros), then lt_render_gpu_pairs_resident from the pool, with the same object (its
 * scratch reused), against lt_render. */
static void pairs_batch(int count, int size, int batch_no) {
    lt_render_gpu *rg = NULL;
    lt_image *imgs = (lt_image *)xmalloc((size_t)n_srcs * sizeof *imgs);
    for (int i = 0; i < n_srcs; i++) imgs[i] = srcs[i].im;
    lt_sample *smp = (lt_sample *)xmalloc((size_t)count * sizeof *smp);
    int *img = (int *)xmalloc((size_t)count * 2 * sizeof *img);
    size_t view = (size_t)size * size * 3;
    uint8_t *d_a = NULL, *d_b = NULL;
    uint8_t *got = (uint8_t *)xmalloc(2 * view * count), *ref = (uint8_t *)xmalloc(view);
    int ok = lt_render_gpu_create(&rg) == 0 && dev_alloc((void **)&d_a, view * count) == 0 &&
             dev_alloc((void **)&d_b, view * count) == 0;
    int bad = 0;
    for (int round = 0; round < 2 && ok; round++) {
        for (int k = 0; k < count; k++) {
            for (int q = 0; q < 2; q++) {
                img[2 * k + q] = q == 1 && irange(0, 3) == 0 ? -1 : irange(0, n_srcs - 1);
                lt_transform t;
                random_transform(&t, size);
                if (img[2 * k + q] >= 0)
                    lt_recipe_draw(&t, next_u64(), (uint32_t)k, (uint32_t)round, (uint32_t)q,
                                   imgs[img[2 * k + q]].w, imgs[img[2 * k + q]].h, &smp[k].r[q]);
                else
                    memset(&smp[k].r[q], 0, sizeof smp[k].r[q]);
            }
        }
        if (round == 0) {
            ok = lt_render_gpu_pairs(rg, imgs, n_srcs, smp, img, count, size, d_a, d_b,
                                     dev_stream()) == 0;
        } else { /* the second round from the images already on the device */
            int64_t *img64 = (int64_t *)xmalloc((size_t)count * 2 * sizeof *img64);
            for (int k = 0; k < 2 * count; k++) img64[k] = img[k];
            ok = lt_render_gpu_pairs_resident(rg, pool, pool_off, pool_w, pool_h, n_srcs, smp,
                                              img64, count, size, d_a, d_b, dev_stream()) == 0;
            free(img64);
        }
        ok = ok &&
             dev_sync() == 0 && dev_down(got, d_a, view * count) == 0 &&
             dev_down(got + view * count, d_b, view * count) == 0;
        for (int k = 0; ok && k < 2 * count; k++) {
            const uint8_t *g = got + (k & 1 ? view * count : 0) + view * (k / 2);
            if (img[k] < 0) {
                memset(ref, 0, view);
            } else if (lt_render(&imgs[img[k]], &smp[k / 2].r[k & 1], size, ref) != 0) {
                bad++;
                continue;
            }
            if (memcmp(g, ref, view) != 0 && bad++ < 3)
                printf("  sample %d %s view (image %d) differs\n", k / 2, k & 1 ? "partner" : "primary",
                       img[k]);
        }
    }
    printf("batch %3d: %3d samples at %3d through lt_render_gpu_pairs and _resident: %s\n", batch_no,
           count, size, !ok ? "FAIL" : bad ? "FAIL (views differ)" : "equal");
    if (!ok) printf("  %s\n", lt_err_msg());
    if (!ok || bad) n_fail++;
    else n_views += 4 * count;
    lt_render_gpu_free(rg);
    dev_free(d_a);
    dev_free(d_b);
    free(got);
    free(ref);
    free(smp);
    free(img);
    free(imgs);
}

/* A crop outside its image and too little scratch are errors with a message, not faults. */
static void refusals(void) {
    lt_render_job j;
    memset(&j, 0, sizeof j);
    j.rgb = srcs[0].dev, j.w = srcs[0].im.w, j.h = srcs[0].im.h;
    j.r.crop[0] = 0, j.r.crop[1] = 0, j.r.crop[2] = j.w + 1, j.r.crop[3] = 1;
    uint8_t *d = NULL;
    int ok = dev_alloc((void **)&d, 1 << 20) == 0;
    int bad_crop = ok && lt_render_cuda(&j, 1, 8, d, d, 1 << 20, dev_stream()) == -1 &&
                   strstr(lt_err_msg(), "not inside") != NULL;
    j.r.crop[2] = j.w;
    int small_ws = ok && lt_render_cuda(&j, 1, 8, d, d, 16, dev_stream()) == -1 &&
                   strstr(lt_err_msg(), "scratch") != NULL;
    printf("refusals: crop outside the image %s, too little scratch %s\n",
           bad_crop ? "refused" : "FAIL", small_ws ? "refused" : "FAIL");
    if (!bad_crop || !small_ws) n_fail++;
    dev_free(d);
}

int main(void) {
    int rc = dev_open();
    if (rc == 77) {
        printf(TEST_NAME ": SKIP: no CUDA device (or a CPU-only build)\n");
        return 77;
    }
    if (rc) {
        printf(TEST_NAME ": FAIL: %s\n", lt_err_msg());
        return 1;
    }
    seed_rng();
    static const int fixed[][2] = {{1, 1}, {1, 9}, {9, 1}, {2, 3}, {3, 2}, {13, 17}, {224, 224},
                                   {223, 225}, {640, 480}, {375, 500}, {2600, 1900}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (add_synthetic(fixed[i][0], fixed[i][1])) goto fail;
    for (int i = 0; i < 12; i++)
        if (add_synthetic(irange(1, 900), irange(1, 900))) goto fail;
    {
        const char *dir = getenv("LT_RENDER_TEST_IMAGES");
        if (dir && *dir && add_folder(dir)) goto fail;
    }
    printf("%d source images\n", n_srcs);

    refusals();
    if (make_pool()) goto fail;
    {
        int b = 0;
        for (; b < N_BATCHES; b++) batch(BATCH, 224, b);
        static const int odd[] = {1, 2, 7, 63, 97, 255};
        for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) batch(ODD_BATCH, odd[i], b++);
        pairs_batch(ODD_BATCH, 224, b++);
        pairs_batch(ODD_BATCH / 2, 97, b++);
    }
    printf(TEST_NAME ": %d views equal, %d failed batches\n", n_views, n_fail);
    dev_close();
    return n_fail ? 1 : 0;
fail:
    printf(TEST_NAME ": FAIL: %s\n", lt_err_msg());
    return 1;
}
