/* replace.c: what lt-embed may replace or remove. An output name may hold something lt did not
 * make (a user's file, another program's HDF5 file); lt-embed and lt-embed --merge replace only
 * an lt cache (or an empty file) as CACHE, and only their own partial files, and leave anything
 * else as it is, naming it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "data/cache_check.h"
#include "embed/internal.h"

int lt_embed_file_kind(const char *path) {
    static const char hdf5[8] = "\x89HDF\r\n\x1a\n";
    struct stat st;
    if (stat(path, &st) != 0) return LT_FILE_MISSING;
    if (S_ISREG(st.st_mode) && st.st_size == 0) return LT_FILE_EMPTY;
    char head[8] = {0};
    FILE *f = S_ISREG(st.st_mode) ? fopen(path, "rb") : NULL;
    size_t n = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    if (n == 8 && !memcmp(head, hdf5, 8)) return LT_FILE_HDF5;
    if (n == 8 && !memcmp(head, "LTEMBLOG", 8)) return LT_FILE_EMBLOG;
    return LT_FILE_OTHER;
}

int lt_embed_check_replaceable(const char *path, int want, const char *what) {
    int kind = lt_embed_file_kind(path);
    if (kind == LT_FILE_MISSING || kind == LT_FILE_EMPTY) return 0;
    if (kind == want && want != LT_FILE_HDF5) return 0;
    char why[600];
    if (kind != want) {
        snprintf(why, sizeof why, "it is not %s", want == LT_FILE_EMBLOG ? "an lt embedding log"
                                                                       : "an HDF5 file");
    } else {
        if (!strcmp(what, "partial")) return 0;
        /* In a child: libhdf5 may crash or hang on a damaged file. The worker pools are idle. */
        if (lt_cache_is_lt_file_isolated(path) == 0) return 0;
        snprintf(why, sizeof why, "it is not an lt cache: %s", lt_err_msg());
    }
    return lt_err_set("%s is left as it is: %s; lt replaces only %s (or an empty file). Remove it "
                      "yourself if it is not needed, or choose another CACHE name", path, why,
                      !strcmp(what, "cache") ? "an lt cache" : "its own partial files");
}

int lt_embed_check_folder_writable(const char *path) {
    char dir[4096];
    const char *base = lt_path_base(path);
    int len = (int)(base - path);
    snprintf(dir, sizeof dir, "%.*s", len > 1 ? len - 1 : 1, len ? path : ".");
    if (access(dir, W_OK) != 0)
        return lt_err_set("cannot write %s: its folder %s %s", path, dir,
                          errno == ENOENT ? "does not exist"
                                          : errno == EROFS ? "is on a read-only file system"
                                                           : "is not writable");
    return 0;
}
