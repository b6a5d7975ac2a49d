/* fuzz_util.h: helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Some readers take a path (lt_st_open maps a file, HDF5 opens one), so the input is written to
 * an anonymous in-memory file (memfd) and handed over as /proc/self/fd/N; where memfd is missing,
 * or for HDF5 (which resolves the real path of the file it opens and fails on a memfd), to a
 * temporary file under $TMPDIR, else /dev/shm, else /tmp. The file is created once per process
 * and rewritten (truncated) for every input. */
#ifndef LT_FUZZ_UTIL_H
#define LT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int fuzz_fd = -1;
static char fuzz_path[512];

static void fuzz_unlink_tmp(void) {
    if (strncmp(fuzz_path, "/proc/", 6) != 0 && fuzz_path[0]) unlink(fuzz_path);
}

/* Writes data to the per-process input file and returns its path (aborts if impossible: a
 * broken harness must not look like a clean run). */
static const char *fuzz_write_input(const uint8_t *data, size_t n, int allow_memfd) {
    if (fuzz_fd < 0) {
#ifdef MFD_CLOEXEC
        if (allow_memfd) fuzz_fd = memfd_create("lt-fuzz-input", 0);
#else
        (void)allow_memfd;
#endif
        if (fuzz_fd >= 0) {
            snprintf(fuzz_path, sizeof fuzz_path, "/proc/self/fd/%d", fuzz_fd);
            if (access(fuzz_path, R_OK) != 0) { /* no /proc: fall back to a file */
                close(fuzz_fd);
                fuzz_fd = -1;
            }
        }
        if (fuzz_fd < 0) {
            const char *dir = getenv("TMPDIR");
            if (!dir || !*dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
            snprintf(fuzz_path, sizeof fuzz_path, "%s/lt-fuzz-XXXXXX", dir);
            fuzz_fd = mkstemp(fuzz_path);
            if (fuzz_fd < 0) {
                perror("fuzz: cannot create the input file");
                abort();
            }
            atexit(fuzz_unlink_tmp);
        }
    }
    if (ftruncate(fuzz_fd, 0) != 0) abort();
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(fuzz_fd, data + off, n - off, (off_t)off);
        if (w <= 0) {
            perror("fuzz: cannot write the input file");
            abort();
        }
        off += (size_t)w;
    }
    return fuzz_path;
}

#endif
