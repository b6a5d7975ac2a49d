/* fuzz_cache.c: lt-train's cache reader (lt_cache_open: format, version, attributes, every
 * dataset's type and shape, image offsets, the text columns of paths and skip reasons) on a file
 * holding the input, then what lt-train reads from an opened cache: every image record and its
 * stored bytes, the skipped list, a few samples (recipes) and embeddings from the start and the
 * end. HDF5 itself is not instrumented (Debian's libhdf5), so only our side of the calls is
 * checked by ASan/UBSan; see README.md for the HDF5 problems this target can run into. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/cache.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

#define MAX_READ 8 /* records/samples/embedding rows read from each end */

static void read_rows(lt_cache *c, int64_t first, int64_t count, int64_t D) {
    lt_sample s[MAX_READ];
    float *emb = malloc((size_t)(count * D) * sizeof(float) + 1);
    if (!emb) abort();
    lt_cache_samples(c, first, count, s);
    lt_cache_embeddings(c, first, count, emb);
    free(emb);
    lt_err_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static int init;
    if (!init) {
        setenv("HDF5_USE_FILE_LOCKING", "FALSE", 1); /* the memfd is private to this process */
        init = 1;
    }
    const char *path = fuzz_write_input(data, n, 0);
    lt_cache *c = NULL;
    lt_err_clear();
    if (lt_cache_open(path, &c) != 0) {
        if (getenv("LT_REPLAY_VERBOSE")) fprintf(stderr, "  -> %s\n", lt_err_msg());
        if (!strstr(lt_err_msg(), path)) {
            fprintf(stderr, "fuzz_cache: open failed without naming the file: '%s'\n",
                    lt_err_msg());
            abort();
        }
        lt_err_clear();
        return 0;
    }
    const lt_cache_meta *m = lt_cache_meta_of(c);
    int64_t N = lt_cache_n_images(c), S = lt_cache_n_samples(c), K = lt_cache_n_skipped(c);
    int64_t D = m->embed_dim;
    if (N < 0 || S < 0 || K < 0 || D < 1) abort();
    for (int64_t i = 0; i < N && i < 2 * MAX_READ; i++) {
        int64_t idx = i < MAX_READ ? i : N - 1 - (i - MAX_READ);
        if (idx < 0) break;
        int32_t w, h;
        volatile size_t len = strlen(lt_cache_image_path(c, idx));
        (void)len;
        lt_cache_image_size(c, idx, &w, &h);
        lt_cache_image rec;
        if (lt_cache_image_record(c, idx, &rec) == 0) {
            volatile size_t l2 = strlen(rec.path) + strlen(rec.sha256);
            (void)l2;
        }
        uint8_t *bytes = NULL;
        size_t nb = 0;
        if (lt_cache_image_bytes(c, idx, &bytes, &nb) == 0) {
            unsigned acc = 0;
            for (size_t k = 0; k < nb; k++) acc += bytes[k];
            volatile unsigned sink = acc;
            (void)sink;
            free(bytes);
        }
        lt_err_clear();
    }
    for (int64_t k = 0; k < K && k < MAX_READ; k++) {
        const char *p, *r;
        lt_cache_skipped(c, k, &p, &r);
        volatile size_t l = strlen(p) + strlen(r);
        (void)l;
    }
    if (D <= 65536) {
        int64_t cnt = S < MAX_READ ? S : MAX_READ;
        read_rows(c, 0, cnt, D);
        if (S > cnt) read_rows(c, S - cnt, cnt, D);
    }
    lt_cache_close(c);
    lt_err_clear();
    return 0;
}
