/* cnn_cpu.c: the CPU implementation of the CNN ops of cnn.h (C + OpenMP, GEMMs via OpenBLAS).
 *
 * Why it exists: it is the reference backend of the ResNet student: simple fp32 code, bitwise
 * deterministic for a fixed thread count, that the CUDA twin is tested against.
 *
 * A 3×3 stride-1 convolution (forward, weight gradient, and input gradient) goes through
 * Winograd's F(2×2, 3×3) in conv_wino.c: 2.25x fewer multiplications. Every other convolution is
 * im2col + GEMM. The im2col matrix of an NHWC input has one row per output pixel
 * and its columns ordered (ky, kx, ci), so the kw taps of one kernel row are one contiguous copy
 * of kw·Cin floats; the weight is permuted once per call from PyTorch's (Cout, Cin, kh, kw) to
 * (Cout, kh, kw, Cin) in the scratch to match. The matrix is never built whole: where there are
 * enough output rows (the early, large layers), each thread takes tiles of a few hundred rows,
 * builds a tile in its own scratch slot and multiplies it right away with a single-threaded
 * sgemm, while it is in the core's cache (the weight gradient sums each thread's tiles into its
 * own partial, then the partials in thread order). Elsewhere the batch goes in chunks of whole
 * images whose im2col matrix fits LT_CONV_CHUNK_FLOATS, each through one GEMM split across the
 * threads. A 1×1 stride 1 conv needs no im2col: the NHWC input already is the (B·H·W, Cin)
 * matrix. The input gradient of a stride-1 conv is the forward conv of dy with the flipped kernel
 * (conv_dx_by_conv); for strided convs it goes through a "col2im" written as a gather over input
 * pixels (each dx element sums its taps in a fixed order, no scatter races), so it parallelises
 * without atomics.
 *
 * Batch norm is parallel over contiguous ranges of rows (see below). Pooling and bias reductions
 * are parallel over blocks of channels; each thread runs over all rows of its channels in order,
 * in double, so their results do not even depend on the thread count. */
#include "nn/cnn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "nn/conv_wino.h"
#include "nn/ops.h"

/* Largest im2col chunk, in floats (16 MiB); a single image may exceed it. */
#define LT_CONV_CHUNK_FLOATS ((int64_t)1 << 22)
/* Channels per block in the per-channel reductions (one 64-byte cache line of floats). */
#define CBLK 16

/* ------------------------------------------------------------------------------------------ */
/* conv2d                                                                                      */

int lt_conv2d_dims_init(lt_conv2d_dims *d, int B, int H, int W, int Cin, int Cout, int kh,
                        int kw, int stride, int pad) {
    if (B < 1 || H < 1 || W < 1 || Cin < 1 || Cout < 1 || kh < 1 || kw < 1 || stride < 1 ||
        pad < 0)
        return lt_err_set("conv2d: bad dimensions (B %d, H %d, W %d, Cin %d, Cout %d, kernel "
                          "%dx%d, stride %d, pad %d)",
                          B, H, W, Cin, Cout, kh, kw, stride, pad);
    d->B = B, d->H = H, d->W = W, d->Cin = Cin, d->Cout = Cout, d->kh = kh, d->kw = kw;
    d->stride = stride, d->pad = pad;
    d->OH = (H + 2 * pad - kh) / stride + 1;
    d->OW = (W + 2 * pad - kw) / stride + 1;
    if (H + 2 * pad < kh || W + 2 * pad < kw || d->OH < 1 || d->OW < 1)
        return lt_err_set("conv2d: kernel %dx%d larger than the padded input %dx%d", kh, kw,
                          H + 2 * pad, W + 2 * pad);
    return 0;
}

/* A conv call as the CPU code runs it: its dims and the thread count its scratch is laid out for
 * (the backend's, passed to every call; never stored in the public dims). */
typedef struct {
    int B, H, W, Cin, Cout, kh, kw, stride, pad, OH, OW;
    int threads;
} conv_plan;

static conv_plan plan_of(const lt_conv2d_dims *d, int threads) {
    return (conv_plan){.B = d->B, .H = d->H, .W = d->W, .Cin = d->Cin, .Cout = d->Cout,
                       .kh = d->kh, .kw = d->kw, .stride = d->stride, .pad = d->pad,
                       .OH = d->OH, .OW = d->OW, .threads = threads};
}

static int conv_is_gemm(const conv_plan *d) {
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}
static int conv_needs_perm(const conv_plan *d) { return d->kh * d->kw > 1 && d->Cin > 1; }
static int64_t conv_K(const conv_plan *d) { return (int64_t)d->Cin * d->kh * d->kw; }
/* Images per im2col chunk. */
static int conv_chunk(const conv_plan *d) {
    int64_t per = (int64_t)d->OH * d->OW * conv_K(d);
    int64_t n = LT_CONV_CHUNK_FLOATS / per;
    if (n < 1) n = 1;
    if (n > d->B) n = d->B;
    return (int)n;
}

/* Output rows per tile of the tiled forward (conv_im2col_gemm): at least 256 (each tile's GEMM
 * packs the whole weight matrix again, which 256 rows of use amortise), more while the tile's
 * im2col rows stay within LT_CONV_TILE_FLOATS, so that they are still in the core's cache when the
 * GEMM reads them. */
#define LT_CONV_TILE_FLOATS ((int64_t)1 << 17)
static int conv_tile_rows(const conv_plan *d) {
    int64_t r = LT_CONV_TILE_FLOATS / conv_K(d);
    r = r < 256 ? 256 : r / 16 * 16;
    int64_t rows = (int64_t)d->B * d->OH * d->OW;
    return (int)(r < rows ? r : rows);
}
static int conv_threads(const conv_plan *d) { return d->threads > 0 ? d->threads : 1; }

