/* shrink.c: the reduced copy lt-embed --max-side stores (see shrink.h). It exists so that the
 * size rule and the copy are one function that lt-embed calls wherever it stores or checks an
 * image (a run, a shard's survey, a shard reading another part's image). */
#include "image/shrink.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "image/render.h"

/* PIL's round_aspect: min(floor(v), ceil(v)) by key (the first on a tie), at least 1. */
static int round_aspect(double v, double key_floor, double key_ceil) {
    double f = floor(v), c = ceil(v);
    double pick = key_ceil < key_floor ? c : f;
    return pick < 1 ? 1 : (int)pick;
}

int lt_shrink_size(int w, int h, int max_side, int *out_w, int *out_h) {
    *out_w = w;
    *out_h = h;
    if (max_side < 1 || (w <= max_side && h <= max_side)) return 0;
    const double x = max_side, y = max_side, aspect = (double)w / (double)h;
    if (x / y >= aspect) { /* w <= h: the height becomes max_side */
        double v = y * aspect, f = floor(v), c = ceil(v);
        *out_w = round_aspect(v, fabs(aspect - f / y), fabs(aspect - c / y));
        *out_h = max_side;
    } else {
        double v = x / aspect, f = floor(v), c = ceil(v);
        *out_w = max_side;
        *out_h = round_aspect(v, f == 0 ? 0 : fabs(aspect - x / f), c == 0 ? 0 : fabs(aspect - x / c));
    }
    return 1;
}

int lt_shrink_png(const lt_image *src, int max_side, uint8_t **png, size_t *n, int *out_w,
                  int *out_h) {
    *png = NULL;
    *n = 0;
    if (!lt_shrink_size(src->w, src->h, max_side, out_w, out_h)) return 0;
    const int32_t box[4] = {0, 0, src->w, src->h};
    uint8_t *rgb = lt_malloc((size_t)*out_w * (size_t)*out_h * 3, "resized image");
    if (!rgb) return -1;
    int rc = lt_resize(src, box, *out_w, *out_h, NULL, rgb);
    if (rc == 0) rc = lt_png_encode(rgb, *out_w, *out_h, LT_SHRINK_PNG_LEVEL, png, n);
    free(rgb);
    return rc == 0 ? 1 : -1;
}
