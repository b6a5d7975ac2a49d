/* render_tool.c: drives lt_render / lt_recipe_draw / lt_sample_draw from tests/py/test_render.py.
 * Reads and writes binary PPM (P6) itself so the tests do not depend on the decoder.
 *
 *   render_tool IN.ppm OUT.ppm SIZE x y w h flip jitter o0 o1 o2 o3 f0 f1 f2 f3 gray sigma
 *       renders one recipe (factors as printed by %.9g round-trip exactly through strtof)
 *   render_tool --draw SEED IMAGE VIEW W H N
 *       prints the recipes of views VIEW..VIEW+N-1 (default transform, stream 0), one a line:
 *       x y w h flip jitter o0 o1 o2 o3 f0 f1 f2 f3 gray sigma
 *   render_tool --sample SEED MIXUP IMAGE VIEW N WxH [WxH ...]
 *       prints lt_sample_draw for views VIEW..VIEW+N-1 of IMAGE among the listed image sizes:
 *       image0 image1 lambda | recipe0 | recipe1
 * Exit 0 ok, 1 runtime error, 2 usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "image/recipe.h"
#include "image/render.h"

static int usage(void) {
    fprintf(stderr,
            "usage: render_tool IN.ppm OUT.ppm SIZE x y w h flip jitter o0 o1 o2 o3 f0 f1 f2 f3 "
            "gray sigma\n"
            "       render_tool --draw SEED IMAGE VIEW W H N\n"
            "       render_tool --sample SEED MIXUP IMAGE VIEW N WxH [WxH ...]\n");
    return 2;
}

/* Skips whitespace and '#' comments of a PPM header. */
static void ppm_skip(FILE *f) {
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            ungetc(c, f);
            return;
        }
    }
}

static int ppm_read(const char *path, lt_image *im) {
    FILE *f = fopen(path, "rb");
    if (!f) return lt_err_set("%s: cannot open", path);
    int w = 0, h = 0, maxv = 0;
    char magic[3] = {0};
    int ok = fread(magic, 1, 2, f) == 2 && strcmp(magic, "P6") == 0;
    if (ok) ppm_skip(f), ok = fscanf(f, "%d", &w) == 1;
    if (ok) ppm_skip(f), ok = fscanf(f, "%d", &h) == 1;
    if (ok) ppm_skip(f), ok = fscanf(f, "%d", &maxv) == 1 && maxv == 255 && fgetc(f) != EOF;
    if (!ok || w < 1 || h < 1) {
        fclose(f);
        return lt_err_set("%s: not an 8-bit binary PPM (P6)", path);
    }
    size_t n = (size_t)w * h * 3;
    im->rgb = malloc(n);
    if (!im->rgb || fread(im->rgb, 1, n, f) != n) {
        fclose(f);
        free(im->rgb);
        return lt_err_set("%s: truncated PPM", path);
    }
    fclose(f);
    im->w = w, im->h = h;
    return 0;
}

static int ppm_write(const char *path, const uint8_t *rgb, int w, int h) {
    FILE *f = fopen(path, "wb");
    if (!f) return lt_err_set("%s: cannot create", path);
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    size_t n = (size_t)w * h * 3;
    int ok = fwrite(rgb, 1, n, f) == n;
    if (fclose(f) != 0 || !ok) return lt_err_set("%s: write failed", path);
    return 0;
}

static void print_recipe(const lt_recipe *r) {
    printf("%d %d %d %d %d %d %d %d %d %d %.9g %.9g %.9g %.9g %d %.9g", r->crop[0], r->crop[1],
           r->crop[2], r->crop[3], r->flip, r->jitter, r->order[0], r->order[1], r->order[2],
           r->order[3], r->factor[0], r->factor[1], r->factor[2], r->factor[3], r->gray,
           r->blur_sigma);
}

static int cmd_draw(int argc, char **argv) {
    if (argc != 8) return usage();
    uint64_t seed = strtoull(argv[2], NULL, 10);
    uint32_t image = (uint32_t)strtoul(argv[3], NULL, 10), view = (uint32_t)strtoul(argv[4], NULL, 10);
    int w = atoi(argv[5]), h = atoi(argv[6]), n = atoi(argv[7]);
    lt_transform t;
    lt_transform_default(&t);
    for (int i = 0; i < n; i++) {
        lt_recipe r;
        lt_recipe_draw(&t, seed, image, view + (uint32_t)i, 0, w, h, &r);
        print_recipe(&r);
        putchar('\n');
    }
    return 0;
}

static int cmd_sample(int argc, char **argv) {
    if (argc < 8) return usage();
    uint64_t seed = strtoull(argv[2], NULL, 10);
    int mixup = atoi(argv[3]);
    uint32_t image = (uint32_t)strtoul(argv[4], NULL, 10), view = (uint32_t)strtoul(argv[5], NULL, 10);
    int n = atoi(argv[6]);
    uint32_t n_images = (uint32_t)(argc - 7);
    if (image >= n_images) return usage();
    int32_t *ws = malloc(n_images * sizeof *ws), *hs = malloc(n_images * sizeof *hs);
    if (!ws || !hs) return 1;
    for (uint32_t i = 0; i < n_images; i++)
        if (sscanf(argv[7 + i], "%dx%d", &ws[i], &hs[i]) != 2) return usage();
    lt_transform t;
    lt_transform_default(&t);
    for (int i = 0; i < n; i++) {
        lt_sample s;
        lt_sample_draw(&t, seed, mixup, n_images, ws, hs, image, view + (uint32_t)i, &s);
        printf("%d %d %.9g | ", s.image[0], s.image[1], s.lambda);
        print_recipe(&s.r[0]);
        printf(" | ");
        print_recipe(&s.r[1]);
        putchar('\n');
    }
    free(ws);
    free(hs);
    return 0;
}

static int cmd_render(int argc, char **argv) {
    if (argc != 20) return usage();
    lt_recipe r;
    memset(&r, 0, sizeof r);
    int size = atoi(argv[3]);
    for (int k = 0; k < 4; k++) r.crop[k] = atoi(argv[4 + k]);
    r.flip = (uint8_t)atoi(argv[8]);
    r.jitter = (uint8_t)atoi(argv[9]);
    for (int k = 0; k < 4; k++) r.order[k] = (uint8_t)atoi(argv[10 + k]);
    for (int k = 0; k < 4; k++) r.factor[k] = strtof(argv[14 + k], NULL);
    r.gray = (uint8_t)atoi(argv[18]);
    r.blur_sigma = strtof(argv[19], NULL);
    if (size < 1) return usage();

    lt_image im = {0};
    if (ppm_read(argv[1], &im) < 0) {
        fprintf(stderr, "render_tool: error: %s\n", lt_err_msg());
        return 1;
    }
    uint8_t *out = malloc((size_t)size * size * 3);
    int rc = out ? lt_render(&im, &r, size, out) : lt_err_set("out of memory");
    if (rc == 0) rc = ppm_write(argv[2], out, size, size);
    if (rc < 0) fprintf(stderr, "render_tool: error: %s\n", lt_err_msg());
    free(out);
    free(im.rgb);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--draw") == 0) return cmd_draw(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "--sample") == 0) return cmd_sample(argc, argv);
    return cmd_render(argc, argv);
}
