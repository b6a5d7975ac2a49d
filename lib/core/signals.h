/* signals.h: how the tools stop cleanly. SIGINT/SIGTERM set a flag the pipelines poll between
 * batches or steps (they then flush/checkpoint and exit 130); a second signal exits at once. */
#ifndef LT_SIGNALS_H
#define LT_SIGNALS_H

#include <signal.h>

/* Installs the handlers; returns the flag they set. */
volatile sig_atomic_t *lt_stop_on_signals(void);

#endif
