/* replay.c: runs a fuzz target's code without libFuzzer: every file named on the command line (or
 * every file in a named folder) goes through LLVMFuzzerTestOneInput once. Linked with each
 * fuzz_*.c into build-asan/fuzz/replay_<target> (ASan+UBSan, gcc), it is how `make test` keeps
 * the crashing inputs the fuzzers found (tests/fuzz/regressions/<target>/) and the seed corpora
 * as regression tests: a sanitizer report or an abort fails the run; a clean error does not. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fileio.h"
#include "core/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static int run_file(const char *path, int verbose) {
    uint8_t *data;
    size_t n;
    if (lt_read_file(path, (size_t)1 << 30, &data, &n) != 0) {
        fprintf(stderr, "replay: %s\n", lt_err_msg());
        return -1;
    }
    if (verbose) fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(data, n);
    free(data);
    return 0;
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    int verbose = getenv("LT_REPLAY_VERBOSE") != NULL, files = 0, bad = 0;
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            fprintf(stderr, "replay: %s: no such file or folder\n", argv[a]);
            bad = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad |= run_file(argv[a], verbose) != 0;
            files++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "replay: %s: cannot read the folder\n", argv[a]);
            bad = 1;
            continue;
        }
        char **names = NULL;
        size_t nn = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            names = realloc(names, (nn + 1) * sizeof *names);
            if (!names) abort();
            names[nn++] = lt_path_join(argv[a], e->d_name);
        }
        closedir(d);
        if (nn) qsort(names, nn, sizeof *names, cmp);
        for (size_t i = 0; i < nn; i++) {
            if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
                bad |= run_file(names[i], verbose) != 0;
                files++;
            }
            free(names[i]);
        }
        free(names);
    }
    printf("replay: %d input%s ran clean\n", files, files == 1 ? "" : "s");
    return bad;
}