/* The input gradient of a stride-1 conv is itself a stride-1 conv: of dy (B, OH, OW, Cout), with
 * the kernel flipped in space and its channel axes swapped, padded by k − 1 − pad (this needs
 * pad <= k − 1). Computing it that way is one im2col + GEMM of the forward's shape (inner
 * dimension kh·kw·Cout) instead of a GEMM with inner dimension Cout and a col2im gather. */
static int conv_dx_by_conv(const conv_plan *d) {
    return !conv_is_gemm(d) && d->stride == 1 && d->pad <= d->kh - 1 && d->pad <= d->kw - 1 &&
           d->kh == d->kw;
}
/* The dims of that conv (dy -> dx). */
static conv_plan conv_dx_dims(const conv_plan *d) {
    conv_plan t = {.B = d->B, .H = d->OH, .W = d->OW, .Cin = d->Cout, .Cout = d->Cin,
                        .kh = d->kh, .kw = d->kw, .stride = 1, .pad = d->kh - 1 - d->pad,
                        .threads = d->threads};
    t.OH = d->H, t.OW = d->W;
    return t;
}

/* Scratch layout (floats): [wperm (Cout, K)] [dwperm (Cout, K)] [col (rows, K)] [dcol (rows, K)]
 * [tiles (threads, tile rows, K)] [dwacc (threads, Cout, K)] where the permuted weights exist when conv_needs_perm or
 * conv_dx_by_conv (wperm then also holds the flipped weights of the input-gradient conv), col,
 * tiles and dwacc unless conv_is_gemm (sized for the input-gradient conv too), and dcol only where the
 * input gradient goes through col2im. */
typedef struct {
    float *wperm, *dwperm, *col, *dcol, *tiles, *dwacc;
} conv_ws;

static size_t conv_ws_layout(const conv_plan *d, void *ws, conv_ws *out) {
    int64_t K = conv_K(d), off = 0;
    float *base = ws;
    conv_ws l = {0};
    if (conv_needs_perm(d) || conv_dx_by_conv(d)) {
        l.wperm = base ? base + off : NULL, off += (int64_t)d->Cout * K;
        l.dwperm = base ? base + off : NULL, off += (int64_t)d->Cout * K;
    }
    if (!conv_is_gemm(d)) {
        int64_t rows = (int64_t)conv_chunk(d) * d->OH * d->OW, ncol = rows * K;
        int64_t ntile = (int64_t)conv_threads(d) * conv_tile_rows(d) * K;
        if (conv_dx_by_conv(d)) { /* the input-gradient conv uses col and tiles too */
            conv_plan t = conv_dx_dims(d);
            int64_t c2 = (int64_t)conv_chunk(&t) * t.OH * t.OW * conv_K(&t);
            int64_t t2 = (int64_t)conv_threads(&t) * conv_tile_rows(&t) * conv_K(&t);
            if (c2 > ncol) ncol = c2;
            if (t2 > ntile) ntile = t2;
        }
        l.col = base ? base + off : NULL, off += ncol;
        if (!conv_dx_by_conv(d)) l.dcol = base ? base + off : NULL, off += rows * K;
        l.tiles = base ? base + off : NULL, off += ntile;
        l.dwacc = base ? base + off : NULL, off += (int64_t)conv_threads(d) * d->Cout * K;
    }
    if (out) *out = l;
    return (size_t)off * sizeof(float);
}

/* A 3×3 stride-1 conv goes through Winograd's F(2×2, 3×3) (conv_wino.c): its forward, its
 * weight gradient and its input gradient (itself a 3×3 stride-1 conv, conv_dx_dims). */
static int conv_wino(const conv_plan *d) {
    return lt_wino_applies(d->kh, d->kw, d->stride, d->pad);
}
static lt_wino_dims wino_dims(const conv_plan *d) {
    return (lt_wino_dims){.B = d->B, .H = d->H, .W = d->W, .Cin = d->Cin, .Cout = d->Cout,
                          .pad = d->pad, .OH = d->OH, .OW = d->OW};
}
/* The input-gradient conv of a Winograd conv: dy (B, OH, OW, Cout) -> dx (B, H, W, Cin). */
static lt_wino_dims wino_dx_dims(const conv_plan *d) {
    return (lt_wino_dims){.B = d->B, .H = d->OH, .W = d->OW, .Cin = d->Cout, .Cout = d->Cin,
                          .pad = 2 - d->pad, .OH = d->H, .OW = d->W};
}

size_t lt_conv2d_ws_bytes(const lt_conv2d_dims *dims, int threads) {
    conv_plan d = plan_of(dims, threads);
    if (conv_wino(&d)) {
        lt_wino_dims f = wino_dims(&d), b = wino_dx_dims(&d);
        int64_t nf = lt_wino_ws_floats(&f, threads), nb = lt_wino_ws_floats(&b, threads);
        return (size_t)(nf > nb ? nf : nb) * sizeof(float);
    }
    return conv_ws_layout(&d, NULL, NULL);
}

/* wp (Cout, kh, kw, Cin) = w (Cout, Cin, kh, kw) */
static void perm_weight(const conv_plan *d, float *wp, const float *w) {
    int Cin = d->Cin, kk = d->kh * d->kw;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < d->Cout; co++) {
        const float *src = w + (int64_t)co * Cin * kk;
        float *dst = wp + (int64_t)co * Cin * kk;
        for (int ci = 0; ci < Cin; ci++)
            for (int t = 0; t < kk; t++) dst[(int64_t)t * Cin + ci] = src[(int64_t)ci * kk + t];
    }
}

/* wt (Cin, kh, kw, Cout) = w (Cout, Cin, kh, kw) flipped in space: the weight of the
 * input-gradient conv in the column order of im2col. */
static void flip_weight(const conv_plan *d, float *wt, const float *w) {
    const int Cin = d->Cin, Cout = d->Cout, kh = d->kh, kw = d->kw;
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < Cin; ci++)
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                float *dst = wt + (((int64_t)ci * kh + ky) * kw + kx) * Cout;
                const float *src = w + ((int64_t)ci * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx);
                for (int co = 0; co < Cout; co++) dst[co] = src[(int64_t)co * Cin * kh * kw];
            }
}

