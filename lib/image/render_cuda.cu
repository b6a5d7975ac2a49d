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
    const int32_t *c = in->r.crop;
    if (!in->rgb || in->w < 1 || in->h < 1) return lt_err_set("render: empty source image");
    if (c[2] < 1 || c[3] < 1 || c[0] < 0 || c[1] < 0 || c[0] > in->w - c[2] || c[1] > in->h - c[3])
        return lt_err_set("render: crop (x %d, y %d, w %d, h %d) is not inside the %dx%d image",
                          c[0], c[1], c[2], c[3], in->w, in->h);
    memset(j, 0, sizeof *j);
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
        uint8_t *o = tmp + (size_t)i * 3;
        for (int c = 0; c < 3; c++) o[c] = lt_rs_pixel(p + c, 3, k, t.count[x]);
    }
}

/* grid (x, n), block 256: out (size, size, 3) = the vertical pass, flipped when asked. */
__global__ static void k_vert(uint8_t *ws, int size, uint8_t *out) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    table t = table_at(ws, j->tv, size, j->kv);
    const uint8_t *tmp = ws + j->tmp;
    uint8_t *view = out + (size_t)blockIdx.y * size * size * 3;
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
__global__ static void k_color(const uint8_t *ws, int size, uint8_t *out) {
    __shared__ int64_t sh[COLOR_THREADS];
    const rjob *j = (const rjob *)ws + blockIdx.x;
    if (!j->jitter && !j->gray) return; /* the whole block leaves together */
    uint8_t *px = out + (size_t)blockIdx.x * size * size * 3;
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
__global__ static void k_blur_h(uint8_t *ws, int size, const uint8_t *out) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    if (!blur_active(ws, j)) return;
    const int32_t *wt = (const int32_t *)(ws + j->bw);
    const uint8_t *px = out + (size_t)blockIdx.y * size * size * 3;
    int32_t *tmp = (int32_t *)(ws + j->btmp);
    int64_t total = (int64_t)size * size * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int y = (int)(i / (size * 3)), x = (int)(i % (size * 3)) / 3, c = (int)(i % 3);
        tmp[i] = lt_blur_h(px + (size_t)y * size * 3, size, x, c, wt, j->radius);
    }
}

/* grid (x, n), block 256: out = the vertical blur pass of btmp. */
__global__ static void k_blur_v(const uint8_t *ws, int size, uint8_t *out) {
    const rjob *j = (const rjob *)ws + blockIdx.y;
    if (!blur_active(ws, j)) return;
    const int32_t *wt = (const int32_t *)(ws + j->bw);
    const int32_t *tmp = (const int32_t *)(ws + j->btmp);
    uint8_t *px = out + (size_t)blockIdx.y * size * size * 3;
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
    LAUNCH(k_vert, dim3(blocks_for((int64_t)size * size), (unsigned)n), 256, s, w, size, out);
    LAUNCH(k_color, dim3((unsigned)n), COLOR_THREADS, s, w, size, out);
    LAUNCH(k_blur_h, dim3(blocks_for((int64_t)size * size * 3), (unsigned)n), 256, s, w, size, out);
    LAUNCH(k_blur_v, dim3(blocks_for((int64_t)size * size * 3), (unsigned)n), 256, s, w, size, out);
    return cuda_check(cudaGetLastError(), "launching the render kernels");
}
