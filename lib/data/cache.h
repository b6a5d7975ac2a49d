/* cache.h: the lt cache file (HDF5), written by lt-embed and read by lt-train.
 *
 * formats/cache.md is the specification; this is its writer and reader. The writer creates
 * CACHE.partial and renames it to CACHE only in lt_cache_writer_finish(), so a failed or
 * interrupted run never leaves something that looks like a complete cache (lt-embed's resumable
 * protocol, close_partial + reopen, keeps the partial between runs). Embeddings are stored
 * float16 (default), float32 or int8 with a scale per row (data/emb_type.h), chunked, with
 * HDF5's shuffle filter then Zstandard (filter id 32015, see h5zstd.h). */
#ifndef LT_CACHE_H
#define LT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "data/emb_type.h"
#include "image/decode.h"
#include "image/recipe.h"

#define LT_CACHE_FORMAT "lt-cache"
#define LT_CACHE_PART_FORMAT "lt-cache-part" /* a part (lt_cache_part): not a whole cache */
#define LT_CACHE_VERSION 3

typedef struct {
    char file[256];      /* base name of the weights file */
    char sha256[65];     /* of the whole weights file, hex */
    int embed_dim, depth, heads, patch, n_reg, pos_grid, mlp_hidden, swiglu;
} lt_teacher_desc;

typedef struct {
    int embed_dim;
    int image_size;
    int views_per_image;
    uint64_t seed;
    int mixup;
    lt_emb_type emb_type;   /* how /embeddings stores its rows (data/emb_type.h) */
    int zstd_level;         /* cd_values[0] of the zstd filter */
    int64_t max_pixels;     /* decode limit used */
    int max_side;           /* lt-embed --max-side: images with a longer side were stored resized
                               to it (PNG); 0 = off, every image stored verbatim */
    lt_transform transform;
    lt_teacher_desc teacher;
    char tool_version[32];
} lt_cache_meta;

typedef struct {
    const char *path;       /* relative to DATA_DIR */
    const uint8_t *bytes;   /* the stored bytes: the file's, or (max_side) its resized copy */
    size_t n_bytes;
    int32_t width, height;  /* decoded size of the stored bytes */
    int64_t mtime_ns;       /* source file's modification time */
    char sha256[65];        /* of the stored bytes, hex */
    int64_t source_size;    /* size of the source file; 0: n_bytes (stored verbatim) */
    char source_sha256[65]; /* of the source file, hex; "": sha256 (stored verbatim) */
} lt_cache_image;

/* A part of a sharded lt-embed run (lt-embed --shard K/N; formats/cache.md, "Parts"): the images
 * of one contiguous range of the sorted scan, with their samples, whose image indices (primary
 * and partner) are those of the whole cache. lt-embed --merge joins the parts into one cache. */
typedef struct {
    int index, count;          /* this is shard index (1..count) of count */
    int64_t first_file;        /* its files: [first_file, first_file + files) of the sorted scan */
    int64_t files, total_files;
    int64_t first_image;       /* the whole cache's index of its image 0 */
    int64_t total_images;      /* images of the whole cache */
    char listing_sha256[65];   /* the sorted scan of DATA_DIR: paths, sizes, mtimes */
    char images_sha256[65];    /* the whole cache's images: path, SHA-256, width, height each */
} lt_cache_part;

typedef struct lt_cache_writer lt_cache_writer;

/* Creates path.partial (replacing a stale one). */
int lt_cache_writer_create(const char *path, const lt_cache_meta *meta, lt_cache_writer **out);
/* Makes the file a part (before any image): writes the part's attributes; the samples' image
 * indices are then the whole cache's (primary in [first_image, first_image + images), partner
 * in [-1, total_images)), and a part may hold no image at all. */
int lt_cache_writer_set_part(lt_cache_writer *w, const lt_cache_part *p);
/* Appends images in order (index = call order). */
int lt_cache_writer_add_image(lt_cache_writer *w, const lt_cache_image *im);
/* Records a file that was skipped and why (stored under /skipped). */
int lt_cache_writer_add_skipped(lt_cache_writer *w, const char *path, const char *reason);
/* After the last image: writes all S = N * V samples (recipes) and creates /embeddings (S, D). */
int lt_cache_writer_set_samples(lt_cache_writer *w, const lt_sample *samples, int64_t n_samples);
/* Writes rows [first, first + count) of /embeddings from float32 (count, D). */
int lt_cache_writer_put_embeddings(lt_cache_writer *w, int64_t first, int64_t count,
                                   const float *emb);
/* Reads back image i's stored bytes (malloc'd) from the file being written, so views are
 * rendered from exactly the bytes the cache holds. */
int lt_cache_writer_image_bytes(lt_cache_writer *w, int64_t i, uint8_t **bytes, size_t *n);
/* Flushes, closes and renames path.partial to path. Frees w (also on failure). */
int lt_cache_writer_finish(lt_cache_writer *w);
/* Closes and removes path.partial. Frees w. */
void lt_cache_writer_abort(lt_cache_writer *w);

