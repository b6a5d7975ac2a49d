/* render.c: the deterministic view renderer, (decoded image, recipe) -> (size, size, 3) uint8.
 *
 * Both tools call this on the same stored bytes, and a CUDA twin must give the same bytes
 * (docs/architecture.md §4). So: integer fixed point for resampling, grayscale and blur; where
 * float is used (colour jitter, the coefficient tables), only IEEE +, -, *, / in a fixed order (this file is
 * compiled with -ffp-contract=off), exact floor/frexp/ldexp, and lt_det_exp instead of libm's exp.
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

/* ---- 1. crop + resize (PIL Resample.c semantics) ---- */

#define RS_BITS 22 /* PIL's PRECISION_BITS for 8-bit images: 32 - 8 - 2 */

typedef struct {
    int ksize;     /* taps per output pixel (table stride) */
    int *first;    /* (out,) first input index used */
    int *count;    /* (out,) number of taps used */
    int32_t *coef; /* (out, ksize) fixed-point weights, RS_BITS fractional bits */
} resample_table;

static void table_free(resample_table *t) {
    free(t->first);
    free(t->count);
    free(t->coef);
}

static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* PIL precompute_coeffs + normalize_coeffs_8bpc for in_size -> out_size over the box [0, in_size),
 * for the n outputs out0..out0+n-1 only (entry i of the table is output out0 + i; each entry
 * depends on its output index alone, so a part of the table equals that part of the whole). */