/* dw (Cout, Cin, kh, kw) (+)= dwp (Cout, kh, kw, Cin) */
static void unperm_weight(const conv_plan *d, float *dw, const float *dwp, int accumulate) {
    int Cin = d->Cin, kk = d->kh * d->kw;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < d->Cout; co++) {
        const float *src = dwp + (int64_t)co * Cin * kk;
        float *dst = dw + (int64_t)co * Cin * kk;
        for (int ci = 0; ci < Cin; ci++)
            for (int t = 0; t < kk; t++) {
                float v = src[(int64_t)t * Cin + ci];
                dst[(int64_t)ci * kk + t] = accumulate ? dst[(int64_t)ci * kk + t] + v : v;
            }
    }
}

/* Rows [r0, r1) of the im2col matrix of the batch x (row r = output pixel r of the batch,
 * image-major, columns ordered (ky, kx, ci)) into col (r1 − r0, K). In NHWC the kw taps of one
 * kernel row are kw·Cin consecutive input floats, the same order as the kw·Cin columns of that
 * kernel row: one copy per kernel row, clipped at the image edges. Serial. */
static void im2col_rows(const conv_plan *d, float *col, const float *x, int64_t r0,
                        int64_t r1) {
    const int H = d->H, W = d->W, Cin = d->Cin, OH = d->OH, OW = d->OW, kw = d->kw;
    const int64_t K = conv_K(d), run = (int64_t)kw * Cin, opix = (int64_t)OH * OW;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / opix, p = r % opix;
        const int oy = (int)(p / OW), ox = (int)(p % OW);
        const float *xb = x + b * H * W * Cin;
        float *row = col + (r - r0) * K;
        const int ix0 = ox * d->stride - d->pad;
        const int k0 = ix0 < 0 ? -ix0 : 0, k1 = ix0 + kw > W ? W - ix0 : kw;
        for (int ky = 0; ky < d->kh; ky++) {
            const int iy = oy * d->stride - d->pad + ky;
            float *dst = row + ky * run;
            if (iy < 0 || iy >= H || k1 <= k0) {
                memset(dst, 0, sizeof(float) * run);
                continue;
            }
            if (k0 > 0) memset(dst, 0, sizeof(float) * k0 * Cin);
            memcpy(dst + (int64_t)k0 * Cin, xb + ((int64_t)iy * W + ix0 + k0) * Cin,
                   sizeof(float) * (k1 - k0) * Cin);
            if (k1 < kw) memset(dst + (int64_t)k1 * Cin, 0, sizeof(float) * (kw - k1) * Cin);
        }
    }
}

/* col (nb·OH·OW, K) = the im2col matrix of images x (nb, H, W, Cin), in parallel. */
static void im2col(const conv_plan *d, float *col, const float *x, int nb) {
    const int64_t rows = (int64_t)nb * d->OH * d->OW, K = conv_K(d), blk = 64;
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += blk)
        im2col_rows(d, col + r0 * K, x, r0, r0 + blk < rows ? r0 + blk : rows);
}

/* dx (nb, H, W, Cin) (+)= the sum, for each input pixel, of the dcol taps that read it. */
static void col2im(const conv_plan *d, float *dx, const float *dcol, int nb,
                   int accumulate) {
    const int H = d->H, W = d->W, Cin = d->Cin, OH = d->OH, OW = d->OW, s = d->stride;
    const int64_t K = conv_K(d);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < nb; b++)
        for (int iy = 0; iy < H; iy++) {
            const float *db = dcol + (int64_t)b * OH * OW * K;
            for (int ix = 0; ix < W; ix++) {
                float *dst = dx + (((int64_t)b * H + iy) * W + ix) * Cin;
                if (!accumulate) memset(dst, 0, sizeof(float) * Cin);
                for (int ky = 0; ky < d->kh; ky++) {
                    int ty = iy + d->pad - ky;
                    if (ty < 0 || ty % s) continue;
                    int oy = ty / s;
                    if (oy >= OH) continue;
                    for (int kx = 0; kx < d->kw; kx++) {
                        int tx = ix + d->pad - kx;
                        if (tx < 0 || tx % s) continue;
                        int ox = tx / s;
                        if (ox >= OW) continue;
                        const float *src =
                            db + ((int64_t)oy * OW + ox) * K + ((int64_t)ky * d->kw + kx) * Cin;
                        #pragma omp simd
                        for (int c = 0; c < Cin; c++) dst[c] += src[c];
                    }
                }
            }
        }
}

/* y (+)= conv(x, wm) for a non-GEMM conv, wm in the (Cout, kh, kw, Cin) column order (or w
 * itself when Cin or the kernel is 1). beta 0 writes y, 1 adds.
 *
 * Tiled, when there are at least 4 tiles per thread: the output rows are cut into tiles of
 * conv_tile_rows; the threads share them statically, and each builds its tile's im2col rows in
 * its own slot of `tiles` and multiplies them at once (a single-threaded GEMM) while they are in
 * its cache. Otherwise (the small late layers, where a tile would be most of the batch) the
 * im2col matrix of a chunk of images goes through `col` and one GEMM split across the threads. */
