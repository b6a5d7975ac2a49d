/* test_cache_check.c: lt_cache_check_isolated, the child-process check of a cache's structure.
 *
 * Every outcome the parent must handle, made on purpose with the LT_CACHE_CHECK_SELFTEST hook so
 * that the test holds whatever libhdf5 does with damaged files: a crash by a signal, an abort, an
 * exit without a report, an endless loop (killed at the deadline, also from
 * $LT_CACHE_CHECK_TIMEOUT), a reported error. Then real files: a valid cache and a CACHE.partial
 * pass; a missing file, a file that is not HDF5 and a truncated cache give the reader's own
 * message; a damaged B-tree node of a chunk index that lt_cache_open does not read fails the
 * check (the walk of the chunk indexes finds it). The child never runs the parent's atexit
 * handlers nor flushes its stdio buffers. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/error.h"
#include "core/sha256.h"
#include "data/cache.h"
#include "data/cache_check.h"

static char tmpdir[256];
static char atexit_mark[512];
static pid_t parent_pid;

static void tmp_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs in any process that calls exit(): leaves a mark if that is not the test itself. */
static void mark_foreign_exit(void) {
    if (getpid() == parent_pid) return;
    FILE *f = fopen(atexit_mark, "a");
    if (f) fputs("a child ran the atexit handlers\n", f), fclose(f);
}

static int has(const char *s) {
    return strstr(lt_err_msg(), s) != NULL;
}

/* ---- a small valid cache ------------------------------------------------------------------ */

enum { N_IMAGES = 5, VIEWS = 2, DIM = 16 };

static void fill_meta(lt_cache_meta *m) {
    memset(m, 0, sizeof *m);
    m->embed_dim = DIM;
    m->image_size = 32;
    m->views_per_image = VIEWS;
    m->seed = 5;
    m->mixup = 1;
    m->zstd_level = 3;
    m->max_pixels = 1 << 20;
    lt_transform_default(&m->transform);
    m->transform.image_size = 32;
    snprintf(m->teacher.file, sizeof m->teacher.file, "teacher.safetensors");
    lt_sha256_hex("teacher", 7, m->teacher.sha256);
    m->teacher.embed_dim = DIM, m->teacher.depth = 1, m->teacher.heads = 1;
    m->teacher.patch = 14, m->teacher.pos_grid = 2, m->teacher.mlp_hidden = 4 * DIM;
    snprintf(m->tool_version, sizeof m->tool_version, "test");
}

/* Writes path (complete) or path.partial (partial = 1: after the samples, as an interrupted
 * lt-embed leaves it). Images of 1.5 MiB each, so /images/bytes has several chunks. */
static int write_cache(const char *path, int partial) {
    lt_cache_meta meta;
    fill_meta(&meta);
    lt_cache_writer *w;
    if (lt_cache_writer_create(path, &meta, &w) != 0) return -1;
    int32_t wd[N_IMAGES], ht[N_IMAGES];
    size_t n = 3u << 19;
    uint8_t *bytes = malloc(n);
    int r = bytes ? 0 : -1;
    for (int i = 0; r == 0 && i < N_IMAGES; i++) {
        for (size_t k = 0; k < n; k++) bytes[k] = (uint8_t)(k * 31 + (size_t)i * 7);
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        wd[i] = 40 + i, ht[i] = 30 + i;
        lt_cache_image im = {name, bytes, n, wd[i], ht[i], 1000 + i, "", 0, ""};
        lt_sha256_hex(bytes, n, im.sha256);
        r = lt_cache_writer_add_image(w, &im);
    }
    free(bytes);
    lt_sample s[N_IMAGES * VIEWS];
    for (int k = 0; k < N_IMAGES * VIEWS; k++)
        lt_sample_draw(&meta.transform, meta.seed, 1, N_IMAGES, wd, ht, (uint32_t)(k / VIEWS),
                       (uint32_t)(k % VIEWS), &s[k]);
    if (r == 0) r = lt_cache_writer_set_samples(w, s, N_IMAGES * VIEWS);
    if (r != 0) {
        lt_cache_writer_abort(w);
        return -1;
    }
    if (partial) return lt_cache_writer_close_partial(w);
    float emb[N_IMAGES * VIEWS * DIM];
    for (int k = 0; k < N_IMAGES * VIEWS * DIM; k++) emb[k] = (k % DIM == k / DIM % DIM) ? 1 : 0;
    if (lt_cache_writer_put_embeddings(w, 0, N_IMAGES * VIEWS, emb) != 0) {
        lt_cache_writer_abort(w);
        return -1;
    }
    return lt_cache_writer_finish(w);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    if (b && fread(b, 1, *n, f) != *n) free(b), b = NULL;
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) fwrite(b, 1, n, f), fclose(f);
}

