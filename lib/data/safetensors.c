/* safetensors.c: the .safetensors reader and writer (see safetensors.h).
 *
 * Why it exists: teacher weights, student exports and checkpoints are all safetensors files, and
 * the teacher file comes from outside, so the reader treats it as hostile: the file is mapped
 * read-only, the JSON header is parsed by the small strict parser below (objects, arrays, strings
 * with escapes, integers; depth-limited; duplicate keys rejected) and every tensor entry is checked
 * against the file size before any tensor byte is read. Every error names the file and, where there
 * is one, the tensor. */
#include "safetensors.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/half.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* 100 MB, as the reference implementation */
#define JSON_MAX_DEPTH 32

static const struct {
    lt_dtype t;
    const char *name;
    size_t size;
} DTYPES[] = {
    {LT_DT_F32, "F32", 4}, {LT_DT_F16, "F16", 2}, {LT_DT_BF16, "BF16", 2}, {LT_DT_F64, "F64", 8},
    {LT_DT_I64, "I64", 8}, {LT_DT_I32, "I32", 4}, {LT_DT_I16, "I16", 2},   {LT_DT_I8, "I8", 1},
    {LT_DT_U8, "U8", 1},   {LT_DT_BOOL, "BOOL", 1},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

size_t lt_dtype_size(lt_dtype t) {
    for (int i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].t == t) return DTYPES[i].size;
    return 0;
}

const char *lt_dtype_name(lt_dtype t) {
    for (int i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].t == t) return DTYPES[i].name;
    return "?";
}

/* ------------------------------------------------------------------------------------------ */
/* A minimal JSON DOM: enough for safetensors headers, strict about everything else.          */

typedef enum { J_OBJ, J_ARR, J_STR, J_INT } jtype;

typedef struct jval {
    jtype type;
    char *str;          /* J_STR: NUL-terminated (embedded NULs rejected) */
    int64_t i;          /* J_INT */
    int n;              /* J_OBJ / J_ARR: number of children */
    char **keys;        /* J_OBJ */
    struct jval **kids; /* J_OBJ / J_ARR */
} jval;

typedef struct {
    const char *p, *end;
    const char *start;
    char err[160];
} jparser;

static void jfree(jval *v) {
    if (!v) return;
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jfree(v->kids[i]);
    }
    free(v->keys);
    free(v->kids);
    free(v);
}

static jval *jfail(jparser *ps, const char *what) {
    if (!ps->err[0])
        snprintf(ps->err, sizeof ps->err, "invalid JSON header at byte %ld: %s",
                 (long)(ps->p - ps->start), what);
    return NULL;
}

static void jskip_ws(jparser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_u4(jparser *ps, unsigned *out) {
    if (ps->end - ps->p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0) return -1;
        v = v * 16 + (unsigned)h;
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* Parses a string at ps->p (which is '"'); returns a malloc'd UTF-8 string. */
static char *jparse_str(jparser *ps) {
    ps->p++; /* opening quote */
    /* The decoded string is never longer than the encoded one. */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    if (q >= ps->end) return (char *)jfail(ps, "unterminated string");
    char *out = malloc((size_t)(q - ps->p) + 1);
    if (!out) return (char *)jfail(ps, "out of memory");
    size_t n = 0;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            free(out);
            return (char *)jfail(ps, "control character in string");
        }
        if (c != '\\') {
            out[n++] = (char)c;
            ps->p++;
            continue;
        }
        ps->p++;
        char e = *ps->p++;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_u4(ps, &cp)) goto bad_escape;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* high surrogate: a low one must follow */
                unsigned lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u') goto bad_escape;
                ps->p += 2;
                if (read_u4(ps, &lo) || lo < 0xDC00 || lo > 0xDFFF) goto bad_escape;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto bad_escape;
            }
            if (cp == 0) goto bad_escape; /* names are C strings */
            /* UTF-8 encoding never exceeds the 6 (or 12) escape bytes it replaces. */
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xC0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (cp >> 18));
                out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            goto bad_escape;
        }
    }
    ps->p++; /* closing quote */
    out[n] = 0;
    return out;
bad_escape:
    free(out);
    return (char *)jfail(ps, "invalid escape in string");
}

static jval *jnew(jtype t) {
    jval *v = calloc(1, sizeof *v);
    if (v) v->type = t;
    return v;
}

