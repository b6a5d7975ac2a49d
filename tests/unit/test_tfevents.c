/* test_tfevents.c: CRC-32C against the published check values (the CRC catalogue's "123456789"
 * and the iSCSI examples of RFC 3720 B.4); TensorBoard event records against bytes assembled by
 * hand from the protocol-buffer wire format and the TFRecord framing; reading lt's records back,
 * keeping the steps up to a checkpoint, and telling torn, damaged and foreign files apart.
 * (tests/py/test_tensorboard.py reads lt-train's files with the tensorboard package itself.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/crc32c.h"
#include "core/fileio.h"
#include "core/tfevents.h"

static void test_crc32c(void) {
    CHECK(lt_crc32c(0, "123456789", 9) == 0xE3069283u);
    CHECK(lt_crc32c(0, "", 0) == 0);
    uint8_t b[32];
    memset(b, 0, sizeof b);
    CHECK(lt_crc32c(0, b, 32) == 0x8A9136AAu);
    memset(b, 0xff, sizeof b);
    CHECK(lt_crc32c(0, b, 32) == 0x62A8AB43u);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)i;
    CHECK(lt_crc32c(0, b, 32) == 0x46DD794Eu);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)(31 - i);
    CHECK(lt_crc32c(0, b, 32) == 0x113FDB5Cu);
    /* in pieces */
    CHECK(lt_crc32c(lt_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
}

static uint32_t mask(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }

static void le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The record around an Event's bytes, framed as tfevents.h says. */
static size_t framed(const uint8_t *ev, size_t n, uint8_t *out) {
    le(out, n, 8);
    le(out + 8, mask(lt_crc32c(0, out, 8)), 4);
    memcpy(out + 12, ev, n);
    le(out + 12 + n, mask(lt_crc32c(0, ev, n)), 4);
    return n + 16;
}

static void test_encoding(void) {
    /* Event { wall_time: 1.5, step: 300, summary { value { tag: "a", simple_value: 2.0 } } } */
    const uint8_t scalar[] = {
        0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, /* 1: double 1.5 */
        0x10, 0xac, 0x02,                   /* 2: varint 300 */
        0x2a, 0x0a,                         /* 5: Summary, 10 bytes */
        0x0a, 0x08,                         /*   1: Value, 8 bytes */
        0x0a, 0x01, 'a',                    /*     1: tag "a" */
        0x15, 0, 0, 0, 0x40,                /*     2: float 2.0 */
    };
    uint8_t want[256], got[256];
    size_t wn = framed(scalar, sizeof scalar, want);
    const char *tag = "a";
    double v = 2.0;
    size_t n = lt_tfevents_encode_scalars(got, sizeof got, 1.5, 300, 1, &tag, &v);
    CHECK(n == wn && !memcmp(got, want, wn));
    CHECK(lt_tfevents_encode_scalars(got, wn - 1, 1.5, 300, 1, &tag, &v) == 0); /* too small */

    /* Event { wall_time: 1.5, file_version: "brain.Event:2", source_metadata { writer: "lt" } } */
    const uint8_t version[] = {
        0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,
        0x1a, 0x0d, 'b', 'r', 'a', 'i', 'n', '.', 'E', 'v', 'e', 'n', 't', ':', '2',
        0x52, 0x04,                         /* 10: SourceMetadata, 4 bytes */
        0x0a, 0x02, 'l', 't',               /*   1: writer "lt" */
    };
    wn = framed(version, sizeof version, want);
    n = lt_tfevents_encode_version(got, sizeof got, 1.5, "lt");
    CHECK(n == wn && !memcmp(got, want, wn));

    /* two values in one Summary, a negative step's ten-byte varint */
    const char *tags[] = {"x/y", "z"};
    double vals[] = {-0.25, 1e30};
    const uint8_t two[] = {
        0x09, 0, 0, 0, 0, 0, 0, 0, 0,
        0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        0x2a, 0x16,
        0x0a, 0x0a, 0x0a, 0x03, 'x', '/', 'y', 0x15, 0, 0, 0x80, 0xbe, /* -0.25f = 0xbe800000 */
        0x0a, 0x08, 0x0a, 0x01, 'z', 0x15, 0xca, 0xf2, 0x49, 0x71,      /* 1e30f = 0x7149f2ca */
    };
    wn = framed(two, sizeof two, want);
    n = lt_tfevents_encode_scalars(got, sizeof got, 0.0, -1, 2, tags, vals);
    CHECK(n == wn && !memcmp(got, want, wn));
}

static char dir[] = "/tmp/lt_tfevents_XXXXXX";

static void write_file(const char *path, int64_t steps, const char *writer) {
    FILE *f = fopen(path, "wb");
    CHECK(lt_tfevents_write_version(f, writer) == 0);
    for (int64_t s = 1; s <= steps; s++) {
        const char *tags[] = {"train/loss", "train/lr"};
        double v[] = {1.0 / (double)s, 0.1};
        CHECK(lt_tfevents_write_scalars(f, s, 2, tags, v) == 0);
    }
    CHECK(lt_tfevents_write_scalar(NULL, 1, "x", 1.0) == 0); /* no file: nothing, no error */
    fclose(f);
}

/* The steps of the records of path, in order (-1 for the version record); returns the count, or
 * -1 when a record does not read. */
static int steps_of(const char *path, int64_t *steps, int cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    lt_tfevents_record r = {0};
    int n = 0, k;
    while ((k = lt_tfevents_read(f, &r)) == 1 && n < cap) {
        steps[n++] = r.has_version ? -1 : r.step;
        if (r.has_version) CHECK(!strcmp(r.writer, "lt-train") && r.wall_time > 1.6e9);
    }
    free(r.data);
    fclose(f);
    return k < 0 ? -1 : n;
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void test_read_back(void) {
    CHECK(mkdtemp(dir) != NULL);
    char path[256], tmp_base[256], other[256];
    snprintf(path, sizeof path, "%s/events.out.tfevents.1.host", dir);
    snprintf(tmp_base, sizeof tmp_base, "%s/events", dir);
    snprintf(other, sizeof other, "%s/events.out.tfevents.2.host", dir);
    write_file(path, 5, "lt-train");
    int64_t st[16], dropped, tail;
    CHECK(steps_of(path, st, 16) == 6 && st[0] == -1 && st[1] == 1 && st[5] == 5);
    CHECK(lt_tfevents_written_by(path, "lt-train") == 1);
    CHECK(lt_tfevents_written_by(path, "lt") == 0);

    /* nothing past step 5: the file is left as it is */
    long size5 = file_size(path);
    CHECK(lt_tfevents_keep_until(path, 5, tmp_base, &dropped, &tail) == 0);
    CHECK(dropped == 0 && tail == 0 && file_size(path) == size5);
    /* a checkpoint at step 3 */
    CHECK(lt_tfevents_keep_until(path, 3, tmp_base, &dropped, &tail) == 0);
    CHECK(dropped == 2 && tail == 0);
    CHECK(steps_of(path, st, 16) == 4 && st[0] == -1 && st[3] == 3);

    /* a torn last record: only whole records are kept */
    long size3 = file_size(path);
    FILE *f = fopen(path, "ab");
    const char *tag = "train/loss";
    double v = 0.5;
    uint8_t rec[256];
    size_t n = lt_tfevents_encode_scalars(rec, sizeof rec, 2e9, 4, 1, &tag, &v);
    fwrite(rec, 1, n - 3, f);
    fclose(f);
    CHECK(steps_of(path, st, 16) == -1);
    CHECK(lt_tfevents_keep_until(path, 10, tmp_base, &dropped, &tail) == 0);
    CHECK(dropped == 0 && tail == (int64_t)n - 3);
    CHECK(file_size(path) == size3 && steps_of(path, st, 16) == 4);

    /* a damaged byte inside a record: it and what follows go */
    write_file(other, 5, "lt-train");
    long whole = file_size(other);
    f = fopen(other, "r+b");
    fseek(f, whole - 10, SEEK_SET); /* inside the data of the last record (step 5) */
    int c = fgetc(f);
    fseek(f, whole - 10, SEEK_SET);
    fputc(c ^ 0x20, f);
    fclose(f);
    CHECK(steps_of(other, st, 16) == -1);
    CHECK(lt_tfevents_keep_until(other, 10, tmp_base, &dropped, &tail) == 0);
    CHECK(tail > 0 && steps_of(other, st, 16) == 5 && st[4] == 4);

    /* another program's event file, and a file that is no event file */
    write_file(other, 2, "tensorboard");
    CHECK(lt_tfevents_written_by(other, "lt-train") == 0);
    f = fopen(other, "wb");
    fputs("{\"step\": 1}\n", f);
    fclose(f);
    CHECK(lt_tfevents_written_by(other, "lt-train") == 0);
    unlink(other);
    CHECK(lt_tfevents_written_by(other, "lt-train") == -1);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_crc32c();
    test_encoding();
    test_read_back();
    CHECK_DONE();
}
