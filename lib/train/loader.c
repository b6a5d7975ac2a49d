/* loader.c: worker threads that build lt-train's batches ahead of the compute (see loader.h).
 *
 * A ring of K = workers + prefetch batch slots; step k always lives in slot k mod K. Workers take
 * the next step to fill, in order, as soon as its slot is free; the consumer takes steps in
 * order. Every sample of a batch is rendered from the cache's stored bytes and recipe with
 * lt_render, exactly as lt-embed rendered it for the teacher: from the image pool's decoded
 * pixels when there is one, else decoding the bytes (keeping a few recent images). */
#include "train/loader.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "image/render.h"

#define TAG_EPOCH 0x45504F43u /* "EPOC" */
#define TAG_VOFF 0x564F4646u  /* "VOFF" */

enum { SLOT_FREE = 0, SLOT_FILLING, SLOT_READY };

typedef struct {
    lt_batch b;
    int state;
} slot;

struct lt_loader {
    lt_loader_opts o;
    int64_t N, S, steps_per_epoch;
    int64_t first_row; /* data parallel: the first row of the global batch this loader delivers */
    int V, size, D;
    lt_sample *samples;      /* (S) every recipe, read once */
    uint8_t *emb_rows;       /* (S) resident stored embedding rows (emb_row bytes each), or NULL */
    lt_emb_type emb_type;
    size_t emb_row;
    int K;
    slot *slots;
    pthread_t *threads;
    int n_threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t next_fill, next_take;
    int stop, failed;
    char err[1024];
    double wait_s;
};

void lt_epoch_perm(uint32_t *perm, uint64_t seed, int64_t epoch, int64_t N) {
    lt_rng r;
    lt_rng_init(&r, seed, (uint32_t)epoch, (uint32_t)(epoch >> 32), TAG_EPOCH);
    for (int64_t i = 0; i < N; i++) perm[i] = (uint32_t)i;
    lt_rng_shuffle_u32(&r, perm, (uint32_t)N);
}

int64_t lt_epoch_sample(const uint32_t *perm, int64_t pos, uint64_t seed, int64_t epoch,
                        int64_t N, int V, int shuffle) {
    (void)N;
    if (!shuffle) return pos * V + (int64_t)(epoch % V);
    int64_t img = perm[pos];
    lt_rng r;
    lt_rng_init(&r, seed, (uint32_t)img, (uint32_t)(img >> 32), TAG_VOFF);
    int64_t off = (int64_t)lt_rng_below(&r, (uint64_t)V);
    return img * V + (epoch + off) % V;
}

/* ---- filling one batch ---- */

typedef struct {
    uint32_t *perm;      /* (N) permutation of perm_epoch */
    int64_t perm_epoch;  /* -1: none yet */
    lt_recent_images recent; /* without a pool: this worker's recently decoded images */
} worker_scratch;

/* Image img rendered with recipe r into out (size, size, 3). */
static int render_view(lt_loader *l, worker_scratch *ws, int64_t img, const lt_recipe *r,
                       uint8_t *out) {
    if (l->o.pool) {
        lt_image im = lt_image_pool_image(l->o.pool, img);
        return lt_render(&im, r, l->size, out);
    }
    /* without room to keep one (cap 0), it decodes and renders and keeps nothing */
    return lt_recent_render(&ws->recent, l->o.cache, img, r, l->size, out);
}

static int teacher_row(lt_loader *l, int64_t s, float *t) {
    const int D = l->D;
    if (l->emb_rows)
        lt_emb_decode_rows(l->emb_type, l->emb_rows + (size_t)s * l->emb_row, 1, D, t);
    else if (lt_cache_embeddings(l->o.cache, s, 1, t) != 0)
        return -1;
    /* stored rows are L2-normalised before rounding; normalise again after the decode */
    double ss = 0;
    for (int d = 0; d < D; d++) ss += (double)t[d] * t[d];
    float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (int d = 0; d < D; d++) t[d] *= inv;
    return 0;
}

