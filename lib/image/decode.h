/* decode.h: every supported image file (JPEG via libjpeg-turbo, PNG via libpng) becomes 8-bit RGB.
 *
 * The format is found from the bytes (magic numbers), not the file name, so misnamed files still
 * decode. Grey, CMYK/YCCK JPEGs, 16-bit, palette, grey+alpha and RGBA PNGs are converted to RGB
 * (alpha dropped, 16-bit scaled to 8-bit by rounding). The pixel count is checked from the header
 * against a limit before any pixel buffer is allocated. Decoding is deterministic (integer IDCT),
 * because lt-train decodes the same stored bytes again and must get the same pixels. */
#ifndef LT_DECODE_H
#define LT_DECODE_H

#include <stddef.h>
#include <stdint.h>

#define LT_DEFAULT_MAX_PIXELS (1LL << 28)

typedef enum { LT_IMG_UNKNOWN = 0, LT_IMG_JPEG = 1, LT_IMG_PNG = 2 } lt_img_format;

typedef struct {
    int w, h;
    uint8_t *rgb; /* (h, w, 3) row-major, owned; free with lt_image_free */
} lt_image;

lt_img_format lt_image_sniff(const uint8_t *data, size_t n);
/* Reads only the header: dimensions. -1 + lt_err ("not a JPEG or PNG file", "truncated header"...). */
int lt_image_probe(const uint8_t *data, size_t n, int *w, int *h);
/* Full decode to RGB. -1 + lt_err with the reason (no file name: the caller prefixes it) on a
 * malformed, truncated or unsupported file, or when w*h > max_pixels. Never aborts the process. */
int lt_image_decode(const uint8_t *data, size_t n, int64_t max_pixels, lt_image *out);
void lt_image_free(lt_image *im);

/* Writes 8-bit RGB as a PNG (used by --dump-views). */
int lt_png_write(const char *path, const uint8_t *rgb, int w, int h);
/* Encodes rgb (h, w, 3) uint8 as an 8-bit RGB PNG in memory (libpng, zlib level 0..9, default
 * filters): *out (malloc'd, *n bytes) decodes back to exactly these pixels. -1 + lt_err on OOM. */
int lt_png_encode(const uint8_t *rgb, int w, int h, int level, uint8_t **out, size_t *n);

#endif