/* ---- the outcomes, made by the test hook --------------------------------------------------- */

static void with_selftest(const char *mode, const char *path, double timeout_s) {
    setenv(LT_CACHE_CHECK_SELFTEST_ENV, mode, 1);
    lt_err_clear();
    /* The child's stderr goes to /dev/null: under ASan its SIGSEGV prints a sanitizer report
     * that would read like a real finding in the test log. */
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0) dup2(null, 2);
    int r = lt_cache_check_isolated(path, timeout_s);
    if (saved >= 0 && null >= 0) dup2(saved, 2);
    if (saved >= 0) close(saved);
    if (null >= 0) close(null);
    unsetenv(LT_CACHE_CHECK_SELFTEST_ENV);
    CHECK_MSG(r == -1, "selftest %s returned %d", mode, r);
    CHECK_MSG(has(path), "selftest %s: message does not name the file: %s", mode, lt_err_msg());
}

static void test_outcomes(const char *good) {
    /* a crash by a signal (under ASan the sanitizer catches SIGSEGV and exits instead) */
    with_selftest("segv", good, 0);
    CHECK_MSG(has("the HDF5 library crashed") && has("re-create it with lt-embed"), "%s",
              lt_err_msg());
#if !defined(__SANITIZE_ADDRESS__)
    CHECK_MSG(has("(SIGSEGV)"), "%s", lt_err_msg());
#endif
    with_selftest("abort", good, 0);
    CHECK_MSG(has("crashed (SIGABRT)") && has("the file is damaged"), "%s", lt_err_msg());
    with_selftest("exit", good, 0);
    CHECK_MSG(has("crashed") && has("status 3 and no report"), "%s", lt_err_msg());
    with_selftest("error", good, 0);
    CHECK_MSG(has("the check failed on purpose"), "%s", lt_err_msg());

    /* an endless loop: killed at the deadline, given as an argument or by the environment */
    double t0 = now_s();
    with_selftest("hang", good, 0.5);
    double took = now_s() - t0;
    CHECK_MSG(has("did not finish reading the file's structure within 0.5 s") &&
              has(LT_CACHE_CHECK_TIMEOUT_ENV), "%s", lt_err_msg());
    CHECK_MSG(took >= 0.45 && took < 5, "the hang took %.2f s to report", took);
    setenv(LT_CACHE_CHECK_TIMEOUT_ENV, "0.3", 1);
    t0 = now_s();
    with_selftest("hang", good, 0);
    took = now_s() - t0;
    CHECK_MSG(has("within 0.3 s"), "%s", lt_err_msg());
    CHECK_MSG(took >= 0.25 && took < 5, "the hang took %.2f s to report", took);
    /* an explicit limit wins over the environment; a bad value is refused by name */
    CHECK_MSG(lt_cache_check_isolated(good, 30) == 0, "%s", lt_err_msg());
    setenv(LT_CACHE_CHECK_TIMEOUT_ENV, "soon", 1);
    CHECK(lt_cache_check_isolated(good, 0) == -1);
    CHECK_MSG(has(LT_CACHE_CHECK_TIMEOUT_ENV) && has("'soon'"), "%s", lt_err_msg());
    setenv(LT_CACHE_CHECK_TIMEOUT_ENV, "-1", 1);
    CHECK(lt_cache_check_isolated(good, 0) == -1);
    unsetenv(LT_CACHE_CHECK_TIMEOUT_ENV);
}

/* ---- real files --------------------------------------------------------------------------- */

/* The check's message is the one lt_cache_open gives in-process. */
static void check_same_error(const char *path, const char *fragment) {
    lt_cache *c = NULL;
    CHECK(lt_cache_open(path, &c) == -1);
    char direct[1024];
    snprintf(direct, sizeof direct, "%s", lt_err_msg());
    lt_err_clear();
    CHECK(lt_cache_check_isolated(path, 0) == -1);
    CHECK_MSG(strcmp(lt_err_msg(), direct) == 0, "check: '%s', reader: '%s'", lt_err_msg(), direct);
    CHECK_MSG(has(path) && has(fragment), "%s", lt_err_msg());
}