static void conv_im2col_gemm(const conv_plan *d, float *y, const float *x, const float *wm,
                             float *tiles, float *col, float beta) {
    const int Cout = d->Cout;
    const int64_t K = conv_K(d), rows = (int64_t)d->B * d->OH * d->OW;
    const int R = conv_tile_rows(d);
    const int64_t ntiles = (rows + R - 1) / R;
    int nt = omp_get_max_threads();
    if (nt > conv_threads(d)) nt = conv_threads(d);
    if (ntiles < 4 * (int64_t)nt && nt > 1) {
        const int chunk = conv_chunk(d);
        const int64_t in_img = (int64_t)d->H * d->W * d->Cin, out_pix = (int64_t)d->OH * d->OW;
        for (int b0 = 0; b0 < d->B; b0 += chunk) {
            int nb = d->B - b0 < chunk ? d->B - b0 : chunk;
            im2col(d, col, x + b0 * in_img, nb);
            lt_op_gemm(0, 1, (int)(nb * out_pix), Cout, (int)K, 1.0f, col, (int)K, wm, (int)K,
                       beta, y + b0 * out_pix * Cout, Cout);
        }
        return;
    }
    const int saved = lt_op_blas_single_enter();
#pragma omp parallel num_threads(nt)
    {
        float *tc = tiles + (int64_t)omp_get_thread_num() * R * K;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntiles; t++) {
            const int64_t r0 = t * R, r1 = r0 + R < rows ? r0 + R : rows;
            im2col_rows(d, tc, x, r0, r1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), Cout, (int)K,
                        1.0f, tc, (int)K, wm, (int)K, beta, y + r0 * Cout, Cout);
        }
    }
    lt_op_blas_single_leave(saved);
}

/* dwm (Cout, K) (+)= dyᵀ · im2col(x), tiled like conv_im2col_gemm: each thread accumulates the
 * tiles it owns into its own (Cout, K) slot of dwacc, then every element is summed over the
 * threads in thread order (deterministic for a fixed thread count). Returns 0 when there are too
 * few tiles to share (the caller then goes chunk by chunk). */
static int conv_dw_tiled(const conv_plan *d, float *dwm, const float *dy, const float *x,
                         float *tiles, float *dwacc, int accumulate) {
    const int Cout = d->Cout;
    const int64_t K = conv_K(d), rows = (int64_t)d->B * d->OH * d->OW, n = (int64_t)Cout * K;
    const int R = conv_tile_rows(d);
    const int64_t ntiles = (rows + R - 1) / R;
    int nt = omp_get_max_threads();
    if (nt > conv_threads(d)) nt = conv_threads(d);
    if (ntiles < 4 * (int64_t)nt && nt > 1) return 0;
    const int saved = lt_op_blas_single_enter();
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        float *tc = tiles + (int64_t)tid * R * K, *acc = dwacc + (int64_t)tid * n;
        memset(acc, 0, sizeof(float) * n);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntiles; t++) {
            const int64_t r0 = t * R, r1 = r0 + R < rows ? r0 + R : rows;
            im2col_rows(d, tc, x, r0, r1);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, (int)K, (int)(r1 - r0),
                        1.0f, dy + r0 * Cout, Cout, tc, (int)K, 1.0f, acc, (int)K);
        }
        /* the implicit barrier of the for: every slot is complete */
#pragma omp for schedule(static)
        for (int64_t e = 0; e < n; e++) {
            float v = accumulate ? dwm[e] : 0.0f;
            for (int u = 0; u < nth; u++) v += dwacc[(int64_t)u * n + e];
            dwm[e] = v;
        }
    }
    lt_op_blas_single_leave(saved);
    return 1;
}

static void conv_forward(const conv_plan *d, float *y, const float *x, const float *w,
                         void *ws) {
    const int Cout = d->Cout;
    const int64_t K = conv_K(d);
    if (conv_is_gemm(d)) {
        int64_t M = (int64_t)d->B * d->H * d->W;
        lt_op_gemm(0, 1, (int)M, Cout, (int)K, 1.0f, x,
                    (int)K, w, (int)K, 0.0f, y, Cout);
        return;
    }
    if (conv_wino(d)) {
        lt_wino_dims f = wino_dims(d);
        lt_wino_forward(&f, d->threads, y, x, w, 0, 0.0f, ws);
        return;
    }
    conv_ws l;
    conv_ws_layout(d, ws, &l);
    const float *wm = w;
    if (conv_needs_perm(d)) {
        perm_weight(d, l.wperm, w);
        wm = l.wperm;
    }
    conv_im2col_gemm(d, y, x, wm, l.tiles, l.col, 0.0f);
}

static void conv_backward(const conv_plan *d, float *dx, float *dw, const float *dy,
                          const float *x, const float *w, void *ws, int accumulate,
                          int accumulate_dx) {
    const int Cout = d->Cout;
    const int64_t K = conv_K(d);
    if (conv_is_gemm(d)) {
        int64_t M = (int64_t)d->B * d->H * d->W;
        /* dw (Cout, Cin) (+)= dyᵀ (Cout, M) · x (M, Cin) */
        if (dw)
            lt_op_gemm(1, 0, Cout, (int)K, (int)M, 1.0f, dy,
                        Cout, x, (int)K, accumulate ? 1.0f : 0.0f, dw, (int)K);
        /* dx (M, Cin) (+)= dy (M, Cout) · w (Cout, Cin) */
        if (dx)
            lt_op_gemm(0, 0, (int)M, (int)K, Cout, 1.0f,
                        dy, Cout, w, (int)K, accumulate_dx ? 1.0f : 0.0f, dx, (int)K);
        return;
    }
    if (conv_wino(d)) {
        lt_wino_dims f = wino_dims(d), b = wino_dx_dims(d);
        if (dw) lt_wino_dw(&f, d->threads, dw, dy, x, accumulate, ws);
        if (dx) lt_wino_forward(&b, d->threads, dx, dy, w, 1, accumulate_dx ? 1.0f : 0.0f, ws);
        return;
    }
    conv_ws l;
    conv_ws_layout(d, ws, &l);
    const int by_conv = conv_dx_by_conv(d);
    const float *wm = w;
    if (dx && !by_conv && conv_needs_perm(d)) {
        perm_weight(d, l.wperm, w);
        wm = l.wperm;
    }
    /* the GEMM's dw target: the permuted scratch, or dw itself when the layouts agree */
    float *dwm = conv_needs_perm(d) ? l.dwperm : dw;
    const int chunk = conv_chunk(d);
    const int64_t in_img = (int64_t)d->H * d->W * d->Cin, out_pix = (int64_t)d->OH * d->OW;
    const int dw_done = dw && conv_dw_tiled(d, dwm, dy, x, l.tiles, l.dwacc,
                                            accumulate && dwm == dw);
    for (int b0 = 0; b0 < d->B; b0 += chunk) {
        int nb = d->B - b0 < chunk ? d->B - b0 : chunk;
        int rows = (int)(nb * out_pix);
        const float *dyc = dy + b0 * out_pix * Cout;
        if (dw && !dw_done) {
            im2col(d, l.col, x + b0 * in_img, nb);
            float beta = (b0 > 0 || (accumulate && dwm == dw)) ? 1.0f : 0.0f;
            lt_op_gemm(1, 0, Cout, (int)K, rows, 1.0f, dyc,
                        Cout, l.col, (int)K, beta, dwm, (int)K);
        }
        if (dx && !by_conv) {
            lt_op_gemm(0, 0, rows, (int)K, Cout, 1.0f, dyc,
                        Cout, wm, (int)K, 0.0f, l.dcol, (int)K);
            col2im(d, dx + b0 * in_img, l.dcol, nb, accumulate_dx);
        }
    }
    if (dw && dwm != dw) unperm_weight(d, dw, l.dwperm, accumulate);
    if (dx && by_conv) {
        conv_plan t = conv_dx_dims(d);
        flip_weight(d, l.wperm, w);
        conv_im2col_gemm(&t, dx, dy, l.wperm, l.tiles, l.col, accumulate_dx ? 1.0f : 0.0f);
    }
}

