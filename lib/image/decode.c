/* decode.c: turns the bytes of a JPEG or PNG file into 8-bit RGB (see decode.h).
 *
 * It exists so that lt-embed and lt-train get identical pixels from the same stored bytes, and so
 * that a broken or hostile file costs one clear error message, never a crash, a grey-filled image
 * or a huge allocation.
 *
 * JPEG goes through TurboJPEG (libjpeg-turbo, the same library PIL uses): accurate integer IDCT
 * (JDCT_ISLOW) and the default fancy upsampling, so pixels equal PIL's Image.convert("RGB").
 * libjpeg only *warns* on damaged entropy data and fills the rest with grey; we turn those warnings
 * into errors, except the ones that do not affect pixels (extraneous bytes before a marker, an
 * unknown JFIF revision or Adobe transform code, a bad ICC marker). libjpeg reports only the first
 * warning of a file, so after a harmless warning we also check that the data is not cut short (an
 * EOI marker follows the scans); other damage hidden behind a harmless warning is not caught.
 * CMYK and YCCK JPEGs are taken to use Adobe's inverted convention (as Photoshop writes them and
 * as PIL assumes) and converted the way PIL converts CMYK to RGB: R = (255-K) - (255-K)*C/255 with
 * C, K the ink amounts, so they also match PIL exactly.
 *
 * PNG goes through libpng: palette, 1/2/4-bit grey, grey+alpha, RGBA and 16-bit images become RGB;
 * alpha and tRNS transparency are dropped (no compositing), no gamma correction is applied, and
 * 16-bit samples are scaled to 8 bits with rounding (png_set_scale_16: round(v*255/65535)).
 * PIL differs for 16-bit: it keeps the high byte of 16-bit RGB(A) (v >> 8, within 1 of ours either
 * way) and clips 16-bit grey to 0..255 (any value above 255 becomes white). */
#include "decode.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "core/error.h"

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

