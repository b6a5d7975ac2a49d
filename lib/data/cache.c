/* cache.c: writer and reader of the lt cache (HDF5), as specified in formats/cache.md.
 *
 * lt-embed writes everything a student run needs into one file (images, view recipes, teacher
 * embeddings); lt-train reads only that file. The writer fills CACHE.partial and renames it only
 * once complete; the reader validates every attribute and dataset shape up front so a damaged or
 * foreign file fails at open with a message naming it, never later in the training loop.
 *
 * HDF5 is used with its automatic error printing off; failures become lt_err messages carrying
 * HDF5's innermost description. Debian's libhdf5 is not thread-safe, so every public function
 * here holds one process-wide lock while it calls HDF5. */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "data/h5zstd.h"

#define SHA_LEN 64
#define TABLE_CHUNK 4096                 /* entries per chunk of the per-image datasets */
#define BYTES_CHUNK (1u << 20)           /* /images/bytes chunk and staging buffer */
#define TEXT_CHUNK (64u << 10)           /* chunk and staging buffer of a text column's bytes */
#define TEXT_MAX 65536                   /* longest entry of a text column (a path, a reason) */
#define EMB_CHUNK_BYTES (512u << 10)     /* target size of one /embeddings chunk */
#define EMB_CACHE_BYTES (32u << 20)      /* chunk cache of /embeddings */
#define SAMPLE_BLOCK 65536               /* samples converted per write/read */
#define EMB_BLOCK 4096                   /* embedding rows converted per write/read */
#define IMAGE_SIZE_MAX 4096              /* largest view side lt-embed accepts */
#define EMBED_DIM_MAX 65536              /* largest embedding a cache may declare */
#define VIEWS_MAX 100000                 /* most views per image lt-embed accepts */

/* CRC-32 (zlib's, the one of gzip and PNG) of n bytes: the per-row checksums of /checksums. */
static uint32_t crc_of(const void *p, size_t n) {
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)p, (uInt)n);
}

static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------------------------ */
/* HDF5 helpers                                                                               */

static herr_t first_error(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) {
        char *d = data;
        snprintf(d, 256, "%s", e->desc);
        for (; *d; d++) /* one-line messages: HDF5's own text may span lines */
            if (*d == '\n' || *d == '\r' || *d == '\t') *d = ' ';
    }
    return 0;
}

/* Whether any entry of HDF5's error stack is a full disk (its file drivers quote strerror). */
static herr_t find_full_disk(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    if (e->desc && (strstr(e->desc, "No space left on device") || strstr(e->desc, "errno = 28,") ||
                    strstr(e->desc, "Disk quota exceeded")))
        *(int *)data = 1;
    return 0;
}

/* HDF5 clears its error stack at every API call, so a failure followed by cleanup calls (closing
 * spaces, property lists) would lose its description: h5_note() saves it first. Guarded by
 * h5_lock like every HDF5 call here. */
static char h5_noted[256];
static int h5_noted_full;

static void h5_note(void) {
    char detail[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, detail);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, find_full_disk, &h5_noted_full);
    if (detail[0]) memcpy(h5_noted, detail, sizeof detail);
}

/* Records "<file>: <what> (HDF5: <innermost description>)" and clears HDF5's error stack. */
static int h5_fail(const char *file, const char *what) {
    char detail[256] = "";
    int full = h5_noted_full;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, detail);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, find_full_disk, &full);
    H5Eclear2(H5E_DEFAULT);
    if (!detail[0]) memcpy(detail, h5_noted, sizeof detail);
    h5_noted[0] = 0;
    h5_noted_full = 0;
    if (full)
        return lt_err_set("%s: %s: the disk is full (No space left on device); free some space "
                          "and rerun", file, what);
    if (detail[0]) return lt_err_set("%s: %s (HDF5: %s)", file, what, detail);
    return lt_err_set("%s: %s", file, what);
}

static void close_dset(hid_t *d) {
    if (*d >= 0) H5Dclose(*d);
    *d = -1;
}
static void close_group(hid_t *g) {
    if (*g >= 0) H5Gclose(*g);
    *g = -1;
}
static void close_type(hid_t *t) {
    if (*t >= 0) H5Tclose(*t);
    *t = -1;
}

/* IEEE binary16, declared as h5py declares float16. */
static hid_t half_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return -1;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
        H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* A fixed-length string of size bytes, null-padded: the value is the bytes up to the first NUL
 * (all of them if there is none). */
static hid_t fixed_str_type(size_t size, H5T_cset_t cset) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, size) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0 ||
        H5Tset_cset(t, cset) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Reads (write = 0) or writes rows [first, first + count) of dataset d; a row is everything
 * after axis 0. buf holds (count, row...) elements of mtype. */
static herr_t rows_io(hid_t d, hid_t mtype, int64_t first, int64_t count, void *buf, int write) {
    if (count == 0) return 0;
    hid_t fs = H5Dget_space(d);
    if (fs < 0) return -1;
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0};
    int rank = H5Sget_simple_extent_dims(fs, dims, NULL);
    herr_t r = -1;
    if (rank >= 1) {
        start[0] = (hsize_t)first;
        dims[0] = (hsize_t)count;
        hid_t ms = H5Screate_simple(rank, dims, NULL);
        if (ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, dims, NULL) >= 0)
            r = write ? H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf)
                      : H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
        if (r < 0) h5_note();
        if (ms >= 0) H5Sclose(ms);
    }
    H5Sclose(fs);
    return r;
}

/* Reads or writes the stored embedding rows [first, first + count) (lt_emb_row_bytes(t, D)
 * each, data/emb_type.h) of /embeddings (emb) and, for int8, /embedding_scales (scales): an
 * int8 row is its D values in /embeddings and its scale in /embedding_scales. half: the
 * float16 type. */
static herr_t emb_io(hid_t emb, hid_t scales, hid_t half, lt_emb_type t, int D, int64_t first,
                     int64_t count, void *rows, int write) {
    if (t == LT_EMB_F32) return rows_io(emb, H5T_NATIVE_FLOAT, first, count, rows, write);
    if (t == LT_EMB_F16) return rows_io(emb, half, first, count, rows, write);
    if (count == 0) return 0;
    size_t d = (size_t)D, rb = d + 4;
    uint8_t *q = malloc((size_t)count * d), *row = rows;
    float *sc = malloc((size_t)count * sizeof *sc);
    herr_t r = q && sc ? 0 : -1;
    for (int64_t i = 0; r == 0 && write && i < count; i++) {
        memcpy(q + (size_t)i * d, row + (size_t)i * rb, d);
        memcpy(sc + i, row + (size_t)i * rb + d, 4); /* little-endian float32, as in memory */
    }
    if (r == 0) r = rows_io(emb, H5T_NATIVE_INT8, first, count, q, write);
    if (r >= 0) r = rows_io(scales, H5T_NATIVE_FLOAT, first, count, sc, write);
    for (int64_t i = 0; r >= 0 && !write && i < count; i++) {
        memcpy(row + (size_t)i * rb, q + (size_t)i * d, d);
        memcpy(row + (size_t)i * rb + d, sc + i, 4);
    }
    free(q);
    free(sc);
    return r < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Attributes                                                                                 */

/* Writes attribute name on loc: n values (n = 0: a scalar) of mtype stored as ftype. */
static herr_t attr_put(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int n,
                       const void *data) {
    hsize_t dim = (hsize_t)n;
    hid_t sp = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a >= 0 ? H5Awrite(a, mtype, data) : -1;
    if (r < 0) h5_note();
    if (a >= 0 && H5Aclose(a) < 0) r = -1;
    H5Sclose(sp);
    return r;
}

/* A scalar fixed-length string attribute of exactly strlen(s) bytes (one NUL byte if s is ""). */
static herr_t attr_str(hid_t loc, const char *name, const char *s, H5T_cset_t cset) {
    size_t n = strlen(s);
    hid_t t = fixed_str_type(n ? n : 1, cset);
    if (t < 0) return -1;
    herr_t r = attr_put(loc, name, t, t, 0, s);
    H5Tclose(t);
    return r;
}

static herr_t attr_i32(hid_t loc, const char *name, int v) {
    int32_t x = v;
    return attr_put(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &x);
}

static herr_t attr_i64(hid_t loc, const char *name, int64_t v) {
    return attr_put(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &v);
}

static herr_t attr_f32(hid_t loc, const char *name, const float *v, int n) {
    return attr_put(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, n == 1 ? 0 : n, v);
}

/* Reads numeric attribute name (n values, class cls) converted to mtype; -1 without an lt_err
 * message if it is missing or of another class or size. */
static int attr_get(hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, int n, void *out) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = t >= 0 && sp >= 0 && H5Tget_class(t) == cls &&
             H5Sget_simple_extent_npoints(sp) == (hssize_t)n && H5Aread(a, mtype, out) >= 0;
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    H5Eclear2(H5E_DEFAULT);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer: appendable 1-D datasets with a staging buffer                                     */

typedef struct {
    hid_t dset, mtype;   /* mtype: memory (= file) type of one element */
    size_t esize;        /* bytes per element in buf */
    int64_t done;        /* elements written to the file */
    uint8_t *buf;
    size_t n, cap;       /* staged elements, capacity */
} appender;

static int app_create(appender *a, hid_t loc, const char *name, hid_t type, size_t esize,
                      size_t chunk, size_t cap) {
    memset(a, 0, sizeof *a);
    a->dset = -1;
    a->mtype = -1;
    hsize_t dim = 0, maxdim = H5S_UNLIMITED, ch = chunk;
    hid_t sp = H5Screate_simple(1, &dim, &maxdim);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &ch) >= 0)
        a->dset = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (a->dset < 0) h5_note();
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    a->mtype = H5Tcopy(type);
    a->esize = esize;
    a->cap = cap;
    a->buf = malloc(cap * esize);
    return a->dset >= 0 && a->mtype >= 0 && a->buf ? 0 : -1;
}

/* Appends n elements straight to the file (extends the dataset). */
static herr_t app_write(appender *a, const void *data, size_t n) {
    if (n == 0) return 0;
    hsize_t size = (hsize_t)a->done + n;
    if (H5Dset_extent(a->dset, &size) < 0) return -1;
    if (rows_io(a->dset, a->mtype, a->done, (int64_t)n, (void *)data, 1) < 0) return -1;
    a->done += (int64_t)n;
    return 0;
}

static herr_t app_flush(appender *a) {
    herr_t r = app_write(a, a->buf, a->n);
    a->n = 0;
    return r;
}

/* Stages n elements; large pushes bypass the staging buffer. */
static herr_t app_push(appender *a, const void *data, size_t n) {
    if (a->n + n > a->cap && app_flush(a) < 0) return -1;
    if (n > a->cap) return app_write(a, data, n);
    memcpy(a->buf + a->n * a->esize, data, n * a->esize);
    a->n += n;
    return 0;
}

static void app_close(appender *a) {
    free(a->buf);
    a->buf = NULL;
    close_dset(&a->dset);
    close_type(&a->mtype);
}

/* A text column (formats/cache.md): NAME_bytes holds the entries back to back, NAME_offset (n + 1)
 * where each starts and ends. app[0] and app[1] are its two appenders. */
static int text_create(appender *app, hid_t loc, const char *name) {
    char bytes[64], offset[64];
    snprintf(bytes, sizeof bytes, "%s_bytes", name);
    snprintf(offset, sizeof offset, "%s_offset", name);
    uint64_t zero = 0;
    int r = app_create(&app[0], loc, bytes, H5T_STD_U8LE, 1, TEXT_CHUNK, TEXT_CHUNK);
    r |= app_create(&app[1], loc, offset, H5T_STD_U64LE, 8, TABLE_CHUNK, TABLE_CHUNK);
    return r < 0 || app_push(&app[1], &zero, 1) < 0 ? -1 : 0;
}

