/* lock.c: exclusive per-output locks of the tools (see lock.h). */
#include "core/lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

struct lt_lock {
    int fd;
    char *path;
};

/* The holder's "PID tool" line, read from the lock file ("" when it is empty or unreadable). */
static void read_holder(int fd, char *buf, size_t cap) {
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    char *nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    lt_str_printable(buf);
}

/* One attempt: 1 = taken, 0 = the path changed under us (retry), -1 = refused or failed. */
static int try_take(const char *path, const char *what, int *fd_out) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        const char *slash = strrchr(path, '/');
        int dlen = slash ? (slash == path ? 1 : (int)(slash - path)) : 1;
        const char *why = e == EROFS ? "is on a read-only file system"
                          : e == ENOENT ? "does not exist"
                          : e == EACCES || e == EPERM ? "is not writable" : "cannot be written";
        return lt_err_set("%.*s %s: cannot create the lock file %s for %s (%s)", dlen,
                          slash ? path : ".", why, path, what, strerror(e));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char holder[128];
        read_holder(fd, holder, sizeof holder);
        close(fd);
        if (e == EWOULDBLOCK) {
            long pid = strtol(holder, NULL, 10);
            const char *tool = strchr(holder, ' ');
            if (pid > 0)
                return lt_err_set("%s is in use by %s (PID %ld, lock %s); wait for it to finish "
                                  "or stop it first", what, tool ? tool + 1 : "another run", pid,
                                  path);
            return lt_err_set("%s is in use by another run (lock %s); wait for it to finish or "
                              "stop it first", what, path);
        }
        return lt_err_set("%s: cannot lock: %s", path, strerror(e));
    }
    /* The holder before us may have removed the file between our open and our flock: then we
     * hold a lock on a file nobody else will see. Take it only if the path is still this file. */
    struct stat a, b;
    if (fstat(fd, &a) < 0 || stat(path, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        close(fd);
        return 0;
    }
    /* A file of that name that is not an lt lock (a PID and a tool name) is the user's: left as
     * it is. */
    char was[128];
    read_holder(fd, was, sizeof was);
    char *rest = NULL;
    long old_pid = strtol(was, &rest, 10);
    if (was[0] && (old_pid <= 0 || !rest || strncmp(rest, " lt", 3) != 0)) {
        close(fd);
        return lt_err_set("%s exists and is not an lt lock file; lt leaves it as it is: move it "
                          "away to run on %s", path, what);
    }
    char line[128];
    int n = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(), lt_log_prog());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return lt_err_set("%s: cannot write the lock file: %s", path, strerror(e));
    }
    *fd_out = fd;
    return 1;
}

int lt_lock_take(const char *path, const char *what, lt_lock **out) {
    *out = NULL;
    lt_lock *l = lt_calloc(1, sizeof *l, "lock");
    if (!l) return -1;
    l->path = strdup(path);
    if (!l->path) {
        free(l);
        return lt_err_set("out of memory");
    }
    int r = 0;
    for (int attempt = 0; attempt < 100 && r == 0; attempt++) r = try_take(path, what, &l->fd);
    if (r == 1) {
        *out = l;
        return 0;
    }
    if (r == 0) lt_err_set("%s: the lock file keeps being replaced", path);
    free(l->path);
    free(l);
    return -1;
}

void lt_lock_release(lt_lock *l) {
    if (!l) return;
    unlink(l->path); /* while still held: a waiting run then retries on a fresh file */
    close(l->fd);
    free(l->path);
    free(l);
}

static lt_lock *g_held;

static void release_held(void) {
    lt_lock_release(g_held);
    g_held = NULL;
}

int lt_lock_hold(const char *path, const char *what) {
    if (g_held) return lt_err_set("%s: this process already holds a lock", path);
    if (lt_lock_take(path, what, &g_held) != 0) return -1;
    atexit(release_held);
    return 0;
}
