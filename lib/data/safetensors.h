/* safetensors.h: read (and write) .safetensors files: an 8-byte little-endian header length, a
 * JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the data.
 *
 * The reader validates every header field against the file size before any tensor is touched:
 * header length, JSON syntax, known dtypes, shapes whose element count times the dtype size equals
 * the offset span, offsets inside the data area, no two tensors overlapping. A lying file is a
 * clean error naming the file and the tensor, never a crash. */
#ifndef LT_SAFETENSORS_H
#define LT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LT_DT_F32, LT_DT_F16, LT_DT_BF16, LT_DT_F64, LT_DT_I64, LT_DT_I32, LT_DT_I16,
               LT_DT_I8, LT_DT_U8, LT_DT_BOOL } lt_dtype;

#define LT_ST_MAX_DIMS 8

typedef struct {
    char *name;
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte offsets relative to the data area */
} lt_st_tensor;

typedef struct {
    char *path;
    uint8_t *data;      /* start of the data area (inside the mapping) */
    void *map;          /* whole file, read-only mmap */
    size_t map_size;
    lt_st_tensor *tensors;
    int n;
    char **meta_keys, **meta_vals; /* __metadata__ */
    int n_meta;
} lt_safetensors;

size_t lt_dtype_size(lt_dtype t);
const char *lt_dtype_name(lt_dtype t);

int lt_st_open(const char *path, lt_safetensors *st);
void lt_st_close(lt_safetensors *st);
const lt_st_tensor *lt_st_find(const lt_safetensors *st, const char *name);
const char *lt_st_meta(const lt_safetensors *st, const char *key); /* NULL if absent */
/* Copies a F32/F16/BF16 tensor into dst (numel floats), converting to float32. */
int lt_st_read_f32(const lt_safetensors *st, const lt_st_tensor *t, float *dst);

/* Writing: tensors given as float32 buffers (stored F32) or raw bytes of a dtype. */
typedef struct {
    const char *name;
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    const void *data; /* numel * dtype size bytes */
} lt_st_entry;

/* Writes atomically (temp + rename); metadata pairs may be NULL/0. */
int lt_st_write(const char *path, const lt_st_entry *entries, int n, const char *const *meta_keys,
                const char *const *meta_vals, int n_meta);

#endif
