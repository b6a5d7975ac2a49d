/* cli.c: validated number parsing for the command lines (see cli.h). */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* strtoll/strtoull/strtod skip leading white space, and strtoull negates "-1" (also " -1") into
 * a huge value without an error: a number on our command lines must start with its first digit
 * (or a sign where negative values are allowed), so " 8" and " -1" are rejected, not reinterpreted. */
static int starts_like_number(const char *s, int allow_minus) {
    if (*s == '-' && allow_minus) s++;
    else if (*s == '+') s++;
    return (*s >= '0' && *s <= '9') || *s == '.';
}

int lt_parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!starts_like_number(s, 1) || *end || errno || v < lo || v > hi)
        return lt_err_set("--%s: expected an integer from %lld to %lld, got '%s'", opt,
                          (long long)lo, (long long)hi, s);
    *out = v;
    return 0;
}

int lt_parse_int(const char *opt, const char *s, int lo, int hi, int *out) {
    int64_t v;
    if (lt_parse_i64(opt, s, lo, hi, &v) != 0) return -1;
    *out = (int)v;
    return 0;
}

int lt_parse_u64(const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (!starts_like_number(s, 0))
        return lt_err_set("--%s: expected a non-negative integer, got '%s'", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return lt_err_set("--%s: expected a non-negative integer, got '%s'", opt, s);
    *out = v;
    return 0;
}

int lt_parse_bytes(const char *opt, const char *s, int64_t lo, int64_t *out) {
    const int64_t max = INT64_C(1) << 62;
    char *end;
    errno = 0;
    int ok = *s >= '0' && *s <= '9';
    unsigned long long v = ok ? strtoull(s, &end, 10) : 0;
    int shift = 0;
    if (ok && !errno) {
        switch (toupper((unsigned char)*end)) {
        case 'K': shift = 10; end++; break;
        case 'M': shift = 20; end++; break;
        case 'G': shift = 30; end++; break;
        case 'T': shift = 40; end++; break;
        }
        if (shift && *end == 'i') end++;
        if (toupper((unsigned char)*end) == 'B' && (shift || end[1] == 0)) end++;
        ok = *end == 0 && v <= (unsigned long long)(max >> shift);
    }
    if (!ok || errno || (int64_t)(v << shift) < lo || (int64_t)(v << shift) >= max)
        return lt_err_set("--%s: expected a size in bytes of at least %lld, optionally with a K, M, "
                          "G or T suffix (e.g. 512M, 8G), got '%s'", opt, (long long)lo, s);
    *out = (int64_t)(v << shift);
    return 0;
}

static int parse_one(const char *opt, const char *s, const char *whole, double lo, double hi,
                     float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!starts_like_number(s, 1) || end == s || *end || errno || !isfinite(v) || v < lo || v > hi)
        return lt_err_set("--%s: expected a number from %g to %g, got '%s'", opt, lo, hi, whole);
    *out = (float)v;
    return 0;
}

int lt_parse_float(const char *opt, const char *s, double lo, double hi, float *out) {
    return parse_one(opt, s, s, lo, hi, out);
}

int lt_parse_floats(const char *opt, const char *s, int n, double lo, double hi, float *out) {
    char buf[256];
    size_t len = strlen(s);
    if (len >= sizeof buf) return lt_err_set("--%s: value too long", opt);
    memcpy(buf, s, len + 1);
    char *p = buf;
    for (int i = 0; i < n; i++) {
        char *comma = strchr(p, ',');
        if ((i < n - 1) != (comma != NULL))
            return lt_err_set("--%s: expected %d comma-separated numbers, got '%s'", opt, n, s);
        if (comma) *comma = 0;
        if (parse_one(opt, p, s, lo, hi, &out[i]) != 0) {
            if (n > 1)
                lt_err_set("--%s: expected %d comma-separated numbers from %g to %g, got '%s'", opt,
                           n, lo, hi, s);
            return -1;
        }
        p = comma ? comma + 1 : p;
    }
    return 0;
}

/* ---- the command that continues a run ---- */

/* argc entries, then the terminating NULL; dropped entries become this marker, not NULL, so the
 * end stays where it is. */
static char dropped_mark[] = "";

char **lt_argv_copy(int argc, char **argv) {
    char **copy = lt_calloc((size_t)argc + 1, sizeof *copy, "command line");
    if (copy) memcpy(copy, argv, (size_t)argc * sizeof *argv);
    return copy;
}

void lt_argv_drop(char **copy, const char *word) {
    for (; *copy; copy++)
        if (*copy == word) *copy = dropped_mark;
}

int lt_argv_dropped(char *const *copy) {
    int n = 0;
    for (; *copy; copy++) n += *copy == dropped_mark;
    return n;
}

/* Whether word can be given to the shell as it is. */
static int shell_plain(const char *w) {
    if (!*w) return 0;
    for (; *w; w++)
        if (!isalnum((unsigned char)*w) && !strchr("_-./:=@%+,", *w)) return 0;
    return 1;
}

void lt_shell_join(char *const *argv, char *buf, size_t n) {
    size_t k = 0;
    if (n == 0) return;
    buf[0] = 0;
    int words = 0;
    for (int i = 0; argv[i] && k + 1 < n; i++) {
        const char *w = argv[i];
        if (w == dropped_mark) continue;
        if (words++) buf[k++] = ' ';
        if (shell_plain(w)) {
            for (; *w && k + 1 < n; w++) buf[k++] = *w;
        } else { /* '...' with each ' written as '\'' */
            if (k + 1 < n) buf[k++] = '\'';
            for (; *w && k + 4 < n; w++) {
                if (*w == '\'') {
                    memcpy(buf + k, "'\\''", 4);
                    k += 4;
                } else {
                    buf[k++] = *w;
                }
            }
            if (k + 1 < n) buf[k++] = '\'';
        }
        buf[k < n ? k : n - 1] = 0;
    }
    buf[k < n ? k : n - 1] = 0;
}
