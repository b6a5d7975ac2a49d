/* h5zstd.c: the Zstandard HDF5 filter (id 32015) over libzstd.
 *
 * Why our own: Debian's hdf5 and python3-hdf5plugin ship no zstd filter, and lt must both write
 * compressed embeddings in-process and let stock h5py/h5dump read them (through the plugin built
 * from this same file, lib/data/plugin/h5zstd_plugin.c). Each chunk is one plain zstd frame with
 * its content size recorded, which is what other 32015 implementations write and read.
 *
 * Buffer ownership (HDF5 filter contract): the filter receives *buf (allocated by the library),
 * must replace it with a buffer allocated by H5allocate_memory and free the old one with
 * H5free_memory, then return the number of valid bytes (0 = failure). */
#include "h5zstd.h"

#include <hdf5.h>
#include <stdint.h>
#include <zstd.h>

#include "core/error.h"

#define DEFAULT_LEVEL 3

/* Replaces *buf with out (capacity cap); returns n (the valid bytes). */
static size_t swap_buffer(void **buf, size_t *buf_size, void *out, size_t cap, size_t n) {
    H5free_memory(*buf);
    *buf = out;
    *buf_size = cap;
    return n;
}

static int level_of(size_t cd_nelmts, const unsigned cd_values[]) {
    int level = cd_nelmts >= 1 ? (int)cd_values[0] : DEFAULT_LEVEL;
    if (level < ZSTD_minCLevel()) level = ZSTD_minCLevel();
    if (level > ZSTD_maxCLevel()) level = ZSTD_maxCLevel();
    return level;
}

static size_t compress_chunk(int level, size_t nbytes, size_t *buf_size, void **buf) {
    size_t cap = ZSTD_compressBound(nbytes);
    void *out = H5allocate_memory(cap, 0);
    if (!out) return 0;
    size_t n = ZSTD_compress(out, cap, *buf, nbytes, level);
    if (ZSTD_isError(n)) {
        H5free_memory(out);
        return 0;
    }
    return swap_buffer(buf, buf_size, out, cap, n);
}

/* Frames without a recorded content size: stream into a growing buffer. */
static size_t decompress_streaming(size_t nbytes, size_t *buf_size, void **buf) {
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds) return 0;
    size_t cap = nbytes * 4 > 4096 ? nbytes * 4 : 4096;
    void *out = H5allocate_memory(cap, 0);
    ZSTD_inBuffer in = {*buf, nbytes, 0};
    ZSTD_outBuffer ob = {out, cap, 0};
    size_t ret = 1;
    while (out) {
        ret = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(ret)) break;
        if (in.pos == in.size && ret == 0) break; /* all input consumed, last frame complete */
        if (in.pos == in.size && ob.pos < ob.size) { ret = 1; break; } /* truncated input */
        if (ob.pos == ob.size) {
            void *bigger = H5resize_memory(out, cap * 2);
            if (!bigger) break;
            out = bigger;
            cap *= 2;
            ob.dst = out;
            ob.size = cap;
        }
    }
    ZSTD_freeDStream(ds);
    if (!out) return 0;
    if (ret != 0) {
        H5free_memory(out);
        return 0;
    }
    return swap_buffer(buf, buf_size, out, cap, ob.pos);
}

/* The usual case, one frame with its content size, is decoded in one call into an exact-size
 * buffer; anything else (size not recorded, several frames) is streamed. */
static size_t decompress_chunk(size_t nbytes, size_t *buf_size, void **buf) {
    unsigned long long size = ZSTD_getFrameContentSize(*buf, nbytes);
    if (size == ZSTD_CONTENTSIZE_ERROR) return 0;
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || ZSTD_findFrameCompressedSize(*buf, nbytes) != nbytes)
        return decompress_streaming(nbytes, buf_size, buf);
    if (size > (unsigned long long)SIZE_MAX) return 0;
    void *out = H5allocate_memory(size ? (size_t)size : 1, 0);
    if (!out) return 0;
    size_t n = ZSTD_decompress(out, size ? (size_t)size : 1, *buf, nbytes);
    if (ZSTD_isError(n) || n != size) {
        H5free_memory(out);
        return 0;
    }
    return swap_buffer(buf, buf_size, out, size ? (size_t)size : 1, n);
}

/* H5Z_func_t: compresses (or, with H5Z_FLAG_REVERSE, decompresses) one chunk in *buf. */
static size_t zstd_filter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[],
                          size_t nbytes, size_t *buf_size, void **buf) {
    if (flags & H5Z_FLAG_REVERSE) return decompress_chunk(nbytes, buf_size, buf);
    return compress_chunk(level_of(cd_nelmts, cd_values), nbytes, buf_size, buf);
}

static const H5Z_class2_t zstd_class = {
    H5Z_CLASS_T_VERS,      /* version of this struct */
    LT_H5Z_ZSTD_ID,        /* 32015 */
    1,                     /* encoder present */
    1,                     /* decoder present */
    "Zstandard (lt)",      /* name */
    NULL,                  /* can_apply: any type */
    NULL,                  /* set_local: cd_values are set by the writer */
    zstd_filter,
};

const void *lt_h5zstd_class(void) { return &zstd_class; }

/* Always registers our class, even when H5Zfilter_avail() would say 32015 is available: that
 * call may load some other 32015 plugin found on HDF5_PLUGIN_PATH, and lt should write with its
 * own filter. H5Zregister replaces an existing entry for the id, so repeating it is harmless. */
int lt_h5zstd_register(void) {
    /* No HDF5 clean-up at exit: after a failed write (a full disk) a file id can stay open, and
     * the library's atexit handler would crash flushing it. lt closes every file it opens.
     * (Only effective before the library initialises, i.e. on the first call.) */
    static int once = 0;
    if (!once) {
        once = 1;
        H5dont_atexit();
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Zregister(&zstd_class) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return lt_err_set("cannot register the Zstandard HDF5 filter (id %d) with libhdf5",
                          LT_H5Z_ZSTD_ID);
    }
    return 0;
}
