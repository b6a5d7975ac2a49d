/* cli.h: validated parsing of command-line numbers, shared by the tools. Each parser returns 0 on
 * success, or -1 with lt_err set to "--<opt>: expected ..., got '<text>'" (a usage error). */
#ifndef LT_CLI_H
#define LT_CLI_H

#include <stddef.h>
#include <stdint.h>

int lt_parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
int lt_parse_int(const char *opt, const char *s, int lo, int hi, int *out);
int lt_parse_u64(const char *opt, const char *s, uint64_t *out);
int lt_parse_float(const char *opt, const char *s, double lo, double hi, float *out);
/* A byte count: a non-negative integer, optionally followed by K, M, G or T (binary multiples:
 * 1K = 1024; KiB/MiB/GiB/TiB and a trailing B are accepted too), at least lo bytes and below
 * 2^62. "--<opt>: expected a size ..." otherwise. */
int lt_parse_bytes(const char *opt, const char *s, int64_t lo, int64_t *out);
/* Exactly n comma-separated floats, each in [lo, hi]. */
int lt_parse_floats(const char *opt, const char *s, int n, double lo, double hi, float *out);

/* The command that continues an interrupted run, when the run was started with words (such as
 * --overwrite) that a rerun must not repeat. lt_argv_copy: argv in its original order, NULL-
 * terminated, before getopt_long permutes it (NULL + lt_err on OOM); lt_argv_drop: removes the
 * entry that is the very string word (getopt_long's argv[optind - 1]); lt_argv_dropped: how many
 * were removed. */
char **lt_argv_copy(int argc, char **argv);
void lt_argv_drop(char **copy, const char *word);
int lt_argv_dropped(char *const *copy);
/* argv (NULL-terminated; dropped entries skipped) as one shell command line, each word quoted where a
 * POSIX shell needs it, in buf (truncated to n). */
void lt_shell_join(char *const *argv, char *buf, size_t n);

#endif
