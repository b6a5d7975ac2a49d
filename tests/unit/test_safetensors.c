/* test_safetensors.c: round trip of lt_st_write / lt_st_open (dtypes, metadata, escaped names,
 * empty tensors, header padding) and a few malformed headers built in memory. The Python test
 * tests/py/test_safetensors.py covers the malformed-file zoo through the teacher loader. */
#include "check.h"
#include "core/error.h"
#include "core/half.h"
#include "data/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/lt_test_st_XXXXXX";

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

/* A file with the given JSON header and `data` bytes of zeros. */
static int open_header(const char *json, size_t data, lt_safetensors *st) {
    char path[256];
    snprintf(path, sizeof path, "%s/h.safetensors", dir);
    size_t hl = strlen(json);
    uint8_t buf[4096] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, json, hl);
    write_bytes(path, buf, 8 + hl + data);
    return lt_st_open(path, st);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    char path[256];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);

    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
    uint16_t f16[3] = {lt_f32_to_f16(1.5f), lt_f32_to_f16(-0.25f), lt_f32_to_f16(3.0f)};
    uint16_t bf16[2] = {0x3fc0 /* 1.5 */, 0xc040 /* -3 */};
    int64_t i64[2] = {7, -9};
    lt_st_entry e[] = {
        {"w", LT_DT_F32, 2, {2, 3}, f32},
        {"h", LT_DT_F16, 1, {3}, f16},
        {"b", LT_DT_BF16, 2, {1, 2}, bf16},
        {"name \"quoted\" \\ \n", LT_DT_I64, 1, {2}, i64},
        {"empty", LT_DT_F32, 2, {0, 4}, NULL},
    };
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "tab\there \"q\""};
    CHECK(lt_st_write(path, e, 5, mk, mv, 2) == 0);
    CHECK(access(path, F_OK) == 0);

    lt_safetensors st;
    CHECK_MSG(lt_st_open(path, &st) == 0, "%s", lt_err_msg());
    CHECK(st.n == 5);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | ((uint8_t *)st.map)[i];
    CHECK(hl % 8 == 0);
    CHECK(strcmp(lt_st_meta(&st, "format"), "pt") == 0);
    CHECK(strcmp(lt_st_meta(&st, "note"), "tab\there \"q\"") == 0);
    CHECK(lt_st_meta(&st, "nope") == NULL);
    float out[6];
    const lt_st_tensor *t = lt_st_find(&st, "w");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    CHECK(t && lt_st_read_f32(&st, t, out) == 0 && memcmp(out, f32, sizeof f32) == 0);
    t = lt_st_find(&st, "h");
    CHECK(t && lt_st_read_f32(&st, t, out) == 0 && out[0] == 1.5f && out[1] == -0.25f &&
          out[2] == 3.0f);
    t = lt_st_find(&st, "b");
    CHECK(t && lt_st_read_f32(&st, t, out) == 0 && out[0] == 1.5f && out[1] == -3.0f);
    t = lt_st_find(&st, "name \"quoted\" \\ \n");
    CHECK(t && t->dtype == LT_DT_I64 && memcmp(st.data + t->begin, i64, 16) == 0);
    CHECK(t && lt_st_read_f32(&st, t, out) == -1 && strstr(lt_err_msg(), path));
    t = lt_st_find(&st, "empty");
    CHECK(t && t->numel == 0 && t->begin == t->end);
    lt_st_close(&st);

    /* writing into a missing directory fails cleanly */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir.safetensors", dir);
    CHECK(lt_st_write(bad, e, 1, NULL, NULL, 0) == -1 && strstr(lt_err_msg(), "cannot create"));

    /* malformed headers */
    CHECK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, &st) ==
          0);
    lt_st_close(&st);
    CHECK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7, &st) ==
          -1 && strstr(lt_err_msg(), "'a'"));
    CHECK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16, &st) ==
          -1 && strstr(lt_err_msg(), "need"));
    CHECK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}", 8, &st) ==
          -1 && strstr(lt_err_msg(), "overlap"));
    /* an empty tensor anywhere and a scalar after: fine */
    CHECK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[8,9]}}", 9, &st) == 0);
    lt_st_close(&st);
    CHECK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, &st) ==
          -1);
    CHECK(open_header("{\"\\u00e9\\ud83d\\ude00\":{\"dtype\":\"U8\",\"shape\":[1],"
                      "\"data_offsets\":[0,1]}}", 1, &st) == 0);
    CHECK(st.n == 1 && strcmp(st.tensors[0].name, "\xc3\xa9\xf0\x9f\x98\x80") == 0);
    lt_st_close(&st);

    unlink(path);
    snprintf(path, sizeof path, "%s/h.safetensors", dir);
    unlink(path);
    rmdir(dir);
    CHECK_DONE();
}
