/* internal.h: what the files of lib/embed share: the state of one lt-embed run, and the settings
 * and --append checks of resume.c used by the pipeline in embed.c. Not a public API. */
#ifndef LT_EMBED_INTERNAL_H
#define LT_EMBED_INTERNAL_H

#include "data/cache.h"
#include "data/scan.h"
#include "embed/embed.h"
#include "embed/emblog.h"
#include "models/dinov2.h"

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
    int64_t N, S;
    int gpu, B;
} embed_run;

/* The settings that fix a cache's content, as "key=value" lines (keys are option names).
 * listing and base may be NULL (then left out). malloc'd; NULL + lt_err on OOM. */
char *lt_embed_settings_text(const lt_cache_meta *m, const char *listing, const char *base);
/* SHA-256 (hex) of the sorted listing: every path with its size and mtime. */
int lt_embed_listing_digest(const char *root, const lt_filelist *files, char hex[65]);
/* -1 + a message naming the first setting that differs between the interrupted run (was) and
 * this one (now), and how to start over; 0 if they agree. */
int lt_embed_check_same_settings(const char *partial, const char *was, const char *now);
/* --append: opens the existing cache (R->base) and gives every setting not given on the command
 * line (R->opts.given) the cache's value. */
int lt_embed_base_defaults(embed_run *R);
/* --append, after lt_embed_base_defaults: checks that this run's settings are the cache's (only
 * --views may grow), refuses changed images (naming them) and fills R->fresh with the new
 * files. Sets N0, V0, base_desc. */
int lt_embed_open_base(embed_run *R);

#endif
