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

/* An output file written in pieces and put in place atomically: lt_atomic_open creates
 * path.tmp.<pid>; write to f.fd (e.g. with lt_write_all); lt_atomic_commit fsyncs, closes and
 * renames it to path, or lt_atomic_discard removes it. Both free the temp name. */
typedef struct {
    int fd;
    char *tmp;
    const char *path;
} lt_atomic_file;
int lt_atomic_open(lt_atomic_file *f, const char *path);
/* lt_atomic_open with the temporary named tmp_base.tmp.<pid> instead of path.tmp.<pid>: for a file
 * whose readers take every name of a pattern (TensorBoard reads any name holding "tfevents"),
 * which a temporary must not match. */
int lt_atomic_open_named(lt_atomic_file *f, const char *path, const char *tmp_base);
int lt_atomic_commit(lt_atomic_file *f);
void lt_atomic_discard(lt_atomic_file *f);
/* Writes all n bytes (retrying short writes and EINTR); -1 with errno set on failure. */
int lt_write_all(int fd, const void *data, size_t n);
/* mkdir -p. */
int lt_mkdir_p(const char *path);
/* Joins a and b with one '/'; returns a malloc'd string (NULL + lt_err on OOM). */
char *lt_path_join(const char *a, const char *b);
/* Last component of a path (points into path). */
const char *lt_path_base(const char *path);

#endif