static int jpush(jval *v, char *key, jval *kid) {
    if ((v->n & (v->n - 1)) == 0) { /* grow at powers of two */
        int cap = v->n ? v->n * 2 : 4;
        jval **k2 = realloc(v->kids, (size_t)cap * sizeof *k2);
        if (!k2) return -1;
        v->kids = k2;
        if (v->type == J_OBJ) {
            char **s2 = realloc(v->keys, (size_t)cap * sizeof *s2);
            if (!s2) return -1;
            v->keys = s2;
        }
    }
    if (v->type == J_OBJ) v->keys[v->n] = key;
    v->kids[v->n++] = kid;
    return 0;
}

static jval *jparse_value(jparser *ps, int depth) {
    jskip_ws(ps);
    if (ps->p >= ps->end) return jfail(ps, "unexpected end");
    if (depth > JSON_MAX_DEPTH) return jfail(ps, "nesting too deep");
    char c = *ps->p;
    if (c == '"') {
        char *s = jparse_str(ps);
        if (!s) return NULL;
        jval *v = jnew(J_STR);
        if (!v) {
            free(s);
            return jfail(ps, "out of memory");
        }
        v->str = s;
        return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        int neg = c == '-';
        if (neg) ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return jfail(ps, "invalid number");
        if (*ps->p == '0' && ps->p + 1 < ps->end && ps->p[1] >= '0' && ps->p[1] <= '9')
            return jfail(ps, "leading zero in number");
        uint64_t u = 0;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            unsigned d = (unsigned)(*ps->p - '0');
            if (u > (UINT64_MAX - d) / 10) return jfail(ps, "integer too large");
            u = u * 10 + d;
            ps->p++;
        }
        if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
            return jfail(ps, "non-integer number");
        if (u > (uint64_t)INT64_MAX) return jfail(ps, "integer too large");
        jval *v = jnew(J_INT);
        if (!v) return jfail(ps, "out of memory");
        v->i = neg ? -(int64_t)u : (int64_t)u;
        return v;
    }
    if (c != '{' && c != '[') return jfail(ps, "unexpected character");
    int obj = c == '{';
    char close = obj ? '}' : ']';
    ps->p++;
    jval *v = jnew(obj ? J_OBJ : J_ARR);
    if (!v) return jfail(ps, "out of memory");
    jskip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        if (obj) {
            jskip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                jfree(v);
                return jfail(ps, "expected a string key");
            }
            key = jparse_str(ps);
            if (!key) {
                jfree(v);
                return NULL;
            }
            for (int i = 0; i < v->n; i++)
                if (strcmp(v->keys[i], key) == 0) {
                    free(key);
                    jfree(v);
                    return jfail(ps, "duplicate key");
                }
            jskip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(key);
                jfree(v);
                return jfail(ps, "expected ':'");
            }
            ps->p++;
        }
        jval *kid = jparse_value(ps, depth + 1);
        if (!kid || jpush(v, key, kid)) {
            free(key);
            jfree(kid);
            jfree(v);
            return jfail(ps, "out of memory");
        }
        jskip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return v;
        }
        jfree(v);
        return jfail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static const jval *jget(const jval *obj, const char *key) {
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->kids[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */

void lt_st_close(lt_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_size);
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_vals[i]);
    }
    free(st->meta_keys);
    free(st->meta_vals);
    free(st->path);
    memset(st, 0, sizeof *st);
}

