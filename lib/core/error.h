/* error.h: how every lib/ function reports failure.
 *
 * Convention: a function that can fail returns int (0 = ok, -1 = error) or a pointer (NULL = error)
 * and, on failure, records one human-readable line with lt_err_set(). The message is thread-local,
 * so worker threads can fail independently. The caller (a tool) prints it as
 * "lt-embed: error: <message>". Messages name the file involved and, where there is one, the fix. */
#ifndef LT_ERROR_H
#define LT_ERROR_H

#include <stddef.h>

#if defined(__GNUC__)
#define LT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LT_PRINTF(a, b)
#endif

/* Records the error message for the current thread (printf-style). Always returns -1. */
int lt_err_set(const char *fmt, ...) LT_PRINTF(1, 2);
/* Prepends "<prefix>: " to the current message (e.g. a file name); returns -1. */
int lt_err_prefix(const char *fmt, ...) LT_PRINTF(1, 2);
/* The current thread's last message ("" if none). */
const char *lt_err_msg(void);
void lt_err_clear(void);
/* Replaces, in place, every byte of s outside printable ASCII with '?', for quoting a value read
 * from a damaged file in a message that must stay one line of valid text. Returns s. */
char *lt_str_printable(char *s);
/* Copies s to out (cap bytes, always NUL-terminated, cut if longer) with every control byte
 * (below 0x20, and 0x7f) and every backslash written as a C escape: \n, \r, \t, \xNN, \\. A
 * file name holding an ANSI
 * escape or a newline then prints as one harmless line. Returns out. */
char *lt_str_escape(const char *s, char *out, size_t cap);

/* malloc/calloc that record "out of memory (<bytes> bytes for <what>)" on failure. */
void *lt_malloc(size_t n, const char *what);
void *lt_calloc(size_t count, size_t size, const char *what);

#endif
