/* lt-inspect: what a cache holds, and a look at its views. Prints the cache's settings, teacher,
 * transform, counts and bytes per part, and the files lt-embed skipped; with --sheet, writes a
 * contact sheet PNG of chosen samples (primary view, partner view, and the mix the teacher saw),
 * rendered by lt's own renderer from the stored bytes and recipes, so the augmentations can be
 * checked at a glance. Reads only; the cache is checked in a child process first, as the other
 * tools do. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/version.h"
#include "data/cache.h"
#include "data/cache_check.h"
#include "image/decode.h"

static void usage(FILE *f) {
    fputs(
        "Usage: lt-inspect [options] CACHE\n"
        "\n"
        "Prints what CACHE (made by lt-embed) holds: its settings, teacher and transform, the\n"
        "counts of images, views and samples, the bytes of each part, and the files lt-embed\n"
        "skipped. With --sheet, also writes a contact sheet of some samples, rendered from the\n"
        "cache exactly as lt-embed and lt-train render them.\n"
        "\n"
        "Options:\n"
        "  --sheet FILE.png      write a contact sheet: one row per sample, with the primary view,\n"
        "                        the partner view and the mix the teacher saw (before\n"
        "                        normalisation: lambda*a + (1-lambda)*b, rounded)\n"
        "  --first N             first sample of the sheet (default 0)\n"
        "  --samples N           samples on the sheet (default 8, at most 256)\n"
        "  -q, --quiet           errors only (with --sheet: just write it)\n"
        "  -v, --verbose         list every skipped file\n"
        "  -h, --help            this help\n"
        "  -V, --version         print the version\n"
        "\n"
        "Exit status: 0 ok, 1 runtime error (e.g. a damaged cache), 2 usage error.\n",
        f);
}

enum { OPT_SHEET = 256, OPT_FIRST, OPT_SAMPLES };

static const struct option long_opts[] = {
    {"sheet", required_argument, 0, OPT_SHEET}, {"first", required_argument, 0, OPT_FIRST},
    {"samples", required_argument, 0, OPT_SAMPLES}, {"quiet", no_argument, 0, 'q'},
    {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};

static void print_summary(lt_cache *c, const char *path, int verbosity) {
    const lt_cache_meta *m = lt_cache_meta_of(c);
    const lt_teacher_desc *t = &m->teacher;
    const lt_transform *x = &m->transform;
    int64_t N = lt_cache_n_images(c), S = lt_cache_n_samples(c), K = lt_cache_n_skipped(c);
    int64_t bi, bs, be;
    lt_cache_storage(c, &bi, &bs, &be);
    char hi[32], hs[32], he[32], hd[32];
    lt_human_bytes((double)bi, hi, sizeof hi), lt_human_bytes((double)bs, hs, sizeof hs);
    lt_human_bytes((double)be, he, sizeof he);
    lt_human_bytes((double)lt_cache_image_bytes_total(c), hd, sizeof hd);
    printf("cache       %s (lt-cache version %d, written by lt-embed %s)\n", path,
           LT_CACHE_VERSION, m->tool_version);
    if (m->max_side > 0)
        printf("images      %lld: %s of image data, those with a side above %d px stored resized "
               "to %d px on the long side as PNG, the others verbatim (%s in the cache)\n",
               (long long)N, hd, m->max_side, m->max_side, hi);
    else
        printf("images      %lld: %s of image files, stored verbatim (%s in the cache)\n",
               (long long)N, hd, hi);
    printf("views       %d per image: %lld samples; %d px; mixup %s; seed %llu\n",
           m->views_per_image, (long long)S, m->image_size, m->mixup ? "on" : "off",
           (unsigned long long)m->seed);
    printf("embeddings  %d x %s, zstd level %d: %s (%.1f bytes per view)\n", m->embed_dim,
           lt_emb_type_name(m->emb_type), m->zstd_level, he,
           S > 0 ? (double)be / (double)S : 0.0);
    printf("recipes     %s\n", hs);
    printf("teacher     %s (sha256 %.16s...): dim %d, depth %d, heads %d, patch %d, registers "
           "%d%s\n", t->file, t->sha256, t->embed_dim, t->depth, t->heads, t->patch, t->n_reg,
           t->swiglu ? ", SwiGLU" : "");
    printf("transform   crop scale %g..%g ratio %g..%g; flip p %g; jitter p %g (%g, %g, %g, %g); "
           "gray p %g; blur sigma %g..%g\n", x->crop_scale[0], x->crop_scale[1], x->crop_ratio[0],
           x->crop_ratio[1], x->hflip_p, x->jitter_p, x->jitter[0], x->jitter[1], x->jitter[2],
           x->jitter[3], x->gray_p, x->blur_sigma[0], x->blur_sigma[1]);
    printf("            normalisation mean %g %g %g, std %g %g %g\n", x->mean[0], x->mean[1],
           x->mean[2], x->std[0], x->std[1], x->std[2]);
    printf("skipped     %lld file%s\n", (long long)K, K == 1 ? "" : "s");
    int64_t show = verbosity >= 2 ? K : (K < 10 ? K : 10);
    for (int64_t k = 0; k < show; k++) {
        const char *p, *why;
        lt_cache_skipped(c, k, &p, &why);
        char ep[1024], ew[1024];
        printf("            %s: %s\n", lt_str_escape(p, ep, sizeof ep),
               lt_str_escape(why, ew, sizeof ew));
    }
    if (show < K) printf("            ... (-v lists all %lld)\n", (long long)K);
}

/* The sheet: rows of [primary | partner | mix], each size x size, on a (rows·size, 3·size) RGB
 * image. Without a partner the partner tile is black and the mix is the primary view. */
