/* emblog.c: the append-only embedding log of a resumable lt-embed run (see emblog.h and
 * formats/cache.md, "Resuming"). All integers are stored little-endian (the hosts lt runs on);
 * checksums are 64-bit FNV-1a. */
#include "embed/emblog.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

#define MAGIC "LTEMBLOG"
#define VERSION 1
#define HEADER_BYTES 64
#define MAX_TEXT (1u << 20)

struct lt_emblog {
    char *path;
    int fd;
    char *text;            /* settings, NUL-terminated */
    int64_t rows, total, synced; /* rows: the end of the rows written, damaged ones included */
    int64_t *holes, n_holes;      /* damaged rows below rows (sorted), to be written again */
    uint64_t data_start;
    int row_bytes, state;
    double last_sync;
};

/* The fixed header, in file order. */
typedef struct {
    char magic[8];
    uint32_t version, text_len;
    uint64_t rows_total;
    uint32_t row_bytes, state;
    uint64_t synced_rows, text_sum, data_start, header_sum;
} header;

_Static_assert(sizeof(header) == HEADER_BYTES, "emblog header is 64 bytes");

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t k = 0; k < n; k++) h = (h ^ p[k]) * UINT64_C(0x100000001b3);
    return h;
}
#define FNV_START UINT64_C(0xcbf29ce484222325)

static uint64_t row_sum(int64_t index, const void *row, size_t n) {
    uint64_t i = (uint64_t)index;
    return fnv1a(fnv1a(FNV_START, &i, sizeof i), row, n);
}

static size_t rec_bytes(const lt_emblog *l) { return (size_t)l->row_bytes + 8; }

static uint64_t row_offset(const lt_emblog *l, int64_t k) {
    return l->data_start + (uint64_t)k * rec_bytes(l);
}

static int write_all(int fd, const void *buf, size_t n, uint64_t off) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n, uint64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static void header_of(const lt_emblog *l, header *h) {
    memset(h, 0, sizeof *h);
    memcpy(h->magic, MAGIC, 8);
    h->version = VERSION;
    h->text_len = (uint32_t)strlen(l->text);
    h->rows_total = (uint64_t)l->total;
    h->row_bytes = (uint32_t)l->row_bytes;
    h->state = (uint32_t)l->state;
    h->synced_rows = (uint64_t)l->synced;
    h->text_sum = fnv1a(FNV_START, l->text, h->text_len);
    h->data_start = l->data_start;
    h->header_sum = fnv1a(FNV_START, h, offsetof(header, header_sum));
}

static int put_header(lt_emblog *l) {
    header h;
    header_of(l, &h);
    if (write_all(l->fd, &h, sizeof h, 0) < 0)
        return lt_err_set("%s: cannot write: %s", l->path, strerror(errno));
    return 0;
}

static void emblog_free(lt_emblog *l) {
    if (!l) return;
    if (l->fd >= 0) close(l->fd);
    free(l->path);
    free(l->text);
    free(l->holes);
    free(l);
}

static lt_emblog *emblog_new(const char *path) {
    lt_emblog *l = lt_calloc(1, sizeof *l, "embedding log");
    if (!l) return NULL;
    l->fd = -1;
    l->path = strdup(path);
    if (!l->path) {
        free(l);
        lt_err_set("out of memory (embedding log %s)", path);
        return NULL;
    }
    return l;
}

static void sync_dir_of(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd); /* best effort: makes the rename durable */
        close(fd);
    }
}

/* Writes header + text to path.tmp, syncs it and renames it to path. */
static int create_file(lt_emblog *l) {
    size_t n = strlen(l->path);
    char *tmp = malloc(n + 5);
    if (!tmp) return lt_err_set("out of memory (embedding log %s)", l->path);
    memcpy(tmp, l->path, n);
    memcpy(tmp + n, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    header h;
    header_of(l, &h);
    size_t len = strlen(l->text);
    char pad[8] = {0};
    int ok = fd >= 0 && write_all(fd, &h, sizeof h, 0) == 0 &&
             write_all(fd, l->text, len, HEADER_BYTES) == 0 &&
             write_all(fd, pad, (size_t)(l->data_start - HEADER_BYTES - len), HEADER_BYTES + len) == 0 &&
             fsync(fd) == 0;
    int err = errno;
    if (fd >= 0) close(fd);
    if (ok && rename(tmp, l->path) != 0) ok = 0, err = errno;
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return lt_err_set("%s: cannot create the embedding log: %s", l->path, strerror(err));
    }
    free(tmp);
    sync_dir_of(l->path);
    l->fd = open(l->path, O_RDWR | O_CLOEXEC);
    if (l->fd < 0) return lt_err_set("%s: cannot open: %s", l->path, strerror(errno));
    return 0;
}

