/* cache_view.c: one view rendered from a cache, as lt-train's loader and lt-inspect need it: the
 * stored bytes of an image, decoded under the cache's pixel limit, rendered with a stored recipe
 * by the same function lt-embed used (see cache.h); and the decode step alone, for lt-train's
 * image pool (data/image_pool.h), which renders many views from one decode. */
#include <stdlib.h>

#include "core/error.h"
#include "data/cache.h"
#include "image/decode.h"
#include "image/render.h"

int lt_cache_render_view(lt_cache *c, int64_t img, const lt_recipe *r, int size, uint8_t *out) {
    lt_image im;
    if (lt_cache_decode_image(c, img, &im) != 0) return -1;
    int rc = lt_render(&im, r, size, out);
    lt_image_free(&im);
    return rc;
}

int lt_cache_decode_image(lt_cache *c, int64_t img, lt_image *out) {
    uint8_t *bytes = NULL;
    size_t n = 0;
    out->rgb = NULL;
    out->w = out->h = 0;
    if (lt_cache_image_bytes(c, img, &bytes, &n) != 0) return -1;
    int rc = lt_image_decode(bytes, n, lt_cache_meta_of(c)->max_pixels, out);
    free(bytes);
    if (rc != 0)
        return lt_err_prefix("stored image %lld (%s)", (long long)img, lt_cache_image_path(c, img));
    return 0;
}
