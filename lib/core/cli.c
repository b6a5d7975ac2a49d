/* cli.c: validated number parsing for the command lines (see cli.h). */
#include "cli.h"

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