static int fill_batch(lt_loader *l, worker_scratch *ws, int64_t step, lt_batch *b) {
    int64_t epoch = step / l->steps_per_epoch;
    int64_t pos0 = (step % l->steps_per_epoch) * l->o.batch_size + l->first_row;
    if (l->o.shuffle && ws->perm_epoch != epoch) {
        lt_epoch_perm(ws->perm, l->o.seed, epoch, l->N);
        ws->perm_epoch = epoch;
    }
    b->step = step;
    b->epoch = epoch;
    const size_t view = (size_t)l->size * l->size * 3;
    for (int i = 0; i < b->B; i++) {
        int64_t s = lt_epoch_sample(ws->perm, pos0 + i, l->o.seed, epoch, l->N, l->V, l->o.shuffle);
        const lt_sample *sm = &l->samples[s];
        b->sample[i] = s;
        int mixed = sm->image[1] >= 0;
        if (b->smp) {
            b->smp[i] = *sm;
        } else {
            uint8_t *va = b->a + (size_t)i * view, *vb = b->b + (size_t)i * view;
            if (render_view(l, ws, sm->image[0], &sm->r[0], va) != 0) return -1;
            if (mixed && render_view(l, ws, sm->image[1], &sm->r[1], vb) != 0) return -1;
            /* no partner: λ = 1 weighs the (zero) partner by exactly 0, as no mix */
            if (!mixed) memset(vb, 0, view);
        }
        b->lambda[i] = mixed ? sm->lambda : 1.0f;
        if (teacher_row(l, s, b->t + (int64_t)i * l->D) != 0) return -1;
    }
    return 0;
}

static void *worker_main(void *arg) {
    lt_loader *l = arg;
    worker_scratch ws = {0};
    ws.perm_epoch = -1;
    ws.recent.cap = l->o.recent_bytes; /* used only without a pool */
    ws.perm = l->o.shuffle ? malloc((size_t)l->N * sizeof *ws.perm) : NULL;
    int oom = l->o.shuffle && !ws.perm;
    pthread_mutex_lock(&l->mu);
    if (oom && !l->failed) {
        l->failed = 1;
        snprintf(l->err, sizeof l->err, "out of memory for the loader's buffers");
        pthread_cond_broadcast(&l->cv);
    }
    for (;;) {
        while (!l->stop && !l->failed &&
               (l->next_fill >= l->o.last_step || l->next_fill >= l->next_take + l->K ||
                l->slots[l->next_fill % l->K].state != SLOT_FREE))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop || l->failed) break;
        int64_t step = l->next_fill++;
        slot *sl = &l->slots[step % l->K];
        sl->state = SLOT_FILLING;
        pthread_mutex_unlock(&l->mu);
        int rc = fill_batch(l, &ws, step, &sl->b);
        pthread_mutex_lock(&l->mu);
        if (rc != 0 && !l->failed) {
            l->failed = 1;
            snprintf(l->err, sizeof l->err, "%s", lt_err_msg());
        }
        sl->state = SLOT_READY;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    free(ws.perm);
    lt_recent_free(&ws.recent);
    return NULL;
}

/* ---- setup ---- */

static int load_embeddings(lt_loader *l) {
    const lt_cache_meta *m = lt_cache_meta_of(l->o.cache);
    l->emb_type = m->emb_type;
    l->emb_row = lt_emb_row_bytes(m->emb_type, (int)l->D);
    if (l->S * (int64_t)l->emb_row > l->o.max_resident_bytes) {
        lt_debug("embeddings (%lld MiB) are read from the cache per sample",
                 (long long)(l->S * (int64_t)l->emb_row >> 20));
        return 0;
    }
    const int64_t chunk = 4096;
    float *tmp = lt_malloc((size_t)chunk * l->D * sizeof(float), "embedding staging");
    l->emb_rows = lt_malloc((size_t)l->S * l->emb_row, "embeddings");
    if (!tmp || !l->emb_rows) {
        free(tmp);
        return -1;
    }
    for (int64_t s = 0; s < l->S; s += chunk) {
        int64_t n = l->S - s < chunk ? l->S - s : chunk;
        uint8_t *rows = l->emb_rows + (size_t)s * l->emb_row;
        if (lt_cache_embeddings_raw(l->o.cache, s, n, rows) != 0) {
            free(tmp);
            return -1;
        }
        lt_emb_decode_rows(l->emb_type, rows, n, (int)l->D, tmp);
        for (int64_t k = 0; k < n * l->D; k++)
            if (!isfinite(tmp[k])) {
                int64_t bad = s + k / l->D;
                free(tmp);
                return lt_err_set("%s: the teacher embedding of sample %lld (image %lld, %s, view "
                                  "%lld) is not finite: the cache is damaged, or its teacher "
                                  "gave NaN; rebuild it with lt-embed --overwrite",
                                  l->o.cache_path, (long long)bad, (long long)(bad / l->V),
                                  lt_cache_image_path(l->o.cache, bad / l->V),
                                  (long long)(bad % l->V));
            }
    }
    free(tmp);
    return 0;
}

double lt_loader_wait_seconds(const lt_loader *l) { return l->wait_s; }