/* The resumable protocol of lt-embed (formats/cache.md, "Resuming"): after set_samples,
 * close_partial flushes, closes and syncs path.partial and keeps it (a valid cache whose
 * /embeddings rows read as zeros; lt_cache_open_partial reads it). Frees w; on failure the partial is
 * removed. reopen opens that path.partial again to write /embeddings, then finish. */
int lt_cache_writer_close_partial(lt_cache_writer *w);
int lt_cache_writer_reopen(const char *path, lt_cache_writer **out);
/* Like put_embeddings, from rows already in the stored type (lt_emb_row_bytes each). */
int lt_cache_writer_put_embeddings_raw(lt_cache_writer *w, int64_t first, int64_t count,
                                       const void *rows);

/* ---- reader ---- */
typedef struct lt_cache lt_cache;

/* Opens and validates (format, version, the 'complete' mark, every shape) a finished cache. -1 +
 * lt_err naming the file and what is wrong. A part (lt_cache_part) is refused: it is not a whole
 * cache. */
int lt_cache_open(const char *path, lt_cache **out);
/* The same for a finished part of a sharded run (lt-embed --merge); a whole cache is refused. */
int lt_cache_open_part(const char *path, lt_cache **out);
/* The part's description, or NULL for a whole cache. */
const lt_cache_part *lt_cache_part_of(const lt_cache *c);
/* The same for lt-embed's own CACHE.partial, which has no 'complete' mark (and no
 * /checksums/embeddings) until lt_cache_writer_finish; a part is accepted. */
int lt_cache_open_partial(const char *path, lt_cache **out);
void lt_cache_close(lt_cache *c);
const lt_cache_meta *lt_cache_meta_of(const lt_cache *c);
int64_t lt_cache_n_images(const lt_cache *c);
int64_t lt_cache_n_samples(const lt_cache *c);
const char *lt_cache_image_path(const lt_cache *c, int64_t i);
void lt_cache_image_size(const lt_cache *c, int64_t i, int32_t *w, int32_t *h);
/* Reads image i's stored bytes into a malloc'd buffer. */
int lt_cache_image_bytes(lt_cache *c, int64_t i, uint8_t **bytes, size_t *n);
/* The hex SHA-256 of images [first, first + count), 64 characters each back to back (no NULs),
 * into out (count · 64 bytes): one read, not one per image. */
int lt_cache_image_sha256s(lt_cache *c, int64_t first, int64_t count, char *out);
/* Reads samples [first, first + count). */
int lt_cache_samples(lt_cache *c, int64_t first, int64_t count, lt_sample *out);
/* Reads embeddings rows [first, first + count) as float32 (count, D). */
int lt_cache_embeddings(lt_cache *c, int64_t first, int64_t count, float *out);
/* Reads embeddings rows [first, first + count) in the stored type (lt_emb_row_bytes each). */
int lt_cache_embeddings_raw(lt_cache *c, int64_t first, int64_t count, void *out);
/* lt-train --verify: recomputes the SHA-256 of the stored bytes of max(1, ceil(fraction * N))
 * images drawn with seed (all of them for fraction 1) and compares each with /images/sha256,
 * and the CRC-32 of the recipes and embedding rows of all their views with /checksums.
 * -1 + lt_err naming the first damaged image or sample. *checked: images verified. */
int lt_cache_verify_images(lt_cache *c, double fraction, uint64_t seed, int64_t *checked);
/* Renders image img's stored bytes with recipe r into out (size, size, 3): the view lt-embed
 * rendered for the teacher, bit for bit (cache_view.c). */
int lt_cache_render_view(lt_cache *c, int64_t img, const lt_recipe *r, int size, uint8_t *out);
/* The first half of lt_cache_render_view alone: image img's stored bytes decoded under the
 * cache's pixel limit into out (free with lt_image_free); an error names the image as
 * lt_cache_render_view's does. lt_render(out, r, size, view) then gives the same view. */
int lt_cache_decode_image(lt_cache *c, int64_t img, lt_image *out);
/* Bytes the file spends on the image bytes, on the recipes (with their checksums) and on the
 * embeddings (compressed, with their checksums). */
int lt_cache_storage(lt_cache *c, int64_t *images, int64_t *samples, int64_t *embeddings);
/* The images' stored bytes, all together (their files' sizes). */
int64_t lt_cache_image_bytes_total(const lt_cache *c);
/* Checks the recipes and embedding rows of samples [first, first + count) against /checksums;
 * -1 + lt_err naming the first damaged sample. (lt-embed --append checks every row it copies.) */
int lt_cache_verify_rows(lt_cache *c, int64_t first, int64_t count);
/* Image i's record without its bytes: path (owned by c), size, mtime_ns, sha256, source_size
 * (/images/file_size) and source_sha256 (/images/source_sha256 where the cache has it, else
 * sha256), read from the file on demand; out->bytes = NULL, out->n_bytes = stored byte count. */
int lt_cache_image_record(lt_cache *c, int64_t i, lt_cache_image *out);
/* The files lt-embed skipped (/skipped): count, and entry k's path and reason (owned by c). */
int64_t lt_cache_n_skipped(const lt_cache *c);
void lt_cache_skipped(const lt_cache *c, int64_t k, const char **path, const char **reason);

#endif
