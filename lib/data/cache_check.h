/* cache_check.h: reads an existing cache's structure in a child process before the tools use it.
 *
 * libhdf5 can crash or loop forever on a damaged file (its own memory bugs; lt cannot fix them).
 * lt_cache_check_isolated() forks; the child opens the file with the normal reader
 * (lt_cache_open: every attribute, shape and table the reader loads at open) and then walks every
 * dataset of the file, with the whole chunk index of each chunked one, without reading the data
 * itself. A crash or an endless loop then happens in the child, and the tool reports it as an
 * error naming the file instead of dying by a signal (or hanging) hours into a run.
 *
 * Call it while no other thread of the process is inside HDF5 or lt's cache code: the child
 * starts with only the calling thread, and a lock held by another thread at fork() time would
 * never be released in the child (the check would then end as a timeout). The tools call it from
 * main() before starting threads, or (lt-embed reusing CACHE.partial) while their worker pools
 * are idle. The child uses no OpenMP, OpenBLAS or CUDA and never touches stdio; it leaves with
 * _exit(), so no atexit handler runs and no stdio buffer of the parent is flushed twice. */
#ifndef LT_CACHE_CHECK_H
#define LT_CACHE_CHECK_H

/* The default time limit of the check, in seconds. Measured on a 2-core machine: a cache of 4000
 * images x 2 views checks in about 10 ms (mostly fork and open); the cost grows linearly with the
 * images (tables read at open) and the chunks (an index of 200000 chunks, the /images/bytes of a
 * 200 GB cache, adds 0.1 s). 600 s is over a thousand times what such a cache needs from a warm
 * disk and leaves room for far larger caches on cold, slow storage; only a damaged file that
 * sends libhdf5 into an endless loop waits this long. */
#define LT_CACHE_CHECK_DEFAULT_TIMEOUT_S 600.0

/* Environment variable overriding the limit (seconds, > 0), e.g. for tests. */
#define LT_CACHE_CHECK_TIMEOUT_ENV "LT_CACHE_CHECK_TIMEOUT"

/* Test hook, read only by the child: "segv", "abort", "hang" and "exit" make the child raise
 * SIGSEGV, abort, wait until killed, or exit with status 3 and no report; any other non-empty
 * value ("error") makes it report an error. Tests use it to prove the parent's handling of each
 * outcome whatever the file; unset in normal use. */
#define LT_CACHE_CHECK_SELFTEST_ENV "LT_CACHE_CHECK_SELFTEST"

/* Checks path in a child process, giving up after timeout_s seconds (<= 0: the value of
 * $LT_CACHE_CHECK_TIMEOUT, else LT_CACHE_CHECK_DEFAULT_TIMEOUT_S). 0: the child read everything.
 * -1 + lt_err naming the file: the reader's own error message, or that libhdf5 crashed or did
 * not finish in time (the file is damaged), or that the check could not run (fork failed, bad
 * $LT_CACHE_CHECK_TIMEOUT). */
int lt_cache_check_isolated(const char *path, double timeout_s);

/* Whether path is an lt cache at all, of any version, finished or not, damaged or not, as long as
 * HDF5 reads its root attribute format = "lt-cache" (or "lt-cache-part", a part of a sharded
 * run) (read in a child process, like the check
 * above). lt-embed --overwrite replaces such a file and nothing else. 0: it is one; -1 + lt_err
 * saying why not. */
int lt_cache_is_lt_file_isolated(const char *path);

#endif
