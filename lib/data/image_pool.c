/* image_pool.c: lt-train's decoded images (see image_pool.h): the host pool, decoded once by a
 * few threads that take images in turn, and the stream kind's per-worker recent images. */
#include "data/image_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "image/render.h"

/* ---- the kind, the budget ---- */

static const char *const kind_names[] = {"auto", "host", "stream", "device"};

int lt_pool_kind_parse(const char *s, lt_pool_kind *out) {
    for (int k = 0; k < 4; k++)
        if (!strcmp(s, kind_names[k])) {
            *out = (lt_pool_kind)k;
            return 0;
        }
    return lt_err_set("--image-pool: expected auto, host, stream or device, got '%s'", s);
}

const char *lt_pool_kind_name(lt_pool_kind k) {
    return k >= LT_POOL_AUTO && k <= LT_POOL_DEVICE ? kind_names[k] : "?";
}

int64_t lt_pool_default_budget(void) {
    int64_t avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        long long kib;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1) {
                avail = (int64_t)kib * 1024;
                break;
            }
        fclose(f);
    }
    if (avail < 0) {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
    }
    int64_t b = avail / 2;
    return b > ((int64_t)64 << 20) ? b : ((int64_t)64 << 20);
}

lt_pool_kind lt_pool_auto_kind(int64_t need, int64_t budget, int64_t gpu_free) {
    if (need > budget) return LT_POOL_STREAM;
    return gpu_free > 0 && need <= gpu_free / 4 ? LT_POOL_DEVICE : LT_POOL_HOST;
}

int64_t lt_pool_decoded_bytes(const lt_cache *c) {
    int64_t n = lt_cache_n_images(c), total = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t w, h;
        lt_cache_image_size(c, i, &w, &h);
        total += (int64_t)w * h * 3;
    }
    return total;
}

/* ---- the host pool ---- */

typedef struct {
    lt_cache *c;
    lt_image_pool *p;
    pthread_mutex_t mu;
    int64_t next, done;
    int failed;
    char err[1024];
} build_job;

/* Decodes images in turn until none is left or one failed; 1 when it decoded one, 0 when there
 * is nothing left, -1 on a failure (recorded in j). */
static int decode_next(build_job *j) {
    pthread_mutex_lock(&j->mu);
    int64_t i = j->failed ? j->p->n : j->next++;
    pthread_mutex_unlock(&j->mu);
    if (i >= j->p->n) return 0;
    lt_image im;
    int rc = lt_cache_decode_image(j->c, i, &im);
    if (rc == 0 && (im.w != j->p->width[i] || im.h != j->p->height[i])) {
        rc = lt_err_set("stored image %lld (%s): decodes to %dx%d pixels, but the cache records "
                        "%dx%d: the cache is damaged; rebuild it with lt-embed --overwrite",
                        (long long)i, lt_cache_image_path(j->c, i), im.w, im.h,
                        (int)j->p->width[i], (int)j->p->height[i]);
    }
    if (rc == 0) memcpy(j->p->block + j->p->offset[i], im.rgb, (size_t)im.w * im.h * 3);
    lt_image_free(&im);
    pthread_mutex_lock(&j->mu);
    if (rc != 0 && !j->failed) { /* the first failure's message */
        j->failed = 1;
        snprintf(j->err, sizeof j->err, "%s", lt_err_msg());
    }
    if (rc == 0) j->done++;
    pthread_mutex_unlock(&j->mu);
    return rc == 0 ? 1 : -1;
}

static void *build_thread(void *arg) {
    while (decode_next(arg) > 0) {
    }
    return NULL;
}

void lt_image_pool_free(lt_image_pool *p) {
    if (!p) return;
    free(p->block);
    free(p->offset);
    free(p->width);
    free(p->height);
    free(p);
}

lt_image lt_image_pool_image(const lt_image_pool *p, int64_t i) {
    lt_image im = {.w = p->width[i], .h = p->height[i], .rgb = p->block + p->offset[i]};
    return im;
}

