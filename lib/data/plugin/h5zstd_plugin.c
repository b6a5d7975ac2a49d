/* h5zstd_plugin.c: the entry points that make build/plugins/libh5zstd.so an HDF5 filter plugin.
 *
 * With HDF5_PLUGIN_PATH=build/plugins, stock HDF5 programs (h5py, h5dump, HDFView) that meet
 * filter 32015 dlopen this library, ask its type and get the filter class of lib/data/h5zstd.c. */
#include <H5PLextern.h>

#include "data/h5zstd.h"

H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }

const void *H5PLget_plugin_info(void) { return lt_h5zstd_class(); }

/* The plugin is linked from h5zstd.o alone, without liblt: lt_h5zstd_register() (which HDF5 never
 * calls through the plugin) reports failure with lt_err_set, so a hidden stand-in satisfies that
 * reference and the .so has no undefined lt_* symbols. */
__attribute__((visibility("hidden"))) int lt_err_set(const char *fmt, ...) {
    (void)fmt;
    return -1;
}
