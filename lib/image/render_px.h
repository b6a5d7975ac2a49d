/* render_px.h: the per-pixel arithmetic of view rendering, one source for the CPU and the GPU.
 *
 * Why it exists: lt-train must re-render bit for bit the views lt-embed's teacher saw, whichever
 * backend rendered them. So every value a rendered byte depends on is computed by the functions
 * below, which gcc compiles into lib/image/render.c (with -ffp-contract=off) and nvcc into
 * lib/image/render_cuda.cu (with -fmad=false): both sides evaluate the same IEEE-754 +, −, ×, ÷
 * in the same order, the same integer sums, the same truncating conversions. The tests that
 * compare render.c with PIL and torchvision (tests/py/test_render.py) therefore cover the code the
 * GPU runs, and the CUDA tests (tests/cuda/test_cuda_render.c) check that both give equal bytes.
 *
 * What is here (the steps of render.c's header comment):
 *   1. resample tables: PIL's precompute_coeffs + normalize_coeffs_8bpc for one output index
 *      (lt_rs_taps), and one output pixel of a pass (lt_rs_pixel);
 *   3. colour jitter: torchvision's float32 arithmetic on uint8 (brightness, contrast, saturation,
 *      hue) for one pixel or one level;
 *   4. PIL's grayscale;
 *   5. Gaussian blur: radius, 16-bit weights, reflect padding, one output value of each pass;
 *   and lt_det_exp_px, the + − × ÷ exp of recipe.h (lt_det_exp calls it).
 * Loops, tables and memory stay with the callers. Every function is pure (no globals). */
#ifndef LT_RENDER_PX_H
#define LT_RENDER_PX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define LT_PX static __host__ __device__ __forceinline__
#else
#define LT_PX static inline
#endif

/* ---- deterministic exp (recipe.h lt_det_exp) ---- */

/* exp(x) with IEEE double +, −, ×, ÷ only: x = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor
 * series to r^14 (error < 1e-17), then an exact ldexp. 0 below −745.2, +inf above 709.78. */
LT_PX double lt_det_exp_px(double x) {
    const double ln2_hi = 6.93147180369123816490e-01; /* low bits zero: k·ln2_hi is exact */
    const double ln2_lo = 1.90821492927058770002e-10; /* ln 2 − ln2_hi */
    const double inv_ln2 = 1.44269504088896338700e+00;
    if (x != x) return x;
    if (x > 709.78) return HUGE_VAL;
    if (x < -745.2) return 0.0;
    double k = floor(x * inv_ln2 + 0.5);
    double r = (x - k * ln2_hi) - k * ln2_lo;
    double p = 1.0;
    for (int n = 14; n >= 1; n--) p = 1.0 + p * r / (double)n;
    return ldexp(p, (int)k); /* exact scaling by 2^k (rounds only into subnormals) */
}

/* ---- 1. crop + resize (PIL Resample.c semantics) ---- */

#define LT_RS_BITS 22 /* PIL's PRECISION_BITS for 8-bit images: 32 − 8 − 2 */

/* Taps per output pixel (the table stride) for in_size -> out_size: 2·ceil(support) + 1 where
 * the bilinear support 1 is stretched by the downscale factor. */
LT_PX int lt_rs_ksize(int in_size, int out_size) {
    double scale = (double)in_size / (double)out_size;
    double support = scale < 1.0 ? 1.0 : scale;
    return (int)ceil(support) * 2 + 1;
}

/* The weights of output index xx of a resize in_size -> out_size over the box [0, in_size):
 * k[0..ksize) fixed point with LT_RS_BITS fractional bits (zero past the count), *first the first
 * input index read; returns the number of taps read (<= ksize). w: ksize doubles of scratch. */
