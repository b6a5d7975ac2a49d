/* scan.h: find the images under a data folder.
 *
 * Recursive, follows symlinks but never visits a directory twice (device+inode), so symlink cycles
 * are safe. Keeps regular files whose extension is .jpg, .jpeg or .png in any letter case. Paths
 * are relative to the root and sorted bytewise (strcmp), so the order never depends on the file
 * system. Unreadable subdirectories are reported through the warn callback and skipped. */
#ifndef LT_SCAN_H
#define LT_SCAN_H

#include <stddef.h>

typedef struct {
    char **paths; /* relative to the root, sorted */
    size_t n;
} lt_filelist;

typedef void (*lt_scan_warn_fn)(const char *msg, void *ctx);

/* -1 + lt_err if root is missing or not a directory. */
int lt_scan_dir(const char *root, lt_filelist *out, lt_scan_warn_fn warn, void *ctx);
void lt_filelist_free(lt_filelist *l);
/* 0 if root is a readable folder; -1 + lt_err ("data folder ... does not exist", ...) if not. */
int lt_scan_check_root(const char *root);
/* 1 if path (a file or folder, which need not exist yet) lies in root or in a folder below it,
 * so that a scan of root would walk it: the folders are compared as real paths (the nearest
 * existing one resolved), path's own last component as written. 0 if not. */
int lt_scan_contains(const char *root, const char *path);
/* 1 if the name has a supported image extension (case-insensitive). */
int lt_scan_is_image_name(const char *name);

#endif