lt_img_format lt_image_sniff(const uint8_t *data, size_t n) {
    if (n >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return LT_IMG_JPEG;
    if (n >= 8 && memcmp(data, png_magic, 8) == 0) return LT_IMG_PNG;
    return LT_IMG_UNKNOWN;
}

/* Fails unless w*h fits under max_pixels (and the RGB buffer fits in size_t). */
static int check_size(int w, int h, int64_t max_pixels) {
    if (w <= 0 || h <= 0) return lt_err_set("image has zero width or height (%dx%d)", w, h);
    int64_t px = (int64_t)w * (int64_t)h;
    if (px > max_pixels)
        return lt_err_set("image too large: %dx%d pixels exceeds --max-pixels %lld", w, h,
                          (long long)max_pixels);
    if ((uint64_t)px > SIZE_MAX / 4) return lt_err_set("image too large: %dx%d pixels", w, h);
    return 0;
}

/* Names what is wrong with bytes that are neither JPEG nor PNG. */
static int unknown_format(const uint8_t *data, size_t n) {
    if (n == 0) return lt_err_set("empty file");
    (void)data;
    return lt_err_set("not a JPEG or PNG file");
}

/* ---------------------------------------------------------------- JPEG header walk */

typedef struct {
    int w, h, ncomp;
    int have_sof, have_sos;
    size_t sos_pos; /* offset of the first SOS marker */
} jpeg_header;

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static int is_sof(int m) { return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc; }

/* Walks the markers from SOI to the first SOS (or the end of the data) without decoding anything,
 * to learn the frame size before libjpeg allocates for it. Like libjpeg, it skips stray bytes
 * between markers (libjpeg only warns about them). */
static int jpeg_walk(const uint8_t *d, size_t n, jpeg_header *hd) {
    memset(hd, 0, sizeof *hd);
    size_t pos = 2;
    while (pos < n) {
        while (pos < n && d[pos] != 0xff) pos++; /* stray bytes */
        while (pos < n && d[pos] == 0xff) pos++; /* fill bytes */
        if (pos >= n) break;
        int m = d[pos++];
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; /* markers without a length */
        if (m == 0xd9) break;                                 /* EOI */
        if (m == 0x00) continue; /* a stuffed 0xff00 is data, not a marker */
        if (m == 0xd8) return lt_err_set("corrupt JPEG header (two SOI markers)");
        if (pos + 2 > n) break;
        size_t len = be16(d + pos);
        if (len < 2) return lt_err_set("corrupt JPEG header (bad marker length)");
        if (pos + len > n) break;
        if (is_sof(m) && !hd->have_sof) {
            if (len < 8) return lt_err_set("corrupt JPEG header (short frame header)");
            hd->h = (int)be16(d + pos + 3);
            hd->w = (int)be16(d + pos + 5);
            hd->ncomp = d[pos + 7];
            hd->have_sof = 1;
        }
        if (m == 0xda) {
            hd->have_sos = 1;
            hd->sos_pos = pos - 2;
            break;
        }
        pos += len;
    }
    if (!hd->have_sof) return lt_err_set("truncated JPEG header (no frame header)");
    if (hd->h == 0) return lt_err_set("unsupported JPEG: height 0 (DNL marker)");
    if (hd->w == 0) return lt_err_set("corrupt JPEG header (width 0)");
    return 0;
}

/* ---------------------------------------------------------------- JPEG decode */

/* libjpeg warnings that leave the pixels intact. */
static int jpeg_warning_is_benign(const char *msg) {
    static const char *const benign[] = {"extraneous bytes before marker", "unknown JFIF revision",
                                         "Unknown Adobe color transform", "bad ICC marker"};
    for (size_t i = 0; i < sizeof benign / sizeof *benign; i++)
        if (strstr(msg, benign[i])) return 1;
    return 0;
}

/* After a TurboJPEG call returned -1: 1 if it only warned, about something harmless. */
static int jpeg_only_benign_warning(tjhandle tj) {
    return tjGetErrorCode(tj) == TJERR_WARNING && jpeg_warning_is_benign(tjGetErrorStr2(tj));
}

/* 1 if an EOI marker follows the first scan. Entropy-coded data never contains 0xffd9 (0xff is
 * stuffed as 0xff00), so a file cut short has none: this catches a truncation that libjpeg's
 * single reported warning would hide behind an earlier harmless one. */
static int jpeg_has_eoi(const uint8_t *d, size_t n, size_t from) {
    for (size_t i = from; i + 1 < n; i++)
        if (d[i] == 0xff && d[i + 1] == 0xd9) return 1;
    return 0;
}

/* Records the reason a TurboJPEG call failed, in our words where we know it. */
static int jpeg_fail(const char *msg) {
    if (strstr(msg, "Premature end of JPEG file") || strstr(msg, "premature end of data segment"))
        return lt_err_set("truncated JPEG data");
    if (strstr(msg, "Corrupt JPEG data")) return lt_err_set("corrupt JPEG data (%s)", msg);
    return lt_err_set("cannot decode JPEG (%s)", msg);
}

/* After tjDecompress2 returned -1: records why the pixels are unusable and returns 1, or returns 0
 * if libjpeg only warned about something harmless and the data is complete. */
static int jpeg_pixels_unusable(tjhandle tj, const uint8_t *d, size_t n, size_t sos_pos) {
    if (!jpeg_only_benign_warning(tj)) {
        jpeg_fail(tjGetErrorStr2(tj));
        return 1;
    }
    if (!jpeg_has_eoi(d, n, sos_pos)) {
        lt_err_set("truncated JPEG data");
        return 1;
    }
    return 0;
}

/* PIL's CMYK -> RGB (Convert.c cmyk2rgb) on Adobe-inverted samples, in place: 4 bytes -> 3. */
static void cmyk_inverted_to_rgb(uint8_t *buf, size_t npix) {
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = buf + 4 * i;
        int nk = s[3]; /* stored inverted: 255 - K */
        uint8_t rgb[3];
        for (int c = 0; c < 3; c++) {
            int ink = 255 - s[c];
            int t = ink * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            rgb[c] = (uint8_t)(v < 0 ? 0 : v);
        }
        memcpy(buf + 3 * i, rgb, 3); /* 3i + 3 <= 4i + 3: never overwrites unread input */
    }
}

static int jpeg_decode(const uint8_t *data, size_t n, int64_t max_pixels, lt_image *out) {
    jpeg_header hd;
    if (jpeg_walk(data, n, &hd) != 0) return -1;
    if (check_size(hd.w, hd.h, max_pixels) != 0) return -1;
    if (!hd.have_sos) return lt_err_set("truncated JPEG data (the file ends before the image data)");

    tjhandle tj = tjInitDecompress();
    if (!tj) return lt_err_set("cannot start the JPEG decoder (%s)", tjGetErrorStr2(NULL));
    int w, h, subsamp, cs;
    if (tjDecompressHeader3(tj, data, (unsigned long)n, &w, &h, &subsamp, &cs) != 0 &&
        !jpeg_only_benign_warning(tj)) {
        jpeg_fail(tjGetErrorStr2(tj));
        tjDestroy(tj);
        return -1;
    }
    if (check_size(w, h, max_pixels) != 0) {
        tjDestroy(tj);
        return -1;
    }
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    int pf = cmyk ? TJPF_CMYK : TJPF_RGB;
    size_t npix = (size_t)w * (size_t)h;
    uint8_t *buf = lt_malloc(npix * (size_t)tjPixelSize[pf], "decoded JPEG pixels");
    if (!buf) {
        tjDestroy(tj);
        return -1;
    }
    int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
    if (tjDecompress2(tj, data, (unsigned long)n, buf, w, 0, h, pf, flags) != 0 &&
        jpeg_pixels_unusable(tj, data, n, hd.sos_pos)) {
        free(buf);
        tjDestroy(tj);
        return -1;
    }
    tjDestroy(tj);
    if (cmyk) {
        cmyk_inverted_to_rgb(buf, npix);
        uint8_t *shrunk = realloc(buf, npix * 3);
        if (shrunk) buf = shrunk;
    }
    out->w = w;
    out->h = h;
    out->rgb = buf;
    return 0;
}

