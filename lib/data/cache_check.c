/* cache_check.c: the child-process check of a cache's structure (see cache_check.h).
 *
 * This file exists because a bug inside libhdf5 cannot be caught in-process: a damaged file can
 * make the library write out of bounds or loop forever. The parent forks, the child reads the
 * file's structure and reports "ok" or the reader's error through a pipe, and the parent waits
 * for it with poll() and a deadline; a child that dies, exits without a report or runs past the
 * deadline (then SIGKILLed and reaped) means the file is damaged.
 *
 * Report protocol on the pipe: one byte, 'O' (ok) or 'E' followed by the error message. */
#include "data/cache_check.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "data/cache.h"

#define REPORT_MAX 2048
#define DAMAGED "the file is damaged: re-create it with lt-embed"

/* ------------------------------------------------------------------------------------------ */
/* The child                                                                                  */

static void report_and_exit(int fd, char kind, const char *msg) {
    char buf[REPORT_MAX];
    int n = snprintf(buf, sizeof buf, "%c%s", kind, msg ? msg : "");
    if (n < 0) n = 1;
    if ((size_t)n >= sizeof buf) n = (int)sizeof buf - 1;
    (void)lt_write_all(fd, buf, (size_t)n);
    close(fd);
    _exit(0);
}

static herr_t innermost(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) snprintf(data, 256, "%s", e->desc);
    return 0;
}

typedef struct {
    const char *path;
    haddr_t end;       /* file size minus the user block: the end of HDF5's address space */
    char err[1024];    /* the first problem found */
} walk;

/* Records "<file>: not a valid lt cache: /<name>: <what> (HDF5: <innermost>) (re-run ...)";
 * name NULL: the file as a whole. */
static herr_t walk_fail(walk *w, const char *name, const char *what) {
    char detail[256] = "", hdf5[300] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, detail);
    H5Eclear2(H5E_DEFAULT);
    lt_str_printable(detail); /* HDF5 may quote damaged bytes */
    if (detail[0]) snprintf(hdf5, sizeof hdf5, " (HDF5: %s)", detail);
    snprintf(w->err, sizeof w->err, "%s: not a valid lt cache: %s%s%s%s%s (re-run lt-embed to "
             "rebuild it)", w->path, name ? "/" : "", name ? name : "", name ? ": " : "", what,
             hdf5);
    return -1;
}

/* The chunk index of a chunked dataset. H5Dget_num_chunks and H5Dget_storage_size each walk
 * the whole index once (every node is read and decoded, as reads will later need them): the
 * stored chunks' sizes must add up to no more than the file. Each chunk's own record is then
 * checked to lie inside the file for datasets of up to LOOKUP_MAX_CHUNKS chunks only: in HDF5
 * 1.10, H5Dget_chunk_info and H5Dget_chunk_info_by_coord walk the index from its start at every
 * call, so doing it for every chunk costs O(chunks^2) (measured: 16000 calls on a 200000-chunk
 * index take 5 s; 1000 calls take 10 ms). */
#define LOOKUP_MAX_CHUNKS 1024

static int walk_chunks(walk *w, hid_t d, hid_t space, const char *name) {
    hsize_t n_stored = 0;
    if (H5Dget_num_chunks(d, space, &n_stored) < 0)
        return walk_fail(w, name, "cannot walk the chunk index");
    hsize_t total = H5Dget_storage_size(d);
    if (total == 0 && n_stored > 0) return walk_fail(w, name, "cannot walk the chunk index");
    if (total > w->end)
        return walk_fail(w, name, "the chunk index lists more bytes than the file holds");
    for (hsize_t k = 0; n_stored <= LOOKUP_MAX_CHUNKS && k < n_stored; k++) {
        hsize_t at[H5S_MAX_RANK], size = 0;
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        if (H5Dget_chunk_info(d, space, k, at, &mask, &addr, &size) < 0)
            return walk_fail(w, name, "cannot read a chunk's entry in the chunk index");
        if (addr == HADDR_UNDEF || addr > w->end || size > w->end - addr)
            return walk_fail(w, name, "the chunk index points past the end of the file "
                                      "(truncated?)");
    }
    return 0;
}

/* A contiguous dataset's data must lie inside the file (nothing to check if not allocated). */
static int walk_contiguous(walk *w, hid_t d, const char *name) {
    haddr_t addr = H5Dget_offset(d);
    H5Eclear2(H5E_DEFAULT);
    if (addr == HADDR_UNDEF) return 0;
    hsize_t size = H5Dget_storage_size(d);
    if (addr > w->end || size > w->end - addr)
        return walk_fail(w, name, "the data lies past the end of the file (truncated?)");
    return 0;
}

