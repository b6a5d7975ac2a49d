/* recipe.c: drawing view recipes (the random part of the view transform) from the counter-based
 * RNG, mirroring torchvision's RandomResizedCrop / RandomHorizontalFlip / RandomApply(ColorJitter)
 * / RandomGrayscale / GaussianBlur semantics (docs/architecture.md §1). Rendering a recipe is
 * render.c's job.
 *
 * Streams: every sample s = image * V + view owns three Philox streams keyed (seed, image, view, c):
 *   c = 0  the primary view's recipe (lt_recipe_draw(..., stream 0) with the image's own size)
 *   c = 1  the partner view's recipe (drawn with the partner image's size)
 *   c = 2  the mixup partner image (uniform over the other images), then lambda
 * Inside a recipe stream each group of variables starts at its own fixed Philox block (crop at
 * block 0, flip 16, jitter 32, gray 48, blur 64), and every variable of a group is always drawn,
 * whatever the coin flips say. So no variable depends on how many words another one consumed
 * (the crop's attempts, a rejection in lt_rng_below) or on whether an op was applied.
 *
 * Transcendentals go through lt_det_exp / lt_det_log (defined here, + - * / only), so a given
 * (seed, image, view) gives the same recipe on every machine and libm. */
#include "image/recipe.h"

#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "image/render_px.h"

void lt_transform_default(lt_transform *t) {
    static const lt_transform def = {
        .image_size = 224,
        .crop_scale = {0.14f, 1.0f},
        .crop_ratio = {3.0f / 4.0f, 4.0f / 3.0f},
        .hflip_p = 0.5f,
        .jitter_p = 0.8f,
        .jitter = {0.4f, 0.4f, 0.2f, 0.1f},
        .gray_p = 0.2f,
        .blur_sigma = {0.0f, 0.1f},
        .mean = {0.485f, 0.456f, 0.406f},
        .std = {0.229f, 0.224f, 0.225f},
    };
    *t = def;
}

/* ---- deterministic exp / log ---- */

#define LN2_HI 6.93147180369123816490e-01 /* ln 2 with its low bits zero: k * LN2_HI is exact */
#define LN2_LO 1.90821492927058770002e-10 /* ln 2 - LN2_HI */

/* The CUDA renderer computes blur weights with the same function (image/render_px.h). */
double lt_det_exp(double x) { return lt_det_exp_px(x); }

double lt_det_log(double x) {
    if (x != x || x < 0) return NAN;
    if (x == 0) return -HUGE_VAL;
    if (x > 1.7976931348623157e308) return x;
    /* x = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172. */
    int e;
    double m = frexp(x, &e);
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e--;
    }
    double s = (m - 1.0) / (m + 1.0), z = s * s;
    double sum = 0.0;
    for (int n = 23; n >= 3; n -= 2) sum = (sum + 1.0 / (double)n) * z; /* z/3 + z^2/5 + ... */
    double logm = 2.0 * s + 2.0 * s * sum;
    return (double)e * LN2_HI + ((double)e * LN2_LO + logm);
}

/* ---- recipe ---- */

enum { BLOCK_CROP = 0, BLOCK_FLIP = 16, BLOCK_JITTER = 32, BLOCK_GRAY = 48, BLOCK_BLUR = 64 };

/* Positions the stream at the start of Philox block `block` (counter word 3). */
static void rng_seek(lt_rng *r, uint32_t block) {
    r->ctr[3] = block;
    r->pos = 4;
}

