/* emblog.h: the embedding log CACHE.partial.emb, which makes lt-embed resumable.
 *
 * The teacher's outputs are appended to this file, not to the HDF5 CACHE.partial: an append-only
 * file of fixed-size rows, each followed by a checksum of its index and bytes, stays usable after
 * a SIGKILL, an OOM kill or a power cut at any instant, which an HDF5 file being written does not
 * (HDF5 1.10 without SWMR may leave its metadata inconsistent). A header holds the run's settings
 * (as "key=value" lines, compared by the next run), the number of rows the run will produce, the
 * row size, how many rows are known to be on disk (after the last fsync), and the state (embedding
 * or assembling). formats/cache.md ("Resuming") is the byte layout. */
#ifndef LT_EMBLOG_H
#define LT_EMBLOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct lt_emblog lt_emblog;

enum { LT_EMBLOG_EMBEDDING = 0, LT_EMBLOG_ASSEMBLING = 1 };

/* Creates path (written as path.tmp, synced, renamed: it exists only complete). */
int lt_emblog_create(const char *path, const char *settings, int64_t rows_total, int row_bytes,
                     lt_emblog **out);
/* Opens an existing log for appending: checks the header and the checksum of every row, cuts the
 * file after the last good row (a row torn by a crash) and keeps every good row before it; the
 * damaged ones (warned about, with their count) are missing rows to compute again. -1 + lt_err
 * naming the file if the header is damaged. */
int lt_emblog_open(const char *path, lt_emblog **out);
const char *lt_emblog_settings(const lt_emblog *l);
int64_t lt_emblog_rows(const lt_emblog *l);  /* good rows present */
int64_t lt_emblog_total(const lt_emblog *l); /* rows the run produces */
int lt_emblog_row_bytes(const lt_emblog *l);
int lt_emblog_state(const lt_emblog *l);
/* The first row >= from that the log lacks (damaged, or not written yet); the total if none. */
int64_t lt_emblog_next_missing(const lt_emblog *l, int64_t from);
/* Stores rows [first, first + count) (count * row_bytes bytes) where the log lacks them: damaged
 * rows are written again in place, rows past the last one are appended with one write(2); rows
 * the log holds are left as they are. first must not lie past the last row. Once it returns the
 * rows survive the process being killed; they are fsynced (and the header's synced count
 * advanced) at most every LT_EMBLOG_SYNC_SECONDS, and by lt_emblog_sync. */
#define LT_EMBLOG_SYNC_SECONDS 5.0
int lt_emblog_put(lt_emblog *l, int64_t first, const void *rows, int64_t count);
int lt_emblog_sync(lt_emblog *l);
/* Reads rows [first, first + count), verifying each checksum. */
int lt_emblog_read(lt_emblog *l, int64_t first, int64_t count, void *rows);
/* Records the state durably (fsync). */
int lt_emblog_set_state(lt_emblog *l, int state);
void lt_emblog_close(lt_emblog *l);

/* Compares two settings texts ("key=value" lines). Returns 0 if they are equal; otherwise 1 with
 * the first differing key and both values (a missing key reads as "(none)") copied out. */
/* The value of key in a settings text into val; 0 if found, -1 if not (val: "(none)"). */
int lt_settings_value(const char *text, const char *key, char *val, size_t cap);
int lt_settings_diff(const char *was, const char *now, char *key, size_t key_cap, char *was_v,
                     char *now_v, size_t val_cap);

#endif
