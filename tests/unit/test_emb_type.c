/* test_emb_type.c: the stored embedding rows of data/emb_type.h at their edges, where the
 * expected values are the format's own (formats/cache.md): an all-zero row is stored as int8
 * zeros with scale 0 and reads back as zeros; a value that is not finite, or beyond float16's
 * range in a float16 row, is refused and named. (Rows of random values are checked against a
 * NumPy quantizer in tests/py/test_int8_embeddings.py.) */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "data/emb_type.h"

int main(void) {
    enum { D = 8 };
    float zero[D] = {0}, out[D], bad = 0;
    uint8_t row[4 * D];
    memset(row, 0xab, sizeof row);
    CHECK(lt_emb_encode_row(LT_EMB_I8, zero, D, row, &bad) == 0);
    float scale;
    memcpy(&scale, row + D, 4);
    CHECK(scale == 0.0f);
    for (int d = 0; d < D; d++) CHECK(row[d] == 0);
    memset(out, 0xff, sizeof out);
    lt_emb_decode_rows(LT_EMB_I8, row, 1, D, out);
    for (int d = 0; d < D; d++) CHECK(out[d] == 0.0f);
    CHECK(lt_emb_row_bytes(LT_EMB_I8, D) == D + 4 && lt_emb_row_bytes(LT_EMB_F16, D) == 2 * D &&
          lt_emb_row_bytes(LT_EMB_F32, D) == 4 * D);

    float x[D] = {0.5f, -0.25f, 0, 0, 0, 0, 0, 0};
    x[3] = NAN;
    for (int t = 0; t < 3; t++) {
        bad = 0;
        CHECK(lt_emb_encode_row((lt_emb_type)t, x, D, row, &bad) == -1 && isnan(bad));
    }
    x[3] = 70000.0f; /* beyond float16's largest finite value, 65504 */
    CHECK(lt_emb_encode_row(LT_EMB_F16, x, D, row, &bad) == -1 && bad == 70000.0f);
    CHECK(lt_emb_encode_row(LT_EMB_F32, x, D, row, &bad) == 0);
    CHECK(lt_emb_encode_row(LT_EMB_I8, x, D, row, &bad) == 0);

    lt_emb_type t;
    CHECK(lt_emb_type_parse("i8", &t) == 0 && t == LT_EMB_I8);
    CHECK(lt_emb_type_parse("float16", &t) == 0 && t == LT_EMB_F16);
    CHECK(lt_emb_type_parse("bf16", &t) == -1);
    CHECK_DONE();
}