int lt_emblog_create(const char *path, const char *settings, int64_t rows_total, int row_bytes,
                     lt_emblog **out) {
    *out = NULL;
    if (strlen(settings) > MAX_TEXT || rows_total < 0 || row_bytes < 1)
        return lt_err_set("%s: invalid embedding log parameters", path);
    lt_emblog *l = emblog_new(path);
    if (!l) return -1;
    l->text = strdup(settings);
    l->total = rows_total;
    l->row_bytes = row_bytes;
    l->data_start = (HEADER_BYTES + strlen(settings) + 7) / 8 * 8;
    l->last_sync = lt_now();
    if (!l->text || create_file(l) != 0) {
        if (!l->text) lt_err_set("out of memory (embedding log %s)", path);
        emblog_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

#define DAMAGED(l, what)                                                                          \
    lt_err_set("%s: the embedding log of an interrupted run is damaged (%s); pass --overwrite "   \
               "to discard it and start over",                                                    \
               (l)->path, what)

static int read_header(lt_emblog *l, uint64_t file_size) {
    header h;
    if (file_size < HEADER_BYTES || read_all(l->fd, &h, sizeof h, 0) < 0)
        return DAMAGED(l, "shorter than its header");
    if (memcmp(h.magic, MAGIC, 8) != 0)
        return lt_err_set("%s is not an lt embedding log; lt leaves it as it is: move it away to "
                          "run lt-embed on this CACHE", l->path);
    if (h.header_sum != fnv1a(FNV_START, &h, offsetof(header, header_sum)))
        return DAMAGED(l, "header checksum mismatch");
    if (h.version != VERSION) return DAMAGED(l, "unknown version");
    if (h.text_len > MAX_TEXT || h.row_bytes < 1 || h.data_start < HEADER_BYTES + h.text_len ||
        h.data_start > file_size || h.state > LT_EMBLOG_ASSEMBLING)
        return DAMAGED(l, "inconsistent header");
    l->text = malloc(h.text_len + 1);
    if (!l->text) return lt_err_set("out of memory (embedding log %s)", l->path);
    if (read_all(l->fd, l->text, h.text_len, HEADER_BYTES) < 0) return DAMAGED(l, "truncated");
    l->text[h.text_len] = 0;
    if (fnv1a(FNV_START, l->text, h.text_len) != h.text_sum)
        return DAMAGED(l, "settings checksum mismatch");
    l->total = (int64_t)h.rows_total;
    l->row_bytes = (int)h.row_bytes;
    l->state = (int)h.state;
    l->synced = (int64_t)h.synced_rows;
    l->data_start = h.data_start;
    return 0;
}

/* Checks the checksum of every whole row in the file: rows is set after the last good one (the
 * file is cut there: a row torn or lost by a crash), the damaged rows before it become holes. A
 * damaged row costs only itself; the count of rows dropped is returned in *dropped. */
static int check_rows(lt_emblog *l, int64_t n, int64_t *dropped) {
    enum { BLOCK = 1024 };
    const size_t rb = (size_t)l->row_bytes, rec = rec_bytes(l);
    int64_t bad = 0;
    uint8_t *buf = lt_malloc(BLOCK * rec, "embedding log rows");
    int64_t *holes = lt_malloc((size_t)(n + 1) * sizeof *holes, "embedding log rows");
    if (!buf || !holes) {
        free(buf);
        free(holes);
        return -1;
    }
    l->rows = 0;
    for (int64_t k0 = 0; k0 < n; k0 += BLOCK) {
        int64_t m = n - k0 < BLOCK ? n - k0 : BLOCK;
        if (read_all(l->fd, buf, (size_t)m * rec, row_offset(l, k0)) < 0) {
            free(buf);
            free(holes);
            return lt_err_set("%s: cannot read: %s", l->path, strerror(errno));
        }
        for (int64_t k = 0; k < m; k++) {
            uint64_t sum;
            memcpy(&sum, buf + (size_t)k * rec + rb, 8);
            if (sum == row_sum(k0 + k, buf + (size_t)k * rec, rb)) l->rows = k0 + k + 1;
            else holes[bad++] = k0 + k;
        }
    }
    free(buf);
    l->n_holes = 0;
    while (l->n_holes < bad && holes[l->n_holes] < l->rows) l->n_holes++;
    l->holes = holes;
    *dropped = bad;
    return 0;
}

int lt_emblog_open(const char *path, lt_emblog **out) {
    *out = NULL;
    lt_emblog *l = emblog_new(path);
    if (!l) return -1;
    l->fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (l->fd < 0 || fstat(l->fd, &st) != 0) {
        lt_err_set("%s: cannot open: %s", path, strerror(errno));
        emblog_free(l);
        return -1;
    }
    if (read_header(l, (uint64_t)st.st_size) != 0) {
        emblog_free(l);
        return -1;
    }
    int64_t in_file = (int64_t)(((uint64_t)st.st_size - l->data_start) / rec_bytes(l)), dropped = 0;
    if (in_file > l->total) in_file = l->total;
    if (check_rows(l, in_file, &dropped) != 0) {
        emblog_free(l);
        return -1;
    }
    if (dropped)
        lt_warn("%s: %lld of its %lld rows are damaged (checksum mismatch) and are dropped; the "
                "other %lld are kept, the dropped ones are computed again", path,
                (long long)dropped, (long long)in_file, (long long)(l->rows - l->n_holes));
    if (l->synced > l->rows) l->synced = l->rows;
    if (ftruncate(l->fd, (off_t)row_offset(l, l->rows)) != 0) {
        lt_err_set("%s: cannot cut off a torn row: %s", path, strerror(errno));
        emblog_free(l);
        return -1;
    }
    l->last_sync = lt_now();
    *out = l;
    return 0;
}

const char *lt_emblog_settings(const lt_emblog *l) { return l->text; }
int64_t lt_emblog_rows(const lt_emblog *l) { return l->rows - l->n_holes; }
int64_t lt_emblog_total(const lt_emblog *l) { return l->total; }
int lt_emblog_row_bytes(const lt_emblog *l) { return l->row_bytes; }
int lt_emblog_state(const lt_emblog *l) { return l->state; }

int lt_emblog_sync(lt_emblog *l) {
    if (fsync(l->fd) != 0) return lt_err_set("%s: cannot sync to disk: %s", l->path, strerror(errno));
    l->synced = l->rows;
    l->last_sync = lt_now();
    /* Lands on disk with the next fsync; until then the older count, still true, stays. */
    return put_header(l);
}

static int append_rows(lt_emblog *l, const void *rows, int64_t count) {
    if (count <= 0) return 0;
    if (l->rows + count > l->total)
        return lt_err_set("%s: %lld rows appended past the %lld expected", l->path,
                          (long long)(l->rows + count), (long long)l->total);
    size_t rb = (size_t)l->row_bytes, rec = rec_bytes(l);
    uint8_t *buf = lt_malloc((size_t)count * rec, "embedding log rows");
    if (!buf) return -1;
    for (int64_t k = 0; k < count; k++) {
        const uint8_t *src = (const uint8_t *)rows + (size_t)k * rb;
        uint64_t sum = row_sum(l->rows + k, src, rb);
        memcpy(buf + (size_t)k * rec, src, rb);
        memcpy(buf + (size_t)k * rec + rb, &sum, 8);
    }
    int r = write_all(l->fd, buf, (size_t)count * rec, row_offset(l, l->rows));
    int err = errno;
    free(buf);
    if (r != 0) {
        /* drop what part of the batch made it, so the file ends on a whole row */
        if (ftruncate(l->fd, (off_t)row_offset(l, l->rows)) != 0) { /* rows are re-verified */ }
        return lt_err_set("%s: cannot write embeddings: %s (free some space; the rows written so "
                          "far are kept: rerun the same command to continue)", l->path,
                          strerror(err));
    }
    l->rows += count;
    if (lt_now() - l->last_sync >= LT_EMBLOG_SYNC_SECONDS) return lt_emblog_sync(l);
    return 0;
}

/* Index of hole k in l->holes, or -1. */
static int64_t hole_index(const lt_emblog *l, int64_t k) {
    int64_t lo = 0, hi = l->n_holes;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (l->holes[mid] == k) return mid;
        if (l->holes[mid] < k) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

int64_t lt_emblog_next_missing(const lt_emblog *l, int64_t from) {
    int64_t next = from > l->rows ? from : l->rows, lo = 0, hi = l->n_holes;
    while (lo < hi) { /* the first hole >= from */
        int64_t mid = lo + (hi - lo) / 2;
        if (l->holes[mid] < from) lo = mid + 1;
        else hi = mid;
    }
    if (lo < l->n_holes && l->holes[lo] < next) next = l->holes[lo];
    return next < l->total ? next : l->total;
}

/* Writes row k again in place of a damaged one. */
static int put_hole(lt_emblog *l, int64_t h, const uint8_t *row) {
    const size_t rb = (size_t)l->row_bytes;
    int64_t k = l->holes[h];
    uint8_t *rec = lt_malloc(rec_bytes(l), "embedding log row");
    if (!rec) return -1;
    uint64_t sum = row_sum(k, row, rb);
    memcpy(rec, row, rb);
    memcpy(rec + rb, &sum, 8);
    int r = write_all(l->fd, rec, rec_bytes(l), row_offset(l, k));
    int err = errno;
    free(rec);
    if (r != 0)
        return lt_err_set("%s: cannot write embeddings: %s", l->path, strerror(err));
    memmove(l->holes + h, l->holes + h + 1, (size_t)(l->n_holes - h - 1) * sizeof *l->holes);
    l->n_holes--;
    return 0;
}

int lt_emblog_put(lt_emblog *l, int64_t first, const void *rows, int64_t count) {
    const uint8_t *src = rows;
    const size_t rb = (size_t)l->row_bytes;
    if (first < 0 || first > l->rows)
        return lt_err_set("%s: row %lld written after the %lld stored", l->path, (long long)first,
                          (long long)l->rows);
    for (int64_t k = first; k < first + count && k < l->rows; k++) {
        int64_t h = hole_index(l, k);
        if (h >= 0 && put_hole(l, h, src + (size_t)(k - first) * rb) != 0) return -1;
    }
    if (first + count <= l->rows) return 0;
    int64_t skip = l->rows - first;
    return append_rows(l, src + (size_t)skip * rb, count - skip);
}

int lt_emblog_read(lt_emblog *l, int64_t first, int64_t count, void *rows) {
    if (first < 0 || count < 0 || first + count > l->rows)
        return lt_err_set("%s: rows %lld..%lld requested, %lld are stored", l->path,
                          (long long)first, (long long)(first + count), (long long)l->rows);
    size_t rb = (size_t)l->row_bytes, rec = rec_bytes(l);
    enum { BLOCK = 1024 };
    uint8_t *buf = lt_malloc((count < BLOCK ? (size_t)count : BLOCK) * rec, "embedding log rows");
    if (!buf) return -1;
    int r = 0;
    for (int64_t k0 = 0; r == 0 && k0 < count; k0 += BLOCK) {
        int64_t n = count - k0 < BLOCK ? count - k0 : BLOCK;
        if (read_all(l->fd, buf, (size_t)n * rec, row_offset(l, first + k0)) < 0) {
            r = lt_err_set("%s: cannot read: %s", l->path, strerror(errno));
            break;
        }
        for (int64_t k = 0; r == 0 && k < n; k++) {
            uint64_t sum;
            const uint8_t *src = buf + (size_t)k * rec;
            memcpy(&sum, src + rb, 8);
            if (sum != row_sum(first + k0 + k, src, rb))
                r = lt_err_set("%s: row %lld is damaged (checksum mismatch); pass --overwrite to "
                               "start over", l->path, (long long)(first + k0 + k));
            else memcpy((uint8_t *)rows + (size_t)(k0 + k) * rb, src, rb);
        }
    }
    free(buf);
    return r;
}

int lt_emblog_set_state(lt_emblog *l, int state) {
    l->state = state;
    if (fsync(l->fd) != 0) return lt_err_set("%s: cannot sync to disk: %s", l->path, strerror(errno));
    l->synced = l->rows;
    if (put_header(l) != 0) return -1;
    if (fsync(l->fd) != 0) return lt_err_set("%s: cannot sync to disk: %s", l->path, strerror(errno));
    return 0;
}

void lt_emblog_close(lt_emblog *l) { emblog_free(l); }

/* ---- settings texts ---- */

/* Value of key in text (a "key=value" line) into val; 0 if found. */
static int value_of(const char *text, const char *key, size_t klen, char *val, size_t cap) {
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > klen && p[klen] == '=' && !strncmp(p, key, klen)) {
            snprintf(val, cap, "%.*s", (int)(len - klen - 1), p + klen + 1);
            return 0;
        }
        p += len + (end ? 1 : 0);
    }
    snprintf(val, cap, "(none)");
    return -1;
}

int lt_settings_value(const char *text, const char *key, char *val, size_t cap) {
    return value_of(text, key, strlen(key), val, cap);
}

/* First key of a whose value differs in b (or is missing there); 1 if one is found. */
static int first_diff(const char *a, const char *b, char *key, size_t key_cap, char *va,
                      char *vb, size_t cap) {
    for (const char *p = a; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            size_t klen = (size_t)(eq - p);
            value_of(a, p, klen, va, cap);
            value_of(b, p, klen, vb, cap);
            if (strcmp(va, vb) != 0) {
                snprintf(key, key_cap, "%.*s", (int)klen, p);
                return 1;
            }
        }
        p += len + (end ? 1 : 0);
    }
    return 0;
}

int lt_settings_diff(const char *was, const char *now, char *key, size_t key_cap, char *was_v,
                     char *now_v, size_t val_cap) {
    if (first_diff(was, now, key, key_cap, was_v, now_v, val_cap)) return 1;
    return first_diff(now, was, key, key_cap, now_v, was_v, val_cap);
}
