/* internal.h: what the files of lib/embed share: the state of one lt-embed run, the settings
 * and --append checks of resume.c, the --shard survey of shard.c and the replace checks of
 * replace.c, used by the pipeline in embed.c and by merge.c. Not a public API. */
#ifndef LT_EMBED_INTERNAL_H
#define LT_EMBED_INTERNAL_H

#include "core/sha256.h"
#include "data/cache.h"
#include "data/image_pool.h"
#include "data/scan.h"
#include "embed/embed.h"
#include "embed/emblog.h"
#include "models/dinov2.h"

/* One file of the scan, read and decoded (embed.c, shard.c); reason is empty if it is usable. */
typedef struct {
    uint8_t *bytes;   /* the bytes to store: the file's, or (--max-side) its resized copy's */
    size_t n;
    int w, h;         /* size of the stored image */
    int64_t mtime_ns;
    char sha[65];     /* of bytes */
    size_t src_n;     /* size of the file */
    char src_sha[65]; /* of the file (= sha when stored verbatim) */
    char reason[512]; /* empty if usable */
    int too_large;    /* not usable: more pixels than --max-pixels */
} lt_embed_file;

/* Reads root/rel whole, decodes it (to learn whether it is usable and its size) and hashes it;
 * with max_side > 0 an image with a longer side is replaced by its resized copy (PNG). */
void lt_embed_load_file(const char *root, const char *rel, int64_t max_pixels, int max_side,
                        lt_embed_file *it);
/* --max-side: the bytes to store for a file whose bytes are *bytes (*n, already known to decode):
 * unchanged (0) when the decoded image fits in max_side, else (1) replaced by the PNG of the
 * resized copy (the old buffer freed) with its size in *w, *h. -1 + lt_err (bytes unchanged). */
int lt_embed_shrink_bytes(uint8_t **bytes, size_t *n, int64_t max_pixels, int max_side, int *w,
                          int *h);

/* --shard: one usable image of the whole listing, as the survey found it (shard.c). */
typedef struct {
    size_t file;      /* index in the scan */
    int32_t w, h;     /* of the stored image */
    int64_t mtime_ns;
    char sha[65];     /* of the stored bytes */
    size_t src_n;     /* of the file */
    char src_sha[65]; /* of the file: differs from sha when --max-side resized it */
} lt_shard_image;

/* --shard: what the survey of the whole listing found. */
typedef struct {
    lt_cache_part desc;      /* this part */
    lt_shard_image *images;  /* (desc.total_images) every usable image of the listing */
    size_t *skipped;         /* (n_skipped) this shard's files that are not usable */
    char **reasons;          /* (n_skipped) why */
    int64_t n_skipped, too_large, all_skipped, all_too_large;
} lt_shard_survey;

typedef struct {
    lt_embed_opts opts;          /* the caller's options (with --append, completed by the cache) */
    const lt_embed_opts *o;      /* &opts */
    lt_embed_report *rep;
    char *partial, *log_path;    /* CACHE.partial, CACHE.partial.emb */
    lt_dinov2 *teacher;
    const lt_dinov2_config *cfg;
    char teacher_sha[65];
    lt_filelist files;           /* the scan of DATA_DIR */
    lt_filelist fresh;           /* the files to read: all, or (--append) those not in the cache;
                                    the paths are borrowed from files */
    char listing[65];            /* digest of the scan: paths, sizes, mtimes */
    lt_cache_meta meta;
    lt_cache *base;              /* --append: the existing cache */
    int64_t N0;                  /* images of base (0 without --append) */
    int V0;                      /* views of base (0 without --append) */
    char base_desc[160];         /* identity of base, part of the settings */
    char replaces[96];           /* identity of the CACHE this run replaces ("" if none) */
    char *settings;              /* "key=value" lines, compared with an interrupted run's */
    lt_emblog *log;
    lt_cache *part;              /* CACHE.partial, read during the teacher pass */
    lt_sample *samples;          /* (S) */
    int64_t N, S;                /* images and samples of this cache (of this part with --shard) */
    int gpu, B;
    int gpu_render; /* views rendered on the GPU (image/render_cuda.h) */
    lt_image_pool *pool;        /* the decoded images (--image-pool host or device), or NULL */
    uint8_t *dev_block;         /* device: the pool's images in GPU memory (pool->block freed) */
    lt_shard_survey shard;       /* --shard (opts.shard_count > 0) */
} embed_run;