/* Python's round(): nearest integer, ties to even. */
static double round_half_even(double x) {
    double f = floor(x), d = x - f;
    if (d > 0.5) return f + 1.0;
    if (d < 0.5) return f;
    return fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

/* torchvision RandomResizedCrop.get_params: crop = (x, y, w, h). */
static void draw_crop(const lt_transform *t, lt_rng *r, int W, int H, int32_t crop[4]) {
    double area = (double)W * (double)H;
    double rmin = fmin(t->crop_ratio[0], t->crop_ratio[1]);
    double rmax = fmax(t->crop_ratio[0], t->crop_ratio[1]);
    double lr0 = lt_det_log(t->crop_ratio[0]), lr1 = lt_det_log(t->crop_ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * lt_rng_range(r, t->crop_scale[0], t->crop_scale[1]);
        double ar = lt_det_exp(lt_rng_range(r, lr0, lr1));
        double w = round_half_even(sqrt(target * ar));
        double h = round_half_even(sqrt(target / ar));
        if (w > 0 && w <= W && h > 0 && h <= H) {
            int iw = (int)w, ih = (int)h;
            int y = (int)lt_rng_below(r, (uint64_t)(H - ih + 1));
            int x = (int)lt_rng_below(r, (uint64_t)(W - iw + 1));
            crop[0] = x, crop[1] = y, crop[2] = iw, crop[3] = ih;
            return;
        }
    }
    /* Fallback: centre crop of the whole image, aspect ratio clamped to [rmin, rmax]. */
    double in_ratio = (double)W / (double)H;
    int w = W, h = H;
    if (in_ratio < rmin) h = (int)round_half_even((double)w / rmin);
    else if (in_ratio > rmax) w = (int)round_half_even((double)h * rmax);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    if (w > W) w = W;
    if (h > H) h = H;
    crop[0] = (W - w) / 2, crop[1] = (H - h) / 2, crop[2] = w, crop[3] = h;
}

/* ColorJitter.get_params: op order (a random permutation) and the four factors. */
static void draw_jitter(const lt_transform *t, lt_rng *r, lt_recipe *out) {
    int applied = lt_rng_uniform(r) < t->jitter_p;
    uint32_t perm[4] = {0, 1, 2, 3};
    lt_rng_shuffle_u32(r, perm, 4);
    float f[4];
    for (int k = 0; k < 3; k++) {
        double x = t->jitter[k];
        f[k] = (float)lt_rng_range(r, fmax(0.0, 1.0 - x), 1.0 + x);
    }
    double hue = fmin(fmax(t->jitter[3], 0.0), 0.5);
    f[3] = (float)lt_rng_range(r, -hue, hue);
    out->jitter = (uint8_t)applied;
    for (int k = 0; k < 4; k++) {
        out->order[k] = (uint8_t)(applied ? perm[k] : (uint32_t)k);
        out->factor[k] = applied ? f[k] : (k == LT_JIT_HUE ? 0.0f : 1.0f);
    }
}

void lt_recipe_draw(const lt_transform *t, uint64_t seed, uint32_t image, uint32_t view,
                    uint32_t stream, int src_w, int src_h, lt_recipe *out) {
    memset(out, 0, sizeof *out);
    lt_rng r;
    lt_rng_init(&r, seed, image, view, stream);
    if (src_w < 1) src_w = 1;
    if (src_h < 1) src_h = 1;

    rng_seek(&r, BLOCK_CROP);
    draw_crop(t, &r, src_w, src_h, out->crop);

    rng_seek(&r, BLOCK_FLIP);
    out->flip = lt_rng_uniform(&r) < t->hflip_p;

    rng_seek(&r, BLOCK_JITTER);
    draw_jitter(t, &r, out);

    rng_seek(&r, BLOCK_GRAY);
    out->gray = lt_rng_uniform(&r) < t->gray_p;

    rng_seek(&r, BLOCK_BLUR);
    double sigma = lt_rng_range(&r, t->blur_sigma[0], t->blur_sigma[1]);
    out->blur_sigma = sigma > 0 ? (float)sigma : 0.0f;
}

void lt_sample_draw(const lt_transform *t, uint64_t seed, int mixup, uint32_t n_images,
                    const int32_t *widths, const int32_t *heights, uint32_t image, uint32_t view,
                    lt_sample *out) {
    memset(out, 0, sizeof *out);
    out->image[0] = (int32_t)image;
    out->image[1] = -1;
    out->lambda = 1.0f;
    lt_recipe_draw(t, seed, image, view, 0, widths[image], heights[image], &out->r[0]);
    if (!mixup || n_images < 2) return;

    lt_rng r;
    lt_rng_init(&r, seed, image, view, 2);
    uint32_t k = (uint32_t)lt_rng_below(&r, n_images - 1); /* skip the image itself */
    uint32_t partner = k >= image ? k + 1 : k;
    /* 24 random bits: lambda is exactly representable and strictly below 1. */
    out->lambda = (float)(lt_rng_u32(&r) >> 8) * (1.0f / 16777216.0f);
    out->image[1] = (int32_t)partner;
    lt_recipe_draw(t, seed, image, view, 1, widths[partner], heights[partner], &out->r[1]);
}
