/* render_cuda.h: lt_render on the GPU, a batch of views at a time, the same bytes as the CPU.
 *
 * Why it exists: a GPU teacher or student consumes tens of thousands of views a second, more than
 * CPU rendering can make; the views must still be exactly the bytes lt_render (render.h) gives,
 * because lt-train re-renders what lt-embed's teacher saw. Every value is computed by the
 * functions of render_px.h, compiled here by nvcc with -fmad=false (render.c: gcc with
 * -ffp-contract=off); the loops differ, the arithmetic does not. tests/cuda/test_cuda_render.c
 * checks equal bytes over thousands of random recipes.
 *
 * The source images are decoded on the CPU (image/decode.h) and live in device memory, (h, w, 3)
 * uint8 each; a job names one image and one recipe. All work is enqueued on the given stream;
 * scratch is the caller's (no allocation inside). In a build without CUDA these functions fail
 * with a "built without CUDA" message (nn/cuda_stub.c). */
#ifndef LT_RENDER_CUDA_H
#define LT_RENDER_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "image/recipe.h"

/* One view: the source image (device memory, (h, w, 3) uint8, rows w·3 bytes apart) and the
 * recipe to render from it; out (device, (size, size, 3)), or NULL: row k of lt_render_cuda's
 * out. */
typedef struct {
    const uint8_t *rgb;
    int32_t w, h;
    lt_recipe r;
    uint8_t *out;
} lt_render_job;

/* Device scratch bytes lt_render_cuda needs for these jobs (host array of n) at this size. It
 * depends on the crops (rows read) and on which views are blurred. */
size_t lt_render_cuda_ws_bytes(const lt_render_job *jobs, int n, int size);

/* out (device): (n, size, size, 3) uint8, view k = lt_render(job k's image, job k's recipe, size).
 * jobs: host array of n; ws: device scratch of ws_bytes >= lt_render_cuda_ws_bytes(jobs, n,
 * size); stream: a cudaStream_t (NULL: the default stream). Asynchronous: returns once the work
 * is enqueued (the jobs array may be reused at once). -1 + lt_err on a bad size, a crop box
 * outside its image (the message of lt_resize), too little scratch or a CUDA error. */
int lt_render_cuda(const lt_render_job *jobs, int n, int size, uint8_t *out, void *ws,
                   size_t ws_bytes, void *stream);

/* ---- decoded images on the host, views on the device: one batch at a time ---- */

#include "image/decode.h"

/* Pinned staging, a device copy of a batch's decoded images and the renderer's scratch, each
 * grown on demand. One per batch in flight (the staging is reused by the next call). */
typedef struct lt_render_gpu lt_render_gpu;
int lt_render_gpu_create(lt_render_gpu **out);
/* Waits for this object's work, then frees it. NULL is a no-op. */
void lt_render_gpu_free(lt_render_gpu *r);

/* The primary and partner views of count samples, as lt-embed's and lt-train's CPU paths render
 * them: images (host, n_images decoded images) go up on stream, then a (count, size, size, 3)
 * device gets lt_render(images[img[2k]], smp[k].r[0]) and b (device, same shape) gets
 * lt_render(images[img[2k + 1]], smp[k].r[1]), or zeros where img[2k + 1] < 0 (no partner).
 * b may be NULL when no sample has a partner. Asynchronous on stream; the host images may be
 * freed when it returns (they are copied to pinned staging first), and the previous call's
 * upload is waited for before the staging is reused. */
int lt_render_gpu_pairs(lt_render_gpu *r, const lt_image *images, int n_images,
                        const lt_sample *smp, const int *img, int count, int size, uint8_t *a,
                        uint8_t *b, void *stream);

/* A copy of host (bytes) in device memory, *dev (free with lt_render_gpu_free_block); and the
 * device memory free now (0 when there is no device). */
int lt_render_gpu_upload_block(const uint8_t *host, size_t bytes, uint8_t **dev);
void lt_render_gpu_free_block(uint8_t *dev);
size_t lt_render_gpu_free_memory(void);

/* The same from images already in device memory (a decoded-image pool uploaded once: image i is
 * (height[i], width[i], 3) uint8 at block + offset[i], host arrays offset, width, height of
 * n_images): img (count, 2) holds the samples' image indices (-1: no partner). Nothing is uploaded
 * but the job descriptors. */
int lt_render_gpu_pairs_resident(lt_render_gpu *r, const uint8_t *block, const int64_t *offset,
                                 const int32_t *width, const int32_t *height, int64_t n_images,
                                 const lt_sample *smp, const int64_t *img, int count, int size,
                                 uint8_t *a, uint8_t *b, void *stream);

#ifdef __cplusplus
}
#endif

#endif
