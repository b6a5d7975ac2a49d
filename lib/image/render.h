/* render.h: the one rendering function both tools call: (decoded image, recipe) -> uint8 RGB view.
 *
 * Steps, each producing uint8 like PIL does: crop + resize to size x size (bilinear, antialiased
 * when shrinking, as torchvision's antialias=True), horizontal flip, colour jitter in the recipe's
 * order, grayscale, Gaussian blur. Integer fixed-point arithmetic where possible; any float code
 * is compiled without FMA contraction and uses no libm transcendental, so a CUDA twin can match
 * it bit for bit (docs/architecture.md §4). Output depends only on (image, recipe, size). */
#ifndef LT_RENDER_H
#define LT_RENDER_H

#include <stdint.h>

#include "image/decode.h"
#include "image/recipe.h"

/* out: (size, size, 3) uint8. Thread-safe; allocates its own scratch. -1 + lt_err on OOM. */
int lt_render(const lt_image *src, const lt_recipe *r, int size, uint8_t *out);

/* Step 1 of lt_render alone, to any width and height: PIL's
 * Image.crop(box).resize((out_w, out_h), BILINEAR) (antialiased when shrinking), of which only
 * the window win (x, y, w, h inside the out_w x out_h result; NULL = all of it) is computed and
 * written: out (win h, win w, 3) uint8, the very bytes of that part of the whole result. box:
 * x, y, w, h inside src. Thread-safe; -1 + lt_err on a bad box or window, or OOM. */
int lt_resize(const lt_image *src, const int32_t box[4], int out_w, int out_h,
              const int32_t win[4], uint8_t *out);

/* Teacher/student input from two rendered views: x = (lambda*a/255 + (1-lambda)*b/255 - mean)/std
 * per channel. a, b: (npix, 3) uint8 (b may be NULL when lambda == 1); out: (npix, 3) float. */
void lt_mix_normalize(const uint8_t *a, const uint8_t *b, float lambda, const float mean[3],
                      const float std[3], int64_t npix, float *out);

#endif