static int table_init(resample_table *t, int in_size, int out_size, int out0, int n_out) {
    double scale = (double)in_size / (double)out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale; /* bilinear support 1, stretched when shrinking */
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = lt_malloc((size_t)n_out * sizeof(int), "resize table");
    t->count = lt_malloc((size_t)n_out * sizeof(int), "resize table");
    t->coef = lt_malloc((size_t)n_out * (size_t)t->ksize * sizeof(int32_t), "resize table");
    double *w = lt_malloc((size_t)t->ksize * sizeof(double), "resize table");
    if (!t->first || !t->count || !t->coef || !w) {
        free(w);
        table_free(t);
        return -1;
    }
    double ss = 1.0 / filterscale;
    for (int i = 0; i < n_out; i++) {
        const int xx = out0 + i;
        double center = ((double)xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        int xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        int n = xmax - xmin;
        double ww = 0.0;
        for (int x = 0; x < n; x++) {
            w[x] = triangle(((double)(x + xmin) - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = t->coef + (size_t)i * (size_t)t->ksize;
        for (int x = 0; x < t->ksize; x++) {
            double v = x < n && ww != 0.0 ? w[x] / ww : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (double)(1 << RS_BITS))
                         : (int32_t)(0.5 + v * (double)(1 << RS_BITS));
        }
        t->first[i] = xmin;
        t->count[i] = n;
    }
    free(w);
    return 0;
}

static uint8_t clip8_rs(int32_t v) {
    v >>= RS_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
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
            int32_t s0 = 1 << (RS_BITS - 1), s1 = s0, s2 = s0;
            for (int i = 0; i < t->count[x]; i++) {
                s0 += p[3 * i + 0] * k[i];
                s1 += p[3 * i + 1] * k[i];
                s2 += p[3 * i + 2] * k[i];
            }
            o[3 * x + 0] = clip8_rs(s0);
            o[3 * x + 1] = clip8_rs(s1);
            o[3 * x + 2] = clip8_rs(s2);
        }
    }
}

/* acc[c] += p[c] * k over n values, in fixed blocks of 16 that the compiler vectorises. */
static void axpy_u8(int32_t *restrict acc, const uint8_t *restrict p, int32_t k, size_t n) {
    size_t c = 0;
    for (; c + 16 <= n; c += 16)
        for (int j = 0; j < 16; j++) acc[c + j] += (int32_t)p[c + j] * k;
    for (; c < n; c++) acc[c] += (int32_t)p[c] * k;
}

/* o[c] = clip8(acc[c] >> RS_BITS), blocked likewise. */
static void store_u8(uint8_t *restrict o, const int32_t *restrict acc, size_t n) {
    size_t c = 0;
    for (; c + 16 <= n; c += 16)
        for (int j = 0; j < 16; j++) {
            int32_t v = acc[c + j] >> RS_BITS;
            v = v < 0 ? 0 : v;
            o[c + j] = (uint8_t)(v > 255 ? 255 : v);
        }
    for (; c < n; c++) o[c] = clip8_rs(acc[c]);
}

/* in: (in_h, w, 3); out: (out_h, w, 3); acc: (w * 3) int32 scratch. */
static void resample_vertical(const uint8_t *in, int w, const resample_table *t, int out_h,
                              int32_t *acc, uint8_t *out) {
    size_t row = (size_t)w * 3;
    for (int y = 0; y < out_h; y++) {
        const int32_t *k = t->coef + (size_t)y * (size_t)t->ksize;
        for (size_t c = 0; c < row; c++) acc[c] = 1 << (RS_BITS - 1);
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

/* Tensor .clamp(0, 255).to(uint8): clamp then truncate toward zero (NaN -> 0). Branch-free
 * (max, min, truncating convert) so the loops below vectorise. */
static inline uint8_t f32_to_u8(float v) {
    v = v > 0.0f ? v : 0.0f;
    v = v < 255.0f ? v : 255.0f;
    return (uint8_t)(int32_t)v;
}

/* The products of rgb_to_grayscale's weights with every uint8 level, each the float32 product
 * torch forms, so (lr[r] + lg[g]) + lb[b] is bit for bit its (0.2989 r + 0.587 g) + 0.114 b. */
typedef struct {
    float r[256], g[256], b[256];
} gray_lut;

static void gray_lut_init(gray_lut *t) {
    for (int v = 0; v < 256; v++) {
        t->r[v] = 0.2989f * (float)v;
        t->g[v] = 0.587f * (float)v;
        t->b[v] = 0.114f * (float)v;
    }
}

/* rgb_to_grayscale on a uint8 tensor: (0.2989 r + 0.587 g + 0.114 b) in float32, truncated. */
static inline uint8_t torch_gray(const gray_lut *t, const uint8_t *p) {
    float l = t->r[p[0]] + t->g[p[1]];
    l = l + t->b[p[2]];
    return f32_to_u8(l);
}

/* Applies a per-level table to every channel value. */
static void apply_lut(uint8_t *px, int64_t n, const uint8_t lut[256]) {
    for (int64_t i = 0; i < n * 3; i++) px[i] = lut[px[i]];
}

/* _blend(img, 0, f): a function of the level alone, so a 256-entry table of the exact float
 * arithmetic. */
static void adjust_brightness(uint8_t *px, int64_t n, float f) {
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = f32_to_u8(f * (float)v);
    apply_lut(px, n, lut);
}

/* _blend(img, mean(grayscale(img)), f); the integer sum of the gray image is exact (torch's float
 * sum is too as long as it stays below 2^24, i.e. for views up to ~256 x 256). */
static void adjust_contrast(uint8_t *px, int64_t n, float f, const gray_lut *gt) {
    int64_t sum = 0;
    for (int64_t i = 0; i < n; i++) sum += torch_gray(gt, px + 3 * i);
    float mean = (float)sum / (float)n;
    float other = (float)(1.0 - (double)f) * mean;
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = f32_to_u8(f * (float)v + other);
    apply_lut(px, n, lut);
}

/* _blend(img, grayscale(img), f): f * p + (1 - f) * gray, each product from a table of the same
 * float32 product. */
static void adjust_saturation(uint8_t *px, int64_t n, float f, const gray_lut *gt) {
    float g1 = (float)(1.0 - (double)f);
    float fp[256], gp[256];
    for (int v = 0; v < 256; v++) {
        fp[v] = f * (float)v;
        gp[v] = g1 * (float)v;
    }
    for (int64_t i = 0; i < n; i++) {
        uint8_t *p = px + 3 * i;
        float gray = gp[torch_gray(gt, p)];
        uint8_t r = f32_to_u8(fp[p[0]] + gray), g = f32_to_u8(fp[p[1]] + gray),
                b = f32_to_u8(fp[p[2]] + gray);
        p[0] = r, p[1] = g, p[2] = b;
    }
}

static inline float clamp01(float v) {
    v = v < 0.0f ? 0.0f : v;
    return v > 1.0f ? 1.0f : v;
}

/* _rgb2hsv -> (h + hue) % 1 -> _hsv2rgb -> * 255, truncated, for one pixel. */
static void hue_pixel(uint8_t *p, float hue, const float *by255) {
    float r = by255[p[0]], g = by255[p[1]], b = by255[p[2]];
    float maxc = r > g ? r : g, minc = r < g ? r : g;
    if (b > maxc) maxc = b;
    if (b < minc) minc = b;
    int eqc = maxc == minc;
    float cr = maxc - minc;
    float s = cr / (eqc ? 1.0f : maxc);
    float crd = eqc ? 1.0f : cr;
    float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    /* every candidate computed and selected, without branches (the data decides them) */
    float hr = bc - gc, hg = (2.0f + rc) - bc, hb = (4.0f + gc) - rc;
    float h = maxc == r ? hr : maxc == g ? hg : hb;
    h = h / 6.0f + 1.0f; /* in [5/6, 11/6]: fmod(h, 1) is exact subtraction */
    h = h >= 1.0f ? h - 1.0f : h;
    /* torch.remainder(h + hue, 1) for h + hue in (-0.5, 1.5) */
    h = h + hue;
    h = h >= 1.0f ? h - 1.0f : h < 0.0f ? h + 1.0f : h;

    float h6 = h * 6.0f;
    float fi = (float)(int)h6; /* floor: h6 >= 0 */
    float f = h6 - fi;
    int i = (int)fi; /* 0..6: i % 6 */
    i = i >= 6 ? i - 6 : i;
    float v = maxc;
    float pp = clamp01(v * (1.0f - s));
    float q = clamp01(v * (1.0f - s * f));
    float t = clamp01(v * (1.0f - s * (1.0f - f)));
    /* i: 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v), 5 (v, p, q) */
    float o[3];
    o[0] = (i == 0 || i == 5) ? v : i == 1 ? q : i <= 3 ? pp : t;
    o[1] = i == 0 ? t : i <= 2 ? v : i == 3 ? q : pp;
    o[2] = i <= 1 ? pp : i == 2 ? t : i <= 4 ? v : q;
    for (int c = 0; c < 3; c++) p[c] = f32_to_u8(o[c] * 255.0f);
}

static void adjust_hue(uint8_t *px, int64_t n, float hue) {
    float by255[256]; /* v / 255.0f, the same correctly rounded quotients */
    for (int v = 0; v < 256; v++) by255[v] = (float)v / 255.0f;
    for (int64_t i = 0; i < n; i++) hue_pixel(px + 3 * i, hue, by255);
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
        uint32_t l = ((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u + (uint32_t)p[2] * 7471u +
                      0x8000u) >> 16;
        p[0] = p[1] = p[2] = (uint8_t)l;
    }
}

/* ---- 5. Gaussian blur ---- */

#define BLUR_BITS 16

/* Index i mirrored into [0, n) without repeating the edge (torch "reflect" padding). */
static int reflect(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* Weights w[0..radius] (w[d] for offset +-d), summing over -radius..radius to 2^BLUR_BITS.
 * pdf: (radius + 1) doubles of scratch. */
static void blur_weights(double sigma, int radius, double *pdf, int32_t *w) {
    double sum = 0.0;
    for (int d = 0; d <= radius; d++) {
        double x = (double)d / sigma;
        pdf[d] = lt_det_exp(-0.5 * x * x);
        sum += d == 0 ? pdf[d] : 2.0 * pdf[d];
    }
    int32_t total = 0;
    for (int d = 0; d <= radius; d++) {
        w[d] = (int32_t)(pdf[d] / sum * (double)(1 << BLUR_BITS) + 0.5);
        total += d == 0 ? w[d] : 2 * w[d];
    }
    w[0] += (1 << BLUR_BITS) - total; /* exact normalisation: flat areas stay flat */
}

static int gaussian_blur(uint8_t *px, int w, int h, float sigma_f) {
    double sigma = (double)sigma_f;
    double limit = 4.0 * (w > h ? w : h) + 8.0; /* wider kernels only flatten the image more */
    double rad = ceil(3.0 * sigma);
    int radius = rad < 1.0 ? 1 : rad > limit ? (int)limit : (int)rad;
    int32_t *wt = lt_malloc((size_t)(radius + 1) * sizeof(int32_t), "blur weights");
    double *pdf = lt_malloc((size_t)(radius + 1) * sizeof(double), "blur weights");
    if (!wt || !pdf) {
        free(wt);
        free(pdf);
        return -1;
    }
    blur_weights(sigma, radius, pdf, wt);
    free(pdf);
    if (wt[0] == 1 << BLUR_BITS) { /* every off-centre weight rounds to 0: identity */
        free(wt);
        return 0;
    }
    int32_t *tmp = lt_malloc((size_t)w * h * 3 * sizeof(int32_t), "blur scratch");
    if (!tmp) {
        free(wt);
        return -1;
    }
    /* horizontal: tmp (h, w, 3) = sum_d w[|d|] px[y][reflect(x + d)], exact (< 2^24) */
    for (int y = 0; y < h; y++) {
        const uint8_t *row = px + (size_t)y * w * 3;
        int32_t *o = tmp + (size_t)y * w * 3;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int32_t s = 0;
                for (int d = -radius; d <= radius; d++)
                    s += wt[d < 0 ? -d : d] * row[3 * reflect(x + d, w) + c];
                o[3 * x + c] = s;
            }
    }
    /* vertical: px = round(sum_d w[|d|] tmp[reflect(y + d)][x] / 2^32) */
    for (int y = 0; y < h; y++) {
        uint8_t *o = px + (size_t)y * w * 3;
        for (int x = 0; x < w * 3; x++) {
            int64_t s = (int64_t)1 << (2 * BLUR_BITS - 1);
            for (int d = -radius; d <= radius; d++)
                s += (int64_t)wt[d < 0 ? -d : d] * tmp[(size_t)reflect(y + d, h) * w * 3 + x];
            int64_t v = s >> (2 * BLUR_BITS);
            o[x] = (uint8_t)(v > 255 ? 255 : v);
        }
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
    /* x = (wa * a + wb * b - mean) / std with wa = lambda / 255, wb = (1 - lambda) / 255, in this
     * order (a GPU twin evaluates the same expression). */
    float wa = lambda / 255.0f, wb = (1.0f - lambda) / 255.0f;
    for (int64_t i = 0; i < npix; i++)
        for (int c = 0; c < 3; c++) {
            float v = wa * (float)a[3 * i + c];
            if (b) v = v + wb * (float)b[3 * i + c];
            out[3 * i + c] = (v - mean[c]) / std[c];
        }
}