/* Appends s (without its NUL) to the text column app[0..1]; *end: the column's length so far. */
static herr_t text_push(appender *app, uint64_t *end, const char *s) {
    size_t n = strlen(s);
    if (app_push(&app[0], s, n) < 0) return -1;
    *end += n;
    return app_push(&app[1], end, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                     */

/* The appendable datasets; each text column is two of them (bytes, then offset). */
enum { A_PATH, A_PATH_OFFSET, A_BYTES, A_OFFSET, A_WIDTH, A_HEIGHT, A_SHA, A_SIZE, A_MTIME,
       A_SRC_SHA /* only with max_side > 0 */, A_SK_PATH, A_SK_PATH_OFFSET, A_SK_REASON, A_SK_REASON_OFFSET, A_COUNT };

/* /samples datasets, in this order everywhere. */
enum { S_IMAGE, S_LAMBDA, S_CROP, S_FLIP, S_JITTER, S_ORDER, S_FACTOR, S_GRAY, S_BLUR, S_COUNT };
static const char *const sample_names[S_COUNT] = {
    "image", "lambda", "crop", "flip", "jitter", "jitter_order", "jitter_factor", "gray",
    "blur_sigma"};
/* Per-sample element counts (after axis 0) and whether the elements are int32, float32 or u8. */
static const int sample_per_row[S_COUNT] = {2, 1, 8, 2, 2, 8, 8, 2, 2};
enum { K_I32, K_F32, K_U8 };
static const int sample_kind[S_COUNT] = {K_I32, K_F32, K_I32, K_U8, K_U8, K_U8, K_F32, K_U8,
                                         K_F32};

struct lt_cache_writer {
    char *path, *partial;
    lt_cache_meta meta;
    hid_t file, g_images, g_skipped, g_samples, emb, scales, half;
    appender app[A_COUNT];
    uint64_t path_end, sk_path_end, sk_reason_end; /* lengths of the text columns */
    int64_t n_images, n_bytes, n_samples;
    uint8_t *written;        /* bitmap of /embeddings rows written */
    uint32_t *emb_crc;       /* (S) CRC-32 of each stored /embeddings row, written at finish */
    int64_t rows_written;
    int samples_set, failed;
    int is_part;             /* lt_cache_writer_set_part was called */
    lt_cache_part part;
};

/* Closes every handle, the file last. Returns H5Fclose's status: HDF5 writes much of the file
 * only then (a full disk shows here), so a failure's description is noted for h5_fail. */
static herr_t writer_close_handles(lt_cache_writer *w) {
    for (int k = 0; k < A_COUNT; k++) app_close(&w->app[k]);
    close_dset(&w->emb);
    close_dset(&w->scales);
    close_group(&w->g_images);
    close_group(&w->g_skipped);
    close_group(&w->g_samples);
    close_type(&w->half);
    herr_t e = w->file >= 0 ? H5Fclose(w->file) : 0;
    w->file = -1;
    if (e < 0) h5_note();
    H5Eclear2(H5E_DEFAULT);
    return e;
}

static void writer_free(lt_cache_writer *w, int remove_partial) {
    if (!w) return;
    writer_close_handles(w);
    if (remove_partial && w->partial) unlink(w->partial);
    free(w->path);
    free(w->partial);
    free(w->written);
    free(w->emb_crc);
    free(w);
}

static int check_meta(const char *path, const lt_cache_meta *m) {
    if (m->embed_dim < 1 || m->views_per_image < 1 || m->image_size < 1)
        return lt_err_set("%s: invalid cache parameters (embed_dim %d, views %d, image_size %d)",
                          path, m->embed_dim, m->views_per_image, m->image_size);
    if (m->max_side < 0)
        return lt_err_set("%s: max_side %d is negative (0 = off)", path, m->max_side);
    if (m->zstd_level < 0 || m->zstd_level > 22)
        return lt_err_set("%s: zstd level %d out of range 1..22 (0 = default 3)", path,
                          m->zstd_level);
    return 0;
}

static void iso_utc_now(char out[32]) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static herr_t write_teacher_attrs(hid_t f, const lt_teacher_desc *t) {
    herr_t r = 0;
    r |= attr_str(f, "teacher_file", t->file, H5T_CSET_UTF8);
    r |= attr_str(f, "teacher_sha256", t->sha256, H5T_CSET_ASCII);
    r |= attr_i32(f, "teacher_embed_dim", t->embed_dim);
    r |= attr_i32(f, "teacher_depth", t->depth);
    r |= attr_i32(f, "teacher_heads", t->heads);
    r |= attr_i32(f, "teacher_patch", t->patch);
    r |= attr_i32(f, "teacher_registers", t->n_reg);
    r |= attr_i32(f, "teacher_pos_grid", t->pos_grid);
    r |= attr_i32(f, "teacher_mlp_hidden", t->mlp_hidden);
    r |= attr_i32(f, "teacher_swiglu", t->swiglu);
    return r < 0 ? -1 : 0;
}

static herr_t write_transform_attrs(hid_t f, const lt_transform *t) {
    herr_t r = 0;
    r |= attr_f32(f, "transform_crop_scale", t->crop_scale, 2);
    r |= attr_f32(f, "transform_crop_ratio", t->crop_ratio, 2);
    r |= attr_f32(f, "transform_hflip_p", &t->hflip_p, 1);
    r |= attr_f32(f, "transform_jitter_p", &t->jitter_p, 1);
    r |= attr_f32(f, "transform_jitter", t->jitter, 4);
    r |= attr_f32(f, "transform_gray_p", &t->gray_p, 1);
    r |= attr_f32(f, "transform_blur_sigma", t->blur_sigma, 2);
    r |= attr_f32(f, "transform_mean", t->mean, 3);
    r |= attr_f32(f, "transform_std", t->std, 3);
    return r < 0 ? -1 : 0;
}

/* Everything but num_images / num_samples, which set_samples writes. */
static herr_t write_root_attrs(hid_t f, const lt_cache_meta *m) {
    char created[32];
    iso_utc_now(created);
    uint64_t seed = m->seed;
    herr_t r = 0;
    r |= attr_str(f, "format", LT_CACHE_FORMAT, H5T_CSET_ASCII);
    r |= attr_i32(f, "version", LT_CACHE_VERSION);
    r |= attr_i32(f, "embed_dim", m->embed_dim);
    r |= attr_i32(f, "image_size", m->image_size);
    r |= attr_i32(f, "views_per_image", m->views_per_image);
    r |= attr_put(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &seed);
    r |= attr_i32(f, "mixup", m->mixup ? 1 : 0);
    r |= attr_str(f, "embedding_dtype", lt_emb_type_name(m->emb_type), H5T_CSET_ASCII);
    r |= attr_i64(f, "max_pixels", m->max_pixels);
    r |= attr_i32(f, "max_side", m->max_side);
    r |= attr_str(f, "tool_version", m->tool_version, H5T_CSET_ASCII);
    r |= attr_str(f, "created", created, H5T_CSET_ASCII);
    r |= write_teacher_attrs(f, &m->teacher);
    r |= write_transform_attrs(f, &m->transform);
    return r < 0 ? -1 : 0;
}

static int create_appenders(lt_cache_writer *w) {
    hid_t sha = fixed_str_type(SHA_LEN, H5T_CSET_ASCII);
    int r = sha >= 0 ? 0 : -1;
    hid_t gi = w->g_images, gs = w->g_skipped;
    r |= text_create(&w->app[A_PATH], gi, "path");
    r |= app_create(&w->app[A_BYTES], gi, "bytes", H5T_STD_U8LE, 1, BYTES_CHUNK, BYTES_CHUNK);
    r |= app_create(&w->app[A_OFFSET], gi, "offset", H5T_STD_U64LE, 8, TABLE_CHUNK, TABLE_CHUNK);
    r |= app_create(&w->app[A_WIDTH], gi, "width", H5T_STD_I32LE, 4, TABLE_CHUNK, TABLE_CHUNK);
    r |= app_create(&w->app[A_HEIGHT], gi, "height", H5T_STD_I32LE, 4, TABLE_CHUNK, TABLE_CHUNK);
    r |= app_create(&w->app[A_SHA], gi, "sha256", sha, SHA_LEN, TABLE_CHUNK, TABLE_CHUNK);
    r |= app_create(&w->app[A_SIZE], gi, "file_size", H5T_STD_I64LE, 8, TABLE_CHUNK,
                    TABLE_CHUNK);
    r |= app_create(&w->app[A_MTIME], gi, "mtime_ns", H5T_STD_I64LE, 8, TABLE_CHUNK,
                    TABLE_CHUNK);
    if (w->meta.max_side > 0)
        r |= app_create(&w->app[A_SRC_SHA], gi, "source_sha256", sha, SHA_LEN, TABLE_CHUNK,
                        TABLE_CHUNK);
    r |= text_create(&w->app[A_SK_PATH], gs, "path");
    r |= text_create(&w->app[A_SK_REASON], gs, "reason");
    if (sha >= 0) H5Tclose(sha);
    return r < 0 ? -1 : 0;
}

static int writer_open_file(lt_cache_writer *w) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return h5_fail(w->partial, "cannot set up HDF5 file access");
    }
    w->file = H5Fcreate(w->partial, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (w->file < 0) h5_note();
    H5Pclose(fapl);
    if (w->file < 0) return h5_fail(w->partial, "cannot create the cache file");
    if (write_root_attrs(w->file, &w->meta) < 0)
        return h5_fail(w->partial, "cannot write the root attributes");
    w->g_images = H5Gcreate2(w->file, "images", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    w->g_skipped = H5Gcreate2(w->file, "skipped", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    w->g_samples = H5Gcreate2(w->file, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    w->half = half_type();
    if (w->g_images < 0 || w->g_skipped < 0 || w->g_samples < 0 || w->half < 0 ||
        create_appenders(w) < 0)
        return h5_fail(w->partial, "cannot create the cache's groups and datasets");
    uint64_t zero = 0;
    if (app_push(&w->app[A_OFFSET], &zero, 1) < 0)
        return h5_fail(w->partial, "cannot write /images/offset");
    return 0;
}

int lt_cache_writer_create(const char *path, const lt_cache_meta *meta, lt_cache_writer **out) {
    *out = NULL;
    if (check_meta(path, meta) < 0) return -1;
    pthread_mutex_lock(&h5_lock);
    lt_cache_writer *w = lt_calloc(1, sizeof *w, "cache writer");
    int r = -1;
    if (!w) goto done;
    w->file = w->g_images = w->g_skipped = w->g_samples = w->emb = w->scales = w->half = -1;
    for (int k = 0; k < A_COUNT; k++) w->app[k].dset = w->app[k].mtype = -1;
    w->meta = *meta;
    if (w->meta.zstd_level == 0) w->meta.zstd_level = 3;
    size_t n = strlen(path);
    w->path = strdup(path);
    w->partial = malloc(n + sizeof ".partial");
    if (!w->path || !w->partial) {
        lt_err_set("out of memory (cache writer for %s)", path);
        goto done;
    }
    memcpy(w->partial, path, n);
    memcpy(w->partial + n, ".partial", sizeof ".partial");
    if (lt_h5zstd_register() < 0) {
        lt_err_prefix("%s", path);
        goto done;
    }
    if (unlink(w->partial) < 0 && errno != ENOENT) {
        lt_err_set("%s: cannot remove a stale partial file: %s", w->partial, strerror(errno));
        goto done;
    }
    r = writer_open_file(w);
done:
    if (r < 0) writer_free(w, 1);
    else *out = w;
    pthread_mutex_unlock(&h5_lock);
    return r;
}

static int is_hex64(const char *s) {
    for (int k = 0; k < SHA_LEN; k++)
        if (!((s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f'))) return 0;
    return s[SHA_LEN] == 0;
}

static int check_image(const lt_cache_writer *w, const lt_cache_image *im) {
    if (w->failed) return lt_err_set("%s: an earlier write failed", w->partial);
    if (w->samples_set)
        return lt_err_set("%s: images must all be added before the samples", w->partial);
    if (!im->path || !im->path[0])
        return lt_err_set("%s: image %lld has an empty path", w->partial, (long long)w->n_images);
    if (strlen(im->path) > TEXT_MAX)
        return lt_err_set("%s: image %lld: path longer than %d bytes", w->partial,
                          (long long)w->n_images, TEXT_MAX);
    if (im->n_bytes && !im->bytes)
        return lt_err_set("%s: image %s has no bytes", w->partial, im->path);
    if (im->width < 1 || im->height < 1)
        return lt_err_set("%s: image %s has invalid size %dx%d", w->partial, im->path,
                          im->width, im->height);
    if (im->sha256[0] && !is_hex64(im->sha256))
        return lt_err_set("%s: image %s: sha256 is not 64 lowercase hex digits", w->partial,
                          im->path);
    if (im->source_sha256[0] && !is_hex64(im->source_sha256))
        return lt_err_set("%s: image %s: source_sha256 is not 64 lowercase hex digits",
                          w->partial, im->path);
    if (im->source_size < 0)
        return lt_err_set("%s: image %s: negative source size", w->partial, im->path);
    /* without max_side an image is stored verbatim: its source is its stored bytes */
    if (w->meta.max_side == 0 &&
        ((im->source_size && (uint64_t)im->source_size != im->n_bytes) ||
         (im->source_sha256[0] && im->sha256[0] && strcmp(im->source_sha256, im->sha256) != 0)))
        return lt_err_set("%s: image %s is not its source file's bytes, but the cache has no "
                          "max_side", w->partial, im->path);
    return 0;
}

static int check_part(const lt_cache_writer *w, const lt_cache_part *p) {
    if (p->count < 1 || p->index < 1 || p->index > p->count || p->first_file < 0 ||
        p->files < 0 || p->total_files < p->first_file + p->files || p->first_image < 0 ||
        p->total_images < p->first_image || !is_hex64(p->listing_sha256) ||
        !is_hex64(p->images_sha256))
        return lt_err_set("%s: invalid part description (shard %d of %d)", w->partial, p->index,
                          p->count);
    return 0;
}

static herr_t write_part_attrs(hid_t f, const lt_cache_part *p) {
    herr_t r = 0;
    r |= attr_i32(f, "shard_index", p->index);
    r |= attr_i32(f, "shard_count", p->count);
    r |= attr_i64(f, "shard_first_file", p->first_file);
    r |= attr_i64(f, "shard_files", p->files);
    r |= attr_i64(f, "shard_total_files", p->total_files);
    r |= attr_i64(f, "shard_first_image", p->first_image);
    r |= attr_i64(f, "shard_total_images", p->total_images);
    r |= attr_str(f, "shard_listing_sha256", p->listing_sha256, H5T_CSET_ASCII);
    r |= attr_str(f, "shard_images_sha256", p->images_sha256, H5T_CSET_ASCII);
    return r < 0 ? -1 : 0;
}

int lt_cache_writer_set_part(lt_cache_writer *w, const lt_cache_part *p) {
    pthread_mutex_lock(&h5_lock);
    int r = 0;
    if (w->failed) r = lt_err_set("%s: an earlier write failed", w->partial);
    else if (w->n_images || w->samples_set || w->is_part)
        r = lt_err_set("%s: a part is declared before its first image, once", w->partial);
    else r = check_part(w, p);
    /* format "lt-cache-part": a reader that does not know parts refuses it rather than reading
     * the samples' image indices as its own */
    if (r == 0 && (H5Adelete(w->file, "format") < 0 ||
                   attr_str(w->file, "format", LT_CACHE_PART_FORMAT, H5T_CSET_ASCII) < 0 ||
                   write_part_attrs(w->file, p) < 0)) {
        w->failed = 1;
        r = h5_fail(w->partial, "cannot write the part's attributes");
    }
    if (r == 0) {
        w->part = *p;
        w->is_part = 1;
    }
    pthread_mutex_unlock(&h5_lock);
    return r;
}

int lt_cache_writer_add_image(lt_cache_writer *w, const lt_cache_image *im) {
    pthread_mutex_lock(&h5_lock);
    int r = check_image(w, im);
    if (r == 0) {
        char sha[SHA_LEN + 1];
        if (im->sha256[0]) memcpy(sha, im->sha256, sizeof sha);
        else lt_sha256_hex(im->bytes, im->n_bytes, sha);
        uint64_t end = (uint64_t)(w->n_bytes + (int64_t)im->n_bytes);
        int64_t size = (int64_t)im->n_bytes;
        int64_t src_size = im->source_size ? im->source_size : size;
        herr_t e = 0;
        e |= text_push(&w->app[A_PATH], &w->path_end, im->path);
        e |= app_push(&w->app[A_BYTES], im->bytes, im->n_bytes);
        e |= app_push(&w->app[A_OFFSET], &end, 1);
        e |= app_push(&w->app[A_WIDTH], &im->width, 1);
        e |= app_push(&w->app[A_HEIGHT], &im->height, 1);
        e |= app_push(&w->app[A_SHA], sha, 1);
        e |= app_push(&w->app[A_SIZE], &src_size, 1);
        e |= app_push(&w->app[A_MTIME], &im->mtime_ns, 1);
        if (w->meta.max_side > 0)
            e |= app_push(&w->app[A_SRC_SHA], im->source_sha256[0] ? im->source_sha256 : sha, 1);
        if (e < 0) {
            w->failed = 1;
            r = h5_fail(w->partial, "cannot write an image to /images");
        } else {
            w->n_images++;
            w->n_bytes += size;
        }
    }
    pthread_mutex_unlock(&h5_lock);
    return r;
}

int lt_cache_writer_add_skipped(lt_cache_writer *w, const char *path, const char *reason) {
    pthread_mutex_lock(&h5_lock);
    int r = 0;
    if (w->failed) r = lt_err_set("%s: an earlier write failed", w->partial);
    else if (strlen(path) > TEXT_MAX || strlen(reason) > TEXT_MAX)
        r = lt_err_set("%s: skipped file %.200s: path or reason longer than %d bytes", w->partial,
                       path, TEXT_MAX);
    else if (text_push(&w->app[A_SK_PATH], &w->sk_path_end, path) < 0 ||
             text_push(&w->app[A_SK_REASON], &w->sk_reason_end, reason) < 0) {
        w->failed = 1;
        r = h5_fail(w->partial, "cannot write to /skipped");
    }
    pthread_mutex_unlock(&h5_lock);
    return r;
}

/* Creates a contiguous dataset of shape (s, per_row) ((s) when per_row is 1; (s, 2, 4) for 8). */
static hid_t create_sample_dset(hid_t g, int k, int64_t s) {
    hsize_t dims[3] = {(hsize_t)s, 2, 4};
    int rank = sample_per_row[k] == 1 ? 1 : sample_per_row[k] == 2 ? 2 : 3;
    hid_t type = sample_kind[k] == K_I32 ? H5T_STD_I32LE
                 : sample_kind[k] == K_F32 ? H5T_IEEE_F32LE : H5T_STD_U8LE;
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    if (sp < 0) return -1;
    hid_t d = H5Dcreate2(g, sample_names[k], type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0) h5_note();
    H5Sclose(sp);
    return d;
}

static hid_t sample_mtype(int k) {
    return sample_kind[k] == K_I32 ? H5T_NATIVE_INT32
           : sample_kind[k] == K_F32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8;
}

/* Column buffers of up to SAMPLE_BLOCK samples, one per /samples dataset. */
typedef struct {
    void *col[S_COUNT];
} sample_cols;

static int cols_alloc(sample_cols *c, int64_t n) {
    int ok = 1;
    for (int k = 0; k < S_COUNT; k++) {
        size_t es = sample_kind[k] == K_U8 ? 1 : 4;
        c->col[k] = malloc((size_t)n * (size_t)sample_per_row[k] * es);
        ok &= c->col[k] != NULL;
    }
    return ok ? 0 : -1;
}

static void cols_free(sample_cols *c) {
    for (int k = 0; k < S_COUNT; k++) free(c->col[k]);
}

static void samples_to_cols(const lt_sample *s, int64_t n, sample_cols *c) {
    for (int64_t i = 0; i < n; i++) {
        ((float *)c->col[S_LAMBDA])[i] = s[i].lambda;
        for (int r = 0; r < 2; r++) {
            const lt_recipe *rc = &s[i].r[r];
            int64_t j = i * 2 + r;
            ((int32_t *)c->col[S_IMAGE])[j] = s[i].image[r];
            ((uint8_t *)c->col[S_FLIP])[j] = rc->flip;
            ((uint8_t *)c->col[S_JITTER])[j] = rc->jitter;
            ((uint8_t *)c->col[S_GRAY])[j] = rc->gray;
            ((float *)c->col[S_BLUR])[j] = rc->blur_sigma;
            memcpy((int32_t *)c->col[S_CROP] + j * 4, rc->crop, 16);
            memcpy((uint8_t *)c->col[S_ORDER] + j * 4, rc->order, 4);
            memcpy((float *)c->col[S_FACTOR] + j * 4, rc->factor, 16);
        }
    }
}

static void cols_to_samples(const sample_cols *c, int64_t n, lt_sample *s) {
    for (int64_t i = 0; i < n; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].lambda = ((const float *)c->col[S_LAMBDA])[i];
        for (int r = 0; r < 2; r++) {
            lt_recipe *rc = &s[i].r[r];
            int64_t j = i * 2 + r;
            s[i].image[r] = ((const int32_t *)c->col[S_IMAGE])[j];
            rc->flip = ((const uint8_t *)c->col[S_FLIP])[j];
            rc->jitter = ((const uint8_t *)c->col[S_JITTER])[j];
            rc->gray = ((const uint8_t *)c->col[S_GRAY])[j];
            rc->blur_sigma = ((const float *)c->col[S_BLUR])[j];
            memcpy(rc->crop, (const int32_t *)c->col[S_CROP] + j * 4, 16);
            memcpy(rc->order, (const uint8_t *)c->col[S_ORDER] + j * 4, 4);
            memcpy(rc->factor, (const float *)c->col[S_FACTOR] + j * 4, 16);
        }
    }
}

/* The checksum of sample i of a block: CRC-32 over its row of every /samples dataset, in the
 * order of sample_names, as stored (little-endian) bytes (formats/cache.md, "Checksums"). */
static uint32_t sample_crc(const sample_cols *c, int64_t i) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int k = 0; k < S_COUNT; k++) {
        size_t row = (size_t)sample_per_row[k] * (sample_kind[k] == K_U8 ? 1 : 4);
        crc = crc32(crc, (const Bytef *)c->col[k] + (size_t)i * row, (uInt)row);
    }
    return (uint32_t)crc;
}

/* A contiguous (n) uint32 dataset under /checksums. */
static hid_t create_crc_dset(hid_t file, const char *name, int64_t n) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    if (sp < 0) return -1;
    hid_t d = H5Dcreate2(file, name, H5T_STD_U32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0) h5_note();
    H5Sclose(sp);
    return d;
}

/* The image indices of a part's samples are the whole cache's: the primary one of the part's own
 * images, the partner any image of the whole. */
static int check_samples(const lt_cache_writer *w, const lt_sample *s, int64_t n) {
    int64_t first = w->is_part ? w->part.first_image : 0;
    int64_t total = w->is_part ? w->part.total_images : w->n_images;
    for (int64_t i = 0; i < n; i++) {
        int32_t a = s[i].image[0], b = s[i].image[1];
        if (a < first || a >= first + w->n_images || b < -1 || b >= total)
            return lt_err_set("%s: sample %lld refers to image %d/%d, outside %lld..%lld/"
                              "-1..%lld", w->partial, (long long)i, a, b, (long long)first,
                              (long long)(first + w->n_images - 1), (long long)total - 1);
    }
    return 0;
}

/* Writes all samples in blocks, and their checksums; datasets d[k] and crc already exist. */
static int write_samples(lt_cache_writer *w, const hid_t *d, hid_t crc, const lt_sample *s,
                         int64_t n) {
    sample_cols c;
    int64_t block = n < SAMPLE_BLOCK ? n : SAMPLE_BLOCK;
    uint32_t *sums = malloc((size_t)block * sizeof *sums);
    int r = cols_alloc(&c, block) < 0 || !sums ? lt_err_set("%s: out of memory writing samples",
                                                           w->partial) : 0;
    for (int64_t first = 0; r == 0 && first < n; first += SAMPLE_BLOCK) {
        int64_t cnt = n - first < SAMPLE_BLOCK ? n - first : SAMPLE_BLOCK;
        samples_to_cols(s + first, cnt, &c);
        for (int64_t i = 0; i < cnt; i++) sums[i] = sample_crc(&c, i);
        for (int k = 0; r == 0 && k < S_COUNT; k++)
            r = rows_io(d[k], sample_mtype(k), first, cnt, c.col[k], 1) < 0 ? -1 : 0;
        if (r == 0) r = rows_io(crc, H5T_NATIVE_UINT32, first, cnt, sums, 1) < 0 ? -1 : 0;
        if (r < 0) r = h5_fail(w->partial, "cannot write /samples");
    }
    cols_free(&c);
    free(sums);
    return r;
}

/* /embedding_scales (S) float32 of an int8 cache: contiguous, unfiltered, fill 0. */
static int create_scales(lt_cache_writer *w) {
    hsize_t dims[1] = {(hsize_t)w->n_samples};
    float zero = 0;
    hid_t sp = H5Screate_simple(1, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (sp >= 0 && dcpl >= 0 && H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &zero) >= 0)
        w->scales = H5Dcreate2(w->file, "embedding_scales", H5T_IEEE_F32LE, sp, H5P_DEFAULT,
                               dcpl, H5P_DEFAULT);
    if (w->scales < 0) h5_note();
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    return w->scales < 0 ? h5_fail(w->partial, "cannot create /embedding_scales") : 0;
}

/* /embeddings (S, D): chunked by rows, shuffle + zstd, fill 0 (and /embedding_scales). */
static int create_embeddings(lt_cache_writer *w) {
    int d = w->meta.embed_dim;
    lt_emb_type et = w->meta.emb_type;
    size_t es = et == LT_EMB_F32 ? 4 : et == LT_EMB_F16 ? 2 : 1;
    int64_t rows = (int64_t)(EMB_CHUNK_BYTES / ((size_t)d * es));
    if (rows > w->n_samples) rows = w->n_samples;
    if (rows < 1) rows = 1;
    /* a part may hold no sample: a chunked dataset of 0 rows needs room to grow for its chunk */
    hsize_t dims[2] = {(hsize_t)w->n_samples, (hsize_t)d}, chunk[2] = {(hsize_t)rows, (hsize_t)d};
    hsize_t maxdims[2] = {w->n_samples ? (hsize_t)w->n_samples : H5S_UNLIMITED, (hsize_t)d};
    unsigned cd[1] = {(unsigned)w->meta.zstd_level};
    hid_t type = et == LT_EMB_F32 ? H5T_IEEE_F32LE : et == LT_EMB_F16 ? w->half : H5T_STD_I8LE;
    uint8_t zero[4] = {0};
    hid_t sp = H5Screate_simple(2, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (sp >= 0 && dcpl >= 0 && dapl >= 0 && H5Pset_chunk(dcpl, 2, chunk) >= 0 &&
        H5Pset_shuffle(dcpl) >= 0 &&
        H5Pset_filter(dcpl, LT_H5Z_ZSTD_ID, H5Z_FLAG_MANDATORY, 1, cd) >= 0 &&
        H5Pset_fill_value(dcpl, type, zero) >= 0 &&
        H5Pset_chunk_cache(dapl, 12421, EMB_CACHE_BYTES, 1.0) >= 0)
        w->emb = H5Dcreate2(w->file, "embeddings", type, sp, H5P_DEFAULT, dcpl, dapl);
    if (w->emb < 0) h5_note();
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (dapl >= 0) H5Pclose(dapl);
    if (w->emb < 0) return h5_fail(w->partial, "cannot create /embeddings");
    if (et == LT_EMB_I8 && create_scales(w) < 0) return -1;
    w->written = lt_calloc((size_t)(w->n_samples + 7) / 8, 1, "embedding row bitmap");
    w->emb_crc = lt_malloc((size_t)w->n_samples * sizeof *w->emb_crc, "embedding checksums");
    return w->written && w->emb_crc ? 0 : -1;
}

static int flush_images(lt_cache_writer *w) {
    for (int k = 0; k < A_COUNT; k++)
        if (app_flush(&w->app[k]) < 0) return h5_fail(w->partial, "cannot write /images");
    return 0;
}

static int set_samples_locked(lt_cache_writer *w, const lt_sample *samples, int64_t n) {
    if (w->failed) return lt_err_set("%s: an earlier write failed", w->partial);
    if (w->samples_set) return lt_err_set("%s: samples were already written", w->partial);
    if (w->n_images < 1 && !w->is_part)
        return lt_err_set("%s: no images were added", w->partial);
    if (n != w->n_images * w->meta.views_per_image)
        return lt_err_set("%s: %lld samples given, expected %lld images x %d views", w->partial,
                          (long long)n, (long long)w->n_images, w->meta.views_per_image);
    if (check_samples(w, samples, n) < 0 || flush_images(w) < 0) return -1;
    w->n_samples = n;
    if (attr_i64(w->file, "num_images", w->n_images) < 0 ||
        attr_i64(w->file, "num_samples", n) < 0)
        return h5_fail(w->partial, "cannot write num_images/num_samples");
    hid_t d[S_COUNT], crc = -1;
    int r = 0;
    for (int k = 0; k < S_COUNT; k++) {
        d[k] = create_sample_dset(w->g_samples, k, n);
        if (d[k] < 0) r = -1;
    }
    hid_t g = H5Gcreate2(w->file, "checksums", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g >= 0) crc = create_crc_dset(g, "samples", n);
    close_group(&g);
    if (r < 0 || crc < 0) r = h5_fail(w->partial, "cannot create /samples");
    else r = write_samples(w, d, crc, samples, n);
    for (int k = 0; k < S_COUNT; k++) close_dset(&d[k]);
    close_dset(&crc);
    if (r == 0) r = create_embeddings(w);
    if (r == 0) w->samples_set = 1;
    return r;
}

int lt_cache_writer_set_samples(lt_cache_writer *w, const lt_sample *samples, int64_t n) {
    pthread_mutex_lock(&h5_lock);
    int r = set_samples_locked(w, samples, n);
    if (r < 0) w->failed = 1;
    pthread_mutex_unlock(&h5_lock);
    return r;
}

/* Marks rows [first, first + count) written; -1 if one already was. */
static int mark_rows(lt_cache_writer *w, int64_t first, int64_t count) {
    for (int64_t i = first; i < first + count; i++)
        if (w->written[i >> 3] & (1u << (i & 7)))
            return lt_err_set("%s: embedding row %lld written twice", w->partial, (long long)i);
    for (int64_t i = first; i < first + count; i++) w->written[i >> 3] |= (uint8_t)(1u << (i & 7));
    w->rows_written += count;
    return 0;
}

/* Checks and marks rows [first, first + count) before they are written. */
static int claim_rows(lt_cache_writer *w, int64_t first, int64_t count) {
    if (w->failed) return lt_err_set("%s: an earlier write failed", w->partial);
    if (!w->samples_set)
        return lt_err_set("%s: embeddings written before the samples", w->partial);
    if (first < 0 || count < 0 || first + count > w->n_samples)
        return lt_err_set("%s: embedding rows %lld..%lld outside 0..%lld", w->partial,
                          (long long)first, (long long)(first + count), (long long)w->n_samples);
    return mark_rows(w, first, count);
}

/* Writes stored rows [first, first + count) after claiming them, recording their CRC-32. */
static int put_raw_locked(lt_cache_writer *w, int64_t first, int64_t count, const void *rows) {
    if (claim_rows(w, first, count) < 0) return -1;
    int d = w->meta.embed_dim;
    size_t row = lt_emb_row_bytes(w->meta.emb_type, d);
    for (int64_t i = 0; i < count; i++)
        w->emb_crc[first + i] = crc_of((const uint8_t *)rows + (size_t)i * row, row);
    if (emb_io(w->emb, w->scales, w->half, w->meta.emb_type, d, first, count, (void *)rows, 1) < 0)
        return h5_fail(w->partial, "cannot write /embeddings");
    return 0;
}

static int put_embeddings_locked(lt_cache_writer *w, int64_t first, int64_t count,
                                 const float *emb) {
    int d = w->meta.embed_dim;
    size_t row = lt_emb_row_bytes(w->meta.emb_type, d);
    int64_t block = count < EMB_BLOCK ? count : EMB_BLOCK;
    uint8_t *buf = lt_malloc((size_t)block * row, "stored embeddings");
    if (!buf) return -1;
    int r = 0;
    for (int64_t r0 = 0; r == 0 && r0 < count; r0 += block) {
        int64_t n = count - r0 < block ? count - r0 : block;
        for (int64_t i = 0; r == 0 && i < n; i++) {
            float bad;
            if (lt_emb_encode_row(w->meta.emb_type, emb + (size_t)(r0 + i) * d, d,
                                  buf + (size_t)i * row, &bad) < 0)
                r = lt_err_set("%s: embedding row %lld holds %g, which %s cannot store",
                               w->partial, (long long)(first + r0 + i), bad,
                               lt_emb_type_name(w->meta.emb_type));
        }
        if (r == 0) r = put_raw_locked(w, first + r0, n, buf);
    }
    free(buf);
    return r;
}

int lt_cache_writer_put_embeddings(lt_cache_writer *w, int64_t first, int64_t count,
                                   const float *emb) {
    pthread_mutex_lock(&h5_lock);
    int r = put_embeddings_locked(w, first, count, emb);
    if (r < 0) w->failed = 1;
    pthread_mutex_unlock(&h5_lock);
    return r;
}

int lt_cache_writer_put_embeddings_raw(lt_cache_writer *w, int64_t first, int64_t count,
                                       const void *rows) {
    pthread_mutex_lock(&h5_lock);
    int r = put_raw_locked(w, first, count, rows);
    if (r < 0) w->failed = 1;
    pthread_mutex_unlock(&h5_lock);
    return r;
}

static int writer_image_bytes_locked(lt_cache_writer *w, int64_t i, uint8_t **bytes, size_t *n) {
    if (w->failed) return lt_err_set("%s: an earlier write failed", w->partial);
    if (i < 0 || i >= w->n_images)
        return lt_err_set("%s: image %lld requested, %lld were added", w->partial, (long long)i,
                          (long long)w->n_images);
    uint64_t off[2];
    if (app_flush(&w->app[A_BYTES]) < 0 || app_flush(&w->app[A_OFFSET]) < 0 ||
        rows_io(w->app[A_OFFSET].dset, H5T_NATIVE_UINT64, i, 2, off, 0) < 0) {
        w->failed = 1;
        return h5_fail(w->partial, "cannot read back /images/offset");
    }
    size_t len = (size_t)(off[1] - off[0]);
    uint8_t *buf = lt_malloc(len, "image bytes");
    if (!buf) return -1;
    if (rows_io(w->app[A_BYTES].dset, H5T_NATIVE_UINT8, (int64_t)off[0], (int64_t)len, buf, 0) <
        0) {
        free(buf);
        return h5_fail(w->partial, "cannot read back /images/bytes");
    }
    *bytes = buf;
    *n = len;
    return 0;
}

int lt_cache_writer_image_bytes(lt_cache_writer *w, int64_t i, uint8_t **bytes, size_t *n) {
    *bytes = NULL;
    *n = 0;
    pthread_mutex_lock(&h5_lock);
    int r = writer_image_bytes_locked(w, i, bytes, n);
    pthread_mutex_unlock(&h5_lock);
    return r;
}

static int fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

/* Directory part of path ("." if none), into buf. */
static void dir_of(const char *path, char *buf, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, cap, ".");
    else if (slash == path) snprintf(buf, cap, "/");
    else snprintf(buf, cap, "%.*s", (int)(slash - path), path);
}

/* Closes the file (checked) and syncs it to disk. */
static int close_file_synced(lt_cache_writer *w) {
    if (writer_close_handles(w) < 0) return h5_fail(w->partial, "cannot close the cache file");
    if (fsync_path(w->partial, 0) < 0)
        return lt_err_set("%s: cannot sync to disk: %s", w->partial, strerror(errno));
    return 0;
}

static int finish_locked(lt_cache_writer *w) {
    if (w->failed) return lt_err_set("%s: an earlier write failed; nothing was saved", w->partial);
    if (!w->samples_set)
        return lt_err_set("%s: finished before the samples were written", w->partial);
    if (w->rows_written != w->n_samples)
        return lt_err_set("%s: only %lld of %lld embedding rows were written", w->partial,
                          (long long)w->rows_written, (long long)w->n_samples);
    for (int k = 0; k < A_COUNT; k++)
        if (app_flush(&w->app[k]) < 0) return h5_fail(w->partial, "cannot write /skipped");
    hid_t crc = create_crc_dset(w->file, "checksums/embeddings", w->n_samples);
    herr_t e0 = crc < 0 ? -1 : rows_io(crc, H5T_NATIVE_UINT32, 0, w->n_samples, w->emb_crc, 1);
    close_dset(&crc);
    if (e0 < 0) return h5_fail(w->partial, "cannot write /checksums/embeddings");
    /* Last of all: the mark that readers require (an unfinished file never has it). */
    if (attr_i32(w->file, "complete", 1) < 0)
        return h5_fail(w->partial, "cannot write the attribute 'complete'");
    if (close_file_synced(w) < 0) return -1;
    if (rename(w->partial, w->path) < 0)
        return lt_err_set("%s: cannot rename to %s: %s", w->partial, w->path, strerror(errno));
    char dir[4096];
    dir_of(w->path, dir, sizeof dir);
    fsync_path(dir, 1); /* best effort: the rename is durable once the directory is synced */
    return 0;
}

int lt_cache_writer_finish(lt_cache_writer *w) {
    if (!w) return lt_err_set("cache writer: finish called without a writer");
    pthread_mutex_lock(&h5_lock);
    int r = finish_locked(w);
    writer_free(w, r < 0);
    pthread_mutex_unlock(&h5_lock);
    return r;
}

/* Flushes everything written so far, closes the file and syncs it to disk. */
static int close_synced(lt_cache_writer *w) {
    if (w->failed) return lt_err_set("%s: an earlier write failed", w->partial);
    if (!w->samples_set)
        return lt_err_set("%s: closed before the samples were written", w->partial);
    for (int k = 0; k < A_COUNT; k++)
        if (app_flush(&w->app[k]) < 0) return h5_fail(w->partial, "cannot write /images");
    return close_file_synced(w);
}

int lt_cache_writer_close_partial(lt_cache_writer *w) {
    if (!w) return lt_err_set("cache writer: close_partial called without a writer");
    pthread_mutex_lock(&h5_lock);
    int r = close_synced(w);
    writer_free(w, r < 0);
    pthread_mutex_unlock(&h5_lock);
    return r;
}

/* Opens w->partial read-write with /embeddings, for a cache of n_samples rows. */
static int reopen_locked(lt_cache_writer *w) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (fapl >= 0 && dapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0 &&
        H5Pset_chunk_cache(dapl, 12421, EMB_CACHE_BYTES, 1.0) >= 0) {
        w->file = H5Fopen(w->partial, H5F_ACC_RDWR, fapl);
        if (w->file >= 0) w->emb = H5Dopen2(w->file, "embeddings", dapl);
        if (w->emb >= 0 && w->meta.emb_type == LT_EMB_I8)
            w->scales = H5Dopen2(w->file, "embedding_scales", H5P_DEFAULT);
    }
    if (w->emb < 0) h5_note();
    if (fapl >= 0) H5Pclose(fapl);
    if (dapl >= 0) H5Pclose(dapl);
    if (w->emb < 0 || (w->meta.emb_type == LT_EMB_I8 && w->scales < 0))
        return h5_fail(w->partial, "cannot reopen /embeddings for writing");
    w->half = half_type();
    if (w->half < 0) return h5_fail(w->partial, "cannot define the float16 type");
    w->written = lt_calloc((size_t)(w->n_samples + 7) / 8, 1, "embedding row bitmap");
    w->emb_crc = lt_malloc((size_t)w->n_samples * sizeof *w->emb_crc, "embedding checksums");
    if (!w->written || !w->emb_crc) return -1;
    w->samples_set = 1;
    return 0;
}

int lt_cache_writer_reopen(const char *path, lt_cache_writer **out) {
    *out = NULL;
    size_t n = strlen(path);
    char *partial = malloc(n + sizeof ".partial");
    if (!partial) return lt_err_set("out of memory (cache writer for %s)", path);
    memcpy(partial, path, n);
    memcpy(partial + n, ".partial", sizeof ".partial");
    lt_cache *c = NULL;
    if (lt_cache_open_partial(partial, &c) < 0) {
        free(partial);
        return -1;
    }
    lt_cache_writer *w = lt_calloc(1, sizeof *w, "cache writer");
    int r = -1;
    if (w) {
        w->file = w->g_images = w->g_skipped = w->g_samples = w->emb = w->scales = w->half = -1;
        for (int k = 0; k < A_COUNT; k++) w->app[k].dset = w->app[k].mtype = -1;
        w->meta = *lt_cache_meta_of(c);
        w->n_images = lt_cache_n_images(c);
        w->n_samples = lt_cache_n_samples(c);
        w->partial = partial;
        partial = NULL;
        w->path = strdup(path);
        if (!w->path) lt_err_set("out of memory (cache writer for %s)", path);
    }
    lt_cache_close(c);
    free(partial);
    if (!w || !w->path) {
        if (w) writer_free(w, 0);
        return -1;
    }
    pthread_mutex_lock(&h5_lock);
    r = reopen_locked(w);
    if (r < 0) writer_free(w, 0); /* the partial stays: lt-embed rebuilds or reports it */
    else *out = w;
    pthread_mutex_unlock(&h5_lock);
    return r;
}

void lt_cache_writer_abort(lt_cache_writer *w) {
    if (!w) return;
    pthread_mutex_lock(&h5_lock);
    writer_free(w, 1);
    pthread_mutex_unlock(&h5_lock);
}

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                     */

/* What an open may accept: a whole cache, a part of a sharded run, either. */
enum { OPEN_WHOLE, OPEN_PART, OPEN_ANY };

/* A text column read into memory: entry k is the NUL-terminated string at text + at[k]. */
typedef struct {
    char *text;
    size_t *at;
} text_col;

struct lt_cache {
    char *path;
    int64_t file_size;
    lt_cache_meta meta;
    int64_t n_images, n_samples, n_bytes, n_skipped;
    hid_t file, bytes, emb, scales, sha, size, mtime, half;
    hid_t src_sha;                   /* /images/source_sha256, -1 where the cache has none */
    hid_t sam[S_COUNT];
    hid_t crc_sam, crc_emb;          /* (S) /checksums/samples, /checksums/embeddings */
    int partial_ok;                  /* lt_cache_open_partial: 'complete' is not required */
    int want;                        /* OPEN_WHOLE, OPEN_PART or OPEN_ANY: what may be opened */
    int is_part;                     /* the file is a part of a sharded run */
    int format_part;                 /* its format is LT_CACHE_PART_FORMAT */
    lt_cache_part part;
    text_col paths;                  /* (N) /images/path */
    text_col sk_path, sk_reason;     /* (K) /skipped */
    int32_t *width, *height;         /* (N) */
    uint64_t *offset;                /* (N+1) */
};

static void reader_free(lt_cache *c) {
    if (!c) return;
    close_dset(&c->bytes);
    close_dset(&c->emb);
    close_dset(&c->scales);
    close_dset(&c->sha);
    close_dset(&c->size);
    close_dset(&c->mtime);
    close_dset(&c->src_sha);
    close_dset(&c->crc_sam);
    close_dset(&c->crc_emb);
    for (int k = 0; k < S_COUNT; k++) close_dset(&c->sam[k]);
    close_type(&c->half);
    if (c->file >= 0) H5Fclose(c->file);
    H5Eclear2(H5E_DEFAULT);
    free(c->path);
    text_col *cols[] = {&c->paths, &c->sk_path, &c->sk_reason};
    for (int k = 0; k < 3; k++) {
        free(cols[k]->text);
        free(cols[k]->at);
    }
    free(c->width);
    free(c->height);
    free(c->offset);
    free(c);
}

/* Reports what is wrong with the cache file, with the re-run hint. */
#define BAD(c, ...) bad_cache((c)->path, __VA_ARGS__)
static int bad_cache(const char *path, const char *fmt, ...) LT_PRINTF(2, 3);
static int bad_cache(const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    H5Eclear2(H5E_DEFAULT);
    return lt_err_set("%s: not a valid lt cache: %s (re-run lt-embed to rebuild it)", path, msg);
}

static int open_file(lt_cache *c) {
    struct stat st;
    if (stat(c->path, &st) < 0) return lt_err_set("%s: cannot open: %s", c->path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return lt_err_set("%s: not a regular file", c->path);
    c->file_size = (int64_t)st.st_size;
    htri_t is = H5Fis_hdf5(c->path);
    H5Eclear2(H5E_DEFAULT);
    if (is <= 0) return lt_err_set("%s: not an HDF5 file (expected an lt cache written by "
                                   "lt-embed)", c->path);
    /* Without HDF5's own file lock: a reader must never make a running lt-embed fail to open its
     * CACHE.partial. lt's protocol (the 'complete' mark, the rename, the tools' locks) is what
     * keeps readers off unfinished files. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
    c->file = H5Fopen(c->path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0) H5Pclose(fapl);
    if (c->file < 0)
        return h5_fail(c->path, "cannot open the HDF5 file (truncated or damaged? re-run lt-embed)");
    return 0;
}

/* Reads the scalar fixed-length string attribute name into buf (at most cap - 1 bytes; the value
 * ends at the first NUL). The type is checked first: a variable-length string is refused unread,
 * because reading it makes HDF5 follow a pointer into the file's global heap, which HDF5 1.10
 * does not bounds-check (formats/cache.md, "Versioning"). */
static int attr_str_get(lt_cache *c, const char *name, char *buf, size_t cap) {
    if (H5Aexists(c->file, name) <= 0) return BAD(c, "attribute '%s' is missing", name);
    hid_t a = H5Aopen(c->file, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1, sp = a >= 0 ? H5Aget_space(a) : -1;
    char bad[96] = "";
    if (t < 0 || sp < 0) snprintf(bad, sizeof bad, "cannot be opened");
    else if (H5Tget_class(t) != H5T_STRING) snprintf(bad, sizeof bad, "is not a string");
    else if (H5Tis_variable_str(t) != 0)
        snprintf(bad, sizeof bad, "is a variable-length string (expected a fixed-length one)");
    else if (H5Sget_simple_extent_npoints(sp) != 1 || H5Tget_size(t) >= cap)
        snprintf(bad, sizeof bad, "is not one string of at most %zu bytes", cap - 1);
    else {
        memset(buf, 0, cap);
        if (H5Aread(a, t, buf) < 0) snprintf(bad, sizeof bad, "cannot be read");
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    H5Eclear2(H5E_DEFAULT);
    return bad[0] ? BAD(c, "attribute '%s' %s", name, bad) : 0;
}

/* The version is read before anything else, as an integer: a version-1 cache stores `format` as
 * a variable-length string, which this reader never reads. Only the presence of `format` is
 * checked first, so that a file of another kind is called that. */
static int read_format(lt_cache *c) {
    char fmt[64];
    int32_t version;
    if (H5Aexists(c->file, "format") <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return lt_err_set("%s: not an lt cache (no 'format' attribute)", c->path);
    }
    if (attr_get(c->file, "version", H5T_INTEGER, H5T_NATIVE_INT32, 1, &version) < 0)
        return BAD(c, "attribute 'version' missing or not an integer");
    if (version != LT_CACHE_VERSION)
        return lt_err_set("%s: cache version %d, this lt reads version %d: re-run lt-embed "
                          "(--overwrite) to rebuild it", c->path, version, LT_CACHE_VERSION);
    int32_t complete = 0;
    if (!c->partial_ok &&
        (attr_get(c->file, "complete", H5T_INTEGER, H5T_NATIVE_INT32, 1, &complete) < 0 ||
         complete != 1)) {
        H5Eclear2(H5E_DEFAULT);
        size_t n = strlen(c->path);
        int partial = n > 8 && !strcmp(c->path + n - 8, ".partial");
        return lt_err_set("%s is not a finished lt cache (it has no 'complete' mark): %s", c->path,
                          partial ? "it is the file lt-embed writes while it runs, or what an "
                                    "interrupted run left; use the finished cache (the name "
                                    "without .partial) once lt-embed is done, or rerun lt-embed "
                                    "to finish it"
                                  : "lt-embed did not finish writing it; rerun lt-embed to "
                                    "rebuild it");
    }
    if (attr_str_get(c, "format", fmt, sizeof fmt) < 0) return -1;
    c->format_part = !strcmp(fmt, LT_CACHE_PART_FORMAT);
    if (strcmp(fmt, LT_CACHE_FORMAT) != 0 && !c->format_part)
        return lt_err_set("%s: not an lt cache (format is '%s', expected '%s')", c->path,
                          lt_str_printable(fmt), LT_CACHE_FORMAT);
    return 0;
}

/* Integer attributes read into int: name and destination. */
typedef struct {
    const char *name;
    int *dst;
} int_attr;

static int read_int_attrs(lt_cache *c, const int_attr *a, int n) {
    for (int k = 0; k < n; k++) {
        int32_t v;
        if (attr_get(c->file, a[k].name, H5T_INTEGER, H5T_NATIVE_INT32, 1, &v) < 0)
            return BAD(c, "attribute '%s' missing or not an integer", a[k].name);
        *a[k].dst = v;
    }
    return 0;
}

static int read_transform_attrs(lt_cache *c) {
    lt_transform *t = &c->meta.transform;
    struct { const char *name; float *dst; int n; } f[] = {
        {"transform_crop_scale", t->crop_scale, 2}, {"transform_crop_ratio", t->crop_ratio, 2},
        {"transform_hflip_p", &t->hflip_p, 1},      {"transform_jitter_p", &t->jitter_p, 1},
        {"transform_jitter", t->jitter, 4},         {"transform_gray_p", &t->gray_p, 1},
        {"transform_blur_sigma", t->blur_sigma, 2}, {"transform_mean", t->mean, 3},
        {"transform_std", t->std, 3}};
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++)
        if (attr_get(c->file, f[k].name, H5T_FLOAT, H5T_NATIVE_FLOAT, f[k].n, f[k].dst) < 0)
            return BAD(c, "attribute '%s' missing or not %d float(s)", f[k].name, f[k].n);
    t->image_size = c->meta.image_size;
    return 0;
}

static int read_meta(lt_cache *c) {
    lt_cache_meta *m = &c->meta;
    lt_teacher_desc *t = &m->teacher;
    int_attr ia[] = {{"embed_dim", &m->embed_dim},         {"image_size", &m->image_size},
                     {"views_per_image", &m->views_per_image}, {"mixup", &m->mixup},
                     {"teacher_embed_dim", &t->embed_dim}, {"teacher_depth", &t->depth},
                     {"teacher_heads", &t->heads},         {"teacher_patch", &t->patch},
                     {"teacher_registers", &t->n_reg},     {"teacher_pos_grid", &t->pos_grid},
                     {"teacher_mlp_hidden", &t->mlp_hidden}, {"teacher_swiglu", &t->swiglu}};
    if (read_int_attrs(c, ia, (int)(sizeof ia / sizeof ia[0])) < 0) return -1;
    if (attr_get(c->file, "seed", H5T_INTEGER, H5T_NATIVE_UINT64, 1, &m->seed) < 0 ||
        attr_get(c->file, "num_images", H5T_INTEGER, H5T_NATIVE_INT64, 1, &c->n_images) < 0 ||
        attr_get(c->file, "num_samples", H5T_INTEGER, H5T_NATIVE_INT64, 1, &c->n_samples) < 0 ||
        attr_get(c->file, "max_pixels", H5T_INTEGER, H5T_NATIVE_INT64, 1, &m->max_pixels) < 0)
        return BAD(c, "attribute seed, num_images, num_samples or max_pixels missing");
    /* max_side: optional (older caches have none: 0, every image stored verbatim) */
    m->max_side = 0;
    if (H5Aexists(c->file, "max_side") > 0 &&
        (attr_get(c->file, "max_side", H5T_INTEGER, H5T_NATIVE_INT32, 1, &m->max_side) < 0 ||
         m->max_side < 0))
        return BAD(c, "attribute 'max_side' is not an integer >= 0");
    H5Eclear2(H5E_DEFAULT);
    char dtype[16], created[32];
    if (attr_str_get(c, "embedding_dtype", dtype, sizeof dtype) < 0 ||
        attr_str_get(c, "tool_version", m->tool_version, sizeof m->tool_version) < 0 ||
        attr_str_get(c, "created", created, sizeof created) < 0 ||
        attr_str_get(c, "teacher_file", t->file, sizeof t->file) < 0 ||
        attr_str_get(c, "teacher_sha256", t->sha256, sizeof t->sha256) < 0)
        return -1;
    if (lt_emb_type_parse(dtype, &m->emb_type) < 0 ||
        strcmp(dtype, lt_emb_type_name(m->emb_type)) != 0) /* the long names only */
        return BAD(c, "embedding_dtype is '%s', expected float16, float32 or int8",
                   lt_str_printable(dtype));
    int64_t expect_samples;
    if (m->image_size < 1 || m->image_size > IMAGE_SIZE_MAX || m->embed_dim > EMBED_DIM_MAX ||
        m->views_per_image > VIEWS_MAX)
        return BAD(c, "image_size %d, embed_dim %d or views_per_image %d is out of range "
                      "(at most %d, %d and %d)", m->image_size, m->embed_dim, m->views_per_image,
                   IMAGE_SIZE_MAX, EMBED_DIM_MAX, VIEWS_MAX);
    if (m->embed_dim < 1 || m->views_per_image < 1 || c->n_images < 0 ||
        __builtin_mul_overflow(c->n_images, (int64_t)m->views_per_image, &expect_samples) ||
        c->n_samples != expect_samples)
        return BAD(c, "num_samples %lld is not num_images %lld x views_per_image %d (or a "
                      "dimension is not positive)", (long long)c->n_samples,
                   (long long)c->n_images, m->views_per_image);
    /* /images/offset alone, stored unfiltered, takes 8 bytes per image */
    if (c->n_images >= c->file_size / 8)
        return BAD(c, "num_images %lld is more than this %lld-byte file can hold",
                   (long long)c->n_images, (long long)c->file_size);
    return read_transform_attrs(c);
}

/* Expected dataset: name, type class, element size, sign (for integers: 1 signed, 0 unsigned,
 * -1 any), rank and shape. */
typedef struct {
    const char *name;
    H5T_class_t cls;
    size_t size;
    int sign;
    int rank;
    hsize_t dims[3];
} dset_spec;

static const char *class_name(H5T_class_t cls) {
    return cls == H5T_INTEGER ? "integer" : cls == H5T_FLOAT ? "float" : "string";
}

/* Every expected type is fixed-size: a variable-length one (whose reading would go through HDF5's
 * global heap) never matches. */
static int type_matches(hid_t t, const dset_spec *s) {
    if (H5Tget_class(t) != s->cls || H5Tget_size(t) != s->size) return 0;
    if (s->cls == H5T_STRING) return H5Tis_variable_str(t) == 0;
    if (s->cls == H5T_INTEGER && s->sign >= 0)
        return (H5Tget_sign(t) == H5T_SGN_2) == (s->sign == 1);
    return 1;
}

/* Opens and checks a dataset against its spec; -1 + message naming the file and dataset. */
static hid_t open_checked(lt_cache *c, const dset_spec *s) {
    if (H5Lexists(c->file, s->name, H5P_DEFAULT) <= 0) {
        BAD(c, "dataset %s is missing", s->name);
        return -1;
    }
    hid_t d = H5Dopen2(c->file, s->name, H5P_DEFAULT);
    if (d < 0) {
        BAD(c, "%s is not a dataset", s->name);
        return -1;
    }
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    int rank = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
    int ok_type = t >= 0 && type_matches(t, s), ok_shape = rank == s->rank;
    for (int k = 0; ok_shape && k < rank; k++) ok_shape = dims[k] == s->dims[k];
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (!ok_type || !ok_shape) {
        char want[96];
        if (s->rank == 1) snprintf(want, sizeof want, "(%llu)", (unsigned long long)s->dims[0]);
        else if (s->rank == 2)
            snprintf(want, sizeof want, "(%llu, %llu)", (unsigned long long)s->dims[0],
                     (unsigned long long)s->dims[1]);
        else
            snprintf(want, sizeof want, "(%llu, %llu, %llu)", (unsigned long long)s->dims[0],
                     (unsigned long long)s->dims[1], (unsigned long long)s->dims[2]);
        BAD(c, "dataset %s has the wrong %s (expected %s %s)", s->name,
            ok_type ? "shape" : "type", class_name(s->cls), want);
        H5Dclose(d);
        return -1;
    }
    return d;
}

/* Opens a dataset only to check it (the caller reads it whole and closes it). */
static int check_only(lt_cache *c, const dset_spec *s, hid_t *out) {
    *out = open_checked(c, s);
    return *out < 0 ? -1 : 0;
}

static int read_all(lt_cache *c, hid_t d, hid_t mtype, int64_t n, void *out, const char *what) {
    if (rows_io(d, mtype, 0, n, out, 0) < 0) return h5_fail(c->path, what);
    return 0;
}

/* Checks offsets off (n + 1) of dataset name into a byte dataset of len bytes: off[0] = 0,
 * non-decreasing, no entry longer than max, off[n] <= len. */
static int check_offsets(lt_cache *c, const char *name, const uint64_t *off, int64_t n,
                         int64_t len, uint64_t max) {
    if (off[0] != 0) return BAD(c, "%s[0] is %llu, not 0", name, (unsigned long long)off[0]);
    for (int64_t i = 0; i < n; i++) {
        if (off[i + 1] < off[i]) return BAD(c, "%s decreases at entry %lld", name, (long long)i);
        if (off[i + 1] - off[i] > max)
            return BAD(c, "%s: entry %lld is longer than %llu bytes", name, (long long)i,
                       (unsigned long long)max);
    }
    if (off[n] > (uint64_t)len)
        return BAD(c, "%s ends at %llu, past the %lld stored bytes", name,
                   (unsigned long long)off[n], (long long)len);
    return 0;
}

/* Length of the 1-D dataset name, 0 if it is missing or not 1-D (its check then fails). */
static hsize_t dset_len(lt_cache *c, const char *name) {
    hsize_t dim = 0;
    if (H5Lexists(c->file, name, H5P_DEFAULT) > 0) {
        hid_t d = H5Dopen2(c->file, name, H5P_DEFAULT);
        hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
        if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 1 ||
            H5Sget_simple_extent_dims(sp, &dim, NULL) < 0)
            dim = 0;
        if (sp >= 0) H5Sclose(sp);
        if (d >= 0) H5Dclose(d);
    }
    H5Eclear2(H5E_DEFAULT);
    return dim;
}

/* Length of the extendible 1-D /images/bytes (any length is valid). */
static int open_bytes(lt_cache *c) {
    dset_spec s = {"images/bytes", H5T_INTEGER, 1, -1, 1, {dset_len(c, "images/bytes")}};
    c->bytes = open_checked(c, &s);
    c->n_bytes = (int64_t)s.dims[0];
    return c->bytes < 0 ? -1 : 0;
}

/* Reads the text column NAME_bytes + NAME_offset (formats/cache.md) whole into *out. *n is its
 * number of entries, or -1: as many as NAME_offset holds (then set). The offsets are checked
 * like /images/offset, with entries of at most TEXT_MAX bytes, before any byte is read; so are
 * the sizes against the file (the column is stored unfiltered), so a damaged file cannot ask
 * for a huge allocation. An entry must not hold a NUL byte (nor be empty, if nonempty). */
static int read_text(lt_cache *c, const char *group, const char *name, int64_t *n, int nonempty,
                     text_col *out) {
    char bname[64], oname[64];
    snprintf(bname, sizeof bname, "%s/%s_bytes", group, name);
    snprintf(oname, sizeof oname, "%s/%s_offset", group, name);
    if (*n < 0) {
        hsize_t len = dset_len(c, oname);
        *n = len > 0 ? (int64_t)len - 1 : 0;
    }
    if ((uint64_t)*n >= (uint64_t)c->file_size / 8)
        return BAD(c, "%s: %lld entries, more than this %lld-byte file can hold", oname,
                   (long long)*n, (long long)c->file_size);
    dset_spec so = {oname, H5T_INTEGER, 8, -1, 1, {(hsize_t)*n + 1}};
    dset_spec sb = {bname, H5T_INTEGER, 1, -1, 1, {dset_len(c, bname)}};
    hid_t d_off = -1, d_bytes = -1;
    uint64_t *off = NULL;
    uint8_t *blob = NULL;
    char what[96];
    snprintf(what, sizeof what, "cannot read %s", oname);
    int r = check_only(c, &so, &d_off);
    if (r == 0) r = check_only(c, &sb, &d_bytes);
    if (r == 0 && !(off = lt_malloc((size_t)(*n + 1) * 8, oname))) r = -1;
    if (r == 0) r = read_all(c, d_off, H5T_NATIVE_UINT64, *n + 1, off, what);
    if (r == 0) r = check_offsets(c, oname, off, *n, (int64_t)sb.dims[0], TEXT_MAX);
    if (r == 0 && off[*n] > (uint64_t)c->file_size)
        r = BAD(c, "%s ends at %llu, past the end of this %lld-byte file", oname,
                (unsigned long long)off[*n], (long long)c->file_size);
    size_t total = r == 0 ? (size_t)off[*n] : 0;
    snprintf(what, sizeof what, "cannot read %s", bname);
    if (r == 0 && !(blob = lt_malloc(total, bname))) r = -1;
    if (r == 0) r = read_all(c, d_bytes, H5T_NATIVE_UINT8, (int64_t)total, blob, what);
    if (r == 0) {
        out->text = lt_malloc(total + (size_t)*n, bname);
        out->at = lt_malloc((size_t)*n * sizeof(size_t), oname);
        if (!out->text || !out->at) r = -1;
    }
    for (int64_t k = 0; r == 0 && k < *n; k++) {
        size_t len = (size_t)(off[k + 1] - off[k]);
        const uint8_t *src = blob + off[k];
        if ((nonempty && len == 0) || memchr(src, 0, len)) {
            r = BAD(c, "%s: entry %lld is empty or holds a NUL byte", bname, (long long)k);
            break;
        }
        out->at[k] = (size_t)off[k] + (size_t)k;
        memcpy(out->text + out->at[k], src, len);
        out->text[out->at[k] + len] = 0;
    }
    free(off);
    free(blob);
    close_dset(&d_off);
    close_dset(&d_bytes);
    return r;
}

static int read_images(lt_cache *c) {
    hsize_t n = (hsize_t)c->n_images;
    dset_spec sp[] = {{"images/offset", H5T_INTEGER, 8, -1, 1, {n + 1}},
                      {"images/width", H5T_INTEGER, 4, -1, 1, {n}},
                      {"images/height", H5T_INTEGER, 4, -1, 1, {n}},
                      {"images/sha256", H5T_STRING, SHA_LEN, -1, 1, {n}},
                      {"images/file_size", H5T_INTEGER, 8, -1, 1, {n}},
                      {"images/mtime_ns", H5T_INTEGER, 8, -1, 1, {n}}};
    hid_t d[3] = {-1, -1, -1};
    int r = open_bytes(c);
    for (int k = 0; r == 0 && k < 3; k++) r = check_only(c, &sp[k], &d[k]);
    if (r == 0) r = check_only(c, &sp[3], &c->sha);
    if (r == 0) r = check_only(c, &sp[4], &c->size);
    if (r == 0) r = check_only(c, &sp[5], &c->mtime);
    /* /images/source_sha256: written with max_side > 0 only, required then */
    dset_spec src = {"images/source_sha256", H5T_STRING, SHA_LEN, -1, 1, {n}};
    if (r == 0 && (c->meta.max_side > 0 || H5Lexists(c->file, src.name, H5P_DEFAULT) > 0))
        r = check_only(c, &src, &c->src_sha);
    H5Eclear2(H5E_DEFAULT);
    if (r == 0) {
        c->offset = lt_malloc((size_t)(n + 1) * 8, "cache image offsets");
        c->width = lt_malloc((size_t)n * 4, "cache image widths");
        c->height = lt_malloc((size_t)n * 4, "cache image heights");
        if (!c->offset || !c->width || !c->height) r = -1;
    }
    if (r == 0) r = read_all(c, d[0], H5T_NATIVE_UINT64, (int64_t)n + 1, c->offset,
                             "cannot read /images/offset");
    if (r == 0) r = read_all(c, d[1], H5T_NATIVE_INT32, (int64_t)n, c->width,
                             "cannot read /images/width");
    if (r == 0) r = read_all(c, d[2], H5T_NATIVE_INT32, (int64_t)n, c->height,
                             "cannot read /images/height");
    for (int k = 0; k < 3; k++) close_dset(&d[k]);
    if (r == 0) r = check_offsets(c, "/images/offset", c->offset, c->n_images, c->n_bytes,
                                  UINT64_MAX);
    int64_t n_paths = c->n_images;
    return r == 0 ? read_text(c, "images", "path", &n_paths, 1, &c->paths) : -1;
}

/* /skipped: two text columns of the same length K. */
static int read_skipped(lt_cache *c) {
    int64_t k = -1;
    int r = read_text(c, "skipped", "path", &k, 0, &c->sk_path);
    c->n_skipped = r == 0 ? k : 0;
    return r == 0 ? read_text(c, "skipped", "reason", &k, 0, &c->sk_reason) : -1;
}

static int open_samples(lt_cache *c) {
    hsize_t s = (hsize_t)c->n_samples;
    for (int k = 0; k < S_COUNT; k++) {
        char name[64];
        snprintf(name, sizeof name, "samples/%s", sample_names[k]);
        int per = sample_per_row[k];
        dset_spec sp = {name, sample_kind[k] == K_F32 ? H5T_FLOAT : H5T_INTEGER,
                        sample_kind[k] == K_U8 ? 1 : 4, -1, per == 1 ? 1 : per == 2 ? 2 : 3,
                        {s, 2, 4}};
        if (check_only(c, &sp, &c->sam[k]) < 0) return -1;
    }
    return 0;
}

/* /embeddings (S, D) float16, float32 or int8 as embedding_dtype says (and for int8
 * /embedding_scales (S) float32); records the zstd level. */
static int open_embeddings(lt_cache *c) {
    lt_emb_type et = c->meta.emb_type;
    dset_spec sp = {"embeddings", et == LT_EMB_I8 ? H5T_INTEGER : H5T_FLOAT,
                    et == LT_EMB_F32 ? 4 : et == LT_EMB_F16 ? 2 : 1, 1, 2,
                    {(hsize_t)c->n_samples, (hsize_t)c->meta.embed_dim}};
    dset_spec ss = {"embedding_scales", H5T_FLOAT, 4, -1, 1, {(hsize_t)c->n_samples}};
    if (check_only(c, &sp, &c->emb) < 0) return -1;
    if (et == LT_EMB_I8 && check_only(c, &ss, &c->scales) < 0) return -1;
    /* Reopen with a chunk cache holding many chunks, for batches that straddle chunks. */
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && H5Pset_chunk_cache(dapl, 12421, EMB_CACHE_BYTES, 0.75) >= 0) {
        close_dset(&c->emb);
        c->emb = H5Dopen2(c->file, "embeddings", dapl);
    }
    if (dapl >= 0) H5Pclose(dapl);
    if (c->emb < 0) return h5_fail(c->path, "cannot open /embeddings");
    c->half = half_type();
    if (c->half < 0) return h5_fail(c->path, "cannot define the float16 type");
    hid_t dcpl = H5Dget_create_plist(c->emb);
    unsigned flags, cd[4] = {0}, cfg;
    size_t ncd = 4;
    if (dcpl >= 0 && H5Pget_filter_by_id2(dcpl, LT_H5Z_ZSTD_ID, &flags, &ncd, cd, 0, NULL,
                                           &cfg) >= 0 && ncd >= 1)
        c->meta.zstd_level = (int)cd[0];
    if (dcpl >= 0) H5Pclose(dcpl);
    H5Eclear2(H5E_DEFAULT);
    return 0;
}

/* /checksums/samples and (in a finished cache) /checksums/embeddings: (S) uint32. */
static int open_checksums(lt_cache *c) {
    hsize_t s = (hsize_t)c->n_samples;
    dset_spec cs = {"checksums/samples", H5T_INTEGER, 4, 0, 1, {s}};
    dset_spec ce = {"checksums/embeddings", H5T_INTEGER, 4, 0, 1, {s}};
    if (check_only(c, &cs, &c->crc_sam) < 0) return -1;
    if (c->partial_ok && H5Lexists(c->file, ce.name, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0; /* written when lt-embed finishes */
    }
    return check_only(c, &ce, &c->crc_emb);
}

/* The attributes of a part (lt_cache_part), if the file is one: shard_count marks it. */
static int read_part(lt_cache *c) {
    c->is_part = H5Aexists(c->file, "shard_count") > 0;
    H5Eclear2(H5E_DEFAULT);
    if (c->is_part != c->format_part)
        return BAD(c, "format is '%s' but the attribute shard_count is %s",
                   c->format_part ? LT_CACHE_PART_FORMAT : LT_CACHE_FORMAT,
                   c->is_part ? "there" : "missing");
    if (!c->is_part) return 0;
    lt_cache_part *p = &c->part;
    int_attr ia[] = {{"shard_index", &p->index}, {"shard_count", &p->count}};
    struct { const char *name; int64_t *dst; } la[] = {
        {"shard_first_file", &p->first_file},   {"shard_files", &p->files},
        {"shard_total_files", &p->total_files}, {"shard_first_image", &p->first_image},
        {"shard_total_images", &p->total_images}};
    if (read_int_attrs(c, ia, 2) < 0) return -1;
    for (size_t k = 0; k < sizeof la / sizeof la[0]; k++)
        if (attr_get(c->file, la[k].name, H5T_INTEGER, H5T_NATIVE_INT64, 1, la[k].dst) < 0)
            return BAD(c, "attribute '%s' missing or not an integer", la[k].name);
    if (attr_str_get(c, "shard_listing_sha256", p->listing_sha256, sizeof p->listing_sha256) < 0 ||
        attr_str_get(c, "shard_images_sha256", p->images_sha256, sizeof p->images_sha256) < 0)
        return -1;
    if (p->count < 1 || p->index < 1 || p->index > p->count || p->first_file < 0 ||
        p->files < 0 || p->total_files < p->first_file + p->files || p->first_image < 0 ||
        p->total_images < p->first_image + c->n_images)
        return BAD(c, "its shard attributes do not fit together (shard %d of %d, images %lld.. "
                      "of %lld)", p->index, p->count, (long long)p->first_image,
                   (long long)p->total_images);
    return 0;
}

/* A part where a whole cache is wanted, or the other way round. */
static int check_kind(lt_cache *c) {
    if (c->want == OPEN_WHOLE && c->is_part)
        return lt_err_set("%s is part %d of %d of a sharded lt-embed run (--shard), not a whole "
                          "cache: merge all %d parts into one cache first (lt-embed --merge "
                          "CACHE PART...) and use that", c->path, c->part.index, c->part.count,
                          c->part.count);
    if (c->want == OPEN_PART && !c->is_part)
        return lt_err_set("%s is a whole lt cache, not a part of a sharded run (lt-embed --shard "
                          "K/N writes parts)", c->path);
    return 0;
}

static int open_locked(lt_cache *c) {
    if (open_file(c) < 0 || read_format(c) < 0 || read_meta(c) < 0) return -1;
    if (read_part(c) < 0 || check_kind(c) < 0) return -1;
    if (read_images(c) < 0 || read_skipped(c) < 0 || open_samples(c) < 0) return -1;
    if (open_checksums(c) < 0) return -1;
    return open_embeddings(c);
}

static int open_cache(const char *path, int partial_ok, int want, lt_cache **out);

int lt_cache_open(const char *path, lt_cache **out) {
    return open_cache(path, 0, OPEN_WHOLE, out);
}
int lt_cache_open_part(const char *path, lt_cache **out) {
    return open_cache(path, 0, OPEN_PART, out);
}
int lt_cache_open_partial(const char *path, lt_cache **out) {
    return open_cache(path, 1, OPEN_ANY, out);
}
const lt_cache_part *lt_cache_part_of(const lt_cache *c) { return c->is_part ? &c->part : NULL; }

static int open_cache(const char *path, int partial_ok, int want, lt_cache **out) {
    *out = NULL;
    pthread_mutex_lock(&h5_lock);
    int r = -1;
    lt_cache *c = lt_calloc(1, sizeof *c, "cache reader");
    if (c) {
        c->file = c->bytes = c->emb = c->scales = c->sha = c->size = c->mtime = c->half = -1;
        c->src_sha = -1;
        c->crc_sam = c->crc_emb = -1;
        c->partial_ok = partial_ok;
        c->want = want;
        for (int k = 0; k < S_COUNT; k++) c->sam[k] = -1;
        c->path = strdup(path);
        if (!c->path) lt_err_set("out of memory (cache reader for %s)", path);
        else if (lt_h5zstd_register() < 0) lt_err_prefix("%s", path);
        else r = open_locked(c);
    }
    if (r < 0) reader_free(c);
    else *out = c;
    pthread_mutex_unlock(&h5_lock);
    return r;
}

void lt_cache_close(lt_cache *c) {
    if (!c) return;
    pthread_mutex_lock(&h5_lock);
    reader_free(c);
    pthread_mutex_unlock(&h5_lock);
}

const lt_cache_meta *lt_cache_meta_of(const lt_cache *c) { return &c->meta; }
int64_t lt_cache_n_images(const lt_cache *c) { return c->n_images; }
int64_t lt_cache_n_samples(const lt_cache *c) { return c->n_samples; }
int64_t lt_cache_n_skipped(const lt_cache *c) { return c->n_skipped; }

const char *lt_cache_image_path(const lt_cache *c, int64_t i) {
    return c->paths.text + c->paths.at[i];
}

void lt_cache_image_size(const lt_cache *c, int64_t i, int32_t *w, int32_t *h) {
    *w = c->width[i];
    *h = c->height[i];
}

void lt_cache_skipped(const lt_cache *c, int64_t k, const char **path, const char **reason) {
    *path = c->sk_path.text + c->sk_path.at[k];
    *reason = c->sk_reason.text + c->sk_reason.at[k];
}

static int check_range(const lt_cache *c, const char *what, int64_t first, int64_t count,
                       int64_t n) {
    if (first < 0 || count < 0 || first > n || count > n - first)
        return lt_err_set("%s: %s %lld..%lld requested, the cache has %lld", c->path, what,
                          (long long)first, (long long)(first + count), (long long)n);
    return 0;
}

int lt_cache_image_bytes(lt_cache *c, int64_t i, uint8_t **bytes, size_t *n) {
    *bytes = NULL;
    *n = 0;
    if (check_range(c, "image", i, 1, c->n_images) < 0) return -1;
    size_t len = (size_t)(c->offset[i + 1] - c->offset[i]);
    uint8_t *buf = lt_malloc(len, "image bytes");
    if (!buf) return -1;
    pthread_mutex_lock(&h5_lock);
    int r = rows_io(c->bytes, H5T_NATIVE_UINT8, (int64_t)c->offset[i], (int64_t)len, buf, 0);
    if (r < 0) h5_fail(c->path, "cannot read /images/bytes");
    pthread_mutex_unlock(&h5_lock);
    if (r < 0) {
        free(buf);
        return -1;
    }
    *bytes = buf;
    *n = len;
    return 0;
}

int lt_cache_image_record(lt_cache *c, int64_t i, lt_cache_image *out) {
    memset(out, 0, sizeof *out);
    if (check_range(c, "image", i, 1, c->n_images) < 0) return -1;
    out->path = lt_cache_image_path(c, i);
    out->n_bytes = (size_t)(c->offset[i + 1] - c->offset[i]);
    out->width = c->width[i];
    out->height = c->height[i];
    pthread_mutex_lock(&h5_lock);
    hid_t st = fixed_str_type(SHA_LEN, H5T_CSET_ASCII);
    /* a cache without /images/source_sha256 stores every image verbatim: its source is the
     * stored bytes (file_size is then their length and is not read) */
    int r = st >= 0 && rows_io(c->sha, st, i, 1, out->sha256, 0) >= 0 &&
                    rows_io(c->mtime, H5T_NATIVE_INT64, i, 1, &out->mtime_ns, 0) >= 0 &&
                    (c->src_sha < 0 ||
                     (rows_io(c->size, H5T_NATIVE_INT64, i, 1, &out->source_size, 0) >= 0 &&
                      rows_io(c->src_sha, st, i, 1, out->source_sha256, 0) >= 0))
                ? 0
                : h5_fail(c->path, "cannot read /images/sha256, mtime_ns, file_size or "
                                   "source_sha256");
    if (st >= 0) H5Tclose(st);
    pthread_mutex_unlock(&h5_lock);
    out->sha256[SHA_LEN] = 0;
    out->source_sha256[SHA_LEN] = 0;
    if (c->src_sha < 0) {
        memcpy(out->source_sha256, out->sha256, sizeof out->sha256);
        out->source_size = (int64_t)out->n_bytes;
    } else if (r == 0 && (out->source_size < 1 || !is_hex64(out->source_sha256))) {
        r = bad_cache(c->path, "image %lld: /images/file_size is not positive or "
                      "/images/source_sha256 is not 64 lowercase hex digits", (long long)i);
    }
    return r;
}

int lt_cache_image_sha256s(lt_cache *c, int64_t first, int64_t count, char *out) {
    if (check_range(c, "image", first, count, c->n_images) < 0) return -1;
    pthread_mutex_lock(&h5_lock);
    hid_t st = fixed_str_type(SHA_LEN, H5T_CSET_ASCII);
    int r = st >= 0 && rows_io(c->sha, st, first, count, out, 0) >= 0
                ? 0
                : h5_fail(c->path, "cannot read /images/sha256");
    if (st >= 0) H5Tclose(st);
    pthread_mutex_unlock(&h5_lock);
    return r;
}

int lt_cache_samples(lt_cache *c, int64_t first, int64_t count, lt_sample *out) {
    if (check_range(c, "samples", first, count, c->n_samples) < 0) return -1;
    sample_cols cols;
    int64_t block = count < SAMPLE_BLOCK ? count : SAMPLE_BLOCK;
    int r = cols_alloc(&cols, block) < 0 ? lt_err_set("%s: out of memory reading samples",
                                                     c->path) : 0;
    pthread_mutex_lock(&h5_lock);
    for (int64_t s0 = 0; r == 0 && s0 < count; s0 += block) {
        int64_t n = count - s0 < block ? count - s0 : block;
        for (int k = 0; r == 0 && k < S_COUNT; k++)
            if (rows_io(c->sam[k], sample_mtype(k), first + s0, n, cols.col[k], 0) < 0)
                r = h5_fail(c->path, "cannot read /samples");
        if (r == 0) cols_to_samples(&cols, n, out + s0);
    }
    pthread_mutex_unlock(&h5_lock);
    cols_free(&cols);
    return r;
}

int lt_cache_embeddings_raw(lt_cache *c, int64_t first, int64_t count, void *out) {
    if (check_range(c, "embedding rows", first, count, c->n_samples) < 0) return -1;
    pthread_mutex_lock(&h5_lock);
    int r = 0;
    if (emb_io(c->emb, c->scales, c->half, c->meta.emb_type, c->meta.embed_dim, first, count, out,
               0) < 0)
        r = h5_fail(c->path, "cannot read /embeddings (damaged chunk?)");
    pthread_mutex_unlock(&h5_lock);
    return r;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* max(1, ceil(fraction * n)) distinct images drawn with seed, in increasing order. */
static int64_t *verify_pick(int64_t n, double fraction, uint64_t seed, int64_t *k_out) {
    int64_t k = (int64_t)ceil(fraction * (double)n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    int64_t *idx = lt_malloc((size_t)n * sizeof *idx, "verify list");
    if (!idx) return NULL;
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    lt_rng r;
    lt_rng_init(&r, seed, 0x56455249u /* "VERI" */, 0, 0);
    for (int64_t i = 0; i < k && k < n; i++) { /* partial Fisher-Yates */
        int64_t j = i + (int64_t)lt_rng_below(&r, (uint64_t)(n - i));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    qsort(idx, (size_t)k, sizeof *idx, cmp_i64);
    *k_out = k;
    return idx;
}

static int damaged_row(const lt_cache *c, int64_t s, const char *what, const char *dset) {
    int64_t V = c->meta.views_per_image;
    return lt_err_set("%s: sample %lld (image %lld, %s, view %lld): its stored %s does not match "
                      "its checksum (%s): the cache is damaged; rebuild it with lt-embed "
                      "--overwrite (or restore it from a copy)", c->path, (long long)s,
                      (long long)(s / V), lt_cache_image_path(c, s / V), (long long)(s % V), what,
                      dset);
}

/* Checks rows [first, first + n) of /samples and /embeddings against /checksums (n <= block). */
static int verify_rows_block(lt_cache *c, int64_t first, int64_t n, sample_cols *cols,
                             uint32_t *sums, uint8_t *emb) {
    size_t row = lt_emb_row_bytes(c->meta.emb_type, c->meta.embed_dim);
    int r = 0;
    pthread_mutex_lock(&h5_lock);
    for (int k = 0; r == 0 && k < S_COUNT; k++)
        if (rows_io(c->sam[k], sample_mtype(k), first, n, cols->col[k], 0) < 0)
            r = h5_fail(c->path, "cannot read /samples");
    if (r == 0 && rows_io(c->crc_sam, H5T_NATIVE_UINT32, first, n, sums, 0) < 0)
        r = h5_fail(c->path, "cannot read /checksums/samples");
    for (int64_t i = 0; r == 0 && i < n; i++)
        if (sample_crc(cols, i) != sums[i])
            r = damaged_row(c, first + i, "recipe", "/checksums/samples");
    if (r == 0 && emb_io(c->emb, c->scales, c->half, c->meta.emb_type, c->meta.embed_dim, first, n,
                         emb, 0) < 0)
        r = h5_fail(c->path, "cannot read /embeddings (damaged chunk?)");
    if (r == 0 && rows_io(c->crc_emb, H5T_NATIVE_UINT32, first, n, sums, 0) < 0)
        r = h5_fail(c->path, "cannot read /checksums/embeddings");
    for (int64_t i = 0; r == 0 && i < n; i++)
        if (crc_of(emb + (size_t)i * row, row) != sums[i])
            r = damaged_row(c, first + i, "embedding", "/checksums/embeddings");
    pthread_mutex_unlock(&h5_lock);
    return r;
}

/* Checks the recipes and embeddings of samples [first, first + count) against /checksums. */
static int verify_rows(lt_cache *c, int64_t first, int64_t count) {
    if (c->crc_emb < 0) return lt_err_set("%s: no /checksums/embeddings to verify", c->path);
    int64_t block = count < EMB_BLOCK ? count : EMB_BLOCK;
    size_t row = lt_emb_row_bytes(c->meta.emb_type, c->meta.embed_dim);
    sample_cols cols;
    uint32_t *sums = malloc((size_t)block * sizeof *sums);
    uint8_t *emb = malloc((size_t)block * row);
    int r = cols_alloc(&cols, block) < 0 || !sums || !emb
                ? lt_err_set("%s: out of memory verifying rows", c->path) : 0;
    for (int64_t s0 = 0; r == 0 && s0 < count; s0 += block)
        r = verify_rows_block(c, first + s0, count - s0 < block ? count - s0 : block, &cols, sums,
                              emb);
    cols_free(&cols);
    free(sums);
    free(emb);
    return r;
}

int64_t lt_cache_image_bytes_total(const lt_cache *c) { return (int64_t)c->offset[c->n_images]; }

int lt_cache_storage(lt_cache *c, int64_t *images, int64_t *samples, int64_t *embeddings) {
    pthread_mutex_lock(&h5_lock);
    *images = (int64_t)H5Dget_storage_size(c->bytes);
    int64_t sm = (int64_t)H5Dget_storage_size(c->crc_sam);
    for (int k = 0; k < S_COUNT; k++) sm += (int64_t)H5Dget_storage_size(c->sam[k]);
    *samples = sm;
    *embeddings = (int64_t)H5Dget_storage_size(c->emb) +
                  (c->scales >= 0 ? (int64_t)H5Dget_storage_size(c->scales) : 0) +
                  (c->crc_emb >= 0 ? (int64_t)H5Dget_storage_size(c->crc_emb) : 0);
    H5Eclear2(H5E_DEFAULT);
    pthread_mutex_unlock(&h5_lock);
    return 0;
}

int lt_cache_verify_rows(lt_cache *c, int64_t first, int64_t count) {
    if (check_range(c, "samples", first, count, c->n_samples) < 0) return -1;
    return count > 0 ? verify_rows(c, first, count) : 0;
}

int lt_cache_verify_images(lt_cache *c, double fraction, uint64_t seed, int64_t *checked) {
    *checked = 0;
    if (c->n_images < 1 || fraction <= 0) return 0;
    int64_t k = 0;
    int64_t *idx = verify_pick(c->n_images, fraction, seed, &k);
    if (!idx) return -1;
    int r = 0;
    for (int64_t j = 0; r == 0 && j < k; j++) {
        lt_cache_image rec;
        uint8_t *bytes = NULL;
        size_t n = 0;
        char sha[SHA_LEN + 1];
        r = lt_cache_image_record(c, idx[j], &rec);
        if (r == 0) r = lt_cache_image_bytes(c, idx[j], &bytes, &n);
        if (r == 0) {
            lt_sha256_hex(bytes, n, sha);
            if (strcmp(sha, rec.sha256) != 0)
                r = lt_err_set("%s: image %lld (%s): its stored bytes do not match their SHA-256 "
                               "(/images/sha256): the cache is damaged; rebuild it with lt-embed "
                               "--overwrite (or restore it from a copy)", c->path,
                               (long long)idx[j], rec.path);
        }
        free(bytes);
        if (r == 0 && k < c->n_images)
            r = verify_rows(c, idx[j] * c->meta.views_per_image, c->meta.views_per_image);
        if (r == 0) (*checked)++;
    }
    free(idx);
    if (r == 0 && k == c->n_images) r = verify_rows(c, 0, c->n_samples); /* all, in blocks */
    return r;
}

int lt_cache_embeddings(lt_cache *c, int64_t first, int64_t count, float *out) {
    if (check_range(c, "embedding rows", first, count, c->n_samples) < 0) return -1;
    int d = c->meta.embed_dim;
    size_t row = lt_emb_row_bytes(c->meta.emb_type, d);
    int64_t block = count < EMB_BLOCK ? count : EMB_BLOCK;
    uint8_t *buf = lt_malloc((size_t)block * row, "stored embeddings");
    int r = buf ? 0 : -1;
    pthread_mutex_lock(&h5_lock);
    for (int64_t r0 = 0; r == 0 && r0 < count; r0 += block) {
        int64_t n = count - r0 < block ? count - r0 : block;
        if (emb_io(c->emb, c->scales, c->half, c->meta.emb_type, d, first + r0, n, buf, 0) < 0)
            r = h5_fail(c->path, "cannot read /embeddings (damaged chunk?)");
        else lt_emb_decode_rows(c->meta.emb_type, buf, n, d, out + (size_t)r0 * d);
    }
    pthread_mutex_unlock(&h5_lock);
    free(buf);
    return r;
}