static int cmp_begin(const void *a, const void *b) {
    const lt_st_tensor *x = *(const lt_st_tensor *const *)a, *y = *(const lt_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Fills t from the header entry e; data_size is the size of the data area. */
static int parse_entry(const char *path, const char *name, const jval *e, uint64_t data_size,
                       lt_st_tensor *t) {
    if (e->type != J_OBJ)
        return lt_err_set("%s: tensor '%s': header entry is not an object", path, name);
    const jval *dt = jget(e, "dtype"), *sh = jget(e, "shape"), *off = jget(e, "data_offsets");
    if (!dt || !sh || !off)
        return lt_err_set("%s: tensor '%s': header entry lacks %s", path, name,
                          !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->keys[i], "dtype") && strcmp(e->keys[i], "shape") &&
            strcmp(e->keys[i], "data_offsets"))
            return lt_err_set("%s: tensor '%s': unknown header field '%s'", path, name, e->keys[i]);
    if (dt->type != J_STR) return lt_err_set("%s: tensor '%s': dtype is not a string", path, name);
    int k = 0;
    while (k < N_DTYPES && strcmp(DTYPES[k].name, dt->str) != 0) k++;
    if (k == N_DTYPES)
        return lt_err_set("%s: tensor '%s': unknown or unsupported dtype '%.32s'", path, name,
                          dt->str);
    t->dtype = DTYPES[k].t;
    if (sh->type != J_ARR) return lt_err_set("%s: tensor '%s': shape is not an array", path, name);
    if (sh->n > LT_ST_MAX_DIMS)
        return lt_err_set("%s: tensor '%s': %d dimensions (at most %d supported)", path, name,
                          sh->n, LT_ST_MAX_DIMS);
    t->ndim = sh->n;
    uint64_t numel = 1;
    for (int d = 0; d < sh->n; d++) {
        const jval *s = sh->kids[d];
        if (s->type != J_INT || s->i < 0)
            return lt_err_set("%s: tensor '%s': shape[%d] is not a non-negative integer", path,
                              name, d);
        t->shape[d] = s->i;
        if (__builtin_mul_overflow(numel, (uint64_t)s->i, &numel) || numel > (uint64_t)INT64_MAX)
            return lt_err_set("%s: tensor '%s': shape element count overflows", path, name);
    }
    t->numel = (int64_t)numel;
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, (uint64_t)DTYPES[k].size, &bytes))
        return lt_err_set("%s: tensor '%s': shape byte count overflows", path, name);
    if (off->type != J_ARR || off->n != 2 || off->kids[0]->type != J_INT ||
        off->kids[1]->type != J_INT || off->kids[0]->i < 0 || off->kids[1]->i < 0)
        return lt_err_set("%s: tensor '%s': data_offsets is not [begin, end]", path, name);
    t->begin = (uint64_t)off->kids[0]->i;
    t->end = (uint64_t)off->kids[1]->i;
    if (t->end < t->begin)
        return lt_err_set("%s: tensor '%s': data_offsets end %llu before begin %llu", path, name,
                          (unsigned long long)t->end, (unsigned long long)t->begin);
    if (t->end > data_size)
        return lt_err_set("%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data "
                          "(%llu bytes); the file is truncated or corrupt",
                          path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                          (unsigned long long)data_size);
    if (t->end - t->begin != bytes)
        return lt_err_set("%s: tensor '%s': %llu data bytes, but dtype %s and shape need %llu",
                          path, name, (unsigned long long)(t->end - t->begin), DTYPES[k].name,
                          (unsigned long long)bytes);
    return 0;
}

int lt_st_open(const char *path, lt_safetensors *st) {
    memset(st, 0, sizeof *st);
    jval *root = NULL;
    lt_st_tensor **order = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lt_err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        lt_err_set("%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lt_err_set("%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return lt_err_set("%s: not a safetensors file (%zu bytes, shorter than the 8-byte header "
                          "length)", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return lt_err_set("%s: cannot mmap: %s", path, strerror(e));
    st->map = map;
    st->map_size = size;
    st->path = strdup(path);
    if (!st->path) {
        lt_err_set("out of memory");
        goto fail;
    }
    const uint8_t *b = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen > size - 8) {
        lt_err_set("%s: not a safetensors file or truncated: header length %llu exceeds the file "
                   "size %zu", path, (unsigned long long)hlen, size);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER) {
        lt_err_set("%s: header length %llu is larger than the 100 MB limit", path,
                   (unsigned long long)hlen);
        goto fail;
    }
    if (hlen < 2) {
        lt_err_set("%s: not a safetensors file: header length %llu", path,
                   (unsigned long long)hlen);
        goto fail;
    }
    jparser ps = {.p = (const char *)b + 8, .end = (const char *)b + 8 + hlen,
                  .start = (const char *)b + 8};
    root = jparse_value(&ps, 0);
    if (root) {
        jskip_ws(&ps);
        if (ps.p != ps.end) {
            jfail(&ps, "trailing bytes after the header object");
            jfree(root);
            root = NULL;
        }
    }
    if (!root) {
        lt_err_set("%s: not a safetensors file: %s", path, ps.err);
        goto fail;
    }
    if (root->type != J_OBJ) {
        lt_err_set("%s: not a safetensors file: the header is not a JSON object", path);
        goto fail;
    }
    st->data = (uint8_t *)map + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    st->tensors = calloc((size_t)root->n + 1, sizeof *st->tensors);
    order = calloc((size_t)root->n + 1, sizeof *order);
    if (!st->tensors || !order) {
        lt_err_set("out of memory reading %s", path);
        goto fail;
    }
    for (int i = 0; i < root->n; i++) {
        const char *key = root->keys[i];
        const jval *v = root->kids[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (v->type != J_OBJ) {
                lt_err_set("%s: __metadata__ is not an object", path);
                goto fail;
            }
            st->meta_keys = calloc((size_t)v->n + 1, sizeof(char *));
            st->meta_vals = calloc((size_t)v->n + 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_vals) {
                lt_err_set("out of memory reading %s", path);
                goto fail;
            }
            for (int j = 0; j < v->n; j++) {
                if (v->kids[j]->type != J_STR) {
                    lt_err_set("%s: __metadata__ value of '%s' is not a string", path, v->keys[j]);
                    goto fail;
                }
                st->meta_keys[j] = strdup(v->keys[j]);
                st->meta_vals[j] = strdup(v->kids[j]->str);
                st->n_meta = j + 1;
                if (!st->meta_keys[j] || !st->meta_vals[j]) {
                    lt_err_set("out of memory reading %s", path);
                    goto fail;
                }
            }
            continue;
        }
        lt_st_tensor *t = &st->tensors[st->n];
        t->name = strdup(key);
        if (!t->name) {
            lt_err_set("out of memory reading %s", path);
            goto fail;
        }
        st->n++;
        if (parse_entry(path, key, v, data_size, t)) goto fail;
        order[st->n - 1] = t;
    }
    qsort(order, (size_t)st->n, sizeof *order, cmp_begin);
    const lt_st_tensor *last = NULL; /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < st->n; i++) {
        if (order[i]->begin == order[i]->end) continue; /* empty tensors occupy no bytes */
        if (last && order[i]->begin < last->end) {
            lt_err_set("%s: tensors '%s' and '%s' overlap in the data area", path, last->name,
                       order[i]->name);
            goto fail;
        }
        if (!last || order[i]->end > last->end) last = order[i];
    }
    free(order);
    jfree(root);
    return 0;
fail:
    free(order);
    jfree(root);
    lt_st_close(st);
    return -1;
}

