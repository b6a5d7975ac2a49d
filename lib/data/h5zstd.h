/* h5zstd.h: the Zstandard HDF5 filter (registered id 32015, cd_values[0] = compression level),
 * our own implementation over libzstd. lt registers it in-process; the same code is built as an
 * HDF5 plugin (build/plugins/libh5zstd.so, installed in PREFIX/lib/hdf5/plugins) so stock
 * h5py/h5dump read caches with HDF5_PLUGIN_PATH.
 * Chunks are plain zstd frames with the content size recorded, as other 32015 implementations
 * (hdf5plugin) write and expect. */
#ifndef LT_H5ZSTD_H
#define LT_H5ZSTD_H

#define LT_H5Z_ZSTD_ID 32015

/* H5Z_class2_t describing the filter (void * to keep hdf5.h out of this header). */
const void *lt_h5zstd_class(void);
/* Registers the filter with the HDF5 library (idempotent). -1 + lt_err on failure. */
int lt_h5zstd_register(void);

#endif
