/* test_decode.c: in-process checks of lib/image/decode and lib/data/scan that need no PIL: a PNG
 * round trip through lt_png_write and through lt_png_encode (memory, every zlib level), format
 * sniffing, error messages, and a scan with a symlink cycle. The comparisons with PIL live in
 * tests/py/test_decode.py (and, for lt-embed --max-side's stored PNG, tests/py/test_max_side.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/error.h"
#include "core/fileio.h"
#include "data/scan.h"
#include "image/decode.h"

static void test_png_round_trip(const char *dir) {
    int w = 37, h = 11;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 7 + (i >> 5));
    char *path = lt_path_join(dir, "rt.png");
    CHECK_MSG(lt_png_write(path, rgb, w, h) == 0, "%s", lt_err_msg());
    uint8_t *data;
    size_t n;
    CHECK(lt_read_file(path, 1 << 20, &data, &n) == 0);
    CHECK(lt_image_sniff(data, n) == LT_IMG_PNG);
    int pw = 0, ph = 0;
    CHECK(lt_image_probe(data, n, &pw, &ph) == 0 && pw == w && ph == h);
    lt_image im;
    CHECK_MSG(lt_image_decode(data, n, LT_DEFAULT_MAX_PIXELS, &im) == 0, "%s", lt_err_msg());
    CHECK(im.w == w && im.h == h && memcmp(im.rgb, rgb, (size_t)w * h * 3) == 0);
    lt_image_free(&im);
    CHECK(lt_image_decode(data, n, (int64_t)w * h - 1, &im) == -1);
    CHECK(strstr(lt_err_msg(), "image too large: 37x11 pixels exceeds --max-pixels 406") != NULL);
    CHECK(im.rgb == NULL);
    CHECK(lt_image_decode(data, n / 2, LT_DEFAULT_MAX_PIXELS, &im) == -1);
    CHECK(strstr(lt_err_msg(), "truncated PNG data") != NULL);
    free(data);
    unlink(path);
    free(path);
    free(rgb);
}

/* lt_png_encode (lt-embed --max-side's stored copies): the PNG decodes back to the very bytes
 * given, for odd sizes, 1x1, noise and flat images, at every zlib level; bad arguments are errors. */
static void test_png_encode_round_trip(void) {
    const int sizes[][2] = {{1, 1}, {37, 11}, {3, 200}, {256, 171}, {513, 2}};
    uint32_t x = 12345;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        uint8_t *rgb = malloc((size_t)w * h * 3); /* (h, w, 3) */
        for (int i = 0; i < w * h * 3; i++) {
            x = x * 1664525u + 1013904223u;
            /* noise in the first half of the rows, a smooth ramp below */
            rgb[i] = i < w * h * 3 / 2 ? (uint8_t)(x >> 24) : (uint8_t)(i / 3 % w);
        }
        for (int level = 0; level <= 9; level++) {
            uint8_t *png = NULL;
            size_t n = 0;
            CHECK_MSG(lt_png_encode(rgb, w, h, level, &png, &n) == 0, "%s", lt_err_msg());
            CHECK(png && lt_image_sniff(png, n) == LT_IMG_PNG);
            lt_image im = {0};
            CHECK_MSG(png && lt_image_decode(png, n, LT_DEFAULT_MAX_PIXELS, &im) == 0, "%s",
                      lt_err_msg());
            CHECK_MSG(im.w == w && im.h == h && memcmp(im.rgb, rgb, (size_t)w * h * 3) == 0,
                      "%dx%d level %d", w, h, level);
            lt_image_free(&im);
            free(png);
        }
        free(rgb);
    }
    uint8_t px[3] = {1, 2, 3}, *png = (uint8_t *)1;
    size_t n = 1;
    CHECK(lt_png_encode(px, 0, 1, 1, &png, &n) == -1 && png == NULL && n == 0);
    CHECK(lt_png_encode(px, 1, 1, 10, &png, &n) == -1 && strstr(lt_err_msg(), "level 10"));
}

static void test_bad_bytes(void) {
    lt_image im;
    const uint8_t junk[] = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
    CHECK(lt_image_sniff(junk, sizeof junk) == LT_IMG_UNKNOWN);
    CHECK(lt_image_decode(junk, 0, LT_DEFAULT_MAX_PIXELS, &im) == -1);
    CHECK(strcmp(lt_err_msg(), "empty file") == 0);
    CHECK(lt_image_decode(junk, sizeof junk, LT_DEFAULT_MAX_PIXELS, &im) == -1);
    CHECK(strcmp(lt_err_msg(), "not a JPEG or PNG file") == 0);
    const uint8_t soi_only[] = {0xff, 0xd8, 0xff};
    CHECK(lt_image_sniff(soi_only, sizeof soi_only) == LT_IMG_JPEG);
    CHECK(lt_image_decode(soi_only, sizeof soi_only, LT_DEFAULT_MAX_PIXELS, &im) == -1);
    CHECK(strstr(lt_err_msg(), "truncated JPEG header") != NULL);
}

static void test_names(void) {
    CHECK(lt_scan_is_image_name("a.jpg") && lt_scan_is_image_name("b.JPEG"));
    CHECK(lt_scan_is_image_name("x.y.PnG") && lt_scan_is_image_name(".hidden.jpg"));
    CHECK(!lt_scan_is_image_name("jpg") && !lt_scan_is_image_name(".jpg"));
    CHECK(!lt_scan_is_image_name("a.jpg.txt") && !lt_scan_is_image_name("a.gif"));
}

static void touch(const char *dir, const char *rel) {
    char *p = lt_path_join(dir, rel);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f) fclose(f);
    free(p);
}

static void test_scan(const char *dir) {
    char *root = lt_path_join(dir, "data");
    char *sub = lt_path_join(root, "sub");
    char *loop = lt_path_join(sub, "loop");
    CHECK(lt_mkdir_p(sub) == 0);
    touch(root, "b.PNG");
    touch(root, "a.txt");
    touch(sub, "a.jpg");
    CHECK(symlink("..", loop) == 0);
    lt_filelist l;
    CHECK_MSG(lt_scan_dir(root, &l, NULL, NULL) == 0, "%s", lt_err_msg());
    CHECK(l.n == 2);
    if (l.n == 2) CHECK(strcmp(l.paths[0], "b.PNG") == 0 && strcmp(l.paths[1], "sub/a.jpg") == 0);
    lt_filelist_free(&l);
    char *missing = lt_path_join(dir, "missing");
    CHECK(lt_scan_dir(missing, &l, NULL, NULL) == -1);
    CHECK(strstr(lt_err_msg(), "does not exist") != NULL);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
    free(missing);
    free(loop);
    free(sub);
    free(root);
}

int main(void) {
    char dir[] = "/tmp/lt-test-decode-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_png_round_trip(dir);
    test_png_encode_round_trip();
    test_bad_bytes();
    test_names();
    test_scan(dir);
    rmdir(dir);
    CHECK_DONE();
}