static herr_t visit(hid_t root, const char *name, const H5O_info_t *info, void *data) {
    walk *w = data;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(root, name, H5P_DEFAULT);
    if (d < 0) return walk_fail(w, name, "cannot open the dataset");
    hid_t dcpl = H5Dget_create_plist(d), space = H5Dget_space(d);
    int r;
    if (dcpl < 0 || space < 0) {
        r = walk_fail(w, name, "cannot read the layout");
    } else {
        H5D_layout_t layout = H5Pget_layout(dcpl);
        if (layout == H5D_CHUNKED) r = walk_chunks(w, d, space, name);
        else if (layout == H5D_CONTIGUOUS) r = walk_contiguous(w, d, name);
        else if (layout < 0) r = walk_fail(w, name, "cannot read the layout");
        else r = 0; /* compact (in the header just read) or virtual (not lt's; never read) */
    }
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    H5Dclose(d);
    return r < 0 ? -1 : 0;
}

/* Every object reachable from the root group and every dataset's storage index. */
static int walk_file(walk *w) {
    struct stat st;
    if (stat(w->path, &st) != 0) {
        snprintf(w->err, sizeof w->err, "%s: cannot open: %s", w->path, strerror(errno));
        return -1;
    }
    hid_t f = H5Fopen(w->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return walk_fail(w, NULL, "cannot open the file");
    hsize_t ublock = 0;
    hid_t fcpl = H5Fget_create_plist(f);
    if (fcpl < 0 || H5Pget_userblock(fcpl, &ublock) < 0) ublock = 0;
    if (fcpl >= 0) H5Pclose(fcpl);
    H5Eclear2(H5E_DEFAULT);
    w->end = (hsize_t)st.st_size > ublock ? (haddr_t)((hsize_t)st.st_size - ublock) : 0;
    herr_t r = H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_NATIVE, visit, w, H5O_INFO_BASIC);
    if (r < 0 && !w->err[0]) walk_fail(w, NULL, "cannot walk the objects in the file");
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    return w->err[0] ? -1 : 0;
}

static void selftest(const char *path, int fd) {
    const char *t = getenv(LT_CACHE_CHECK_SELFTEST_ENV);
    if (!t || !*t) return;
    if (!strcmp(t, "segv")) raise(SIGSEGV);
    if (!strcmp(t, "abort")) abort();
    if (!strcmp(t, "hang"))
        for (;;) pause();
    if (!strcmp(t, "exit")) _exit(3);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: the check failed on purpose (%s=%s, a test hook)", path,
             LT_CACHE_CHECK_SELFTEST_ENV, t);
    report_and_exit(fd, 'E', msg);
}

/* Identity mode: is the file's root attribute `format` "lt-cache", whatever the version (version
 * 1 stored it as a variable-length string, which only a child may safely read)? */
static void child_identity(const char *path, int fd) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    char value[64] = "";
    if (f >= 0 && H5Aexists(f, "format") > 0) {
        hid_t a = H5Aopen(f, "format", H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
        if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
            if (H5Tis_variable_str(t) > 0) {
                char *v = NULL;
                hid_t mt = H5Tcopy(H5T_C_S1);
                H5Tset_size(mt, H5T_VARIABLE);
                H5Tset_cset(mt, H5Tget_cset(t));
                if (H5Aread(a, mt, &v) >= 0 && v) snprintf(value, sizeof value, "%s", v);
            } else if (H5Tget_size(t) < sizeof value) {
                H5Aread(a, t, value);
            }
        }
    }
    if (!strcmp(value, "lt-cache") || !strcmp(value, "lt-cache-part")) report_and_exit(fd, 'O', "");
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", path,
             f < 0 ? "HDF5 cannot open it" : "it has no root attribute format = \"lt-cache\"");
    report_and_exit(fd, 'E', msg);
}

static void child_main(const char *path, int fd, int identity) {
    selftest(path, fd);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* quiet, as the reader is */
    if (identity) child_identity(path, fd);
    lt_cache *c = NULL;
    if (lt_cache_open_partial(path, &c) != 0) report_and_exit(fd, 'E', lt_err_msg());
    lt_cache_close(c);
    walk w;
    memset(&w, 0, sizeof w);
    w.path = path;
    if (walk_file(&w) != 0) report_and_exit(fd, 'E', w.err);
    report_and_exit(fd, 'O', "");
}

/* ------------------------------------------------------------------------------------------ */
/* The parent                                                                                 */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int resolve_timeout(double *timeout_s) {
    const char *e = getenv(LT_CACHE_CHECK_TIMEOUT_ENV);
    *timeout_s = LT_CACHE_CHECK_DEFAULT_TIMEOUT_S;
    if (!e || !*e) return 0;
    char *end = NULL;
    double v = strtod(e, &end);
    if (end == e || *end || !isfinite(v) || v <= 0 || v > 1e7)
        return lt_err_set("%s: expected a number of seconds > 0, got '%s'",
                          LT_CACHE_CHECK_TIMEOUT_ENV, e);
    *timeout_s = v;
    return 0;
}