/* Spoils, one at a time, each v1 B-tree node ("TREE") of the file: the check must fail every
 * time, and at least one of them (a chunk index the reader does not touch at open) must be
 * found by the walk alone. */
static void test_damaged_btree(const char *good) {
    size_t n = 0;
    unsigned char *b = slurp(good, &n);
    CHECK(b != NULL);
    if (!b) return;
    char bad[512];
    tmp_path(bad, sizeof bad, "tree.h5");
    int nodes = 0, walk_only = 0;
    for (size_t at = 0; at + 4 <= n; at++) {
        if (memcmp(b + at, "TREE", 4) != 0) continue;
        nodes++;
        b[at] = 'X';
        spit(bad, b, n);
        b[at] = 'T';
        lt_cache *c = NULL;
        int opens = lt_cache_open(bad, &c) == 0;
        lt_cache_close(c);
        lt_err_clear();
        CHECK_MSG(lt_cache_check_isolated(bad, 0) == -1, "B-tree node at %zu not noticed", at);
        CHECK_MSG(has(bad), "%s", lt_err_msg());
        if (opens) {
            walk_only++;
            CHECK_MSG(has("chunk index") && has("re-run lt-embed"), "%s", lt_err_msg());
        }
    }
    CHECK_MSG(nodes >= 3, "only %d B-tree nodes found", nodes);
    CHECK_MSG(walk_only >= 1, "no B-tree node found only by the walk (%d nodes)", nodes);
    free(b);
}

static void test_files(const char *good, const char *partial_of) {
    CHECK_MSG(lt_cache_check_isolated(good, 0) == 0, "%s", lt_err_msg());
    char partial[600];
    snprintf(partial, sizeof partial, "%s.partial", partial_of);
    CHECK_MSG(lt_cache_check_isolated(partial, 0) == 0, "%s", lt_err_msg());

    char p[512];
    tmp_path(p, sizeof p, "missing.h5");
    check_same_error(p, "cannot open");
    tmp_path(p, sizeof p, "text.h5");
    spit(p, (const unsigned char *)"not hdf5\n", 9);
    check_same_error(p, "not an HDF5 file");
    size_t n = 0;
    unsigned char *b = slurp(good, &n);
    CHECK(b != NULL);
    if (b) {
        tmp_path(p, sizeof p, "cut.h5");
        spit(p, b, n / 2);
        lt_err_clear();
        CHECK(lt_cache_check_isolated(p, 0) == -1);
        CHECK_MSG(has(p), "%s", lt_err_msg());
        free(b);
    }
    test_damaged_btree(good);
}

/* The child leaves with _exit(): a buffered stream of the parent is written once, and no atexit
 * handler runs in the child, whatever the outcome. */
static void test_no_double_flush(const char *good) {
    char p[512];
    tmp_path(p, sizeof p, "stream.txt");
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    setvbuf(f, NULL, _IOFBF, 1 << 16);
    fputs("once\n", f); /* pending in the buffer while the children run */
    CHECK(lt_cache_check_isolated(good, 0) == 0);
    with_selftest("error", good, 0);
    with_selftest("exit", good, 0);
    fclose(f);
    size_t n = 0;
    unsigned char *b = slurp(p, &n);
    CHECK_MSG(b && n == 5 && memcmp(b, "once\n", 5) == 0, "the stream holds %zu bytes", n);
    free(b);
    struct stat st;
    CHECK_MSG(stat(atexit_mark, &st) != 0, "a child ran the parent's atexit handlers");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lt_test_cache_check_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    parent_pid = getpid();
    tmp_path(atexit_mark, sizeof atexit_mark, "atexit-ran");
    atexit(mark_foreign_exit);
    unsetenv(LT_CACHE_CHECK_SELFTEST_ENV);
    unsetenv(LT_CACHE_CHECK_TIMEOUT_ENV);
    char good[512], part[512];
    tmp_path(good, sizeof good, "good.h5");
    tmp_path(part, sizeof part, "part.h5");
    int made = write_cache(good, 0) == 0 && write_cache(part, 1) == 0;
    CHECK_MSG(made, "cannot write the test caches: %s", lt_err_msg());
    if (made) {
        test_outcomes(good);
        test_files(good, part);
        test_no_double_flush(good);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    CHECK_DONE();
}
