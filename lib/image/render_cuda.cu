/* render_cuda.cu: the CUDA renderer of image/render_cuda.h, lt_render's steps as kernels over a
 * batch of jobs.
 *
 * Why it exists: see render_cuda.h. The arithmetic is render_px.h's, compiled with -fmad=false
 * (the Makefile), so each byte is the CPU's. The kernels, in lt_render's order:
 *   k_tables    per (job, axis, output index): the resample taps (lt_rs_taps), and the blur
 *               weights of the job (lt_blur_weights, one thread);
 *   k_horiz     per (job, source row of the crop that the vertical pass reads, output column):
 *               the horizontal pass into uint8 scratch (rows, size, 3), as PIL and render.c do;
 *   k_vert      per (job, output pixel): the vertical pass, written flipped when the recipe says;
 *   k_color     one block per job: colour jitter in the recipe's order (contrast's grey sum is an
 *               integer block reduction, exact in any order), then PIL grayscale;
 *   k_blur_h/v  per (job, value): the separable Gaussian blur, exact int32 intermediate.
 * A job whose step is the identity returns at once in that kernel.
 *
 * Scratch layout (ws, all offsets 256-byte aligned): the device copy of the job descriptors
 * (n rjob), then per job: horizontal and vertical tap tables (size, k) int32 with their first /
 * count (size) int32 and (size, k) double scratch, the horizontal pass (rows, size, 3) uint8,
 * and for a blurred view the blur weights (radius + 1) int32, (radius + 1) double and the
 * (size, size, 3) int32 horizontal blur pass. */
#include "image/render_cuda.h"

#include "image/render_px.h"

extern "C" {
#include "core/error.h"
}

/* LT_CUDA_EMULATE: the CPU test tests/unit/test_render_emu.cpp compiles this file as host C++
 * (tests/unit/cuda_emu.h stands in for the runtime and runs the kernels' blocks and threads), so
 * CI checks the kernels' indexing without a GPU. */
#ifndef LT_CUDA_EMULATE
#include <cuda_runtime.h>
#define LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

#include <stdlib.h>
#include <string.h>

/* A job as the kernels see it: the recipe's numbers and where its scratch lives. */
typedef struct {
    const uint8_t *src; /* (h, w, 3) */
    uint8_t *dst;       /* (size, size, 3) the view */
    int w;
    int cx, cy, cw, ch; /* crop box */
    int y0, rows;       /* crop rows [y0, y0 + rows) feed the vertical pass */
    int kh, kv;         /* taps per output, horizontal / vertical */
    int flip, jitter, gray;
    int order[4];
    float factor[4];
    float sigma;
    int radius;         /* blur radius (0: no blur) */
    size_t th, tv;      /* tap tables: coef (size, k) int32, first (size), count (size) */
    size_t dh, dv;      /* (size, k) double scratch of lt_rs_taps */
    size_t tmp;         /* (rows, size, 3) uint8 */
    size_t bw, bpdf;    /* blur weights (radius + 1) int32, (radius + 1) double */
    size_t btmp;        /* (size, size, 3) int32 */
} rjob;

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static size_t table_bytes(int size, int k) {
    return align256((size_t)size * (size_t)k * sizeof(int32_t) + 2 * (size_t)size * sizeof(int32_t));
}

/* Fills j's geometry and scratch offsets from *at on (at advances); 0, or -1 + lt_err on a crop
 * box outside its image. */
