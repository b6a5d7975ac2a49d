/* render.c: the deterministic view renderer, (decoded image, recipe) -> (size, size, 3) uint8.
 *
 * Both tools call this on the same stored bytes, and the CUDA renderer (render_cuda.cu) must give
 * the same bytes (docs/architecture.md §4). So: integer fixed point for resampling, grayscale and
 * blur; where float is used (colour jitter, the coefficient tables), only IEEE +, -, *, / in a
 * fixed order (this file is compiled with -ffp-contract=off), exact floor/frexp/ldexp, and
 * lt_det_exp instead of libm's exp. Every value a byte depends on is computed by the functions of
 * render_px.h, which the CUDA renderer compiles too; this file holds the loops, tables and memory.
 *
 * The steps and the reference each one reproduces (tests/py/test_render.py checks them):
 *   1. crop + resize: PIL's Image.crop(box).resize((size, size), BILINEAR), which is what
 *      torchvision's RandomResizedCrop does on PIL images: separable triangle filter whose support
 *      grows with the downscale factor (antialias), horizontal pass then vertical pass, 22-bit
 *      fixed-point coefficients, uint8 intermediate. Only pixels inside the crop are read.
 *   2. horizontal flip (exact).
 *   3. colour jitter in the recipe's order, each op the float32 arithmetic of
 *      torchvision.transforms.functional on a uint8 tensor (adjust_brightness / _contrast /
 *      _saturation / _hue), including its truncating float -> uint8 casts. A factor of 1 (hue 0)
 *      skips the op, as ColorJitter does for a zero strength.
 *   4. grayscale: PIL convert("L"), L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, on 3 channels.
 *   5. Gaussian blur: radius ceil(3 sigma) (>= 1), weights exp(-x^2 / 2 sigma^2) normalised and
 *      quantised to 16 bits (summing to exactly 2^16), reflect padding as torchvision's
 *      gaussian_blur, separable with an exact int32 intermediate, rounded once at the end. */
#include "image/render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "image/render_px.h"

/* ---- 1. crop + resize (PIL Resample.c semantics; the arithmetic: render_px.h) ---- */

typedef struct {
    int ksize;     /* taps per output pixel (table stride) */
    int *first;    /* (out,) first input index used */
    int *count;    /* (out,) number of taps used */
    int32_t *coef; /* (out, ksize) fixed-point weights, LT_RS_BITS fractional bits */
} resample_table;

static void table_free(resample_table *t) {
    free(t->first);
    free(t->count);
    free(t->coef);
}

/* The table of in_size -> out_size over the box [0, in_size), for the n outputs out0..out0+n-1
 * only (entry i of the table is output out0 + i; each entry depends on its output index alone, so
 * a part of the table equals that part of the whole). */
static int table_init(resample_table *t, int in_size, int out_size, int out0, int n_out) {
    t->ksize = lt_rs_ksize(in_size, out_size);
    t->first = lt_malloc((size_t)n_out * sizeof(int), "resize table");
    t->count = lt_malloc((size_t)n_out * sizeof(int), "resize table");
    t->coef = lt_malloc((size_t)n_out * (size_t)t->ksize * sizeof(int32_t), "resize table");
    double *w = lt_malloc((size_t)t->ksize * sizeof(double), "resize table");
    if (!t->first || !t->count || !t->coef || !w) {
        free(w);
        table_free(t);
        return -1;
    }
    for (int i = 0; i < n_out; i++)
        t->count[i] = lt_rs_taps(in_size, out_size, out0 + i, w,
                                 t->coef + (size_t)i * (size_t)t->ksize, &t->first[i]);
    free(w);
    return 0;
}

/* in: (h, in_stride) uint8 rows of w RGB pixels; out: (h, out_w, 3). */
static void resample_horizontal(const uint8_t *in, size_t in_stride, int h,
                                const resample_table *t, int out_w, uint8_t *out) {
    for (int y = 0; y < h; y++) {
        const uint8_t *row = in + (size_t)y * in_stride;
        uint8_t *o = out + (size_t)y * out_w * 3;
        for (int x = 0; x < out_w; x++) {
            const int32_t *k = t->coef + (size_t)x * (size_t)t->ksize;
            const uint8_t *p = row + (size_t)t->first[x] * 3;
            lt_rs_pixel3(p, k, t->count[x], o + 3 * x);
        }
    }
}

