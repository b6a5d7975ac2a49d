/* lt-embed: command line of the embedding tool. Parses and validates the options, runs the
 * pipeline of lib/embed, prints the closing summary. All logic lives in lib/. */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/error.h"
#include "data/image_pool.h"
#include "core/lock.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/version.h"
#include "data/cache_check.h"
#include "embed/embed.h"
#include "nn/blas_select.h"
#include "nn/simd.h"
#include "nn/ops_cuda.h"

static void usage(FILE *f) {
    fputs(
        "Usage: lt-embed [options] DATA_DIR CACHE\n"
        "       lt-embed [options] --shard K/N DATA_DIR PART\n"
        "       lt-embed [--overwrite] [-q|-v] --merge CACHE PART...\n"
        "\n"
        "Samples views of every image under DATA_DIR (.jpg, .jpeg, .png, recursively), runs the\n"
        "DINOv2 teacher once per view, and writes the images, the view recipes and the teacher\n"
        "embeddings to the HDF5 file CACHE (written as CACHE.partial, renamed when complete).\n"
        "An interrupted run (Ctrl-C, kill, crash, power cut) keeps CACHE.partial and\n"
        "CACHE.partial.emb: rerunning the same command continues where it stopped.\n"
        "\n"
        "Options:\n"
        "  --teacher FILE        DINOv2 weights (.safetensors; original or Hugging Face key names);\n"
        "                        default: $LT_TEACHER\n"
        "  --views N             views per image (default 8)\n"
        "  --image-size N        view side in pixels (default 224)\n"
        "  --batch-size N        views per teacher batch (default 32 on the CPU, 256 on a GPU)\n"
        "  --seed N              seed of all random choices (default 0)\n"
        "  --no-mixup            no mixup partner: lambda = 1\n"
        "  --device auto|cpu|cuda  where the teacher runs (default auto: the GPU when there is one)\n"
        "  --precision bf16|tf32|fp32  GPU teacher arithmetic (default bf16; the CPU is fp32)\n"
        "  --render auto|cpu|gpu  where the views are rendered (default auto: on the GPU when the\n"
        "                        teacher runs there; the same bytes either way)\n"
        "  --image-pool KIND     where the embedding pass finds the decoded images: device (GPU\n"
        "                        memory, views rendered there), host (memory), stream (each\n"
        "                        batch decodes its own) or auto (default: device when they take\n"
        "                        at most a quarter of the free GPU memory, else host when they fit\n"
        "                        --pool-memory, else stream; a --shard part: stream)\n"
        "  --pool-memory SIZE    the host pool's budget, bytes or with a K/M/G/T suffix (default:\n"
        "                        half of MemAvailable)\n"
        "  --threads N           CPU threads, 0 = all cores (default 0)\n"
        "  --dump-views DIR      also write each rendered view as DIR/<sample>_a.png (primary)\n"
        "                        and _b.png (mixup partner)\n"
        "  --dtype f16|f32|i8    stored embedding type (default f16); i8: int8 with a scale\n"
        "                        per row, half the bytes of f16 (formats/cache.md)\n"
        "  --zstd-level N        Zstandard level of the embeddings, 1..19 (default 3)\n"
        "  --max-pixels N        skip images with more pixels than this (default 268435456)\n"
        "  --max-side N          store each image whose long side exceeds N once resized to N on\n"
        "                        its long side (aspect kept; PIL's thumbnail size and bilinear\n"
        "                        resize), as a lossless PNG; smaller images are stored verbatim.\n"
        "                        Both tools then decode the small copy. N >= --image-size;\n"
        "                        default: off\n"
        "  --overwrite           replace an existing CACHE (only an lt cache or an empty file);\n"
        "                        discard an interrupted run's CACHE.partial and start over\n"
        "  --append              add the images that are new under DATA_DIR and/or more views\n"
        "                        (--views above the cache's) to the existing CACHE, computing\n"
        "                        only what is new; settings not given are the cache's\n"
        "  --shard K/N           write only part K (1..N) of N: the images of the K-th of N\n"
        "                        contiguous ranges of the sorted file list, with the recipes\n"
        "                        and partners of the whole; run all N (on many machines), then\n"
        "                        --merge\n"
        "  --merge               CACHE PART...: join the N parts of one sharded run into CACHE,\n"
        "                        the cache one lt-embed run makes; refuses a missing, duplicated,\n"
        "                        foreign, damaged or unfinished part and then writes nothing\n"
        "  -q, --quiet           errors only\n"
        "  -v, --verbose         more detail\n"
        "  -h, --help            this help\n"
        "  -V, --version         print the version\n"
        "\n"
        "Transform (defaults: LightlyTrain's distillation transform):\n"
        "  --crop-scale MIN,MAX  RandomResizedCrop area fraction (default 0.14,1)\n"
        "  --crop-ratio MIN,MAX  RandomResizedCrop aspect ratio (default 0.75,1.3333)\n"
        "  --hflip-p P           horizontal flip probability (default 0.5)\n"
        "  --jitter-p P          colour jitter probability (default 0.8)\n"
        "  --jitter B,C,S,H      brightness, contrast, saturation, hue strength (default\n"
        "                        0.4,0.4,0.2,0.1)\n"
        "  --gray-p P            grayscale probability (default 0.2)\n"
        "  --blur-sigma MIN,MAX  Gaussian blur sigma range (default 0,0.1)\n"
        "  --mean R,G,B          normalisation mean (default 0.485,0.456,0.406)\n"
        "  --std R,G,B           normalisation std (default 0.229,0.224,0.225)\n"
        "\n"
        "Exit status: 0 ok, 1 runtime error, 2 usage error, 130 interrupted.\n",
        f);
}