const lt_st_tensor *lt_st_find(const lt_safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *lt_st_meta(const lt_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}

int lt_st_read_f32(const lt_safetensors *st, const lt_st_tensor *t, float *dst) {
    const uint8_t *src = st->data + t->begin;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case LT_DT_F32:
        memcpy(dst, src, n * 4); /* little-endian host assumed (x86-64, aarch64) */
        return 0;
    case LT_DT_F16:
    case LT_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = t->dtype == LT_DT_F16 ? lt_f16_to_f32(h) : lt_bf16_to_f32(h);
        }
        return 0;
    case LT_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return lt_err_set("%s: tensor '%s' has dtype %s, expected a float type (F32, F16, BF16)",
                          st->path, t->name, lt_dtype_name(t->dtype));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                      */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *s2 = realloc(b->s, cap);
        if (!s2) {
            b->oom = 1;
            return;
        }
        b->s = s2;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

int lt_st_write(const char *path, const lt_st_entry *entries, int n, const char *const *meta_keys,
                const char *const *meta_vals, int n_meta) {
    sbuf h = {0};
    char num[64];
    uint64_t off = 0;
    sb_str(&h, "{");
    if (n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_str(&h, meta_keys[i]);
            sb_str(&h, ":");
            sb_json_str(&h, meta_vals[i]);
        }
        sb_str(&h, "}");
    }
    for (int i = 0; i < n; i++) {
        const lt_st_entry *e = &entries[i];
        size_t es = lt_dtype_size(e->dtype);
        if (es == 0 || e->ndim < 0 || e->ndim > LT_ST_MAX_DIMS) {
            free(h.s);
            return lt_err_set("%s: tensor '%s': invalid dtype or rank for writing", path, e->name);
        }
        uint64_t bytes = es;
        for (int d = 0; d < e->ndim; d++) bytes *= (uint64_t)e->shape[d];
        if (i || n_meta > 0) sb_str(&h, ",");
        sb_json_str(&h, e->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, lt_dtype_name(e->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e->shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + bytes));
        sb_str(&h, num);
        off += bytes;
    }
    sb_str(&h, "}");
    while (!h.oom && h.n % 8) sb_str(&h, " "); /* pad as the reference writer does */
    if (h.oom) {
        free(h.s);
        return lt_err_set("out of memory writing %s", path);
    }

    lt_atomic_file f;
    if (lt_atomic_open(&f, path) != 0) {
        free(h.s);
        return -1;
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    int bad = lt_write_all(f.fd, lenb, 8) || lt_write_all(f.fd, h.s, h.n);
    for (int i = 0; i < n && !bad; i++) {
        uint64_t bytes = lt_dtype_size(entries[i].dtype);
        for (int d = 0; d < entries[i].ndim; d++) bytes *= (uint64_t)entries[i].shape[d];
        bad = lt_write_all(f.fd, entries[i].data, (size_t)bytes);
    }
    int e = errno;
    free(h.s);
    if (bad) {
        lt_err_set("%s: write failed: %s", f.tmp, strerror(e));
        lt_atomic_discard(&f);
        return -1;
    }
    return lt_atomic_commit(&f);
}
