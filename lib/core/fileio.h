/* fileio.h: whole-file reads and atomic writes (temp file + fsync + rename), so that no output of
 * lt is ever seen half-written. */
#ifndef LT_FILEIO_H
#define LT_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Reads a whole file into a malloc'd buffer (*data, *n). Fails cleanly above max_bytes. */
int lt_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *n);
/* Writes data to path atomically: path.tmp.<pid>, fsync, rename. */
int lt_write_file_atomic(const char *path, const void *data, size_t n);
/* mkdir -p. */
int lt_mkdir_p(const char *path);
/* Joins a and b with one '/'; returns a malloc'd string (NULL + lt_err on OOM). */
char *lt_path_join(const char *a, const char *b);
/* Last component of a path (points into path). */
const char *lt_path_base(const char *path);

#endif