/* Reads the child's report until EOF or the deadline. 1: EOF seen; 0: deadline passed. */
static int read_report(int fd, double deadline, char *buf, size_t cap, size_t *n) {
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return 0;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)fmin(ceil(left * 1000), 60000));
        if (r < 0 && errno != EINTR) return 1; /* cannot happen with a valid fd: stop reading */
        if (r <= 0) continue;
        char scratch[256];
        char *dst = *n + 1 < cap ? buf + *n : scratch; /* past the cap: drain and drop */
        size_t room = *n + 1 < cap ? cap - 1 - *n : sizeof scratch;
        ssize_t k = read(fd, dst, room);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) return 1;
        if (dst != scratch) *n += (size_t)k;
    }
}

/* Waits for the child's exit until the deadline. 1: reaped, *status set; 2: reaped by the
 * system (SIGCHLD ignored), no status; 0: the deadline passed. */
static int reap_by(pid_t pid, double deadline, int *status) {
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 1;
        if (r < 0 && errno == ECHILD) return 2;
        if (now_s() >= deadline) return 0;
        struct timespec ts = {0, 2000000}; /* 2 ms */
        nanosleep(&ts, NULL);
    }
}

static void kill_and_reap(pid_t pid) {
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

static const char *signal_name(int sig, char *buf, size_t cap) {
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev) snprintf(buf, cap, "SIG%s", abbrev);
    else snprintf(buf, cap, "signal %d", sig);
    return buf;
}

static int check_isolated(const char *path, double timeout_s, int identity) {
    if (timeout_s <= 0 && resolve_timeout(&timeout_s) != 0) return -1;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return lt_err_set("%s: cannot check the file's structure: pipe: %s", path, strerror(errno));
    /* Nothing pending is copied into the child (which leaves with _exit() and never flushes). */
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return lt_err_set("%s: cannot check the file's structure: fork: %s", path, strerror(e));
    }
    if (pid == 0) {
        close(fds[0]);
        /* The child shares the parent's open files, the tool's output lock among them: it must
         * not outlive the parent (kill -9 of the tool while libhdf5 loops here would otherwise
         * keep the lock held by an orphan). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(9); /* the parent died before prctl */
        child_main(path, fds[1], identity); /* never returns */
        _exit(0);
    }
    close(fds[1]);
    double deadline = now_s() + timeout_s;
    char report[REPORT_MAX];
    size_t n = 0;
    int status = 0;
    int eof = read_report(fds[0], deadline, report, sizeof report, &n);
    int reaped = eof ? reap_by(pid, deadline, &status) : 0;
    if (!reaped) kill_and_reap(pid);
    close(fds[0]);
    report[n] = 0;
    if (eof && n > 0 && report[0] == 'E') return lt_err_set("%s", report + 1);
    if (!reaped)
        return lt_err_set("%s: the HDF5 library did not finish reading the file's structure within "
                          "%g s: the file is probably damaged (a damaged file can send it into an "
                          "endless loop); re-create it with lt-embed, or, if it is valid but very "
                          "large, raise %s (seconds)", path, timeout_s, LT_CACHE_CHECK_TIMEOUT_ENV);
    int exited_ok = reaped == 2 || (WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (n > 0 && report[0] == 'O' && exited_ok) return 0;
    char sig[32];
    if (reaped == 1 && WIFSIGNALED(status)) {
        int s = WTERMSIG(status);
        if (s == SIGSEGV || s == SIGBUS || s == SIGABRT || s == SIGILL || s == SIGFPE ||
            s == SIGTRAP || s == SIGSYS)
            return lt_err_set("%s: the HDF5 library crashed (%s) while reading the file's "
                              "structure; %s", path, signal_name(s, sig, sizeof sig), DAMAGED);
        return lt_err_set("%s: the check of the file's structure was stopped by %s", path,
                          signal_name(s, sig, sizeof sig));
    }
    if (reaped == 1 && WIFEXITED(status))
        return lt_err_set("%s: the HDF5 library crashed while reading the file's structure (the "
                          "checking process exited with status %d and no report); %s", path,
                          WEXITSTATUS(status), DAMAGED);
    return lt_err_set("%s: the check of the file's structure ended without a report; %s", path,
                      DAMAGED);
}

int lt_cache_check_isolated(const char *path, double timeout_s) {
    return check_isolated(path, timeout_s, 0);
}

int lt_cache_is_lt_file_isolated(const char *path) { return check_isolated(path, 0, 1); }
