/* tfevents.c: TensorBoard event records, written and read back (layout in tfevents.h). */
#include "tfevents.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "error.h"
#include "fileio.h"

/* Largest record lt reads back: its own records are a few hundred bytes. */
#define MAX_RECORD (1u << 24)

uint32_t lt_tfevents_masked_crc(const void *data, size_t n) {
    uint32_t c = lt_crc32c(0, data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/* ---- protocol-buffer encoding into a bounded buffer ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int over; /* set when something did not fit */
} sink;

static void put(sink *s, const void *d, size_t n) {
    if (s->over || n > s->cap - s->n) {
        s->over = 1;
        return;
    }
    memcpy(s->p + s->n, d, n);
    s->n += n;
}

static void put_varint(sink *s, uint64_t v) {
    uint8_t b[10];
    int k = 0;
    do {
        b[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    put(s, b, (size_t)k);
}

static void put_le(sink *s, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(s, b, (size_t)bytes);
}

static void put_key(sink *s, int field, int wire) { put_varint(s, (uint64_t)(field << 3 | wire)); }

static void put_bytes(sink *s, int field, const void *d, size_t n) {
    put_key(s, field, 2);
    put_varint(s, n);
    put(s, d, n);
}

static void put_double(sink *s, int field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    put_key(s, field, 1);
    put_le(s, u, 8);
}

static size_t varint_len(uint64_t v) {
    size_t k = 1;
    while (v > 0x7f) {
        v >>= 7;
        k++;
    }
    return k;
}

/* An Event is encoded at buf + 12 (event_sink), where its record's data goes; frame() then puts
 * the length and its CRC before it and the data's CRC after it. */
static sink event_sink(uint8_t *buf, size_t cap) {
    return (sink){.p = buf + (cap >= 16 ? 12 : 0), .cap = cap >= 16 ? cap - 16 : 0};
}

static size_t frame(uint8_t *buf, sink *ev) {
    if (ev->over) return 0;
    uint8_t *hdr = buf;
    uint64_t n = ev->n;
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(n >> (8 * i));
    uint32_t c = lt_tfevents_masked_crc(hdr, 8);
    for (int i = 0; i < 4; i++) hdr[8 + i] = (uint8_t)(c >> (8 * i));
    c = lt_tfevents_masked_crc(buf + 12, ev->n);
    for (int i = 0; i < 4; i++) buf[12 + ev->n + i] = (uint8_t)(c >> (8 * i));
    return 12 + ev->n + 4;
}

size_t lt_tfevents_encode_version(uint8_t *buf, size_t cap, double wall_time, const char *writer) {
    sink s = event_sink(buf, cap);
    size_t wn = strlen(writer);
    put_double(&s, 1, wall_time);
    put_bytes(&s, 3, LT_TFEVENTS_FILE_VERSION, strlen(LT_TFEVENTS_FILE_VERSION));
    put_key(&s, 10, 2); /* SourceMetadata { 1: writer } */
    put_varint(&s, 1 + varint_len(wn) + wn);
    put_bytes(&s, 1, writer, wn);
    return frame(buf, &s);
}

size_t lt_tfevents_encode_scalars(uint8_t *buf, size_t cap, double wall_time, int64_t step, int n,
                                  const char *const *tags, const double *values) {
    sink s = event_sink(buf, cap);
    put_double(&s, 1, wall_time);
    put_key(&s, 2, 0);
    put_varint(&s, (uint64_t)step);
    size_t summary = 0; /* the Summary's length: n Values, each key + length + body */
    for (int i = 0; i < n; i++) {
        size_t tn = strlen(tags[i]), vn = 1 + varint_len(tn) + tn + 1 + 4;
        summary += 1 + varint_len(vn) + vn;
    }
    put_key(&s, 5, 2);
    put_varint(&s, summary);
    for (int i = 0; i < n; i++) {
        size_t tn = strlen(tags[i]);
        float v = (float)values[i];
        uint32_t u;
        memcpy(&u, &v, 4);
        put_key(&s, 1, 2);
        put_varint(&s, 1 + varint_len(tn) + tn + 1 + 4);
        put_bytes(&s, 1, tags[i], tn);
        put_key(&s, 2, 5);
        put_le(&s, u, 4);
    }
    return frame(buf, &s);
}

/* ---- writing ---- */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int write_record(FILE *f, const uint8_t *rec, size_t n) {
    if (n == 0) return lt_err_set("a TensorBoard event record is too large");
    if (fwrite(rec, 1, n, f) != n)
        return lt_err_set("cannot write a TensorBoard event record: %s", strerror(errno));
    return 0;
}

int lt_tfevents_write_version(FILE *f, const char *writer) {
    if (!f) return 0;
    uint8_t rec[512];
    return write_record(f, rec, lt_tfevents_encode_version(rec, sizeof rec, now_seconds(), writer));
}

int lt_tfevents_write_scalars(FILE *f, int64_t step, int n, const char *const *tags,
                              const double *values) {
    if (!f) return 0;
    uint8_t rec[4096];
    return write_record(f, rec, lt_tfevents_encode_scalars(rec, sizeof rec, now_seconds(), step, n,
                                                           tags, values));
}

int lt_tfevents_write_scalar(FILE *f, int64_t step, const char *tag, double value) {
    return lt_tfevents_write_scalars(f, step, 1, &tag, &value);
}

/* ---- reading back ---- */

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

static uint64_t get_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Walks the fields of a message: the next field's number, wire type and value (a varint, a
 * fixed-size value, or a length-delimited span). 1: a field; 0: the end; -1: malformed. */
typedef struct {
    int field, wire;
    uint64_t v;
    const uint8_t *span;
    size_t span_n;
} pb_field;

static int pb_next(const uint8_t **p, const uint8_t *end, pb_field *fl) {
    if (*p == end) return 0;
    uint64_t key;
    if (get_varint(p, end, &key) != 0) return -1;
    fl->field = (int)(key >> 3);
    fl->wire = (int)(key & 7);
    switch (fl->wire) {
    case 0: return get_varint(p, end, &fl->v) == 0 ? 1 : -1;
    case 1:
    case 5: {
        size_t k = fl->wire == 1 ? 8 : 4;
        if ((size_t)(end - *p) < k) return -1;
        fl->v = get_le(*p, (int)k);
        *p += k;
        return 1;
    }
    case 2:
        if (get_varint(p, end, &fl->v) != 0 || fl->v > (uint64_t)(end - *p)) return -1;
        fl->span = *p;
        fl->span_n = (size_t)fl->v;
        *p += fl->v;
        return 1;
    default: return -1;
    }
}

static int parse_event(const uint8_t *d, size_t n, lt_tfevents_record *r) {
    const uint8_t *p = d, *end = d + n;
    pb_field fl;
    int k;
    r->step = 0;
    r->wall_time = 0;
    r->has_version = 0;
    r->writer[0] = 0;
    while ((k = pb_next(&p, end, &fl)) == 1) {
        if (fl.field == 1 && fl.wire == 1) {
            memcpy(&r->wall_time, &fl.v, 8);
        } else if (fl.field == 2 && fl.wire == 0) {
            r->step = (int64_t)fl.v;
        } else if (fl.field == 3 && fl.wire == 2) {
            size_t vn = strlen(LT_TFEVENTS_FILE_VERSION);
            r->has_version = fl.span_n == vn && !memcmp(fl.span, LT_TFEVENTS_FILE_VERSION, vn);
        } else if (fl.field == 10 && fl.wire == 2) {
            const uint8_t *q = fl.span, *qend = fl.span + fl.span_n;
            pb_field sub;
            int j;
            while ((j = pb_next(&q, qend, &sub)) == 1)
                if (sub.field == 1 && sub.wire == 2) {
                    size_t c = sub.span_n < sizeof r->writer - 1 ? sub.span_n : sizeof r->writer - 1;
                    memcpy(r->writer, sub.span, c);
                    r->writer[c] = 0;
                }
            if (j < 0) return -1;
        }
    }
    return k;
}

int lt_tfevents_read(FILE *f, lt_tfevents_record *r) {
    uint8_t hdr[12];
    size_t got = fread(hdr, 1, sizeof hdr, f);
    if (got == 0 && feof(f)) return 0;
    if (got < sizeof hdr) return lt_err_set("a torn record (the file ends inside its header)");
    if ((uint32_t)get_le(hdr + 8, 4) != lt_tfevents_masked_crc(hdr, 8))
        return lt_err_set("a damaged record (the CRC of its length does not match)");
    uint64_t n = get_le(hdr, 8);
    if (n > MAX_RECORD) return lt_err_set("a record of %llu bytes, more than lt writes",
                                          (unsigned long long)n);
    size_t len = 12 + (size_t)n + 4;
    uint8_t *d = realloc(r->data, len);
    if (!d) return lt_err_set("out of memory");
    r->data = d;
    memcpy(d, hdr, 12);
    if (fread(d + 12, 1, (size_t)n + 4, f) != (size_t)n + 4)
        return lt_err_set("a torn record (the file ends inside its data)");
    if ((uint32_t)get_le(d + 12 + n, 4) != lt_tfevents_masked_crc(d + 12, (size_t)n))
        return lt_err_set("a damaged record (the CRC of its data does not match)");
    r->len = len;
    if (parse_event(d + 12, (size_t)n, r) != 0)
        return lt_err_set("a damaged record (its data is not an Event)");
    return 1;
}

int lt_tfevents_written_by(const char *path, const char *writer) {
    FILE *in = fopen(path, "rb");
    if (!in) return lt_err_set("%s: cannot read: %s", path, strerror(errno));
    lt_tfevents_record r = {0};
    int k = lt_tfevents_read(in, &r);
    int ours = k == 1 && r.has_version && !strcmp(r.writer, writer);
    free(r.data);
    fclose(in);
    lt_err_clear();
    return ours;
}

int lt_tfevents_keep_until(const char *path, int64_t step, const char *tmp_base,
                           int64_t *dropped, int64_t *tail_bytes) {
    *dropped = *tail_bytes = 0;
    FILE *in = fopen(path, "rb");
    if (!in) return lt_err_set("%s: cannot read: %s", path, strerror(errno));
    lt_tfevents_record r = {0};
    int64_t read_bytes = 0;
    int k;
    /* first pass: does anything go? Most reruns (a finished run, a clean stop at a checkpoint)
     * drop nothing and leave the file untouched */
    while ((k = lt_tfevents_read(in, &r)) == 1) {
        read_bytes += (int64_t)r.len;
        if (r.step > step) (*dropped)++;
    }
    if (k < 0) {
        long end = fseek(in, 0, SEEK_END) == 0 ? ftell(in) : -1;
        *tail_bytes = end > read_bytes ? end - read_bytes : 1;
    }
    lt_err_clear();
    if (*dropped == 0 && *tail_bytes == 0) {
        free(r.data);
        fclose(in);
        return 0;
    }
    lt_atomic_file out;
    int rc = -1;
    if (fseek(in, 0, SEEK_SET) != 0) {
        lt_err_set("%s: cannot read: %s", path, strerror(errno));
        goto done;
    }
    if (lt_atomic_open_named(&out, path, tmp_base) != 0) goto done;
    while (lt_tfevents_read(in, &r) == 1)
        if (r.step <= step && lt_write_all(out.fd, r.data, r.len) != 0) {
            lt_err_set("%s: write failed: %s", out.tmp, strerror(errno));
            lt_atomic_discard(&out);
            goto done;
        }
    lt_err_clear();
    rc = lt_atomic_commit(&out);
done:
    free(r.data);
    fclose(in);
    return rc;
}
