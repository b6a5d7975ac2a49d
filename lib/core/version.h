/* version.h: the version of the lt tools and library (stored in every cache and checkpoint). */
#ifndef LT_VERSION_H
#define LT_VERSION_H

#define LT_VERSION "0.1.0"

/* Exit codes shared by the tools (docs/architecture.md §3). */
enum { LT_EXIT_OK = 0, LT_EXIT_ERROR = 1, LT_EXIT_USAGE = 2, LT_EXIT_INTERRUPTED = 130 };

#endif
