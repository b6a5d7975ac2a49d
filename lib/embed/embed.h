/* embed.h: the lt-embed pipeline: scan -> decode -> store images -> draw recipes -> render ->
 * teacher -> cache. The tool (tools/embed) only parses arguments and reports; all work is here.
 *
 * A run is resumable: the images and recipes go to CACHE.partial first, the teacher's rows to the
 * log CACHE.partial.emb (lib/embed/emblog.h); rerunning the same command after any interruption
 * continues from the last batch written, and settings that differ from the interrupted run's are
 * refused. --append extends an existing cache with new images and/or views. --shard K/N makes
 * one part of a sharded run and lt_embed_merge joins the parts into one cache (shard.c,
 * merge.c). formats/cache.md, "Resuming", "Appending" and "Parts", is the protocol. */
#ifndef LT_EMBED_H
#define LT_EMBED_H

#include <signal.h>
#include <stdint.h>

#include "data/emb_type.h"
#include "image/recipe.h"

typedef enum { LT_DEVICE_AUTO = 0, LT_DEVICE_CPU = 1, LT_DEVICE_CUDA = 2 } lt_device;
/* Where the views are rendered: auto = on the GPU when the teacher runs there (image/render_cuda.h,
 * the same bytes as the CPU's lt_render). */
typedef enum { LT_RENDER_AUTO = 0, LT_RENDER_CPU = 1, LT_RENDER_GPU = 2 } lt_render_where;

/* The settings given on the command line (lt_embed_opts.given): with --append, those not given
 * take the existing cache's values. */
enum {
    LT_GIVEN_VIEWS = 1 << 0, LT_GIVEN_IMAGE_SIZE = 1 << 1, LT_GIVEN_SEED = 1 << 2,
    LT_GIVEN_MIXUP = 1 << 3, LT_GIVEN_DTYPE = 1 << 4, LT_GIVEN_ZSTD = 1 << 5,
    LT_GIVEN_MAX_PIXELS = 1 << 6, LT_GIVEN_CROP_SCALE = 1 << 7, LT_GIVEN_CROP_RATIO = 1 << 8,
    LT_GIVEN_HFLIP = 1 << 9, LT_GIVEN_JITTER_P = 1 << 10, LT_GIVEN_JITTER = 1 << 11,
    LT_GIVEN_GRAY = 1 << 12, LT_GIVEN_BLUR = 1 << 13, LT_GIVEN_MEAN = 1 << 14,
    LT_GIVEN_STD = 1 << 15, LT_GIVEN_MAX_SIDE = 1 << 16
};

typedef struct {
    const char *data_dir;
    const char *cache_path;      /* final name; written as <cache_path>.partial first */
    const char *teacher_path;
    int teacher_from_env;        /* teacher_path is $LT_TEACHER (named so in its errors) */
    const char *dump_views_dir;  /* NULL: no dump */
    int views;                   /* V views per image */
    int batch_size;              /* samples per teacher batch; 0: 32 on the CPU, 256 on a GPU */
    int threads;                 /* 0: all cores */
    int mixup;
    lt_emb_type emb_type;        /* stored embedding type (default float16) */
    int zstd_level;
    int overwrite;               /* replace an existing complete cache; discard a .partial */
    int append;                  /* add new images / views to the existing CACHE */
    int shard_index, shard_count;/* --shard K/N (1 <= K <= N): CACHE is part K; N = 0: no shard */
    unsigned given;              /* LT_GIVEN_* bits */
    lt_device device;
    int precision;               /* GPU teacher: LT_PREC_BF16 (default), LT_PREC_TF32, LT_PREC_FP32 */
    lt_render_where render;
    int image_pool;              /* lt_pool_kind (data/image_pool.h): where the decoded images of
                                    the embedding pass live; LT_POOL_AUTO by default */
    int64_t pool_memory;         /* its host budget in bytes; 0: half of MemAvailable */
    uint64_t seed;
    int64_t max_pixels;
    int max_side;                /* --max-side: store images whose long side exceeds it resized
                                    to it, as PNG (image/shrink.h); 0 = off (verbatim) */
    lt_transform transform;      /* transform.image_size is the view size */
    volatile sig_atomic_t *stop; /* set asynchronously (SIGINT/SIGTERM) to stop between batches */
} lt_embed_opts;

typedef struct {
    int64_t files;        /* image files found by the scan */
    int64_t images;       /* usable images stored */
    int64_t skipped;      /* files skipped (with a warning each) */
    int64_t samples;      /* samples in the cache = images * views */
    int64_t views_total;  /* views the teacher must embed in this run (all, or what --append adds) */
    int64_t views_done;   /* of those, done when the run ended (incl. an earlier interrupted run's) */
    int64_t views_resumed;/* of those, found done by an earlier interrupted run */
    int resumable;        /* CACHE.partial + .partial.emb were kept: rerunning continues */
    int nothing_to_do;    /* --append found no new image and no new view */
    int views;            /* views per image of the cache (with --append: maybe the cache's) */
    int gpu;              /* the teacher ran on the GPU */
    int gpu_render;       /* and the views were rendered there */
    int embed_dim;
    int bytes_per_embedding; /* stored, before compression */
    int64_t cache_bytes;  /* size of the finished cache file */
    double seconds_scan, seconds_embed, seconds_total;
    /* where the embedding pass spent its time (seconds): reading + decoding the stored images,
     * rendering + mixing, the teacher (on the GPU: host-to-device copies, with gpu_render the
     * upload of the decoded images and the rendering, and the forward, from CUDA events,
     * overlapped with the CPU work), writing the embeddings */
    double t_decode, t_render, t_copy, t_teacher, t_write;
    char device[96];      /* "cpu (N threads)" or "cuda bf16 (<GPU name>)" */
} lt_embed_report;

void lt_embed_defaults(lt_embed_opts *o);
/* Returns LT_EXIT_OK, LT_EXIT_ERROR (lt_err holds the message) or LT_EXIT_INTERRUPTED. */
int lt_embed_run(const lt_embed_opts *o, lt_embed_report *rep);

/* lt-embed --merge CACHE PART...: the parts of one sharded run, in any order. */
typedef struct {
    const char *cache_path;
    const char *const *parts;
    int n_parts;
    int overwrite;               /* replace an existing CACHE (an lt cache or an empty file) */
    volatile sig_atomic_t *stop; /* set asynchronously (SIGINT/SIGTERM): abandon, write nothing */
} lt_merge_opts;

typedef struct {
    int64_t images, skipped, samples, cache_bytes;
    double seconds;
} lt_merge_report;

/* Checks every part (all N present once, from one run: same settings, teacher and listing;
 * finished and undamaged), then writes CACHE.partial and renames it to CACHE. On a refusal
 * nothing is written. LT_EXIT_OK or LT_EXIT_ERROR (lt_err names the part and the fault). */
int lt_embed_merge(const lt_merge_opts *o, lt_merge_report *rep);

#endif