LT_PX int lt_rs_taps(int in_size, int out_size, int xx, double *w, int32_t *k, int *first) {
    double scale = (double)in_size / (double)out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double ss = 1.0 / filterscale;
    double center = ((double)xx + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    int xmax = (int)(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > in_size) xmax = in_size;
    int n = xmax - xmin;
    double ww = 0.0;
    for (int x = 0; x < n; x++) {
        double t = ((double)(x + xmin) - center + 0.5) * ss; /* triangle filter */
        if (t < 0.0) t = -t;
        w[x] = t < 1.0 ? 1.0 - t : 0.0;
        ww += w[x];
    }
    for (int x = 0; x < ksize; x++) {
        double v = x < n && ww != 0.0 ? w[x] / ww : 0.0;
        k[x] = v < 0 ? (int32_t)(-0.5 + v * (double)(1 << LT_RS_BITS))
                     : (int32_t)(0.5 + v * (double)(1 << LT_RS_BITS));
    }
    *first = xmin;
    return n;
}

/* The input rows [*lo, *hi) that outputs out0..out0+n−1 of a resize in_size -> out_size read
 * (the first index and count of lt_rs_taps grow with the output index). */
LT_PX void lt_rs_span(int in_size, int out_size, int out0, int n, int *lo, int *hi) {
    double scale = (double)in_size / (double)out_size;
    double support = scale < 1.0 ? 1.0 : scale;
    double c0 = ((double)out0 + 0.5) * scale, c1 = ((double)(out0 + n - 1) + 0.5) * scale;
    int a = (int)(c0 - support + 0.5), b = (int)(c1 + support + 0.5);
    *lo = a < 0 ? 0 : a;
    *hi = b > in_size ? in_size : b;
}

/* A pass's sum, shifted and clamped to uint8. */
LT_PX uint8_t lt_rs_clip8(int32_t v) {
    v >>= LT_RS_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One output pixel of the horizontal pass: the three channels of lt_rs_pixel(p + c, 3, k, n),
 * summed in one loop over the taps (p: n RGB pixels). */
LT_PX void lt_rs_pixel3(const uint8_t *p, const int32_t *k, int n, uint8_t *out) {
    int32_t s0 = 1 << (LT_RS_BITS - 1), s1 = s0, s2 = s0;
    for (int i = 0; i < n; i++) {
        s0 += (int32_t)p[3 * i + 0] * k[i];
        s1 += (int32_t)p[3 * i + 1] * k[i];
        s2 += (int32_t)p[3 * i + 2] * k[i];
    }
    out[0] = lt_rs_clip8(s0);
    out[1] = lt_rs_clip8(s1);
    out[2] = lt_rs_clip8(s2);
}

/* One output value of a pass: rounding offset + Σ p[i·stride] · k[i] over n taps, clamped. */
LT_PX uint8_t lt_rs_pixel(const uint8_t *p, long stride, const int32_t *k, int n) {
    int32_t s = 1 << (LT_RS_BITS - 1);
    for (int i = 0; i < n; i++) s += (int32_t)p[(long)i * stride] * k[i];
    return lt_rs_clip8(s);
}

/* ---- 3. colour jitter: float32 arithmetic of torchvision's functional_tensor on uint8 ---- */

/* Tensor .clamp(0, 255).to(uint8): clamp then truncate toward zero (NaN -> 0). */
LT_PX uint8_t lt_px_f32_to_u8(float v) {
    v = v > 0.0f ? v : 0.0f;
    v = v < 255.0f ? v : 255.0f;
    return (uint8_t)(int32_t)v;
}

/* rgb_to_grayscale's weighted levels, each the float32 product torch forms. */
LT_PX float lt_px_gray_r(int v) { return 0.2989f * (float)v; }
LT_PX float lt_px_gray_g(int v) { return 0.587f * (float)v; }
LT_PX float lt_px_gray_b(int v) { return 0.114f * (float)v; }
/* rgb_to_grayscale on uint8: (0.2989 r + 0.587 g) + 0.114 b in float32, truncated. */
LT_PX uint8_t lt_px_gray_torch(float lr, float lg, float lb) {
    float l = lr + lg;
    l = l + lb;
    return lt_px_f32_to_u8(l);
}

/* adjust_brightness = _blend(img, 0, f) for one level. */
LT_PX uint8_t lt_px_brightness(int v, float f) { return lt_px_f32_to_u8(f * (float)v); }

/* adjust_contrast's second blend term (1 − f) · mean(grayscale(img)), from the exact integer sum
 * of the torch-grayscale image over n pixels. */
LT_PX float lt_px_contrast_other(float f, int64_t gray_sum, int64_t n) {
    float mean = (float)gray_sum / (float)n;
    return (float)(1.0 - (double)f) * mean;
}
/* adjust_contrast for one level. */
LT_PX uint8_t lt_px_contrast(int v, float f, float other) {
    return lt_px_f32_to_u8(f * (float)v + other);
}

/* adjust_saturation = _blend(img, grayscale(img), f): f·p + (1 − f)·gray per channel, where fp
 * is f·level and gp is (1 − f)·level (g1 = (float)(1 − (double)f)). */
LT_PX float lt_px_sat_fp(int v, float f) { return f * (float)v; }
LT_PX float lt_px_sat_g1(float f) { return (float)(1.0 - (double)f); }
LT_PX float lt_px_sat_gp(int v, float g1) { return g1 * (float)v; }
LT_PX uint8_t lt_px_sat(float fp_level, float gp_gray) { return lt_px_f32_to_u8(fp_level + gp_gray); }

LT_PX float lt_px_clamp01(float v) {
    v = v < 0.0f ? 0.0f : v;
    return v > 1.0f ? 1.0f : v;
}

/* adjust_hue for one pixel: _rgb2hsv -> (h + hue) mod 1 -> _hsv2rgb -> ·255, truncated. r, g, b
 * are level / 255.0f (the correctly rounded quotients); out: 3 bytes. */
LT_PX void lt_px_hue(float r, float g, float b, float hue, uint8_t *out) {
    float maxc = r > g ? r : g, minc = r < g ? r : g;
    if (b > maxc) maxc = b;
    if (b < minc) minc = b;
    int eqc = maxc == minc;
    float cr = maxc - minc;
    float s = cr / (eqc ? 1.0f : maxc);
    float crd = eqc ? 1.0f : cr;
    float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    float hr = bc - gc, hg = (2.0f + rc) - bc, hb = (4.0f + gc) - rc;
    float h = maxc == r ? hr : maxc == g ? hg : hb;
    h = h / 6.0f + 1.0f; /* in [5/6, 11/6]: fmod(h, 1) is exact subtraction */
    h = h >= 1.0f ? h - 1.0f : h;
    h = h + hue; /* torch.remainder(h + hue, 1) for h + hue in (−0.5, 1.5) */
    h = h >= 1.0f ? h - 1.0f : h < 0.0f ? h + 1.0f : h;

    float h6 = h * 6.0f;
    float fi = (float)(int)h6; /* floor: h6 >= 0 */
    float f = h6 - fi;
    int i = (int)fi; /* 0..6: i mod 6 */
    i = i >= 6 ? i - 6 : i;
    float v = maxc;
    float pp = lt_px_clamp01(v * (1.0f - s));
    float q = lt_px_clamp01(v * (1.0f - s * f));
    float t = lt_px_clamp01(v * (1.0f - s * (1.0f - f)));
    /* i: 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v), 5 (v, p, q) */
    float o0 = (i == 0 || i == 5) ? v : i == 1 ? q : i <= 3 ? pp : t;
    float o1 = i == 0 ? t : i <= 2 ? v : i == 3 ? q : pp;
    float o2 = i <= 1 ? pp : i == 2 ? t : i <= 4 ? v : q;
    out[0] = lt_px_f32_to_u8(o0 * 255.0f);
    out[1] = lt_px_f32_to_u8(o1 * 255.0f);
    out[2] = lt_px_f32_to_u8(o2 * 255.0f);
}

/* ---- 4. grayscale: PIL convert("L") ---- */

LT_PX uint8_t lt_px_gray_pil(uint8_t r, uint8_t g, uint8_t b) {
    return (uint8_t)(((uint32_t)r * 19595u + (uint32_t)g * 38470u + (uint32_t)b * 7471u +
                      0x8000u) >> 16);
}

/* ---- 5. Gaussian blur ---- */

#define LT_BLUR_BITS 16

/* The kernel radius for sigma on a w x h view: ceil(3 sigma), at least 1, at most 4·max(w, h) + 8
 * (wider kernels only flatten the image more). */
LT_PX int lt_blur_radius(float sigma_f, int w, int h) {
    double sigma = (double)sigma_f;
    double limit = 4.0 * (w > h ? w : h) + 8.0;
    double rad = ceil(3.0 * sigma);
    return rad < 1.0 ? 1 : rad > limit ? (int)limit : (int)rad;
}

/* Weights w[0..radius] (w[d] for offset ±d), exp(−d²/2σ²) normalised and quantised to
 * LT_BLUR_BITS bits, summing over −radius..radius to exactly 2^LT_BLUR_BITS. pdf: radius + 1
 * doubles of scratch. */
LT_PX void lt_blur_weights(float sigma_f, int radius, double *pdf, int32_t *w) {
    double sigma = (double)sigma_f;
    double sum = 0.0;
    for (int d = 0; d <= radius; d++) {
        double x = (double)d / sigma;
        pdf[d] = lt_det_exp_px(-0.5 * x * x);
        sum += d == 0 ? pdf[d] : 2.0 * pdf[d];
    }
    int32_t total = 0;
    for (int d = 0; d <= radius; d++) {
        w[d] = (int32_t)(pdf[d] / sum * (double)(1 << LT_BLUR_BITS) + 0.5);
        total += d == 0 ? w[d] : 2 * w[d];
    }
    w[0] += (1 << LT_BLUR_BITS) - total; /* exact normalisation: flat areas stay flat */
}

/* Index i mirrored into [0, n) without repeating the edge (torch "reflect" padding). */
LT_PX int lt_blur_reflect(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* Horizontal pass, one value: Σ_d w[|d|] · row[3·reflect(x + d) + c], exact (< 2^24). row: one
 * (w, 3) uint8 row. */
LT_PX int32_t lt_blur_h(const uint8_t *row, int w, int x, int c, const int32_t *wt, int radius) {
    int32_t s = 0;
    for (int d = -radius; d <= radius; d++)
        s += wt[d < 0 ? -d : d] * row[3 * lt_blur_reflect(x + d, w) + c];
    return s;
}

/* Vertical pass, one value: round(Σ_d w[|d|] · col[reflect(y + d)·stride] / 2^32). col: the
 * horizontal pass's value at row 0 of this column; rows `stride` int32 apart. */
LT_PX uint8_t lt_blur_v(const int32_t *col, long stride, int h, int y, const int32_t *wt,
                        int radius) {
    int64_t s = (int64_t)1 << (2 * LT_BLUR_BITS - 1);
    for (int d = -radius; d <= radius; d++)
        s += (int64_t)wt[d < 0 ? -d : d] * col[(long)lt_blur_reflect(y + d, h) * stride];
    int64_t v = s >> (2 * LT_BLUR_BITS);
    return (uint8_t)(v > 255 ? 255 : v);
}

/* ---- mixup + normalisation (render.h lt_mix_normalize) ---- */

/* x = (wa·a + wb·b − mean) / std, with wa = λ / 255, wb = (1 − λ) / 255 (has_b: b is present). */
LT_PX float lt_px_mix_normalize(uint8_t a, uint8_t b, int has_b, float wa, float wb, float mean,
                                float std) {
    float v = wa * (float)a;
    if (has_b) v = v + wb * (float)b;
    return (v - mean) / std;
}

#endif