static int plan_job(const lt_render_job *in, int size, rjob *j, size_t *at) {
    /* j->dst: set by the caller */
    const int32_t *c = in->r.crop;
    if (!in->rgb || in->w < 1 || in->h < 1) return lt_err_set("render: empty source image");
    if (c[2] < 1 || c[3] < 1 || c[0] < 0 || c[1] < 0 || c[0] > in->w - c[2] || c[1] > in->h - c[3])
        return lt_err_set("render: crop (x %d, y %d, w %d, h %d) is not inside the %dx%d image",
                          c[0], c[1], c[2], c[3], in->w, in->h);
    uint8_t *dst = j->dst;
    memset(j, 0, sizeof *j);
    j->dst = dst;
    j->src = in->rgb;
    j->w = in->w;
    j->cx = c[0], j->cy = c[1], j->cw = c[2], j->ch = c[3];
    int lo, hi;
    lt_rs_span(c[3], size, 0, size, &lo, &hi);
    j->y0 = lo;
    j->rows = hi - lo;
    j->kh = lt_rs_ksize(c[2], size);
    j->kv = lt_rs_ksize(c[3], size);
    j->flip = in->r.flip;
    j->jitter = in->r.jitter;
    j->gray = in->r.gray;
    for (int k = 0; k < 4; k++) {
        j->order[k] = in->r.order[k];
        j->factor[k] = in->r.factor[k];
    }
    j->sigma = in->r.blur_sigma;
    j->radius = j->sigma > 0.0f ? lt_blur_radius(j->sigma, size, size) : 0;
    j->th = *at, *at += table_bytes(size, j->kh);
    j->tv = *at, *at += table_bytes(size, j->kv);
    j->dh = *at, *at += align256((size_t)size * j->kh * sizeof(double));
    j->dv = *at, *at += align256((size_t)size * j->kv * sizeof(double));
    j->tmp = *at, *at += align256((size_t)(j->rows > 0 ? j->rows : 1) * size * 3);
    if (j->radius > 0) {
        j->bw = *at, *at += align256((size_t)(j->radius + 1) * sizeof(int32_t));
        j->bpdf = *at, *at += align256((size_t)(j->radius + 1) * sizeof(double));
        j->btmp = *at, *at += align256((size_t)size * size * 3 * sizeof(int32_t));
    }
    return 0;
}

extern "C" size_t lt_render_cuda_ws_bytes(const lt_render_job *jobs, int n, int size) {
    if (n < 1 || size < 1) return 0;
    size_t at = align256((size_t)n * sizeof(rjob));
    for (int i = 0; i < n; i++) {
        rjob j;
        j.dst = NULL;
        if (plan_job(&jobs[i], size, &j, &at) != 0) return 0; /* lt_render_cuda says why */
    }
    return at;
}

/* ---- kernels ---------------------------------------------------------------------------------- */

/* The pointers of a table at offset off: coef (size, k), first (size), count (size). */
struct table {
    int32_t *coef, *first, *count;
};
__device__ static table table_at(uint8_t *ws, size_t off, int size, int k) {
    table t;
    t.coef = (int32_t *)(ws + off);
    t.first = t.coef + (size_t)size * k;
    t.count = t.first + size;
    return t;
}

/* grid (ceil(size / 128), n, 2), block 128: axis 0 horizontal, 1 vertical. */
__global__ static void k_tables(uint8_t *ws, int size) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    int axis = blockIdx.z;
    if (axis == 0 && o == 0 && j->radius > 0)
        lt_blur_weights(j->sigma, j->radius, (double *)(ws + j->bpdf), (int32_t *)(ws + j->bw));
    if (o >= size) return;
    int k = axis == 0 ? j->kh : j->kv;
    table t = table_at(ws, axis == 0 ? j->th : j->tv, size, k);
    double *w = (double *)(ws + (axis == 0 ? j->dh : j->dv)) + (size_t)o * k;
    int first;
    int count = lt_rs_taps(axis == 0 ? j->cw : j->ch, size, o, w, t.coef + (size_t)o * k, &first);
    t.first[o] = axis == 0 ? first : first - j->y0; /* vertical: a row of the scratch */
    t.count[o] = count;
}

/* grid (x, n), block 256: tmp (rows, size, 3) = the horizontal pass over crop rows y0.. */
__global__ static void k_horiz(uint8_t *ws, int size) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    table t = table_at(ws, j->th, size, j->kh);
    uint8_t *tmp = ws + j->tmp;
    int64_t total = (int64_t)j->rows * size;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int r = (int)(i / size), x = (int)(i % size);
        const int32_t *k = t.coef + (size_t)x * j->kh;
        const uint8_t *p = j->src + ((size_t)(j->cy + j->y0 + r) * j->w + j->cx + t.first[x]) * 3;
        lt_rs_pixel3(p, k, t.count[x], tmp + (size_t)i * 3);
    }
}

/* grid (x, n), block 256: the view (size, size, 3) = the vertical pass, flipped when asked. */
__global__ static void k_vert(uint8_t *ws, int size) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    table t = table_at(ws, j->tv, size, j->kv);
    const uint8_t *tmp = ws + j->tmp;
    uint8_t *view = j->dst;
    int64_t total = (int64_t)size * size;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int y = (int)(i / size), x = (int)(i % size);
        const int32_t *k = t.coef + (size_t)y * j->kv;
        const uint8_t *col = tmp + ((size_t)t.first[y] * size + x) * 3;
        int xo = j->flip ? size - 1 - x : x;
        uint8_t *o = view + ((size_t)y * size + xo) * 3;
        for (int c = 0; c < 3; c++) o[c] = lt_rs_pixel(col + c, (long)size * 3, k, t.count[y]);
    }
}