/* acc[c] += p[c] * k over n values, in fixed blocks of 16 that the compiler vectorises: the
 * integer sum of lt_rs_pixel, a row at a time. */
static void axpy_u8(int32_t *restrict acc, const uint8_t *restrict p, int32_t k, size_t n) {
    size_t c = 0;
    for (; c + 16 <= n; c += 16)
        for (int j = 0; j < 16; j++) acc[c + j] += (int32_t)p[c + j] * k;
    for (; c < n; c++) acc[c] += (int32_t)p[c] * k;
}

/* o[c] = lt_rs_clip8(acc[c]), blocked likewise. */
static void store_u8(uint8_t *restrict o, const int32_t *restrict acc, size_t n) {
    size_t c = 0;
    for (; c + 16 <= n; c += 16)
        for (int j = 0; j < 16; j++) {
            int32_t v = acc[c + j] >> LT_RS_BITS;
            v = v < 0 ? 0 : v;
            o[c + j] = (uint8_t)(v > 255 ? 255 : v);
        }
    for (; c < n; c++) o[c] = lt_rs_clip8(acc[c]);
}

/* in: (in_h, w, 3); out: (out_h, w, 3); acc: (w * 3) int32 scratch. */
static void resample_vertical(const uint8_t *in, int w, const resample_table *t, int out_h,
                              int32_t *acc, uint8_t *out) {
    size_t row = (size_t)w * 3;
    for (int y = 0; y < out_h; y++) {
        const int32_t *k = t->coef + (size_t)y * (size_t)t->ksize;
        for (size_t c = 0; c < row; c++) acc[c] = 1 << (LT_RS_BITS - 1);
        for (int i = 0; i < t->count[y]; i++)
            axpy_u8(acc, in + (size_t)(t->first[y] + i) * row, k[i], row);
        store_u8(out + (size_t)y * row, acc, row);
    }
}

/* Crops (x, y, w, h) from src, resizes it to (out_h, out_w) and keeps the window win (x, y, w, h
 * of the resized image): out (win h, win w, 3). Only the source rows the window's output rows
 * read are resampled horizontally (as PIL does for its box), so a window costs what it shows. */
static int crop_resize(const lt_image *src, const int32_t crop[4], int out_w, int out_h,
                       const int32_t win[4], uint8_t *out) {
    int cx = crop[0], cy = crop[1], cw = crop[2], ch = crop[3];
    int wx = win[0], wy = win[1], ww = win[2], wh = win[3];
    resample_table th = {0}, tv = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = lt_malloc((size_t)ww * 3 * sizeof(int32_t), "resize scratch");
    int rc = -1;
    if (acc && table_init(&th, cw, out_w, wx, ww) == 0) {
        if (table_init(&tv, ch, out_h, wy, wh) == 0) {
            int y0 = tv.first[0], y1 = tv.first[0]; /* source rows [y0, y1) of the crop used */
            for (int i = 0; i < wh; i++) {
                if (tv.first[i] < y0) y0 = tv.first[i];
                if (tv.first[i] + tv.count[i] > y1) y1 = tv.first[i] + tv.count[i];
            }
            for (int i = 0; i < wh; i++) tv.first[i] -= y0;
            if ((tmp = lt_malloc((size_t)(y1 - y0) * ww * 3 + 1, "resize scratch")) != NULL) {
                size_t stride = (size_t)src->w * 3;
                const uint8_t *origin = src->rgb + (size_t)(cy + y0) * stride + (size_t)cx * 3;
                resample_horizontal(origin, stride, y1 - y0, &th, ww, tmp);
                resample_vertical(tmp, ww, &tv, wh, acc, out);
                rc = 0;
            }
            table_free(&tv);
        }
        table_free(&th);
    }
    free(tmp);
    free(acc);
    return rc;
}

/* ---- 2. flip ---- */

static void flip_horizontal(uint8_t *img, int w, int h) {
    for (int y = 0; y < h; y++) {
        uint8_t *row = img + (size_t)y * w * 3;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int c = 0; c < 3; c++) {
                uint8_t t = row[3 * a + c];
                row[3 * a + c] = row[3 * b + c];
                row[3 * b + c] = t;
            }
    }
}