enum {
    OPT_TEACHER = 256, OPT_VIEWS, OPT_IMAGE_SIZE, OPT_BATCH, OPT_SEED, OPT_NO_MIXUP, OPT_DEVICE,
    OPT_THREADS, OPT_DUMP, OPT_DTYPE, OPT_ZSTD, OPT_MAXPIX, OPT_OVERWRITE, OPT_CROP_SCALE,
    OPT_CROP_RATIO, OPT_HFLIP, OPT_JITTER_P, OPT_JITTER, OPT_GRAY, OPT_BLUR, OPT_MEAN, OPT_STD,
    OPT_PRECISION, OPT_APPEND, OPT_SHARD, OPT_MERGE, OPT_RENDER, OPT_MAX_SIDE, OPT_POOL,
    OPT_POOL_MEM
};

static const struct option long_opts[] = {
    {"teacher", required_argument, 0, OPT_TEACHER},
    {"views", required_argument, 0, OPT_VIEWS},
    {"image-size", required_argument, 0, OPT_IMAGE_SIZE},
    {"batch-size", required_argument, 0, OPT_BATCH},
    {"seed", required_argument, 0, OPT_SEED},
    {"no-mixup", no_argument, 0, OPT_NO_MIXUP},
    {"device", required_argument, 0, OPT_DEVICE},
    {"precision", required_argument, 0, OPT_PRECISION},
    {"render", required_argument, 0, OPT_RENDER},
    {"image-pool", required_argument, 0, OPT_POOL},
    {"pool-memory", required_argument, 0, OPT_POOL_MEM},
    {"threads", required_argument, 0, OPT_THREADS},
    {"dump-views", required_argument, 0, OPT_DUMP},
    {"dtype", required_argument, 0, OPT_DTYPE},
    {"zstd-level", required_argument, 0, OPT_ZSTD},
    {"max-pixels", required_argument, 0, OPT_MAXPIX},
    {"max-side", required_argument, 0, OPT_MAX_SIDE},
    {"overwrite", no_argument, 0, OPT_OVERWRITE},
    {"append", no_argument, 0, OPT_APPEND},
    {"shard", required_argument, 0, OPT_SHARD},
    {"merge", no_argument, 0, OPT_MERGE},
    {"crop-scale", required_argument, 0, OPT_CROP_SCALE},
    {"crop-ratio", required_argument, 0, OPT_CROP_RATIO},
    {"hflip-p", required_argument, 0, OPT_HFLIP},
    {"jitter-p", required_argument, 0, OPT_JITTER_P},
    {"jitter", required_argument, 0, OPT_JITTER},
    {"gray-p", required_argument, 0, OPT_GRAY},
    {"blur-sigma", required_argument, 0, OPT_BLUR},
    {"mean", required_argument, 0, OPT_MEAN},
    {"std", required_argument, 0, OPT_STD},
    {"quiet", no_argument, 0, 'q'},
    {"verbose", no_argument, 0, 'v'},
    {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'},
    {0, 0, 0, 0}};

/* --shard K/N: 1 <= K <= N <= 100000. */
static int parse_shard(const char *arg, lt_embed_opts *o) {
    const char *slash = strchr(arg, '/');
    char k[32];
    if (!slash || slash == arg || (size_t)(slash - arg) >= sizeof k)
        return lt_err_set("--shard: expected K/N (shard K of N, 1 <= K <= N), got '%s'", arg);
    snprintf(k, sizeof k, "%.*s", (int)(slash - arg), arg);
    if (lt_parse_int("shard", slash + 1, 1, 100000, &o->shard_count) != 0 ||
        lt_parse_int("shard", k, 1, o->shard_count, &o->shard_index) != 0)
        return lt_err_set("--shard: expected K/N with 1 <= K <= N <= 100000 (shard K of N), got "
                          "'%s'", arg);
    return 0;
}

/* Applies one option; -1 with lt_err set on an invalid value. */
static int apply(int c, const char *arg, lt_embed_opts *o, int *verbosity) {
    lt_transform *t = &o->transform;
    switch (c) {
    case OPT_TEACHER: o->teacher_path = arg; return 0;
    case OPT_VIEWS: return lt_parse_int("views", arg, 1, 100000, &o->views);
    case OPT_IMAGE_SIZE: return lt_parse_int("image-size", arg, 1, 4096, &t->image_size);
    case OPT_BATCH: return lt_parse_int("batch-size", arg, 1, 65536, &o->batch_size);
    case OPT_SEED: return lt_parse_u64("seed", arg, &o->seed);
    case OPT_NO_MIXUP: o->mixup = 0; return 0;
    case OPT_DEVICE:
        if (!strcmp(arg, "auto")) o->device = LT_DEVICE_AUTO;
        else if (!strcmp(arg, "cpu")) o->device = LT_DEVICE_CPU;
        else if (!strcmp(arg, "cuda")) o->device = LT_DEVICE_CUDA;
        else return lt_err_set("--device: expected auto, cpu or cuda, got '%s'", arg);
        return 0;
    case OPT_PRECISION: {
        lt_precision p;
        if (lt_precision_parse(arg, &p) != 0)
            return lt_err_set("--precision: expected bf16, tf32 or fp32, got '%s'", arg);
        o->precision = (int)p;
        return 0;
    }
    case OPT_THREADS: return lt_parse_int("threads", arg, 0, 4096, &o->threads);
    case OPT_RENDER:
        if (!strcmp(arg, "auto")) o->render = LT_RENDER_AUTO;
        else if (!strcmp(arg, "cpu")) o->render = LT_RENDER_CPU;
        else if (!strcmp(arg, "gpu")) o->render = LT_RENDER_GPU;
        else return lt_err_set("--render: expected auto, cpu or gpu, got '%s'", arg);
        return 0;
    case OPT_POOL: {
        lt_pool_kind k;
        if (lt_pool_kind_parse(arg, &k) != 0) return -1;
        o->image_pool = (int)k;
        return 0;
    }
    case OPT_POOL_MEM: return lt_parse_bytes("pool-memory", arg, 1, &o->pool_memory);
    case OPT_DUMP: o->dump_views_dir = arg; return 0;
    case OPT_DTYPE:
        if (lt_emb_type_parse(arg, &o->emb_type) != 0)
            return lt_err_set("--dtype: expected f16, f32 or i8, got '%s'", arg);
        return 0;
    case OPT_ZSTD: return lt_parse_int("zstd-level", arg, 1, 19, &o->zstd_level);
    case OPT_MAXPIX: return lt_parse_i64("max-pixels", arg, 1, INT64_C(1) << 40, &o->max_pixels);
    case OPT_MAX_SIDE: return lt_parse_int("max-side", arg, 1, 1 << 20, &o->max_side);
    case OPT_OVERWRITE: o->overwrite = 1; return 0;
    case OPT_APPEND: o->append = 1; return 0;
    case OPT_SHARD: return parse_shard(arg, o);
    case OPT_CROP_SCALE: return lt_parse_floats("crop-scale", arg, 2, 1e-6, 1, t->crop_scale);
    case OPT_CROP_RATIO: return lt_parse_floats("crop-ratio", arg, 2, 1e-3, 1e3, t->crop_ratio);
    case OPT_HFLIP: return lt_parse_float("hflip-p", arg, 0, 1, &t->hflip_p);
    case OPT_JITTER_P: return lt_parse_float("jitter-p", arg, 0, 1, &t->jitter_p);
    case OPT_JITTER:
        if (lt_parse_floats("jitter", arg, 4, 0, 1e3, t->jitter) != 0) return -1;
        if (t->jitter[3] > 0.5f) return lt_err_set("--jitter: hue must be at most 0.5, got '%s'", arg);
        return 0;
    case OPT_GRAY: return lt_parse_float("gray-p", arg, 0, 1, &t->gray_p);
    case OPT_BLUR: return lt_parse_floats("blur-sigma", arg, 2, 0, 100, t->blur_sigma);
    case OPT_MEAN: return lt_parse_floats("mean", arg, 3, -1e3, 1e3, t->mean);
    case OPT_STD: return lt_parse_floats("std", arg, 3, 1e-6, 1e3, t->std);
    case 'q': *verbosity = 0; return 0;
    case 'v': *verbosity = 2; return 0;
    }
    return lt_err_set("unknown option");
}

/* The LT_GIVEN_* bit of an option that sets a setting of the cache (0 for the others). */
static unsigned given_bit(int c) {
    switch (c) {
    case OPT_VIEWS: return LT_GIVEN_VIEWS;
    case OPT_IMAGE_SIZE: return LT_GIVEN_IMAGE_SIZE;
    case OPT_SEED: return LT_GIVEN_SEED;
    case OPT_NO_MIXUP: return LT_GIVEN_MIXUP;
    case OPT_DTYPE: return LT_GIVEN_DTYPE;
    case OPT_ZSTD: return LT_GIVEN_ZSTD;
    case OPT_MAXPIX: return LT_GIVEN_MAX_PIXELS;
    case OPT_MAX_SIDE: return LT_GIVEN_MAX_SIDE;
    case OPT_CROP_SCALE: return LT_GIVEN_CROP_SCALE;
    case OPT_CROP_RATIO: return LT_GIVEN_CROP_RATIO;
    case OPT_HFLIP: return LT_GIVEN_HFLIP;
    case OPT_JITTER_P: return LT_GIVEN_JITTER_P;
    case OPT_JITTER: return LT_GIVEN_JITTER;
    case OPT_GRAY: return LT_GIVEN_GRAY;
    case OPT_BLUR: return LT_GIVEN_BLUR;
    case OPT_MEAN: return LT_GIVEN_MEAN;
    case OPT_STD: return LT_GIVEN_STD;
    }
    return 0;
}

static int check_ranges(const lt_embed_opts *o) {
    const lt_transform *t = &o->transform;
    if (t->crop_scale[0] > t->crop_scale[1]) return lt_err_set("--crop-scale: MIN must not exceed MAX");
    if (t->crop_ratio[0] > t->crop_ratio[1]) return lt_err_set("--crop-ratio: MIN must not exceed MAX");
    if (t->blur_sigma[0] > t->blur_sigma[1]) return lt_err_set("--blur-sigma: MIN must not exceed MAX");
    /* with --append and no --image-size the cache's view size applies: lt_embed_run checks */
    if (o->max_side > 0 && (!o->append || (o->given & LT_GIVEN_IMAGE_SIZE)) &&
        o->max_side < t->image_size)
        return lt_err_set("--max-side %d is smaller than the view size %d (--image-size): every "
                          "view would be enlarged from a smaller copy; give --max-side %d or more",
                          o->max_side, t->image_size, t->image_size);
    return 0;
}

/* The command line as given, its --overwrite words dropped (lt_argv_copy). */
static char **g_again;

/* "rerun the same command to continue", or, when the command had --overwrite (which would
 * discard the work kept), the command without it, shell-quoted. malloc'd. */
static char *continue_hint(void) {
    if (!g_again || !lt_argv_dropped(g_again)) return strdup("rerun the same command to continue");
    char cmd[8192], *buf = malloc(sizeof cmd + 64);
    if (!buf) return NULL;
    lt_shell_join(g_again, cmd, sizeof cmd);
    snprintf(buf, sizeof cmd + 64, "to continue, rerun without --overwrite: %s", cmd);
    return buf;
}

/* The folder of lt's HDF5 filter plugin next to this program: <prefix>/lib/hdf5/plugins when
 * installed, build/plugins in a checkout. Found from the executable's own path, so nothing about
 * where lt was built or installed is compiled in. 0 and dir set when it exists. */
static int plugin_dir(char *dir, size_t n) {
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return -1;
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0; /* the bin folder */
    const char *rel[] = {"../lib/hdf5/plugins", "../build/plugins"};
    for (int k = 0; k < 2; k++) {
        char cand[4200], real[4096];
        snprintf(cand, sizeof cand, "%s/%s/libh5zstd.so", exe, rel[k]);
        if (access(cand, R_OK) != 0) continue;
        snprintf(cand, sizeof cand, "%s/%s", exe, rel[k]);
        if (!realpath(cand, real)) continue;
        snprintf(dir, n, "%s", real);
        return 0;
    }
    return -1;
}

/* Other programs (h5py, h5dump) read the cache's embeddings only with lt's filter plugin: say
 * which HDF5_PLUGIN_PATH to export, unless it already names that folder. */
static void plugin_hint(const char *cache) {
    char dir[4096];
    if (plugin_dir(dir, sizeof dir) != 0) return;
    const char *env = getenv("HDF5_PLUGIN_PATH");
    if (env) {
        char *copy = strdup(env), *save = NULL, real[4096];
        int found = 0;
        for (char *p = copy ? strtok_r(copy, ":", &save) : NULL; p && !found;
             p = strtok_r(NULL, ":", &save))
            found = realpath(p, real) && !strcmp(real, dir);
        free(copy);
        if (found) return;
    }
    lt_info("other programs (h5py, h5dump) read %s with lt's filter plugin: export "
            "HDF5_PLUGIN_PATH=%s", cache, dir);
}

/* "--name" of long option c. */
static const char *opt_name(int c) {
    static char buf[64];
    for (const struct option *p = long_opts; p->name; p++)
        if (p->val == c) {
            snprintf(buf, sizeof buf, "--%s", p->name);
            return buf;
        }
    return "that option";
}

/* lt-embed --merge CACHE PART...: one lt-embed per CACHE, as for an embedding run. */
static int run_merge(int overwrite, int n_args, char **args) {
    if (n_args < 2) {
        lt_error("--merge: expected CACHE and at least one PART, got %d argument%s (try "
                 "'lt-embed --help')", n_args, n_args == 1 ? "" : "s");
        return LT_EXIT_USAGE;
    }
    lt_merge_opts m = {.cache_path = args[0], .parts = (const char *const *)args + 1,
                       .n_parts = n_args - 1, .overwrite = overwrite};
    char *lock = malloc(strlen(m.cache_path) + sizeof ".lock");
    if (!lock) {
        lt_error("out of memory");
        return LT_EXIT_ERROR;
    }
    sprintf(lock, "%s.lock", m.cache_path);
    int locked = lt_lock_hold(lock, m.cache_path);
    free(lock);
    if (locked != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    m.stop = lt_stop_on_signals();
    lt_merge_report r;
    int rc = lt_embed_merge(&m, &r);
    if (rc == LT_EXIT_INTERRUPTED) {
        lt_error("interrupted; nothing was written (rerun the same command to merge)");
        return rc;
    }
    if (rc != LT_EXIT_OK) {
        lt_error("%s", lt_err_msg());
        return rc;
    }
    char sz[32];
    lt_human_bytes((double)r.cache_bytes, sz, sizeof sz);
    lt_info("done: merged %d parts into %s: %lld images (%lld skipped), %lld views; %s in %.1f s",
            m.n_parts, m.cache_path, (long long)r.images, (long long)r.skipped,
            (long long)r.samples, sz, r.seconds);
    plugin_hint(m.cache_path);
    return LT_EXIT_OK;
}

int main(int argc, char **argv) {
    lt_embed_opts o;
    lt_embed_defaults(&o);
    o.teacher_path = getenv("LT_TEACHER");
    if (o.teacher_path && !*o.teacher_path) o.teacher_path = NULL;
    o.teacher_from_env = o.teacher_path != NULL;
    int verbosity = 1, c, merge = 0;
    const char *not_merge = NULL; /* an option --merge does not take */
    lt_blas_ensure(argv); /* the GEMM kernels this CPU can run (may restart the program) */
    lt_log_init("lt-embed", 1);
    if (!(g_again = lt_argv_copy(argc, argv))) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    while ((c = getopt_long(argc, argv, "qvhV", long_opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return LT_EXIT_OK;
        }
        if (c == 'V') {
            printf("lt-embed %s\n", LT_VERSION);
            return LT_EXIT_OK;
        }
        if (c == '?') {
            fprintf(stderr, "Try 'lt-embed --help'.\n");
            return LT_EXIT_USAGE;
        }
        if (c == OPT_MERGE) {
            merge = 1;
            continue;
        }
        if (c != OPT_OVERWRITE && c != 'q' && c != 'v' && !not_merge) not_merge = opt_name(c);
        if (apply(c, optarg, &o, &verbosity) != 0) {
            lt_error("%s", lt_err_msg());
            return LT_EXIT_USAGE;
        }
        o.given |= given_bit(c);
        if (c == OPT_TEACHER) o.teacher_from_env = 0;
        if (c == OPT_OVERWRITE) lt_argv_drop(g_again, argv[optind - 1]);
    }
    lt_log_init("lt-embed", verbosity);
    if (merge && not_merge) {
        lt_error("--merge takes only --overwrite, -q and -v, not %s: the parts carry the "
                 "settings", not_merge);
        return LT_EXIT_USAGE;
    }
    if (merge) return run_merge(o.overwrite, argc - optind, argv + optind);
    if (o.shard_count && o.append) {
        lt_error("--shard and --append do not go together: a part is always made afresh");
        return LT_EXIT_USAGE;
    }
    if (lt_log_verbosity() >= 2) {
        char blas[512];
        lt_blas_describe(blas, sizeof blas);
        lt_debug("BLAS: %s", blas);
        lt_debug("lt kernels: %s", lt_simd_name());
    }
    if (argc - optind != 2) {
        lt_error("expected DATA_DIR and CACHE, got %d argument%s (try 'lt-embed --help')",
                 argc - optind, argc - optind == 1 ? "" : "s");
        return LT_EXIT_USAGE;
    }
    o.data_dir = argv[optind];
    o.cache_path = argv[optind + 1];
    if (!o.teacher_path) {
        lt_error("no teacher weights: pass --teacher FILE or set LT_TEACHER "
                 "(README.md, 'Teacher weights', says where to get them)");
        return LT_EXIT_USAGE;
    }
    if (check_ranges(&o) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_USAGE;
    }

    /* One lt-embed per CACHE: its .partial and .partial.emb are this run's alone. */
    char *lock = malloc(strlen(o.cache_path) + sizeof ".lock");
    if (!lock) {
        lt_error("out of memory");
        return LT_EXIT_ERROR;
    }
    sprintf(lock, "%s.lock", o.cache_path);
    if (lt_lock_hold(lock, o.cache_path) != 0) {
        lt_error("%s", lt_err_msg());
        free(lock);
        return LT_EXIT_ERROR;
    }
    free(lock);

    /* --append reads the existing CACHE: a crash or hang of libhdf5 on a damaged one ends a
     * child process, not this one (lt_embed_run reports a missing CACHE or a directory). */
    struct stat st;
    if (o.append && stat(o.cache_path, &st) == 0 && S_ISREG(st.st_mode) &&
        lt_cache_check_isolated(o.cache_path, 0) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    o.stop = lt_stop_on_signals();

    lt_embed_report r;
    int rc = lt_embed_run(&o, &r);
    if (rc == LT_EXIT_INTERRUPTED) {
        char *hint = continue_hint();
        if (r.resumable)
            lt_error("interrupted after %lld of %lld views; %s (the progress is kept in "
                     "%s.partial and %s.partial.emb)", (long long)r.views_done,
                     (long long)r.views_total, hint ? hint : "rerun the same command to continue",
                     o.cache_path, o.cache_path);
        else
            lt_error("interrupted before any view was embedded; nothing was kept (rerun the same "
                     "command to start again)");
        free(hint);
        return rc;
    }
    if (rc != LT_EXIT_OK) {
        lt_error("%s", lt_err_msg());
        if (r.resumable && r.views_done > 0) {
            char *hint = continue_hint();
            lt_info("the %lld views embedded so far are kept in %s.partial.emb: %s",
                    (long long)r.views_done, o.cache_path,
                    hint ? hint : "rerun the same command to continue");
            free(hint);
        }
        return rc;
    }
    if (r.nothing_to_do) {
        lt_info("nothing to append: %s already holds all %lld images under %s with %d views each",
                o.cache_path, (long long)r.images, o.data_dir, r.views);
        return LT_EXIT_OK;
    }
    int64_t embedded = r.views_done - r.views_resumed;
    char sz[32];
    lt_human_bytes((double)r.cache_bytes, sz, sizeof sz);
    lt_info("done: %lld images (%lld skipped), %lld views (%lld embedded by this run), %d-dim "
            "embeddings at %d bytes each before compression; %s written to %s in %.1f s (scan "
            "%.1f s, teacher %.1f s, %.1f views/s)",
            (long long)r.images, (long long)r.skipped, (long long)r.samples, (long long)embedded,
            r.embed_dim, r.bytes_per_embedding, sz, o.cache_path, r.seconds_total, r.seconds_scan,
            r.seconds_embed, r.seconds_embed > 0 ? embedded / r.seconds_embed : 0.0);
    char copy[48] = "";
    if (r.gpu)
        snprintf(copy, sizeof copy, "%s %.1f s, ",
                 r.gpu_render ? "GPU upload + render" : "host-to-device", r.t_copy);
    lt_info("time: decode %.1f s, render %.1f s, %steacher %.1f s (%.1f views/s), write %.1f s; "
            "teacher on %s", r.t_decode, r.t_render, copy, r.t_teacher,
            r.t_teacher > 0 ? embedded / r.t_teacher : 0.0, r.t_write, r.device);
    plugin_hint(o.cache_path);
    return LT_EXIT_OK;
}