int lt_image_pool_build(lt_cache *c, int threads, int progress, lt_image_pool **out) {
    *out = NULL;
    double t0 = lt_now();
    const int64_t N = lt_cache_n_images(c);
    lt_image_pool *p = lt_calloc(1, sizeof *p, "image pool");
    if (!p) return -1;
    p->n = N;
    p->offset = lt_malloc((size_t)(N + 1) * sizeof *p->offset, "image pool offsets");
    p->width = lt_malloc((size_t)(N > 0 ? N : 1) * sizeof *p->width, "image pool widths");
    p->height = lt_malloc((size_t)(N > 0 ? N : 1) * sizeof *p->height, "image pool heights");
    if (!p->offset || !p->width || !p->height) {
        lt_image_pool_free(p);
        return -1;
    }
    p->offset[0] = 0;
    for (int64_t i = 0; i < N; i++) {
        lt_cache_image_size(c, i, &p->width[i], &p->height[i]);
        p->offset[i + 1] = p->offset[i] + (int64_t)p->width[i] * p->height[i] * 3;
    }
    p->bytes = p->offset[N];
    char what[64];
    snprintf(what, sizeof what, "the image pool (%lld images decoded)", (long long)N);
    if (!(p->block = lt_malloc(p->bytes > 0 ? (size_t)p->bytes : 1, what))) {
        lt_image_pool_free(p);
        return -1;
    }

    build_job j = {.c = c, .p = p};
    pthread_mutex_init(&j.mu, NULL);
    if (threads < 1) threads = 1;
    if (threads > N) threads = N > 0 ? (int)N : 1;
    pthread_t *th = threads > 1 ? lt_calloc((size_t)threads - 1, sizeof *th, "pool threads") : NULL;
    int started = 0;
    if (th)
        for (; started < threads - 1; started++)
            if (pthread_create(&th[started], NULL, build_thread, &j) != 0) break;
    p->threads = started + 1;
    /* this thread decodes too, and draws the progress once the decode has taken 2 s */
    lt_progress pr;
    int shown = 0;
    while (decode_next(&j) > 0) {
        if (!progress) continue;
        pthread_mutex_lock(&j.mu);
        int64_t done = j.done;
        pthread_mutex_unlock(&j.mu);
        if (!shown && lt_now() - t0 >= 2.0) {
            lt_progress_start(&pr, "images", N);
            pr.t_start = t0;
            shown = 1;
        }
        if (shown) lt_progress_update(&pr, done);
    }
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
    free(th);
    pthread_mutex_destroy(&j.mu);
    if (shown) {
        pr.done = j.done;
        lt_progress_end(&pr);
    }
    if (j.failed) {
        lt_image_pool_free(p);
        return lt_err_set("%s", j.err);
    }
    p->decode_s = lt_now() - t0;
    *out = p;
    return 0;
}

/* ---- the stream kind's recent images ---- */

int lt_recent_render(lt_recent_images *ri, lt_cache *c, int64_t img, const lt_recipe *r, int size,
                     uint8_t *out) {
    ri->tick++;
    for (int k = 0; k < ri->n; k++)
        if (ri->img[k] == img) {
            ri->used[k] = ri->tick;
            return lt_render(&ri->im[k], r, size, out);
        }
    lt_image im;
    if (lt_cache_decode_image(c, img, &im) != 0) return -1;
    int rc = lt_render(&im, r, size, out);
    int64_t bytes = (int64_t)im.w * im.h * 3;
    if (rc != 0 || bytes > ri->cap) {
        lt_image_free(&im);
        return rc;
    }
    /* make room: evict the least recently used until it fits */
    while (ri->n > 0 && (ri->n == LT_RECENT_MAX || ri->held + bytes > ri->cap)) {
        int old = 0;
        for (int k = 1; k < ri->n; k++)
            if (ri->used[k] < ri->used[old]) old = k;
        ri->held -= (int64_t)ri->im[old].w * ri->im[old].h * 3;
        lt_image_free(&ri->im[old]);
        ri->n--;
        ri->img[old] = ri->img[ri->n];
        ri->im[old] = ri->im[ri->n];
        ri->used[old] = ri->used[ri->n];
    }
    ri->img[ri->n] = img;
    ri->im[ri->n] = im;
    ri->used[ri->n] = ri->tick;
    ri->n++;
    ri->held += bytes;
    return 0;
}

void lt_recent_free(lt_recent_images *ri) {
    for (int k = 0; k < ri->n; k++) lt_image_free(&ri->im[k]);
    ri->n = 0;
    ri->held = 0;
}