#ifndef COLOR_THREADS
#define COLOR_THREADS 512
#endif

/* Σ over the block of v (int64, exact): every thread gets the total. */
__device__ static int64_t block_sum(int64_t v, int64_t *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    int64_t total = sh[0];
    __syncthreads();
    return total;
}

__device__ static uint8_t torch_gray_px(const uint8_t *p) {
    return lt_px_gray_torch(lt_px_gray_r(p[0]), lt_px_gray_g(p[1]), lt_px_gray_b(p[2]));
}

/* grid n, block COLOR_THREADS: colour jitter in the recipe's order, then grayscale, in place. */
__global__ static void k_color(const uint8_t *ws, int size) {
    __shared__ int64_t sh[COLOR_THREADS];
    const rjob *j = (const rjob *)ws + blockIdx.x;
    if (!j->jitter && !j->gray) return; /* the whole block leaves together */
    uint8_t *px = j->dst;
    const int64_t n = (int64_t)size * size;
    if (j->jitter) {
        for (int q = 0; q < 4; q++) {
            int op = j->order[q];
            float f = j->factor[op];
            if (op == LT_JIT_HUE ? f == 0.0f : f == 1.0f) continue;
            if (op == LT_JIT_BRIGHTNESS) {
                for (int64_t i = threadIdx.x; i < n * 3; i += blockDim.x)
                    px[i] = lt_px_brightness(px[i], f);
            } else if (op == LT_JIT_CONTRAST) {
                int64_t part = 0;
                for (int64_t i = threadIdx.x; i < n; i += blockDim.x) part += torch_gray_px(px + 3 * i);
                float other = lt_px_contrast_other(f, block_sum(part, sh), n); /* syncs */
                for (int64_t i = threadIdx.x; i < n * 3; i += blockDim.x)
                    px[i] = lt_px_contrast(px[i], f, other);
            } else if (op == LT_JIT_SATURATION) {
                float g1 = lt_px_sat_g1(f);
                for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
                    uint8_t *p = px + 3 * i;
                    float gray = lt_px_sat_gp(torch_gray_px(p), g1);
                    uint8_t r = lt_px_sat(lt_px_sat_fp(p[0], f), gray),
                            g = lt_px_sat(lt_px_sat_fp(p[1], f), gray),
                            b = lt_px_sat(lt_px_sat_fp(p[2], f), gray);
                    p[0] = r, p[1] = g, p[2] = b;
                }
            } else if (op == LT_JIT_HUE) {
                for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
                    uint8_t *p = px + 3 * i;
                    lt_px_hue((float)p[0] / 255.0f, (float)p[1] / 255.0f, (float)p[2] / 255.0f, f, p);
                }
            }
            __syncthreads();
        }
    }
    if (j->gray)
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            uint8_t *p = px + 3 * i;
            p[0] = p[1] = p[2] = lt_px_gray_pil(p[0], p[1], p[2]);
        }
}

/* Blur is the identity when every off-centre weight rounded to 0 (render.c skips it too). */
__device__ static int blur_active(const uint8_t *ws, const rjob *j) {
    return j->radius > 0 && ((const int32_t *)(ws + j->bw))[0] != (1 << LT_BLUR_BITS);
}

/* grid (x, n), block 256: btmp (size, size, 3) int32 = the horizontal blur pass. */
__global__ static void k_blur_h(uint8_t *ws, int size) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    if (!blur_active(ws, j)) return;
    const int32_t *wt = (const int32_t *)(ws + j->bw);
    const uint8_t *px = j->dst;
    int32_t *tmp = (int32_t *)(ws + j->btmp);
    int64_t total = (int64_t)size * size * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int y = (int)(i / (size * 3)), x = (int)(i % (size * 3)) / 3, c = (int)(i % 3);
        tmp[i] = lt_blur_h(px + (size_t)y * size * 3, size, x, c, wt, j->radius);
    }
}

