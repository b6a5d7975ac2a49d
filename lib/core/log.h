/* log.h: diagnostics on stderr with a verbosity level, and a progress display.
 *
 * Levels: 0 = quiet (-q: errors only), 1 = normal (warnings, progress, summary), 2 = verbose (-v).
 * The progress display redraws one line when stderr is a terminal and prints a plain line every few
 * seconds otherwise, so logs of batch jobs stay readable. */
#ifndef LT_LOG_H
#define LT_LOG_H

#include <stdint.h>
#include "error.h"

void lt_log_init(const char *prog, int verbosity);
int lt_log_verbosity(void);
const char *lt_log_prog(void);

void lt_error(const char *fmt, ...) LT_PRINTF(1, 2);  /* "prog: error: ..." always shown */
void lt_warn(const char *fmt, ...) LT_PRINTF(1, 2);   /* "prog: warning: ..." unless -q */
void lt_info(const char *fmt, ...) LT_PRINTF(1, 2);   /* "prog: ..." unless -q */
void lt_debug(const char *fmt, ...) LT_PRINTF(1, 2);  /* only with -v */

double lt_now(void); /* monotonic seconds */
/* A byte count for people: "812 B", "4.2 MiB", up to TiB. */
void lt_human_bytes(double bytes, char *buf, size_t n);

typedef struct {
    const char *what;   /* unit, e.g. "images" */
    int64_t total;
    int64_t done;
    double t_start, t_last;
    int tty;            /* stderr is a terminal */
    int drawn;          /* a bar line is on screen and must be cleared before other output */
} lt_progress;

void lt_progress_start(lt_progress *p, const char *what, int64_t total);
void lt_progress_update(lt_progress *p, int64_t done); /* rate-limited redraw */
void lt_progress_end(lt_progress *p);                  /* final line, newline */

#endif