static int check_threads(int threads, const char *op) {
    if (threads < 1) return lt_err_set("%s: thread count %d (the backend's, >= 1)", op, threads);
    return 0;
}

int lt_conv2d_forward(const lt_conv2d_dims *dims, int threads, float *y, const float *x,
                      const float *w, void *ws) {
    if (check_threads(threads, "conv2d") != 0) return -1;
    conv_plan d = plan_of(dims, threads);
    if (!ws && lt_conv2d_ws_bytes(dims, threads) > 0)
        return lt_err_set("conv2d: no scratch given (%zu bytes needed)",
                          lt_conv2d_ws_bytes(dims, threads));
    conv_forward(&d, y, x, w, ws);
    return 0;
}

int lt_conv2d_backward(const lt_conv2d_dims *dims, int threads, float *dx, float *dw,
                       const float *dy, const float *x, const float *w, void *ws, int accumulate,
                       int accumulate_dx) {
    if (check_threads(threads, "conv2d backward") != 0) return -1;
    conv_plan d = plan_of(dims, threads);
    if (!ws && lt_conv2d_ws_bytes(dims, threads) > 0)
        return lt_err_set("conv2d backward: no scratch given (%zu bytes needed)",
                          lt_conv2d_ws_bytes(dims, threads));
    conv_backward(&d, dx, dw, dy, x, w, ws, accumulate, accumulate_dx);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* batch norm                                                                                  */

/* Batch norm streams the (M, C) matrix row by row, every pass over contiguous memory: each
 * thread takes a contiguous range of rows (a static partition by the thread count) and
 * accumulates per-channel sums for all C channels at once, in float over BN_ROWS rows and then in
 * double; the threads' partial sums are folded in thread order, so the result is reproducible
 * for a fixed thread count. (Walking the matrix channel block by channel block instead reads
 * every cache line C/16 times over and was 5-8x slower at C = 64.) The partial sums live in the
 * caller's scratch, (threads, 2, C) doubles (lt_bn_ws_bytes). */
#define BN_ROWS 32
#define LT_INLINE static inline __attribute__((always_inline))

size_t lt_bn_ws_bytes(int C, int threads) {
    return (size_t)(threads > 0 ? threads : 1) * 2 * (size_t)(C > 0 ? C : 0) * sizeof(double);
}

/* Rows [r0, r1) of thread t out of nt (contiguous, static). */
static void bn_rows(int64_t M, int t, int nt, int64_t *r0, int64_t *r1) {
    *r0 = M * t / nt;
    *r1 = M * (t + 1) / nt;
}

/* s (C) = Σ (x − k), q (C) = Σ (x − k)² over rows [r0, r1), k (C) a shift (the first row) that
 * keeps E[x²] − E[x]² free of cancellation when |mean| >> std. */
static void bn_sums(const float *x, int64_t r0, int64_t r1, int C, const float *k, double *s,
                    double *q) {
    float fs[C], fq[C];
    for (int c = 0; c < C; c++) s[c] = q[c] = 0.0;
    for (int64_t b0 = r0; b0 < r1; b0 += BN_ROWS) {
        const int64_t b1 = b0 + BN_ROWS < r1 ? b0 + BN_ROWS : r1;
        for (int c = 0; c < C; c++) fs[c] = fq[c] = 0.0f;
        for (int64_t r = b0; r < b1; r++) {
            const float *xr = x + r * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) {
                float v = xr[c] - k[c];
                fs[c] += v;
                fq[c] += v * v;
            }
        }
        for (int c = 0; c < C; c++) s[c] += fs[c], q[c] += fq[c];
    }
}

/* y = act((x − m) · sc + sh [+ res]) over rows [r0, r1) */
LT_INLINE void bn_apply(float *y, const float *x, const float *res, int64_t r0, int64_t r1,
                        int C, const float *m, const float *sc, const float *sh, int relu) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * C, *rr = res ? res + r * C : NULL;
        float *yr = y + r * C;
        #pragma omp simd
        for (int c = 0; c < C; c++) {
            float v = (xr[c] - m[c]) * sc[c] + sh[c];
            if (res) v += rr[c];
            if (relu) v = v > 0.0f ? v : 0.0f;
            yr[c] = v;
        }
    }
}

static void bn_apply_any(float *y, const float *x, const float *res, int64_t r0, int64_t r1,
                         int C, const float *m, const float *sc, const float *sh, int relu) {
    if (res && relu) bn_apply(y, x, res, r0, r1, C, m, sc, sh, 1);
    else if (res) bn_apply(y, x, res, r0, r1, C, m, sc, sh, 0);
    else if (relu) bn_apply(y, x, NULL, r0, r1, C, m, sc, sh, 1);
    else bn_apply(y, x, NULL, r0, r1, C, m, sc, sh, 0);
}