/* grid (x, n), block 256: out = the vertical blur pass of btmp. */
__global__ static void k_blur_v(const uint8_t *ws, int size) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    if (!blur_active(ws, j)) return;
    const int32_t *wt = (const int32_t *)(ws + j->bw);
    const int32_t *tmp = (const int32_t *)(ws + j->btmp);
    uint8_t *px = j->dst;
    int64_t total = (int64_t)size * size * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int y = (int)(i / (size * 3)), x3 = (int)(i % (size * 3));
        px[i] = lt_blur_v(tmp + x3, (long)size * 3, size, y, wt, j->radius);
    }
}

/* ---- the entry point -------------------------------------------------------------------------- */

static int cuda_check(cudaError_t e, const char *what) {
    return e == cudaSuccess ? 0 : lt_err_set("render (GPU): %s: %s", what, cudaGetErrorString(e));
}

/* Blocks for a grid-stride loop over `total` items, per job (grid.y = jobs). */
static unsigned blocks_for(int64_t total) {
    int64_t b = (total + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > 4096 ? 4096 : b);
}

extern "C" int lt_render_cuda(const lt_render_job *jobs, int n, int size, uint8_t *out, void *ws,
                              size_t ws_bytes, void *stream) {
    if (size < 1) return lt_err_set("render: output size %d must be >= 1", size);
    if (n < 1) return 0;
    if (n > 65535) return lt_err_set("render (GPU): at most 65535 views per call, got %d", n);
    rjob *h = (rjob *)malloc((size_t)n * sizeof(rjob));
    if (!h) return lt_err_set("render (GPU): out of memory for %d job descriptors", n);
    size_t at = align256((size_t)n * sizeof(rjob));
    int64_t max_rows = 0;
    for (int i = 0; i < n; i++) {
        if (!jobs[i].out && !out) {
            free(h);
            return lt_err_set("render (GPU): view %d has nowhere to go", i);
        }
        h[i].dst = jobs[i].out ? jobs[i].out : out + (size_t)i * size * size * 3;
        if (plan_job(&jobs[i], size, &h[i], &at) != 0) {
            free(h);
            return -1;
        }
        if (h[i].rows > max_rows) max_rows = h[i].rows;
    }
    if (at > ws_bytes) {
        free(h);
        return lt_err_set("render (GPU): %zu bytes of scratch given, %zu needed", ws_bytes, at);
    }
    cudaStream_t s = (cudaStream_t)stream;
    uint8_t *w = (uint8_t *)ws;
    /* from pageable memory: returns once h is staged, so it can be freed */
    int rc = cuda_check(cudaMemcpyAsync(w, h, (size_t)n * sizeof(rjob), cudaMemcpyHostToDevice, s),
                        "copying the job descriptors");
    free(h);
    if (rc) return -1;
    LAUNCH(k_tables, dim3((unsigned)(size + 127) / 128, (unsigned)n, 2), 128, s, w, size);
    LAUNCH(k_horiz, dim3(blocks_for(max_rows * size), (unsigned)n), 256, s, w, size);
    LAUNCH(k_vert, dim3(blocks_for((int64_t)size * size), (unsigned)n), 256, s, w, size);
    LAUNCH(k_color, dim3((unsigned)n), COLOR_THREADS, s, w, size);
    LAUNCH(k_blur_h, dim3(blocks_for((int64_t)size * size * 3), (unsigned)n), 256, s, w, size);
    LAUNCH(k_blur_v, dim3(blocks_for((int64_t)size * size * 3), (unsigned)n), 256, s, w, size);
    return cuda_check(cudaGetLastError(), "launching the render kernels");
}

/* ---- lt_render_gpu: a batch's decoded images up, its views rendered --------------------------- */

struct lt_render_gpu {
    uint8_t *stage;      /* pinned: the images back to back, each at a 256-byte boundary */
    uint8_t *images;     /* device copy of stage */
    size_t cap_images;
    uint8_t *ws;         /* device scratch of lt_render_cuda */
    size_t cap_ws;
    lt_render_job *jobs; /* (cap_jobs) host */
    int cap_jobs;
    cudaEvent_t uploaded; /* after the last upload from stage */
    int pending;          /* uploaded was recorded and not yet waited for */
    int used;             /* last is set */
    cudaStream_t last;    /* the stream of the last call */
};

