/* image_pool.h: the decoded images of a cache (--image-pool of lt-train and lt-embed), so views
 * are rendered without decoding the same stored JPEG/PNG bytes again for every view: lt-train's
 * loader workers render from it, and lt-embed's embedding pass (on the CPU, or uploaded once to
 * the GPU, whose renderer reads it there: image/render_cuda.h lt_render_gpu_pairs_resident).
 *
 * Kinds: host decodes every image of the cache once, at start, on all the process's threads, into
 * one block of host memory that the workers render from; stream decodes per view as before, each
 * worker keeping its few most recently decoded images (lt_recent_images); device (the host
 * block copied to the training device's memory) needs a GPU backend; auto is
 * lt_pool_auto_kind's choice. The pool changes speed, never bytes:
 * a view rendered from the pool is lt_render of the very pixels lt_cache_decode_image gives.
 *
 * Host pool layout (lt_image_pool), kept flat so that a GPU backend can register the block as
 * pinned memory, or copy it whole to device memory (be->alloc(bytes) + be->upload) and use the
 * same offsets there:
 *   block               (bytes) uint8: the N images back to back, in cache order, no padding
 *   image i             (height[i], width[i], 3) uint8 RGB, row-major, at block + offset[i]
 *   offset              (N + 1) int64: offset[0] = 0, offset[i + 1] = offset[i] + 3·w_i·h_i,
 *                       offset[N] = bytes
 *   width, height       (N) int32: the cache's /images/width and /images/height */
#ifndef LT_IMAGE_POOL_H
#define LT_IMAGE_POOL_H

#include <stdint.h>

#include "data/cache.h"
#include "image/decode.h"

typedef enum { LT_POOL_AUTO = 0, LT_POOL_HOST, LT_POOL_STREAM, LT_POOL_DEVICE } lt_pool_kind;

/* "auto", "host", "stream" or "device"; -1 + lt_err ("--image-pool: expected ...") otherwise. */
int lt_pool_kind_parse(const char *s, lt_pool_kind *out);
const char *lt_pool_kind_name(lt_pool_kind k);

/* The default memory budget of the pool: half of MemAvailable (/proc/meminfo; half of the free
 * physical memory where that file is missing), at least 64 MiB. */
int64_t lt_pool_default_budget(void);
/* Bytes of all the cache's images decoded: the sum of 3·w·h over the stored widths and heights
 * (no image is read). */
int64_t lt_pool_decoded_bytes(const lt_cache *c);
/* What --image-pool auto means for images that take `need` bytes decoded, a host budget of
 * `budget` bytes and, when the views are rendered on a GPU, gpu_free bytes free there (0: not on
 * a GPU): device when they take at most a quarter of gpu_free (the model and the renderer's
 * scratch come after) and fit the budget too (they are decoded into host memory on their way
 * up), else host when they fit the budget, else stream. */
lt_pool_kind lt_pool_auto_kind(int64_t need, int64_t budget, int64_t gpu_free);

typedef struct {
    int64_t n;               /* N images */
    int64_t bytes;           /* the block's size, offset[N] */
    uint8_t *block;          /* (bytes) the images back to back (see the header comment) */
    int64_t *offset;         /* (N + 1) */
    int32_t *width, *height; /* (N) */
    int threads;             /* threads that decoded it */
    double decode_s;         /* wall time of the decode */
} lt_image_pool;

/* Decodes every image of c into a new host pool on `threads` threads (>= 1); progress != 0 shows
 * a progress display on stderr once the decode has taken a few seconds. -1 + lt_err naming the
 * first stored image that does not decode (as lt_cache_decode_image names it), or that decodes to
 * another size than the cache records; nothing is kept then. */
int lt_image_pool_build(lt_cache *c, int threads, int progress, lt_image_pool **out);
void lt_image_pool_free(lt_image_pool *p);
/* Image i of the pool as an lt_image that borrows the block (never lt_image_free it). */
lt_image lt_image_pool_image(const lt_image_pool *p, int64_t i);

/* A worker's few most recently decoded images, for the stream kind: at most LT_RECENT_MAX images
 * and cap bytes of pixels (an image larger than cap is decoded, used, and not kept). Zero it
 * before use (then set cap); one per thread. */
#define LT_RECENT_MAX 4
typedef struct {
    int64_t cap, held;             /* bytes allowed, bytes held */
    int n;
    int64_t img[LT_RECENT_MAX];    /* cache image index of each entry */
    lt_image im[LT_RECENT_MAX];
    uint64_t used[LT_RECENT_MAX];  /* last use, for least-recently-used eviction */
    uint64_t tick;
} lt_recent_images;

/* Renders image img of c with recipe r into out (size, size, 3), decoding it only when it is not
 * among the recent ones: the same bytes as lt_cache_render_view. */
int lt_recent_render(lt_recent_images *ri, lt_cache *c, int64_t img, const lt_recipe *r, int size,
                     uint8_t *out);
void lt_recent_free(lt_recent_images *ri);

#endif
