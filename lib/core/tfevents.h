/* tfevents.h: TensorBoard event files (events.out.tfevents.*), so that `tensorboard --logdir OUT`
 * shows lt-train's scalars. No C library for them ships in Debian, and lt needs only the few
 * fields below, written and read back here.
 *
 * A file is a sequence of records (TensorFlow's TFRecord framing):
 *
 *   uint64 LE   n, the length of the data
 *   uint32 LE   masked CRC-32C of those 8 length bytes
 *   n bytes     the data: one serialized Event protocol buffer
 *   uint32 LE   masked CRC-32C of the data
 *
 * where mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32) and CRC-32C is the Castagnoli
 * CRC of lib/core/crc32c.h. An Event is protocol-buffer wire format: each field is a key varint
 * (field number << 3 | wire type) and its value (wire type 0: a varint; 1: 8 bytes LE; 2: a
 * varint length and that many bytes; 5: 4 bytes LE). The fields lt uses:
 *
 *   Event           1 wall_time (double, type 1): seconds since the epoch
 *                   2 step (int64 varint, type 0)
 *                   3 file_version (string, type 2): "brain.Event:2", first record only
 *                   5 summary (Summary, type 2)
 *                  10 source_metadata (SourceMetadata, type 2), first record only
 *   Summary         1 value (Value, type 2), repeated
 *   Value           1 tag (string, type 2)
 *                   2 simple_value (float, type 5)
 *   SourceMetadata  1 writer (string, type 2): the program that wrote the file
 *
 * The first record of a file holds only wall_time, file_version and source_metadata; each later
 * record one step's scalars. lt writes its name as the writer, which is how it recognises its own
 * files when it must truncate or replace them. TensorBoard reads every file whose name contains
 * "tfevents", so a temporary of such a file must be named otherwise. */
#ifndef LT_TFEVENTS_H
#define LT_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LT_TFEVENTS_FILE_VERSION "brain.Event:2"

/* The masked CRC-32C of the framing. */
uint32_t lt_tfevents_masked_crc(const void *data, size_t n);

/* Encode one whole record (framing included) into buf; return its length, or 0 when it needs
 * more than cap bytes. The version record names writer; the scalar record holds n (tag, value)
 * pairs at step, each value stored as float32. */
size_t lt_tfevents_encode_version(uint8_t *buf, size_t cap, double wall_time, const char *writer);
size_t lt_tfevents_encode_scalars(uint8_t *buf, size_t cap, double wall_time, int64_t step, int n,
                                  const char *const *tags, const double *values);

/* Append a record stamped with the current time to f. A NULL f writes nothing and succeeds, so
 * a run without event files calls them alike. -1 with lt_err set on a failed write (stdio
 * buffers: a write error may show only at the next fflush). */
int lt_tfevents_write_version(FILE *f, const char *writer);
int lt_tfevents_write_scalars(FILE *f, int64_t step, int n, const char *const *tags,
                              const double *values);
int lt_tfevents_write_scalar(FILE *f, int64_t step, const char *tag, double value);

/* One record read back: what lt needs to recognise and truncate its files. */
typedef struct {
    uint8_t *data;     /* the whole record, framing included (owned by the reader) */
    size_t len;
    int64_t step;      /* 0 when absent, as in the version record */
    double wall_time;
    int has_version;   /* file_version is "brain.Event:2" */
    char writer[64];   /* source_metadata.writer, "" when absent (cut if longer) */
} lt_tfevents_record;

/* Reads the next record of f into r (r->data grows as needed; zero r before the first call and
 * free r->data after the last). 1: a record; 0: the end of the file; -1: a torn record (the file
 * ends inside it: a write cut short) or a damaged one (a CRC mismatch, or data that is not an
 * Event), with lt_err saying which. */
int lt_tfevents_read(FILE *f, lt_tfevents_record *r);

/* 1 when the file at path is an event file whose first record is a version record naming
 * writer, 0 when it is not (another program's, or no event file), -1 when it cannot be read. */
int lt_tfevents_written_by(const char *path, const char *writer);

/* Keeps the records of path whose step is <= step (the version record among them) and, when
 * anything goes, puts the file in place atomically through the temporary tmp_base.tmp.<pid>.
 * *dropped counts the whole records that went; a torn record (a write cut short by a kill) or a
 * damaged one ends what is read, and *tail_bytes is the size of the rest of the file from it on
 * (0 when the file ends cleanly), which goes too. */
int lt_tfevents_keep_until(const char *path, int64_t step, const char *tmp_base,
                           int64_t *dropped, int64_t *tail_bytes);

#endif