extern "C" int lt_render_gpu_create(lt_render_gpu **out) {
    lt_render_gpu *r = (lt_render_gpu *)calloc(1, sizeof *r);
    if (!r) return lt_err_set("render (GPU): out of memory");
    if (cuda_check(cudaEventCreateWithFlags(&r->uploaded, cudaEventDisableTiming), "cudaEventCreate")) {
        free(r);
        return -1;
    }
    *out = r;
    return 0;
}

extern "C" void lt_render_gpu_free(lt_render_gpu *r) {
    if (!r) return;
    if (r->used) cudaStreamSynchronize(r->last);
    cudaFreeHost(r->stage);
    cudaFree(r->images);
    cudaFree(r->ws);
    cudaEventDestroy(r->uploaded);
    free(r->jobs);
    free(r);
}

/* The jobs of count samples' primary (a) and partner (b) views from images at dev[i] (w[i], h[i]),
 * zeros for b rows without a partner; then the render into the object's scratch. */
static int pairs_render(lt_render_gpu *r, const uint8_t *const *dev, const int32_t *w,
                        const int32_t *h, int64_t n_images, const lt_sample *smp, const int *img,
                        int count, int size, uint8_t *a, uint8_t *b, cudaStream_t s) {
    if (2 * count > r->cap_jobs) {
        free(r->jobs);
        r->jobs = (lt_render_job *)malloc((size_t)2 * count * sizeof *r->jobs);
        r->cap_jobs = r->jobs ? 2 * count : 0;
        if (!r->jobs) return lt_err_set("render (GPU): out of memory");
    }
    int n = 0;
    for (int k = 0; k < 2 * count; k++) {
        int64_t i = img[k];
        if (i < 0) continue;
        if (i >= n_images) return lt_err_set("render (GPU): image %lld of %lld", (long long)i,
                                             (long long)n_images);
        if (k & 1 && !b) return lt_err_set("render (GPU): a partner view without a buffer for it");
        lt_render_job *j = &r->jobs[n++];
        j->rgb = dev[i];
        j->w = w[i];
        j->h = h[i];
        j->r = smp[k / 2].r[k & 1];
        j->out = (k & 1 ? b : a) + (size_t)(k / 2) * size * size * 3;
    }
    /* partner views of samples without a partner are zeros, as on the CPU */
    if (b)
        for (int k = 0; k < count; k++)
            if (img[2 * k + 1] < 0 &&
                cuda_check(cudaMemsetAsync(b + (size_t)k * size * size * 3, 0,
                                           (size_t)size * size * 3, s),
                           "zeroing a partner view"))
                return -1;
    if (n == 0) return 0;
    size_t need = lt_render_cuda_ws_bytes(r->jobs, n, size);
    if (need > r->cap_ws) {
        if (cuda_check(cudaStreamSynchronize(s), "waiting before growing the render scratch"))
            return -1;
        cudaFree(r->ws);
        r->ws = NULL, r->cap_ws = 0;
        if (cuda_check(cudaMalloc((void **)&r->ws, need), "render scratch")) return -1;
        r->cap_ws = need;
    }
    return lt_render_cuda(r->jobs, n, size, NULL, r->ws, r->cap_ws, (void *)s);
}

/* Waits for what the last call on another stream still does (the scratch is reused). */
static int switch_stream(lt_render_gpu *r, cudaStream_t s) {
    if (r->used && r->last != s &&
        cuda_check(cudaStreamSynchronize(r->last), "waiting for the last batch"))
        return -1;
    r->last = s;
    r->used = 1;
    return 0;
}

extern "C" int lt_render_gpu_upload_block(const uint8_t *host, size_t bytes, uint8_t **dev) {
    *dev = NULL;
    if (cuda_check(cudaMalloc((void **)dev, bytes ? bytes : 1), "device memory for the images"))
        return -1;
    /* from pageable memory cudaMemcpy may return once the bytes are staged; the renderers run on
     * non-blocking streams, which do not wait for the legacy stream: wait here */
    if (bytes && (cuda_check(cudaMemcpy(*dev, host, bytes, cudaMemcpyHostToDevice),
                             "copying the images to the device") ||
                  cuda_check(cudaDeviceSynchronize(), "copying the images to the device"))) {
        cudaFree(*dev);
        *dev = NULL;
        return -1;
    }
    return 0;
}

extern "C" void lt_render_gpu_free_block(uint8_t *dev) {
    if (dev) cudaFree(dev);
}

