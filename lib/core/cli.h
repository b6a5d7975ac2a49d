/* cli.h: validated parsing of command-line numbers, shared by the tools. Each parser returns 0 on
 * success, or -1 with lt_err set to "--<opt>: expected ..., got '<text>'" (a usage error). */
#ifndef LT_CLI_H
#define LT_CLI_H

#include <stdint.h>

int lt_parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
int lt_parse_int(const char *opt, const char *s, int lo, int hi, int *out);
int lt_parse_u64(const char *opt, const char *s, uint64_t *out);
int lt_parse_float(const char *opt, const char *s, double lo, double hi, float *out);
/* Exactly n comma-separated floats, each in [lo, hi]. */
int lt_parse_floats(const char *opt, const char *s, int n, double lo, double hi, float *out);

#endif