static int write_sheet(lt_cache *c, const char *path, int64_t first, int count, int quiet) {
    const int size = lt_cache_meta_of(c)->image_size;
    const int64_t S = lt_cache_n_samples(c);
    if (first >= S) return lt_err_set("--first %lld: the cache has %lld samples", (long long)first,
                                      (long long)S);
    if (first + count > S) count = (int)(S - first);
    const size_t view = (size_t)size * size * 3, row = (size_t)3 * size * 3;
    uint8_t *sheet = lt_calloc((size_t)count * size * row, 1, "contact sheet");
    uint8_t *a = lt_malloc(view, "view"), *b = lt_malloc(view, "view");
    lt_sample *sm = lt_malloc((size_t)count * sizeof *sm, "samples");
    int rc = !sheet || !a || !b || !sm ? -1 : lt_cache_samples(c, first, count, sm);
    for (int i = 0; rc == 0 && i < count; i++) {
        int mixed = sm[i].image[1] >= 0;
        rc = lt_cache_render_view(c, sm[i].image[0], &sm[i].r[0], size, a);
        if (rc == 0 && mixed)
            rc = lt_cache_render_view(c, sm[i].image[1], &sm[i].r[1], size, b);
        if (rc != 0) break;
        if (!mixed) memset(b, 0, view);
        float lam = mixed ? sm[i].lambda : 1.0f;
        for (int y = 0; y < size; y++) {
            uint8_t *dst = sheet + ((size_t)i * size + y) * row;
            const uint8_t *pa = a + (size_t)y * size * 3, *pb = b + (size_t)y * size * 3;
            memcpy(dst, pa, (size_t)size * 3);
            memcpy(dst + (size_t)size * 3, pb, (size_t)size * 3);
            for (int k = 0; k < size * 3; k++) {
                float v = lam * (float)pa[k] + (1.0f - lam) * (float)pb[k];
                dst[(size_t)2 * size * 3 + k] = (uint8_t)lrintf(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
        if (!quiet)
            printf("sheet row %d: sample %lld (image %lld, view %lld), partner %lld, lambda %.4f\n",
                   i, (long long)(first + i), (long long)sm[i].image[0],
                   (long long)((first + i) % lt_cache_meta_of(c)->views_per_image),
                   (long long)sm[i].image[1], lam);
    }
    if (rc == 0) rc = lt_png_write(path, sheet, 3 * size, count * size);
    if (rc == 0 && !quiet)
        printf("sheet       %s: %d sample%s, %d x %d px (primary | partner | mix)\n", path, count,
               count == 1 ? "" : "s", 3 * size, count * size);
    free(sheet), free(a), free(b), free(sm);
    return rc;
}

int main(int argc, char **argv) {
    const char *sheet = NULL;
    int64_t first = 0;
    int samples = 8, verbosity = 1, c;
    lt_log_init("lt-inspect", 1);
    while ((c = getopt_long(argc, argv, "qvhV", long_opts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case 'h': usage(stdout); return LT_EXIT_OK;
        case 'V': printf("lt-inspect %s\n", LT_VERSION); return LT_EXIT_OK;
        case 'q': verbosity = 0; break;
        case 'v': verbosity = 2; break;
        case OPT_SHEET: sheet = optarg; break;
        case OPT_FIRST: r = lt_parse_i64("first", optarg, 0, INT64_C(1) << 50, &first); break;
        case OPT_SAMPLES: r = lt_parse_int("samples", optarg, 1, 256, &samples); break;
        default: fprintf(stderr, "Try 'lt-inspect --help'.\n"); return LT_EXIT_USAGE;
        }
        if (r != 0) {
            lt_error("%s", lt_err_msg());
            return LT_EXIT_USAGE;
        }
    }
    lt_log_init("lt-inspect", verbosity);
    if (argc - optind != 1) {
        lt_error("expected one CACHE argument, got %d (try 'lt-inspect --help')", argc - optind);
        return LT_EXIT_USAGE;
    }
    const char *path = argv[optind];
    if (lt_cache_check_isolated(path, 0) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    lt_cache *cache = NULL;
    if (lt_cache_open(path, &cache) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    if (verbosity >= 1) print_summary(cache, path, verbosity);
    int rc = sheet ? write_sheet(cache, sheet, first, samples, verbosity < 1) : 0;
    if (rc != 0) lt_error("%s", lt_err_msg());
    lt_cache_close(cache);
    return rc == 0 ? LT_EXIT_OK : LT_EXIT_ERROR;
}