extern "C" size_t lt_render_gpu_free_memory(void) {
    size_t fr = 0, total = 0;
    if (cudaMemGetInfo(&fr, &total) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fr;
}

extern "C" int lt_render_gpu_pairs_resident(lt_render_gpu *r, const uint8_t *block,
                                            const int64_t *offset, const int32_t *width,
                                            const int32_t *height, int64_t n_images,
                                            const lt_sample *smp, const int64_t *img, int count,
                                            int size, uint8_t *a, uint8_t *b, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (count < 1) return 0;
    if (switch_stream(r, s)) return -1;
    /* row k's image by its device address: job table entry k (-1: no image) */
    const uint8_t **dev = (const uint8_t **)malloc((size_t)2 * count * sizeof *dev);
    int32_t *w = (int32_t *)malloc((size_t)2 * count * sizeof *w);
    int32_t *h = (int32_t *)malloc((size_t)2 * count * sizeof *h);
    int *idx = (int *)malloc((size_t)2 * count * sizeof *idx);
    int rc = dev && w && h && idx ? 0 : lt_err_set("render (GPU): out of memory");
    for (int k = 0; rc == 0 && k < 2 * count; k++) {
        idx[k] = img[k] < 0 ? -1 : k;
        if (img[k] >= n_images) {
            rc = lt_err_set("render (GPU): image %lld of %lld", (long long)img[k],
                            (long long)n_images);
        } else if (img[k] >= 0) {
            dev[k] = block + offset[img[k]];
            w[k] = width[img[k]];
            h[k] = height[img[k]];
        }
    }
    if (rc == 0) rc = pairs_render(r, dev, w, h, 2 * count, smp, idx, count, size, a, b, s);
    free(dev), free(w), free(h), free(idx);
    return rc;
}

extern "C" int lt_render_gpu_pairs(lt_render_gpu *r, const lt_image *images, int n_images,
                                   const lt_sample *smp, const int *img, int count, int size,
                                   uint8_t *a, uint8_t *b, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (count < 1) return 0;
    /* the previous upload from the staging (and, on a stream change, everything before) */
    if (r->pending && cuda_check(cudaEventSynchronize(r->uploaded), "waiting for the last upload"))
        return -1;
    r->pending = 0;
    if (switch_stream(r, s)) return -1;
    const int ni = n_images > 0 ? n_images : 1;
    size_t *off = (size_t *)malloc((size_t)ni * sizeof(size_t));
    const uint8_t **dev = (const uint8_t **)malloc((size_t)ni * sizeof *dev);
    int32_t *w = (int32_t *)malloc((size_t)ni * sizeof *w);
    int32_t *h = (int32_t *)malloc((size_t)ni * sizeof *h);
    int rc = off && dev && w && h ? 0 : lt_err_set("render (GPU): out of memory");
    size_t total = 0;
    for (int i = 0; rc == 0 && i < n_images; i++) {
        off[i] = total;
        total += align256((size_t)images[i].w * images[i].h * 3);
    }
    if (rc == 0 && total > r->cap_images) { /* grow: nothing of this object is in flight any more */
        rc = cuda_check(cudaStreamSynchronize(s), "waiting before growing the image buffers");
        cudaFreeHost(r->stage);
        cudaFree(r->images);
        r->stage = NULL, r->images = NULL, r->cap_images = 0;
        if (rc == 0) rc = cuda_check(cudaHostAlloc((void **)&r->stage, total, 0), "pinned images");
        if (rc == 0) rc = cuda_check(cudaMalloc((void **)&r->images, total), "device images");
        if (rc == 0) r->cap_images = total;
    }
    if (rc == 0) {
        for (int i = 0; i < n_images; i++) {
            memcpy(r->stage + off[i], images[i].rgb, (size_t)images[i].w * images[i].h * 3);
            dev[i] = r->images + off[i];
            w[i] = images[i].w;
            h[i] = images[i].h;
        }
        if (total)
            rc = cuda_check(cudaMemcpyAsync(r->images, r->stage, total, cudaMemcpyHostToDevice, s),
                            "copying the images to the device");
        if (rc == 0) rc = cuda_check(cudaEventRecord(r->uploaded, s), "cudaEventRecord");
        if (rc == 0) r->pending = 1;
    }
    if (rc == 0) rc = pairs_render(r, dev, w, h, n_images, smp, img, count, size, a, b, s);
    free(off), free(dev), free(w), free(h);
    return rc;
}
