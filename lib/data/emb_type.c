/* emb_type.c: encoding and decoding of stored embedding rows (see emb_type.h for the layouts). */
#include "data/emb_type.h"

#include <math.h>
#include <string.h>

#include "core/half.h"

static const char *const names[] = {"float16", "float32", "int8"};
static const char *const shorts[] = {"f16", "f32", "i8"};

const char *lt_emb_type_name(lt_emb_type t) { return names[t]; }
const char *lt_emb_type_short(lt_emb_type t) { return shorts[t]; }

int lt_emb_type_parse(const char *s, lt_emb_type *t) {
    for (int k = 0; k < 3; k++)
        if (!strcmp(s, names[k]) || !strcmp(s, shorts[k])) {
            *t = (lt_emb_type)k;
            return 0;
        }
    return -1;
}

size_t lt_emb_row_bytes(lt_emb_type t, int D) {
    return t == LT_EMB_F32 ? (size_t)D * 4 : t == LT_EMB_F16 ? (size_t)D * 2 : (size_t)D + 4;
}

static void put_f32le(uint8_t *p, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(u >> (8 * k));
}

static float get_f32le(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

int lt_emb_encode_row(lt_emb_type t, const float *x, int D, void *row, float *bad) {
    float amax = 0;
    for (int d = 0; d < D; d++) {
        int ok = isfinite(x[d]) && (t != LT_EMB_F16 || (lt_f32_to_f16(x[d]) & 0x7c00) != 0x7c00);
        if (!ok) {
            *bad = x[d];
            return -1;
        }
        if (fabsf(x[d]) > amax) amax = fabsf(x[d]);
    }
    uint8_t *p = row;
    if (t == LT_EMB_F32) {
        for (int d = 0; d < D; d++) put_f32le(p + 4 * d, x[d]);
    } else if (t == LT_EMB_F16) {
        for (int d = 0; d < D; d++) {
            uint16_t h = lt_f32_to_f16(x[d]);
            p[2 * d] = (uint8_t)h;
            p[2 * d + 1] = (uint8_t)(h >> 8);
        }
    } else {
        float scale = amax / 127.0f;
        for (int d = 0; d < D; d++) {
            /* nearest, ties to even (the default rounding mode); |x/scale| <= 127 up to rounding */
            long q = scale > 0 ? lrintf(x[d] / scale) : 0;
            if (q > 127) q = 127;
            if (q < -127) q = -127;
            p[d] = (uint8_t)(int8_t)q;
        }
        put_f32le(p + D, scale);
    }
    return 0;
}

void lt_emb_decode_rows(lt_emb_type t, const void *rows, int64_t n, int D, float *out) {
    const uint8_t *p = rows;
    size_t rb = lt_emb_row_bytes(t, D);
    for (int64_t i = 0; i < n; i++, p += rb) {
        float *o = out + (size_t)i * D;
        if (t == LT_EMB_F32) {
            for (int d = 0; d < D; d++) o[d] = get_f32le(p + 4 * d);
        } else if (t == LT_EMB_F16) {
            for (int d = 0; d < D; d++)
                o[d] = lt_f16_to_f32((uint16_t)(p[2 * d] | p[2 * d + 1] << 8));
        } else {
            float scale = get_f32le(p + D);
            for (int d = 0; d < D; d++) o[d] = (float)(int8_t)p[d] * scale;
        }
    }
}
