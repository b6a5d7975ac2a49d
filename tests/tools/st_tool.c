/* st_tool: drives the safetensors reader/writer from the interop tests.
 *   st_tool copy IN OUT   reads every tensor of IN (as float32) and writes OUT with lt_st_write
 *                         (F32, metadata "source" = IN's base name); exit 1 + message on error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "data/safetensors.h"

int main(int argc, char **argv) {
    if (argc != 4 || strcmp(argv[1], "copy")) {
        fprintf(stderr, "usage: st_tool copy IN OUT\n");
        return 2;
    }
    lt_safetensors st;
    if (lt_st_open(argv[2], &st) != 0) {
        fprintf(stderr, "st_tool: error: %s\n", lt_err_msg());
        return 1;
    }
    lt_st_entry *e = calloc((size_t)st.n + 1, sizeof *e);
    float **bufs = calloc((size_t)st.n + 1, sizeof *bufs);
    int rc = 0;
    for (int i = 0; i < st.n && rc == 0; i++) {
        const lt_st_tensor *t = &st.tensors[i];
        bufs[i] = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        rc = lt_st_read_f32(&st, t, bufs[i]);
        e[i].name = t->name;
        e[i].dtype = LT_DT_F32;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        e[i].data = bufs[i];
    }
    const char *keys[] = {"source"}, *vals[] = {lt_path_base(argv[2])};
    if (rc == 0) rc = lt_st_write(argv[3], e, st.n, keys, vals, 1);
    if (rc != 0) fprintf(stderr, "st_tool: error: %s\n", lt_err_msg());
    for (int i = 0; i < st.n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    lt_st_close(&st);
    return rc ? 1 : 0;
}
