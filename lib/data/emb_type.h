/* emb_type.h: the types a cache stores teacher embeddings in, and the one encoder and decoder of
 * a stored row, so lt-embed, the cache file, lt-embed's resume log and lt-train agree byte for
 * byte (formats/cache.md, "/embeddings").
 *
 * A stored row of D values:
 *   float32: D little-endian float32                                   (4·D bytes)
 *   float16: D IEEE binary16, round to nearest even                   (2·D bytes)
 *   int8:    D int8 q[d] = round(x[d] / scale), then scale as float32 (D + 4 bytes), with
 *            scale = max|x| / 127 (0 for an all-zero row); the value is q[d] · scale.
 * The rows are L2-normalised embeddings, so int8's error per value is at most scale / 2 =
 * max|x| / 254 (and float16's at most 2^-12 of each value). */
#ifndef LT_EMB_TYPE_H
#define LT_EMB_TYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LT_EMB_F16 = 0, LT_EMB_F32 = 1, LT_EMB_I8 = 2 } lt_emb_type;

/* "float16", "float32", "int8": the cache's embedding_dtype attribute. */
const char *lt_emb_type_name(lt_emb_type t);
/* "f16", "f32", "i8": lt-embed's --dtype. */
const char *lt_emb_type_short(lt_emb_type t);
/* Accepts either spelling; -1 for anything else. */
int lt_emb_type_parse(const char *s, lt_emb_type *t);
/* Bytes of one stored row of D values. */
size_t lt_emb_row_bytes(lt_emb_type t, int D);
/* x (D) -> row (lt_emb_row_bytes). Returns 0, or -1 when x cannot be stored in t (a value that
 * is not finite, or beyond float16's range), with *bad set to the first such value. */
int lt_emb_encode_row(lt_emb_type t, const float *x, int D, void *row, float *bad);
/* rows (n stored rows) -> out (n, D) float32. */
void lt_emb_decode_rows(lt_emb_type t, const void *rows, int64_t n, int D, float *out);

#endif