/* The sums of channel c over the per-thread partials (nth, 2, C) of ws, in thread order. */
static void bn_fold(const double *part, int nth, int C, int c, double *s, double *q) {
    double sv = 0.0, qv = 0.0;
    for (int u = 0; u < nth; u++) sv += part[(size_t)u * 2 * C + c],
                                 qv += part[(size_t)u * 2 * C + C + c];
    *s = sv;
    *q = qv;
}

int lt_bn_forward_train(float *y, const float *x, const float *res, const float *gamma,
                        const float *beta, float *mean, float *invstd, float *running_mean,
                        float *running_var, int M, int C, float eps, float momentum, int relu,
                        int threads, void *ws) {
    if (M < 2)
        return lt_err_set("batch norm: expected more than 1 value per channel in training "
                          "(got %d)",
                          M);
    if (check_threads(threads, "batch norm") != 0) return -1;
    if (!ws) return lt_err_set("batch norm: no scratch given");
    int nt = threads;
    if (nt > M) nt = M;
    double *part = ws;
    float k[C], sc[C], sh[C], mf[C];
    for (int c = 0; c < C; c++) k[c] = x[c];
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t r0, r1;
        bn_rows(M, t, nth, &r0, &r1);
        bn_sums(x, r0, r1, C, k, part + (size_t)t * 2 * C, part + (size_t)t * 2 * C + C);
#pragma omp barrier
#pragma omp single
        for (int c = 0; c < C; c++) {
            double sv, qv;
            bn_fold(part, nth, C, c, &sv, &qv);
            double d = sv / M;              /* mean − k */
            double var = qv / M - d * d;    /* biased */
            if (var < 0) var = 0;
            double mu = k[c] + d;
            double is = 1.0 / sqrt(var + (double)eps);
            mean[c] = (float)mu;
            invstd[c] = (float)is;
            if (running_mean)
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
            if (running_var)
                running_var[c] = (float)((1.0 - momentum) * running_var[c] +
                                         momentum * var * M / (M - 1));
            sc[c] = (float)(gamma[c] * is);
            sh[c] = beta[c];
            mf[c] = (float)mu;
        }
        /* the implicit barrier of single: every thread sees the statistics */
        bn_apply_any(y, x, res, r0, r1, C, mf, sc, sh, relu);
    }
    return 0;
}

int lt_bn_forward_eval(float *y, const float *x, const float *res, const float *gamma,
                       const float *beta, const float *running_mean, const float *running_var,
                       int M, int C, float eps, int relu) {
    float sc[C], sh[C], mf[C];
    for (int c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)running_var[c] + (double)eps);
        sc[c] = (float)(gamma[c] * is);
        sh[c] = beta[c];
        mf[c] = running_mean[c];
    }
    int nt = omp_get_max_threads();
    if (nt > M) nt = M;
#pragma omp parallel num_threads(nt)
    {
        int64_t r0, r1;
        bn_rows(M, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        bn_apply_any(y, x, res, r0, r1, C, mf, sc, sh, relu);
    }
    return 0;
}

/* g = dy masked by y > 0 when relu; sg = Σ g, sgx = Σ g · (x − m) over rows [r0, r1) */
LT_INLINE void bn_grad_sums(const float *dy, const float *x, const float *y, int64_t r0,
                            int64_t r1, int C, const float *m, double *sg, double *sgx, int relu) {
    float fs[C], fx[C];
    for (int c = 0; c < C; c++) sg[c] = sgx[c] = 0.0;
    for (int64_t b0 = r0; b0 < r1; b0 += BN_ROWS) {
        const int64_t b1 = b0 + BN_ROWS < r1 ? b0 + BN_ROWS : r1;
        for (int c = 0; c < C; c++) fs[c] = fx[c] = 0.0f;
        for (int64_t r = b0; r < b1; r++) {
            const float *xr = x + r * C, *dr = dy + r * C, *yr = relu ? y + r * C : NULL;
            #pragma omp simd
            for (int c = 0; c < C; c++) {
                float g = dr[c];
                if (relu) g = yr[c] > 0.0f ? g : 0.0f;
                fs[c] += g;
                fx[c] += g * (xr[c] - m[c]);
            }
        }
        for (int c = 0; c < C; c++) sg[c] += fs[c], sgx[c] += fx[c];
    }
}

/* dx = a · (g − b − (x − m) · k) over rows [r0, r1) */
LT_INLINE void bn_grad_apply(float *dx, const float *dy, const float *x, const float *y,
                             int64_t r0, int64_t r1, int C, const float *m, const float *a,
                             const float *b, const float *k, int relu) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * C, *dr = dy + r * C, *yr = relu ? y + r * C : NULL;
        float *dxr = dx + r * C;
        #pragma omp simd
        for (int c = 0; c < C; c++) {
            float g = dr[c];
            if (relu) g = yr[c] > 0.0f ? g : 0.0f;
            dxr[c] = a[c] * (g - b[c] - (xr[c] - m[c]) * k[c]);
        }
    }
}

/* Thread t of nth: its rows' Σg, Σg·(x − μ) into its slot (2C doubles) of part. */
static void bn_grad_part(const float *dy, const float *x, const float *y, int64_t M, int C,
                         const float *mu, double *part, int relu, int t, int nth) {
    int64_t r0, r1;
    bn_rows(M, t, nth, &r0, &r1);
    double *sg = part + (size_t)t * 2 * C, *sgx = sg + C;
    if (relu) bn_grad_sums(dy, x, y, r0, r1, C, mu, sg, sgx, 1);
    else bn_grad_sums(dy, x, NULL, r0, r1, C, mu, sg, sgx, 0);
}

