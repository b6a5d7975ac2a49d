/* fileio.c: whole-file reads and atomic writes (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

int lt_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *n) {
    *data = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lt_err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lt_err_set("%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return lt_err_set("%s: file too large (%lld bytes, limit %zu)", path, (long long)st.st_size,
                          max_bytes);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = lt_malloc(size + 1, path);
    if (!buf) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return lt_err_set("%s: read error: %s", path, r == 0 ? "file shrank" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = 0;
    *data = buf;
    *n = size;
    return 0;
}

int lt_write_all(int fd, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int lt_atomic_open_named(lt_atomic_file *f, const char *path, const char *tmp_base) {
    size_t len = strlen(tmp_base) + 32;
    f->path = path;
    f->fd = -1;
    f->tmp = lt_malloc(len, "path");
    if (!f->tmp) return -1;
    snprintf(f->tmp, len, "%s.tmp.%d", tmp_base, (int)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        lt_err_set("%s: cannot create: %s", f->tmp, strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        return -1;
    }
    return 0;
}

int lt_atomic_open(lt_atomic_file *f, const char *path) {
    return lt_atomic_open_named(f, path, path);
}

void lt_atomic_discard(lt_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    f->fd = -1;
    f->tmp = NULL;
}

int lt_atomic_commit(lt_atomic_file *f) {
    int fd = f->fd;
    f->fd = -1;
    if (fsync(fd) != 0 || close(fd) != 0) {
        lt_err_set("%s: write failed: %s", f->tmp, strerror(errno));
        lt_atomic_discard(f);
        return -1;
    }
    if (rename(f->tmp, f->path) != 0) {
        lt_err_set("%s: cannot rename into place: %s", f->path, strerror(errno));
        lt_atomic_discard(f);
        return -1;
    }
    free(f->tmp);
    f->tmp = NULL;
    return 0;
}

int lt_write_file_atomic(const char *path, const void *data, size_t n) {
    lt_atomic_file f;
    if (lt_atomic_open(&f, path) != 0) return -1;
    if (lt_write_all(f.fd, data, n) != 0) {
        lt_err_set("%s: write failed: %s", f.tmp, strerror(errno));
        lt_atomic_discard(&f);
        return -1;
    }
    return lt_atomic_commit(&f);
}

int lt_mkdir_p(const char *path) {
    char *p = strdup(path);
    if (!p) return lt_err_set("out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            lt_err_set("%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        lt_err_set("%s: cannot create directory: %s", p, strerror(errno));
        free(p);
        return -1;
    }
    free(p);
    return 0;
}

char *lt_path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/') la--;
    char *s = lt_malloc(la + lb + 2, "path");
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

const char *lt_path_base(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}