int lt_loader_start(const lt_loader_opts *o, lt_loader **out) {
    *out = NULL;
    lt_loader *l = lt_calloc(1, sizeof *l, "loader");
    if (!l) return -1;
    l->o = *o;
    const lt_cache_meta *m = lt_cache_meta_of(o->cache);
    l->N = lt_cache_n_images(o->cache);
    l->S = lt_cache_n_samples(o->cache);
    l->V = m->views_per_image;
    l->size = m->image_size;
    l->D = m->embed_dim;
    if (o->batch_size < 1 || o->batch_size > l->N) {
        int64_t n = l->N;
        free(l);
        return lt_err_set("batch size %d is larger than the %lld images of the cache (the last "
                          "partial batch of each epoch is dropped): use --batch-size %lld or less",
                          o->batch_size, (long long)n, (long long)n);
    }
    l->steps_per_epoch = l->N / o->batch_size;
    int rows = o->batch_size;
    if (o->parts > 1) {
        if (o->batch_size % o->parts != 0 || o->part < 0 || o->part >= o->parts) {
            free(l);
            return lt_err_set("loader: part %d of %d of a batch of %d", o->part, o->parts,
                              o->batch_size);
        }
        rows = o->batch_size / o->parts;
        l->first_row = (int64_t)o->part * rows;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->next_fill = l->next_take = o->first_step;
    l->samples = lt_malloc((size_t)l->S * sizeof *l->samples, "sample recipes");
    if (!l->samples || lt_cache_samples(o->cache, 0, l->S, l->samples) != 0 ||
        load_embeddings(l) != 0) {
        lt_loader_free(l);
        return -1;
    }
    l->K = (o->workers > 0 ? o->workers : 1) + (o->prefetch > 0 ? o->prefetch : 1);
    l->slots = lt_calloc((size_t)l->K, sizeof *l->slots, "batch slots");
    if (!l->slots) {
        lt_loader_free(l);
        return -1;
    }
    size_t xn = (size_t)rows * l->size * l->size * 3;
    for (int k = 0; k < l->K; k++) {
        lt_batch *b = &l->slots[k].b;
        b->B = rows;
        b->size = l->size;
        b->D = l->D;
        if (o->recipes_only) {
            b->smp = lt_malloc((size_t)rows * sizeof *b->smp, "batch recipes");
        } else {
            b->a = lt_malloc(xn, "batch views");
            b->b = lt_malloc(xn, "batch partner views");
        }
        b->lambda = lt_malloc((size_t)rows * sizeof(float), "batch mixup weights");
        b->t = lt_malloc((size_t)rows * l->D * sizeof(float), "batch teacher");
        b->sample = lt_malloc((size_t)rows * sizeof(int64_t), "batch samples");
        if (!(o->recipes_only ? b->smp != NULL : b->a && b->b) || !b->lambda || !b->t ||
            !b->sample) {
            lt_loader_free(l);
            return -1;
        }
    }
    int nw = o->workers > 0 ? o->workers : 1;
    l->threads = lt_calloc((size_t)nw, sizeof *l->threads, "loader threads");
    if (!l->threads) {
        lt_loader_free(l);
        return -1;
    }
    for (int i = 0; i < nw; i++) {
        if (pthread_create(&l->threads[i], NULL, worker_main, l) != 0) {
            lt_loader_free(l);
            return lt_err_set("cannot start loader thread");
        }
        l->n_threads++;
    }
    *out = l;
    return 0;
}

lt_batch *lt_loader_next(lt_loader *l) {
    double t0 = lt_now();
    pthread_mutex_lock(&l->mu);
    if (l->next_take >= l->o.last_step) {
        pthread_mutex_unlock(&l->mu);
        lt_err_set("no more steps");
        return NULL;
    }
    slot *sl = &l->slots[l->next_take % l->K];
    while (!l->failed && !(sl->state == SLOT_READY && sl->b.step == l->next_take))
        pthread_cond_wait(&l->cv, &l->mu);
    if (l->failed) {
        lt_err_set("%s", l->err);
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    l->next_take++;
    pthread_mutex_unlock(&l->mu);
    l->wait_s += lt_now() - t0;
    return &sl->b;
}

void lt_loader_release(lt_loader *l, lt_batch *b) {
    pthread_mutex_lock(&l->mu);
    l->slots[b->step % l->K].state = SLOT_FREE;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void lt_loader_free(lt_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->n_threads; i++) pthread_join(l->threads[i], NULL);
    free(l->threads);
    if (l->slots)
        for (int k = 0; k < l->K; k++) {
            free(l->slots[k].b.a);
            free(l->slots[k].b.b);
            free(l->slots[k].b.lambda);
            free(l->slots[k].b.t);
            free(l->slots[k].b.sample);
            free(l->slots[k].b.smp);
        }
    free(l->slots);
    free(l->samples);
    free(l->emb_rows);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
