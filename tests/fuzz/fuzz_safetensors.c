/* fuzz_safetensors.c: the safetensors reader (lt_st_open: header length, JSON, dtypes, shapes,
 * offsets, overlaps) on a file holding the input, then every tensor converted to float32 the way
 * the model loaders do, then the DINOv2 teacher loader (lt_dinov2_load) on the same file: key
 * names, shapes, the block table. A failure must come with a message naming the file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/safetensors.h"
#include "fuzz_util.h"
#include "models/dinov2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static void need_message(const char *path, const char *what) {
    const char *m = lt_err_msg();
    if (!m[0] || !strstr(m, path)) {
        fprintf(stderr, "fuzz_safetensors: %s failed without naming the file: '%s'\n", what, m);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_write_input(data, n, 1);
    lt_safetensors st;
    lt_err_clear();
    if (lt_st_open(path, &st) != 0) {
        need_message(path, "lt_st_open");
        lt_err_clear();
        return 0;
    }
    for (int i = 0; i < st.n; i++) {
        const lt_st_tensor *t = &st.tensors[i];
        if (lt_st_find(&st, t->name) == NULL) abort();
        if (t->end > st.map_size || t->begin > t->end) abort();
        if (t->dtype != LT_DT_F32 && t->dtype != LT_DT_F16 && t->dtype != LT_DT_BF16 &&
            t->dtype != LT_DT_F64)
            continue;
        float *buf = malloc((size_t)t->numel * sizeof(float) + 1);
        if (!buf) abort();
        if (lt_st_read_f32(&st, t, buf) != 0) abort();
        free(buf);
    }
    for (int i = 0; i < st.n_meta; i++)
        if (lt_st_meta(&st, st.meta_keys[i]) == NULL) abort();
    lt_st_close(&st);

    lt_dinov2 *m = NULL;
    lt_err_clear();
    if (lt_dinov2_load(path, &m) == 0) {
        const lt_dinov2_config *c = lt_dinov2_config_of(m);
        if (c->embed_dim <= 0 || c->depth <= 0 || c->patch <= 0 || c->pos_grid <= 0) abort();
        lt_dinov2_free(m);
    } else {
        need_message(path, "lt_dinov2_load");
    }
    lt_err_clear();
    return 0;
}