/* ---- 3. colour jitter: float32 arithmetic of torchvision's functional_tensor on uint8 ---- */

/* The grayscale weights' products with every uint8 level (render_px.h), so that
 * lt_px_gray_torch(r[p0], g[p1], b[p2]) is torch's (0.2989 r + 0.587 g) + 0.114 b. */
typedef struct {
    float r[256], g[256], b[256];
} gray_lut;

static void gray_lut_init(gray_lut *t) {
    for (int v = 0; v < 256; v++) {
        t->r[v] = lt_px_gray_r(v);
        t->g[v] = lt_px_gray_g(v);
        t->b[v] = lt_px_gray_b(v);
    }
}

static inline uint8_t torch_gray(const gray_lut *t, const uint8_t *p) {
    return lt_px_gray_torch(t->r[p[0]], t->g[p[1]], t->b[p[2]]);
}

/* Applies a per-level table to every channel value. */
static void apply_lut(uint8_t *px, int64_t n, const uint8_t lut[256]) {
    for (int64_t i = 0; i < n * 3; i++) px[i] = lut[px[i]];
}

/* A function of the level alone: a 256-entry table of lt_px_brightness. */
static void adjust_brightness(uint8_t *px, int64_t n, float f) {
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = lt_px_brightness(v, f);
    apply_lut(px, n, lut);
}

/* The integer sum of the gray image is exact (torch's float sum is too as long as it stays below
 * 2^24, i.e. for views up to ~256 x 256); then a table of lt_px_contrast. */
static void adjust_contrast(uint8_t *px, int64_t n, float f, const gray_lut *gt) {
    int64_t sum = 0;
    for (int64_t i = 0; i < n; i++) sum += torch_gray(gt, px + 3 * i);
    float other = lt_px_contrast_other(f, sum, n);
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = lt_px_contrast(v, f, other);
    apply_lut(px, n, lut);
}

/* f * p + (1 - f) * gray, each product from a table of the same float32 product. */
static void adjust_saturation(uint8_t *px, int64_t n, float f, const gray_lut *gt) {
    float g1 = lt_px_sat_g1(f);
    float fp[256], gp[256];
    for (int v = 0; v < 256; v++) {
        fp[v] = lt_px_sat_fp(v, f);
        gp[v] = lt_px_sat_gp(v, g1);
    }
    for (int64_t i = 0; i < n; i++) {
        uint8_t *p = px + 3 * i;
        float gray = gp[torch_gray(gt, p)];
        uint8_t r = lt_px_sat(fp[p[0]], gray), g = lt_px_sat(fp[p[1]], gray),
                b = lt_px_sat(fp[p[2]], gray);
        p[0] = r, p[1] = g, p[2] = b;
    }
}

static void adjust_hue(uint8_t *px, int64_t n, float hue) {
    float by255[256]; /* v / 255.0f, the same correctly rounded quotients */
    for (int v = 0; v < 256; v++) by255[v] = (float)v / 255.0f;
    for (int64_t i = 0; i < n; i++) {
        uint8_t *p = px + 3 * i;
        lt_px_hue(by255[p[0]], by255[p[1]], by255[p[2]], hue, p);
    }
}

static void color_jitter(uint8_t *px, int64_t n, const lt_recipe *r) {
    gray_lut gt;
    gray_lut_init(&gt);
    for (int k = 0; k < 4; k++) {
        int op = r->order[k];
        float f = r->factor[op];
        switch (op) {
        case LT_JIT_BRIGHTNESS: if (f != 1.0f) adjust_brightness(px, n, f); break;
        case LT_JIT_CONTRAST: if (f != 1.0f) adjust_contrast(px, n, f, &gt); break;
        case LT_JIT_SATURATION: if (f != 1.0f) adjust_saturation(px, n, f, &gt); break;
        case LT_JIT_HUE: if (f != 0.0f) adjust_hue(px, n, f); break;
        default: break;
        }
    }
}

/* ---- 4. grayscale (PIL convert("L")) ---- */

static void grayscale(uint8_t *px, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t *p = px + 3 * i;
        p[0] = p[1] = p[2] = lt_px_gray_pil(p[0], p[1], p[2]);
    }
}