/* The settings that fix a cache's content, as "key=value" lines (keys are option names).
 * listing and base may be NULL (then left out). malloc'd; NULL + lt_err on OOM. */
char *lt_embed_settings_text(const lt_cache_meta *m, const char *listing, const char *base);
/* SHA-256 (hex) of the sorted listing: every path with its size and mtime. */
int lt_embed_listing_digest(const char *root, const lt_filelist *files, char hex[65]);
/* -1 + a message naming the first setting that differs between the interrupted run (was) and
 * this one (now), and how to start over; 0 if they agree. */
int lt_embed_check_same_settings(const char *partial, const char *was, const char *now);
/* A setting's value as messages show it (value: from lt_settings_diff): "off" for a max-side
 * that a settings text leaves out. */
void lt_embed_setting_shown(const char *key, char *value, size_t cap);
/* --append: opens the existing cache (R->base) and gives every setting not given on the command
 * line (R->opts.given) the cache's value. */
int lt_embed_base_defaults(embed_run *R);
/* --append, after lt_embed_base_defaults: checks that this run's settings are the cache's (only
 * --views may grow), refuses changed images (naming them) and fills R->fresh with the new
 * files. Sets N0, V0, base_desc. */
int lt_embed_open_base(embed_run *R);

/* What a file lt may replace holds (replace.c): nothing, an HDF5 file, an embedding log or
 * something else. */
enum { LT_FILE_MISSING, LT_FILE_EMPTY, LT_FILE_HDF5, LT_FILE_EMBLOG, LT_FILE_OTHER };
int lt_embed_file_kind(const char *path);
/* lt replaces or removes only what it made: path (what: "cache", "partial" or "log") when it is
 * missing, empty or of kind want (for a "cache", an lt cache); otherwise -1 + lt_err naming it. */
int lt_embed_check_replaceable(const char *path, int want, const char *what);
/* CACHE.partial is created next to path: -1 + lt_err ("cannot write PATH: its folder DIR does
 * not exist / is on a read-only file system / is not writable") unless that folder is writable. */
int lt_embed_check_folder_writable(const char *path);

/* --shard (shard.c). The survey reads and decodes every file of the scan (the image indices and
 * the partners' recipes depend on which files are usable and on every image's size) and keeps
 * what this part needs; only this shard's skipped files are warned about. */
int lt_shard_survey_run(embed_run *R);
void lt_shard_survey_free(lt_shard_survey *s);
/* Phase A of a part: this shard's images (read again, checked against the survey's hashes) and
 * skipped files, the recipes of its samples (image indices of the whole listing) into
 * CACHE.partial. Fills R->N, R->S, R->samples. LT_EXIT_*. */
int lt_shard_build_partial(embed_run *R);
/* The interrupted run's part (R->part) describes the part the survey describes; -1 if not. */
int lt_shard_check_partial(const embed_run *R);
/* Image img (an index of the whole listing): this part's from CACHE.partial, another's from its
 * file, checked against the survey's SHA-256 (so the teacher sees the bytes that part stores). */
int lt_shard_image_bytes(embed_run *R, int64_t img, uint8_t **bytes, size_t *n);
/* The digest of a whole cache's images (lt_cache_part.images_sha256): fed image by image. */
void lt_shard_digest_image(lt_sha256 *h, const char *path, const char *sha, int32_t w, int32_t h_px);

#endif
