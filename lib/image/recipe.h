/* recipe.h: view recipes, the random choices that define one augmented view of one image.
 *
 * A recipe is drawn from the counter-based RNG keyed by (seed, image, view, stream), so it never
 * depends on thread count, batch size or order. lt-embed stores every recipe in the cache; lt-train
 * reads them back and re-renders the exact same pixels (render.h). The transform parameters are
 * those of docs/architecture.md §1 (LightlyTrain's distillation defaults) and can be overridden. */
#ifndef LT_RECIPE_H
#define LT_RECIPE_H

#include <stdint.h>

typedef struct {
    int image_size;        /* output side, 224 */
    float crop_scale[2];   /* RandomResizedCrop scale range (0.14, 1) */
    float crop_ratio[2];   /* aspect ratio range (3/4, 4/3) */
    float hflip_p;         /* 0.5 */
    float jitter_p;        /* 0.8 */
    float jitter[4];       /* brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 */
    float gray_p;          /* 0.2 */
    float blur_sigma[2];   /* sigma ~ U(0, 0.1) */
    float mean[3], std[3]; /* ImageNet normalisation */
} lt_transform;

void lt_transform_default(lt_transform *t);

enum { LT_JIT_BRIGHTNESS = 0, LT_JIT_CONTRAST = 1, LT_JIT_SATURATION = 2, LT_JIT_HUE = 3 };

typedef struct {
    int32_t crop[4];   /* x, y, w, h of the crop box in source pixels (inside the image) */
    uint8_t flip;      /* horizontal flip */
    uint8_t jitter;    /* colour jitter applied */
    uint8_t gray;      /* converted to grayscale (3 equal channels) */
    uint8_t order[4];  /* jitter op order, a permutation of LT_JIT_* */
    float factor[4];   /* brightness, contrast, saturation factors (1 = identity), hue shift in
                          [-0.5, 0.5] turns (0 = identity) */
    float blur_sigma;  /* Gaussian blur sigma in output pixels (0 = none) */
} lt_recipe;

/* One training sample: the primary view and, with mixup, a partner view of a different image.
 * The mixed image is lambda * a + (1 - lambda) * b. Without mixup (or with a single image):
 * image[1] = -1, lambda = 1 and r[1] is all zeros. */
typedef struct {
    int32_t image[2];
    float lambda;
    lt_recipe r[2];
} lt_sample;

/* Draws the recipe of view `view` of an image of size src_w x src_h; stream separates the
 * primary (0) from the partner (1) recipe of the same sample. */
void lt_recipe_draw(const lt_transform *t, uint64_t seed, uint32_t image, uint32_t view,
                    uint32_t stream, int src_w, int src_h, lt_recipe *out);

/* Draws sample s = image * V + view: primary recipe, partner image (uniform over the other
 * n_images - 1 images) with its own recipe, and lambda ~ U(0, 1). widths/heights are indexed by
 * image. */
void lt_sample_draw(const lt_transform *t, uint64_t seed, int mixup, uint32_t n_images,
                    const int32_t *widths, const int32_t *heights, uint32_t image, uint32_t view,
                    lt_sample *out);

/* exp and natural log computed with IEEE-754 double +, -, *, / only (range reduction + series),
 * so they give the same bits on every machine and on the GPU, unlike libm's. Used for the crop's
 * log-uniform aspect ratio and for the Gaussian blur weights. lt_det_exp(x) = 0 for x < -745;
 * lt_det_log(x) requires x > 0 (returns -inf for 0, NaN for x < 0). */
double lt_det_exp(double x);
double lt_det_log(double x);

#endif