/* ---------------------------------------------------------------- PNG (libpng glue) */

typedef struct {
    jmp_buf jmp;
    char msg[256];
    const uint8_t *data;
    size_t n, pos;
} png_io;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_io *io = png_get_error_ptr(png);
    snprintf(io->msg, sizeof io->msg, "%s", msg);
    longjmp(io->jmp, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* warnings concern ancillary chunks only; the pixels are fine */
}

static void png_read_mem(png_structp png, png_bytep dst, size_t len) {
    png_io *io = png_get_io_ptr(png);
    if (len > io->n - io->pos) png_error(png, "truncated PNG data");
    memcpy(dst, io->data + io->pos, len);
    io->pos += len;
}

/* Records a libpng error message in our words. */
static int png_fail(const char *msg) {
    if (strcmp(msg, "truncated PNG data") == 0) return lt_err_set("truncated PNG data");
    if (strstr(msg, "Not enough image data")) return lt_err_set("truncated PNG data (%s)", msg);
    if (strstr(msg, "out of memory")) return lt_err_set("%s", msg);
    return lt_err_set("corrupt PNG data (%s)", msg);
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* IHDR is always the first chunk: width and height without involving libpng. */
static int png_probe(const uint8_t *d, size_t n, int *w, int *h) {
    if (n < 8 + 8 + 13) return lt_err_set("truncated PNG header");
    if (be32(d + 8) != 13 || memcmp(d + 12, "IHDR", 4) != 0)
        return lt_err_set("corrupt PNG header (IHDR is not the first chunk)");
    uint32_t pw = be32(d + 16), ph = be32(d + 20);
    if (pw == 0 || ph == 0 || pw > 0x7fffffffu || ph > 0x7fffffffu)
        return lt_err_set("corrupt PNG header (bad size %ux%u)", pw, ph);
    *w = (int)pw;
    *h = (int)ph;
    return 0;
}

typedef struct {
    png_io io;
    int64_t max_pixels;
    int size_error; /* 1 if check_size failed (lt_err already set) */
    uint8_t *rgb;
    png_bytep *rows;
    int w, h;
} png_dec;

/* Asks libpng for 8-bit RGB whatever the stored colour type, bit depth and interlacing. */
static void png_setup_transforms(png_structp png, png_infop info) {
    int ct = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);
    if (depth == 16) png_set_scale_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

/* The part between setjmp and longjmp: state lives in *st (not in this function's locals). */
static int png_decode_body(png_structp png, png_infop info, png_dec *st) {
    if (setjmp(st->io.jmp)) return -1;
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* our own max_pixels check applies */
    png_read_info(png, info);
    st->w = (int)png_get_image_width(png, info);
    st->h = (int)png_get_image_height(png, info);
    if (check_size(st->w, st->h, st->max_pixels) != 0) {
        st->size_error = 1;
        return -1;
    }
    png_setup_transforms(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)st->w * 3)
        png_error(png, "unexpected pixel layout after conversion to RGB");
    size_t stride = (size_t)st->w * 3;
    st->rgb = malloc(stride * (size_t)st->h);
    st->rows = malloc(sizeof *st->rows * (size_t)st->h);
    if (!st->rgb || !st->rows) png_error(png, "out of memory for the decoded pixels");
    for (int y = 0; y < st->h; y++) st->rows[y] = st->rgb + stride * (size_t)y;
    png_read_image(png, st->rows);
    return 0;
}

static int png_decode(const uint8_t *data, size_t n, int64_t max_pixels, lt_image *out) {
    png_dec st;
    memset(&st, 0, sizeof st);
    st.io.data = data;
    st.io.n = n;
    st.max_pixels = max_pixels;
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &st.io, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return lt_err_set("cannot start the PNG decoder (out of memory)");
    }
    png_set_read_fn(png, &st.io, png_read_mem);
    int rc = png_decode_body(png, info, &st);
    png_destroy_read_struct(&png, &info, NULL);
    free(st.rows);
    if (rc != 0) {
        free(st.rgb);
        return st.size_error ? -1 : png_fail(st.io.msg);
    }
    out->w = st.w;
    out->h = st.h;
    out->rgb = st.rgb;
    return 0;
}

