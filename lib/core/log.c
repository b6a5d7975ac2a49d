/* log.c: stderr diagnostics and the progress display (see log.h). */
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_prog = "lt";
static int g_verb = 1;
static lt_progress *g_active; /* bar currently drawn on the terminal, cleared before messages */

static int g_gone; /* stderr's reader went away (EPIPE): print nothing more */

void lt_log_init(const char *prog, int verbosity) {
    g_prog = prog;
    g_verb = verbosity;
    /* `lt-train ... 2>&1 | head` must not kill a run when head exits: without SIGPIPE a write to
     * the closed pipe fails with EPIPE, and diagnostics simply stop (see stderr_ok). */
    signal(SIGPIPE, SIG_IGN);
}

/* Checks the last writes to stderr; after an EPIPE nothing more is printed (the run goes on). */
static void stderr_check(void) {
    if (ferror(stderr)) {
        if (errno == EPIPE) g_gone = 1;
        clearerr(stderr);
    }
}
int lt_log_verbosity(void) { return g_verb; }
const char *lt_log_prog(void) { return g_prog; }

double lt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void lt_human_bytes(double b, char *buf, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void clear_bar(void) {
    if (g_active && g_active->drawn) {
        fputs("\r\033[K", stderr);
        g_active->drawn = 0;
    }
}

/* One line "prog: kind message", with control bytes of the message (e.g. from a file name)
 * escaped so that it stays one line and cannot drive the terminal. */
static void vmsg(const char *kind, const char *fmt, va_list ap) {
    if (g_gone) return;
    char stack[2048], *msg = stack;
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(stack, sizeof stack, fmt, aq);
    va_end(aq);
    if (n >= (int)sizeof stack && (msg = malloc((size_t)n + 1)) != NULL)
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
    if (!msg) msg = stack;
    size_t cap = strlen(msg) * 4 + 1;
    char *esc = malloc(cap);
    clear_bar();
    fprintf(stderr, "%s: %s%s\n", g_prog, kind, esc ? lt_str_escape(msg, esc, cap) : msg);
    fflush(stderr);
    stderr_check();
    free(esc);
    if (msg != stack) free(msg);
}

#define LT_DEFINE_LOG(name, kind, minv)                                                          \
    void name(const char *fmt, ...) {                                                            \
        if (g_verb < (minv)) return;                                                             \
        va_list ap;                                                                              \
        va_start(ap, fmt);                                                                       \
        vmsg(kind, fmt, ap);                                                                     \
        va_end(ap);                                                                              \
    }
LT_DEFINE_LOG(lt_error, "error: ", 0)
LT_DEFINE_LOG(lt_warn, "warning: ", 1)
LT_DEFINE_LOG(lt_info, "", 1)
LT_DEFINE_LOG(lt_debug, "", 2)

static void fmt_eta(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e8) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(lt_progress *p, int final) {
    double el = lt_now() - p->t_start;
    double rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : -1;
    char etab[32];
    fmt_eta(etab, sizeof etab, final ? el : eta);
    double frac = p->total > 0 ? (double)p->done / p->total : 1;
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r\033[K%s: [%s] %lld/%lld %s  %.1f %s/s  %s %s", g_prog, bar,
                (long long)p->done, (long long)p->total, p->what, rate, p->what,
                final ? "elapsed" : "ETA", etab);
        p->drawn = 1;
        if (final) {
            fputc('\n', stderr);
            p->drawn = 0;
        }
    } else {
        fprintf(stderr, "%s: %lld/%lld %s (%.0f%%)  %.1f %s/s  %s %s\n", g_prog,
                (long long)p->done, (long long)p->total, p->what, 100 * frac, rate, p->what,
                final ? "elapsed" : "ETA", etab);
    }
    fflush(stderr);
    stderr_check();
}

void lt_progress_start(lt_progress *p, const char *what, int64_t total) {
    p->what = what;
    p->total = total;
    p->done = 0;
    p->t_start = p->t_last = lt_now();
    p->tty = isatty(2);
    p->drawn = 0;
    g_active = p;
}

void lt_progress_update(lt_progress *p, int64_t done) {
    p->done = done;
    if (g_verb < 1 || g_gone) return;
    double now = lt_now();
    double every = p->tty ? 0.2 : 10.0;
    if (now - p->t_last < every) return;
    p->t_last = now;
    draw(p, 0);
}

void lt_progress_end(lt_progress *p) {
    if (g_verb >= 1 && !g_gone) draw(p, 1);
    g_active = NULL;
}