/* dx = a · (g − b − (x − μ) · k) over thread t's rows (of nth) */
static void bn_grad_apply_part(float *dx, const float *dy, const float *x, const float *y,
                               int64_t M, int C, const float *mu, const float *a, const float *b,
                               const float *k, int relu, int t, int nth) {
    int64_t r0, r1;
    bn_rows(M, t, nth, &r0, &r1);
    if (relu) bn_grad_apply(dx, dy, x, y, r0, r1, C, mu, a, b, k, 1);
    else bn_grad_apply(dx, dy, x, NULL, r0, r1, C, mu, a, b, k, 0);
}

int lt_bn_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                   const float *y, const float *gamma, const float *mean, const float *invstd,
                   int M, int C, int relu, int accumulate, int threads, void *ws) {
    if (check_threads(threads, "batch norm backward") != 0) return -1;
    if (!ws) return lt_err_set("batch norm backward: no scratch given");
    int nt = threads;
    if (nt > M) nt = M;
    double *part = ws;
    float mu[C], a[C], bsub[C], k[C];
    for (int c = 0; c < C; c++) mu[c] = mean[c];
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        bn_grad_part(dy, x, y, M, C, mu, part, relu, t, nth);
#pragma omp barrier
#pragma omp single
        /* dx = γ·is·(g − Σg/M − x̂·Σ(g·x̂)/M), x̂ = (x − μ)·is, Σ(g·x̂) = is·Σ(g·(x − μ)) */
        for (int c = 0; c < C; c++) {
            double sgv, sgxv;
            bn_fold(part, nth, C, c, &sgv, &sgxv);
            double is = invstd[c], gm = gamma[c];
            double dg = sgxv * is, dbv = sgv;
            if (dgamma) dgamma[c] = (float)(accumulate ? dgamma[c] + dg : dg);
            if (dbeta) dbeta[c] = (float)(accumulate ? dbeta[c] + dbv : dbv);
            a[c] = (float)(gm * is);     /* scale of g */
            bsub[c] = (float)(dbv / M);  /* mean of g */
            k[c] = (float)(dg * is / M); /* coefficient of (x − μ) */
        }
        bn_grad_apply_part(dx, dy, x, y, M, C, mu, a, bsub, k, relu, t, nth);
    }
    return 0;
}

/* Synchronised batch norm (cnn.h). The same passes as above, in two parallel regions each, so
 * that the processes' sums are formed between them on the calling thread (MPI's funnelled
 * threads: only the main thread communicates). */
int lt_bn_forward_train_sync(float *y, const float *x, const float *res, const float *gamma,
                             const float *beta, float *mean, float *invstd, float *running_mean,
                             float *running_var, int M, int C, float eps, float momentum,
                             int relu, int threads, void *ws, const lt_bn_sync *sync) {
    const int P = sync->processes;
    const double Mt = (double)M * P; /* rows of all processes */
    if (Mt < 2)
        return lt_err_set("batch norm: expected more than 1 value per channel in training "
                          "(got %d)", M);
    if (check_threads(threads, "batch norm") != 0) return -1;
    if (!ws) return lt_err_set("batch norm: no scratch given");
    int nt = threads < M ? threads : M;
    double *part = ws, mu_p[C], m2[C];
    float k[C], sc[C], sh[C], mf[C];
    for (int c = 0; c < C; c++) k[c] = x[c];
    int used = nt;
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t r0, r1;
        bn_rows(M, t, nth, &r0, &r1);
        bn_sums(x, r0, r1, C, k, part + (size_t)t * 2 * C, part + (size_t)t * 2 * C + C);
#pragma omp single
        used = nth;
    }
    /* this process: mean_p and m2_p = Σ (x − mean_p)² */
    for (int c = 0; c < C; c++) {
        double sv, qv;
        bn_fold(part, used, C, c, &sv, &qv);
        double d = sv / M, q = qv - sv * d;
        mu_p[c] = k[c] + d;
        m2[c] = q > 0 ? q : 0;
    }
    /* all processes: mean = Σ mean_p / P, m2 = Σ (m2_p + M · (mean_p − mean)²) */
    double mu[C];
    memcpy(mu, mu_p, sizeof mu);
    if (sync->sum(sync->ctx, mu, C) != 0) return -1;
    for (int c = 0; c < C; c++) {
        mu[c] /= P;
        double dm = mu_p[c] - mu[c];
        m2[c] += (double)M * dm * dm;
    }
    if (sync->sum(sync->ctx, m2, C) != 0) return -1;
    for (int c = 0; c < C; c++) {
        double var = m2[c] / Mt; /* biased */
        double is = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)mu[c];
        invstd[c] = (float)is;
        if (running_mean)
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu[c]);
        if (running_var)
            running_var[c] = (float)((1.0 - momentum) * running_var[c] +
                                     momentum * var * Mt / (Mt - 1));
        sc[c] = (float)(gamma[c] * is);
        sh[c] = beta[c];
        mf[c] = (float)mu[c];
    }
#pragma omp parallel num_threads(nt)
    {
        int64_t r0, r1;
        bn_rows(M, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        bn_apply_any(y, x, res, r0, r1, C, mf, sc, sh, relu);
    }
    return 0;
}

