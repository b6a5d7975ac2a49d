/* loader.h: lt-train's sample loader: the epoch order, and worker threads that render each
 * sample's primary and partner views with the same function lt-embed used (image/render.h), ahead
 * of the compute, from the images of a decoded pool or decoding the stored bytes per view
 * (data/image_pool.h; the same bytes either way). The batch carries the uint8 views and the stored λ;
 * mixing and normalising are the backend's mix_normalize (nn/backend.h), so a GPU backend copies
 * bytes, not floats, and does that work on the device.
 *
 * Epoch order (documented in README.md): epoch e visits the N images in a permutation drawn from
 * the RNG keyed (seed, e, "EPOC"); image i is shown with view (e + o_i) mod V, where the offset
 * o_i is drawn from the RNG keyed (seed, i, "VOFF"), so every view of an image is seen exactly
 * once every V epochs and neighbouring images are at different views. With shuffle off, epoch e
 * visits images 0..N-1 in order, each with view e mod V. Batches are consecutive runs of B images
 * of that order, the last partial batch dropped (steps_per_epoch = N / B). The content of global
 * step k depends only on (seed, k): never on the number of workers or on timing, so a resumed run
 * sees exactly the batches an uninterrupted one would. */
#ifndef LT_LOADER_H
#define LT_LOADER_H

#include <stdint.h>

#include "data/cache.h"
#include "data/image_pool.h"

typedef struct {
    lt_cache *cache;
    const char *cache_path;  /* for messages */
    int batch_size;          /* B: the global batch */
    int part, parts;         /* data parallel: deliver rows part·B/parts .. (part+1)·B/parts − 1
                                of each global batch (parts divides B); 0, 0: all of it */
    int workers;             /* threads that fill batches (>= 1) */
    int prefetch;            /* batches ready ahead of the consumer (>= 1) */
    uint64_t seed;
    int shuffle;
    int64_t first_step;      /* global step of the first batch delivered */
    int64_t last_step;       /* one past the last step to deliver */
    int64_t max_resident_bytes; /* embeddings are kept in memory when they fit under this */
    int recipes_only;        /* deliver each row's sample (recipes, images) instead of rendered
                                views: the GPU renders them (--image-pool device); a, b NULL */
    const lt_image_pool *pool;  /* every image decoded (host pool, data/image_pool.h), owned by
                                   the caller and kept until lt_loader_free; NULL: the workers
                                   decode per view (the stream kind) */
    int64_t recent_bytes;       /* without a pool: bytes of recently decoded images each worker
                                   may keep (lt_recent_images); 0: none, decode every view */
} lt_loader_opts;

typedef struct {
    int64_t step, epoch;
    int B, size, D;  /* B: the rows delivered (B/parts of the global batch when data parallel) */
    uint8_t *a, *b;  /* (B, size, size, 3) primary and partner views as rendered (a sample
                        without a partner: b's row is zero and its λ is 1) */
    float *lambda;   /* (B) mixup weight of a */
    float *t;        /* (B, D) teacher embeddings, L2-normalised again after the float16 decode */
    int64_t *sample; /* (B) cache sample index of each row */
    lt_sample *smp;  /* (B) with recipes_only: each row's sample (images, recipes, λ); else NULL */
} lt_batch;

typedef struct lt_loader lt_loader;

/* Sample index of position pos (0..N-1) of epoch `epoch` (see the header comment). perm is
 * that epoch's permutation from lt_epoch_perm (NULL when not shuffled). */
int64_t lt_epoch_sample(const uint32_t *perm, int64_t pos, uint64_t seed, int64_t epoch,
                        int64_t N, int V, int shuffle);
/* Fills perm (N) with epoch e's order. */
void lt_epoch_perm(uint32_t *perm, uint64_t seed, int64_t epoch, int64_t N);

/* Reads every recipe and, when they fit under max_resident_bytes, every teacher embedding; a
 * non-finite resident embedding is an error naming its sample. Then starts the workers. */
int lt_loader_start(const lt_loader_opts *o, lt_loader **out);
/* The batch of the next step, in order; blocks until it is ready. NULL + lt_err on a failure
 * (a stored image that no longer decodes...) or when past last_step. */
lt_batch *lt_loader_next(lt_loader *l);
/* Hands the batch's buffers back for reuse. */
void lt_loader_release(lt_loader *l, lt_batch *b);
/* Stops the workers and frees everything. */
void lt_loader_free(lt_loader *l);
/* Seconds the consumer spent waiting in lt_loader_next so far (data-bound time). */
double lt_loader_wait_seconds(const lt_loader *l);

#endif