/* ---- 5. Gaussian blur ---- */

static int gaussian_blur(uint8_t *px, int w, int h, float sigma) {
    int radius = lt_blur_radius(sigma, w, h);
    int32_t *wt = lt_malloc((size_t)(radius + 1) * sizeof(int32_t), "blur weights");
    double *pdf = lt_malloc((size_t)(radius + 1) * sizeof(double), "blur weights");
    if (!wt || !pdf) {
        free(wt);
        free(pdf);
        return -1;
    }
    lt_blur_weights(sigma, radius, pdf, wt);
    free(pdf);
    if (wt[0] == 1 << LT_BLUR_BITS) { /* every off-centre weight rounds to 0: identity */
        free(wt);
        return 0;
    }
    int32_t *tmp = lt_malloc((size_t)w * h * 3 * sizeof(int32_t), "blur scratch");
    if (!tmp) {
        free(wt);
        return -1;
    }
    /* horizontal: tmp (h, w, 3) */
    for (int y = 0; y < h; y++) {
        const uint8_t *row = px + (size_t)y * w * 3;
        int32_t *o = tmp + (size_t)y * w * 3;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) o[3 * x + c] = lt_blur_h(row, w, x, c, wt, radius);
    }
    /* vertical: px (h, w, 3) */
    for (int y = 0; y < h; y++) {
        uint8_t *o = px + (size_t)y * w * 3;
        for (int x = 0; x < w * 3; x++) o[x] = lt_blur_v(tmp + x, (long)w * 3, h, y, wt, radius);
    }
    free(tmp);
    free(wt);
    return 0;
}

/* ---- the pipeline ---- */

int lt_resize(const lt_image *src, const int32_t box[4], int out_w, int out_h,
              const int32_t win[4], uint8_t *out) {
    if (!src || !src->rgb || src->w < 1 || src->h < 1)
        return lt_err_set("render: empty source image");
    if (out_w < 1 || out_h < 1)
        return lt_err_set("render: output size %dx%d must be at least 1x1", out_w, out_h);
    const int32_t *c = box;
    if (c[2] < 1 || c[3] < 1 || c[0] < 0 || c[1] < 0 || c[0] > src->w - c[2] ||
        c[1] > src->h - c[3])
        return lt_err_set("render: crop (x %d, y %d, w %d, h %d) is not inside the %dx%d image",
                          c[0], c[1], c[2], c[3], src->w, src->h);
    const int32_t all[4] = {0, 0, out_w, out_h};
    if (!win) win = all;
    if (win[2] < 1 || win[3] < 1 || win[0] < 0 || win[1] < 0 || win[0] > out_w - win[2] ||
        win[1] > out_h - win[3])
        return lt_err_set("render: window (x %d, y %d, w %d, h %d) is not inside the %dx%d "
                          "output", win[0], win[1], win[2], win[3], out_w, out_h);
    return crop_resize(src, c, out_w, out_h, win, out);
}

int lt_render(const lt_image *src, const lt_recipe *r, int size, uint8_t *out) {
    if (size < 1) return lt_err_set("render: output size %d must be >= 1", size);
    if (lt_resize(src, r->crop, size, size, NULL, out) < 0) return -1;
    int64_t n = (int64_t)size * size;
    if (r->flip) flip_horizontal(out, size, size);
    if (r->jitter) color_jitter(out, n, r);
    if (r->gray) grayscale(out, n);
    if (r->blur_sigma > 0.0f && gaussian_blur(out, size, size, r->blur_sigma) < 0) return -1;
    return 0;
}

void lt_mix_normalize(const uint8_t *a, const uint8_t *b, float lambda, const float mean[3],
                      const float std[3], int64_t npix, float *out) {
    /* wa = lambda / 255, wb = (1 - lambda) / 255; the expression: render_px.h */
    float wa = lambda / 255.0f, wb = (1.0f - lambda) / 255.0f;
    for (int64_t i = 0; i < npix; i++)
        for (int c = 0; c < 3; c++)
            out[3 * i + c] = lt_px_mix_normalize(a[3 * i + c], b ? b[3 * i + c] : 0, b != NULL,
                                                 wa, wb, mean[c], std[c]);
}