int lt_bn_backward_sync(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *y, const float *gamma, const float *mean,
                        const float *invstd, int M, int C, int relu, int accumulate, int threads,
                        void *ws, const lt_bn_sync *sync) {
    if (check_threads(threads, "batch norm backward") != 0) return -1;
    if (!ws) return lt_err_set("batch norm backward: no scratch given");
    int nt = threads < M ? threads : M, used = nt;
    const double Mt = (double)M * sync->processes;
    double *part = ws, sums[2 * C];
    float mu[C], a[C], bsub[C], k[C];
    for (int c = 0; c < C; c++) mu[c] = mean[c];
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        bn_grad_part(dy, x, y, M, C, mu, part, relu, t, nth);
#pragma omp single
        used = nth;
    }
    for (int c = 0; c < C; c++) /* this process's Σg, Σg·(x − μ) */
        bn_fold(part, used, C, c, &sums[c], &sums[C + c]);
    if (sync->sum(sync->ctx, sums, 2 * C) != 0) return -1;
    for (int c = 0; c < C; c++) { /* dx as in lt_bn_backward, over the rows of all processes */
        double is = invstd[c], dg = sums[C + c] * is;
        /* the processes' mean of dgamma, dbeta, from the sums in double: the processes' own
         * parts nearly cancel (the next layer's batch norm removes the mean over all rows), and
         * rounding each part to float first would leave errors of order 1e-2 in the total */
        double dgm = dg / sync->processes, dbm = sums[c] / sync->processes;
        if (dgamma) dgamma[c] = (float)(accumulate ? dgamma[c] + dgm : dgm);
        if (dbeta) dbeta[c] = (float)(accumulate ? dbeta[c] + dbm : dbm);
        a[c] = (float)(gamma[c] * is);
        bsub[c] = (float)(sums[c] / Mt);
        k[c] = (float)(dg * is / Mt);
    }
#pragma omp parallel num_threads(nt)
    bn_grad_apply_part(dx, dy, x, y, M, C, mu, a, bsub, k, relu, omp_get_thread_num(),
                       omp_get_num_threads());
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* elementwise                                                                                 */

int lt_relu_forward(float *y, const float *x, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return 0;
}

int lt_relu_backward(float *dx, const float *dy, const float *y, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return 0;
}

int lt_add(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* pooling                                                                                     */

int lt_pool_dims_init(lt_pool_dims *d, int B, int H, int W, int C, int k, int stride, int pad) {
    if (B < 1 || H < 1 || W < 1 || C < 1 || k < 1 || stride < 1 || pad < 0 || pad > k / 2)
        return lt_err_set("max pool: bad dimensions (B %d, H %d, W %d, C %d, kernel %d, stride "
                          "%d, pad %d; pad must be at most kernel/2)",
                          B, H, W, C, k, stride, pad);
    d->B = B, d->H = H, d->W = W, d->C = C, d->k = k, d->stride = stride, d->pad = pad;
    d->OH = (H + 2 * pad - k) / stride + 1;
    d->OW = (W + 2 * pad - k) / stride + 1;
    if (H + 2 * pad < k || W + 2 * pad < k)
        return lt_err_set("max pool: kernel %d larger than the padded input %dx%d", k,
                          H + 2 * pad, W + 2 * pad);
    return 0;
}

/* Output pixels in parallel over (image, output row); the channels of a pixel are contiguous.
 * The first window tap inside the image initialises the maximum, the others are compared. */
int lt_maxpool_forward(const lt_pool_dims *d, float *y, int32_t *argmax, const float *x) {
    const int H = d->H, W = d->W, C = d->C, OH = d->OH, OW = d->OW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < d->B; b++)
        for (int oy = 0; oy < OH; oy++) {
            const float *xb = x + (int64_t)b * H * W * C;
            for (int ox = 0; ox < OW; ox++) {
                int64_t o = (((int64_t)b * OH + oy) * OW + ox) * C;
                float *yo = y + o;
                int32_t *ao = argmax + o;
                int first = 1;
                for (int ky = 0; ky < d->k; ky++) {
                    int iy = oy * d->stride - d->pad + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < d->k; kx++) {
                        int ix = ox * d->stride - d->pad + kx;
                        if (ix < 0 || ix >= W) continue;
                        const int32_t pos = iy * W + ix;
                        const float *xi = xb + (int64_t)pos * C;
                        if (first) {
                            memcpy(yo, xi, sizeof(float) * C);
                            for (int c = 0; c < C; c++) ao[c] = pos;
                            first = 0;
                            continue;
                        }
                        #pragma omp simd
                        for (int c = 0; c < C; c++) {
                            const float v = xi[c];
                            /* first maximum wins; NaN propagates (PyTorch's rule) */
                            const int take = v > yo[c] || v != v;
                            yo[c] = take ? v : yo[c];
                            ao[c] = take ? pos : ao[c];
                        }
                    }
                }
            }
        }
    return 0;
}

/* Parallel over images: each image's gradient is zeroed, then every output gradient is added at
 * its argmax, in output order (deterministic, contiguous rows). */
int lt_maxpool_backward(const lt_pool_dims *d, float *dx, const float *dy,
                         const int32_t *argmax) {
    const int C = d->C;
    const int64_t in_img = (int64_t)d->H * d->W, out_img = (int64_t)d->OH * d->OW;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < d->B; b++) {
        float *dxb = dx + (int64_t)b * in_img * C;
        memset(dxb, 0, sizeof(float) * in_img * C);
        const float *dyb = dy + (int64_t)b * out_img * C;
        const int32_t *ab = argmax + (int64_t)b * out_img * C;
        for (int64_t p = 0; p < out_img; p++)
            for (int c = 0; c < C; c++) dxb[(int64_t)ab[p * C + c] * C + c] += dyb[p * C + c];
    }
    return 0;
}

int lt_avgpool_forward(float *y, const float *x, int B, int HW, int C) {
    const int nblk = (C + CBLK - 1) / CBLK;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int blk = 0; blk < nblk; blk++) {
            const int c0 = blk * CBLK, nc = C - c0 < CBLK ? C - c0 : CBLK;
            double s[CBLK] = {0};
            const float *xb = x + (int64_t)b * HW * C + c0;
            for (int64_t p = 0; p < HW; p++)
                #pragma omp simd
                for (int c = 0; c < nc; c++) s[c] += xb[p * C + c];
            for (int c = 0; c < nc; c++) y[(int64_t)b * C + c0 + c] = (float)(s[c] / HW);
        }
    return 0;
}

int lt_avgpool_backward(float *dx, const float *dy, int B, int HW, int C) {
    const float inv = 1.0f / (float)HW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
            float *dxp = dx + ((int64_t)b * HW + p) * C;
            const float *dyb = dy + (int64_t)b * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) dxp[c] = dyb[c] * inv;
        }
    return 0;
}

