/* signals.c: SIGINT/SIGTERM handling shared by the tools (see signals.h). */
#include "core/signals.h"

#include <string.h>
#include <unistd.h>

#include "core/version.h"

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    if (g_stop) _exit(LT_EXIT_INTERRUPTED); /* second Ctrl-C: leave at once */
    g_stop = 1;
}

volatile sig_atomic_t *lt_stop_on_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return &g_stop;
}
