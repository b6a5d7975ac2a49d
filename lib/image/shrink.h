/* shrink.h: lt-embed --max-side: an image whose long side exceeds N is stored once as a smaller
 * copy, so that lt-embed and lt-train decode and crop a small image instead of the original for
 * every view. The copy is PIL's Image.thumbnail((N, N), BILINEAR, reducing_gap=None): the size
 * thumbnail picks (below) and lt_resize's bilinear, antialiased resampling of the whole image,
 * stored as a lossless PNG of the 8-bit RGB result, so every later decode gives these pixels. */
#ifndef LT_SHRINK_H
#define LT_SHRINK_H

#include <stddef.h>
#include <stdint.h>

#include "image/decode.h"

/* zlib level of the stored PNG: 1, the fastest that compresses (formats/cache.md, docs/images.md) */
#define LT_SHRINK_PNG_LEVEL 1

/* The size a w x h image is stored at under --max-side max_side: itself (returns 0) when both
 * sides are at most max_side; else (returns 1) the long side becomes max_side and the short side
 * is the floor or the ceiling of short * max_side / long, whichever keeps the aspect ratio w / h
 * closer (the floor on a tie), at least 1: PIL's Image.thumbnail rule, in the same double
 * arithmetic. */
int lt_shrink_size(int w, int h, int max_side, int *out_w, int *out_h);

/* The stored copy of src under --max-side max_side (max_side >= 1), when it needs one: *png
 * (malloc'd, *n bytes) is the PNG (zlib level LT_SHRINK_PNG_LEVEL) of lt_resize of the whole
 * image to (*out_w, *out_h), i.e. (h', w', 3) uint8. Returns 1 with the copy, 0 (nothing
 * allocated, *png = NULL) when src already fits, -1 + lt_err on OOM. */
int lt_shrink_png(const lt_image *src, int max_side, uint8_t **png, size_t *n, int *out_w,
                  int *out_h);

#endif