/* ---------------------------------------------------------------- public API */

int lt_image_probe(const uint8_t *data, size_t n, int *w, int *h) {
    switch (lt_image_sniff(data, n)) {
    case LT_IMG_JPEG: {
        jpeg_header hd;
        if (jpeg_walk(data, n, &hd) != 0) return -1;
        *w = hd.w;
        *h = hd.h;
        return 0;
    }
    case LT_IMG_PNG: return png_probe(data, n, w, h);
    default: return unknown_format(data, n);
    }
}

int lt_image_decode(const uint8_t *data, size_t n, int64_t max_pixels, lt_image *out) {
    out->w = out->h = 0;
    out->rgb = NULL;
    switch (lt_image_sniff(data, n)) {
    case LT_IMG_JPEG: return jpeg_decode(data, n, max_pixels, out);
    case LT_IMG_PNG: return png_decode(data, n, max_pixels, out);
    default: return unknown_format(data, n);
    }
}

void lt_image_free(lt_image *im) {
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}

/* ---------------------------------------------------------------- PNG writer */

typedef struct {
    png_io io; /* only jmp and msg are used */
    FILE *f;   /* lt_png_write; NULL: into buf (lt_png_encode) */
    const uint8_t *rgb;
    int w, h, level;
    uint8_t *buf;
    size_t n, cap;
} png_enc;

static void png_write_mem(png_structp png, png_bytep src, size_t len) {
    png_enc *st = png_get_io_ptr(png);
    if (len > st->cap - st->n) {
        size_t cap = st->cap ? st->cap : 65536;
        while (cap - st->n < len) {
            if (cap > SIZE_MAX / 2) png_error(png, "out of memory (PNG output)");
            cap *= 2;
        }
        uint8_t *g = realloc(st->buf, cap);
        if (!g) png_error(png, "out of memory (PNG output)");
        st->buf = g;
        st->cap = cap;
    }
    memcpy(st->buf + st->n, src, len);
    st->n += len;
}

static void png_flush_mem(png_structp png) { (void)png; }

static int png_write_body(png_structp png, png_infop info, png_enc *st) {
    if (setjmp(st->io.jmp)) return -1;
    if (st->f) png_init_io(png, st->f);
    else png_set_write_fn(png, st, png_write_mem, png_flush_mem);
    if (st->level >= 0) png_set_compression_level(png, st->level);
    png_set_IHDR(png, info, (png_uint_32)st->w, (png_uint_32)st->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)st->w * 3;
    for (int y = 0; y < st->h; y++) png_write_row(png, st->rgb + stride * (size_t)y);
    png_write_end(png, info);
    return 0;
}

/* Runs the encoder over st (file or memory); -1 with st->io.msg on failure. */
static int png_encode_st(png_enc *st) {
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &st->io, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(st->io.msg, sizeof st->io.msg, "cannot start the PNG encoder (out of memory)");
        return -1;
    }
    int rc = png_write_body(png, info, st);
    png_destroy_write_struct(&png, &info);
    return rc;
}

int lt_png_write(const char *path, const uint8_t *rgb, int w, int h) {
    if (w <= 0 || h <= 0) return lt_err_set("%s: cannot write an empty %dx%d PNG", path, w, h);
    png_enc st;
    memset(&st, 0, sizeof st);
    st.rgb = rgb;
    st.w = w;
    st.h = h;
    st.level = -1;
    st.f = fopen(path, "wb");
    if (!st.f) return lt_err_set("%s: cannot create: %s", path, strerror(errno));
    int rc = png_encode_st(&st);
    int write_err = ferror(st.f);
    int close_err = fclose(st.f) != 0 ? errno : 0;
    if (rc != 0) return lt_err_set("%s: cannot write PNG (%s)", path, st.io.msg);
    if (write_err || close_err)
        return lt_err_set("%s: write error: %s", path, close_err ? strerror(close_err) : "I/O error");
    return 0;
}

int lt_png_encode(const uint8_t *rgb, int w, int h, int level, uint8_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (w <= 0 || h <= 0) return lt_err_set("cannot encode an empty %dx%d PNG", w, h);
    if (level < 0 || level > 9) return lt_err_set("PNG compression level %d is not 0..9", level);
    png_enc st;
    memset(&st, 0, sizeof st);
    st.rgb = rgb;
    st.w = w;
    st.h = h;
    st.level = level;
    if (png_encode_st(&st) != 0) {
        free(st.buf);
        return lt_err_set("cannot encode PNG (%s)", st.io.msg);
    }
    *out = st.buf;
    *n = st.n;
    return 0;
}
