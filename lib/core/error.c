/* error.c: thread-local error messages (see error.h for the convention). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LT_ERR_MAX 1024
static _Thread_local char err_buf[LT_ERR_MAX];

int lt_err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int lt_err_prefix(const char *fmt, ...) {
    char pre[LT_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int lp = vsnprintf(pre, sizeof pre - 2, fmt, ap);
    va_end(ap);
    if (lp < 0) return -1;
    if (lp > LT_ERR_MAX - 3) lp = LT_ERR_MAX - 3;
    memcpy(pre + lp, ": ", 3);
    lp += 2;
    size_t lo = strlen(err_buf);
    if ((size_t)lp + lo >= LT_ERR_MAX) lo = LT_ERR_MAX - 1 - (size_t)lp;
    memmove(err_buf + lp, err_buf, lo);
    memcpy(err_buf, pre, (size_t)lp);
    err_buf[lp + lo] = 0;
    return -1;
}

const char *lt_err_msg(void) { return err_buf; }

void lt_err_clear(void) { err_buf[0] = 0; }

void *lt_malloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p) lt_err_set("out of memory (%zu bytes for %s)", n, what);
    return p;
}

void *lt_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) lt_err_set("out of memory (%zu x %zu bytes for %s)", count, size, what);
    return p;
}

char *lt_str_escape(const char *s, char *out, size_t cap) {
    size_t o = 0;
    if (cap == 0) return out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[5];
        int n;
        if (c == '\\') n = snprintf(esc, sizeof esc, "\\\\");
        else if (c == '\n') n = snprintf(esc, sizeof esc, "\\n");
        else if (c == '\r') n = snprintf(esc, sizeof esc, "\\r");
        else if (c == '\t') n = snprintf(esc, sizeof esc, "\\t");
        else if (c < 0x20 || c == 0x7f) n = snprintf(esc, sizeof esc, "\\x%02x", c);
        else esc[0] = (char)c, n = 1;
        if (o + (size_t)n >= cap) break;
        memcpy(out + o, esc, (size_t)n);
        o += (size_t)n;
    }
    out[o] = 0;
    return out;
}

char *lt_str_printable(char *s) {
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
    return s;
}
