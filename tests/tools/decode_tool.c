/* decode_tool.c: a command-line window on lib/image/decode and lib/data/scan for the Python tests
 * (tests/py/test_decode.py), which compare our pixels with PIL's.
 *
 *   decode_tool [--max-pixels N] FILE OUT.ppm   decode FILE, write binary PPM (P6)
 *   decode_tool --probe FILE                    print "W H" from the header
 *   decode_tool --scan DIR                      print the sorted image paths under DIR
 *   decode_tool --write-png IN.ppm OUT.png      re-encode a P6 PPM with lt_png_write
 *
 * Errors go to stderr as "decode_tool: error: FILE: <message>", exit status 1; usage errors 2. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "data/scan.h"
#include "image/decode.h"

#define MAX_FILE_BYTES ((size_t)1 << 31)

static int fail(const char *what) {
    fprintf(stderr, "decode_tool: error: %s: %s\n", what, lt_err_msg());
    return 1;
}

static int usage(void) {
    fprintf(stderr, "usage: decode_tool [--max-pixels N] FILE OUT.ppm\n"
                    "       decode_tool --probe FILE\n"
                    "       decode_tool --scan DIR\n"
                    "       decode_tool --write-png IN.ppm OUT.png\n");
    return 2;
}

static int write_ppm(const char *path, const lt_image *im) {
    FILE *f = fopen(path, "wb");
    if (!f) return lt_err_set("cannot create: %s", strerror(errno));
    fprintf(f, "P6\n%d %d\n255\n", im->w, im->h);
    size_t n = (size_t)im->w * (size_t)im->h * 3;
    int ok = fwrite(im->rgb, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : lt_err_set("write error");
}

/* Reads a P6 PPM written by PIL or write_ppm (no comments). */
static int read_ppm(const char *path, lt_image *im) {
    uint8_t *data;
    size_t n;
    if (lt_read_file(path, MAX_FILE_BYTES, &data, &n) != 0) return -1;
    int w, h, maxv, off = 0;
    if (sscanf((const char *)data, "P6 %d %d %d%n", &w, &h, &maxv, &off) != 3 || maxv != 255 ||
        w <= 0 || h <= 0 || (size_t)off + 1 + (size_t)w * h * 3 > n) {
        free(data);
        return lt_err_set("not a P6 PPM with maxval 255");
    }
    im->w = w;
    im->h = h;
    im->rgb = malloc((size_t)w * h * 3);
    if (im->rgb) memcpy(im->rgb, data + off + 1, (size_t)w * h * 3);
    free(data);
    return im->rgb ? 0 : lt_err_set("out of memory");
}

static int cmd_decode(const char *in, const char *out, int64_t max_pixels) {
    uint8_t *data;
    size_t n;
    if (lt_read_file(in, MAX_FILE_BYTES, &data, &n) != 0) return fail("read");
    lt_image im;
    int rc = lt_image_decode(data, n, max_pixels, &im);
    free(data);
    if (rc != 0) return fail(in);
    rc = write_ppm(out, &im);
    lt_image_free(&im);
    return rc != 0 ? fail(out) : 0;
}

static int cmd_probe(const char *in) {
    uint8_t *data;
    size_t n;
    if (lt_read_file(in, MAX_FILE_BYTES, &data, &n) != 0) return fail("read");
    int w, h;
    int rc = lt_image_probe(data, n, &w, &h);
    free(data);
    if (rc != 0) return fail(in);
    printf("%d %d\n", w, h);
    return 0;
}

static void print_warning(const char *msg, void *ctx) {
    (void)ctx;
    fprintf(stderr, "decode_tool: warning: %s\n", msg);
}

static int cmd_scan(const char *dir) {
    lt_filelist l;
    if (lt_scan_dir(dir, &l, print_warning, NULL) != 0) return fail("scan");
    for (size_t i = 0; i < l.n; i++) printf("%s\n", l.paths[i]);
    lt_filelist_free(&l);
    return 0;
}

static int cmd_write_png(const char *in, const char *out) {
    lt_image im;
    if (read_ppm(in, &im) != 0) return fail(in);
    int rc = lt_png_write(out, im.rgb, im.w, im.h);
    lt_image_free(&im);
    return rc != 0 ? fail("write") : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--probe") == 0) return cmd_probe(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--scan") == 0) return cmd_scan(argv[2]);
    if (argc == 4 && strcmp(argv[1], "--write-png") == 0) return cmd_write_png(argv[2], argv[3]);
    int64_t max_pixels = LT_DEFAULT_MAX_PIXELS;
    int a = 1;
    if (argc == 5 && strcmp(argv[1], "--max-pixels") == 0) {
        char *end;
        max_pixels = strtoll(argv[2], &end, 10);
        if (*end || max_pixels <= 0) return usage();
        a = 3;
    }
    if (argc - a != 2) return usage();
    return cmd_decode(argv[a], argv[a + 1], max_pixels);
}
