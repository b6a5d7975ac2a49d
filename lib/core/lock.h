/* lock.h: one writer per output. Two lt-train runs on one OUT, or two lt-embed runs on one
 * CACHE, would each believe they own the files and silently replace each other's work; so each
 * tool takes an exclusive lock before it touches what it writes, and a second run is refused at
 * once, naming the PID of the holder.
 *
 * The lock is flock(2) on a small file (OUT/lt-train.lock, CACHE.lock) that holds the holder's
 * PID as text. The kernel drops the lock when its holder dies by any means (kill -9, an OOM kill),
 * so a lock file left by a dead process never blocks: the next run takes it over. The file is
 * removed on release; a run that finds the path replaced between open and lock tries again, so
 * two runs can never both hold it. */
#ifndef LT_LOCK_H
#define LT_LOCK_H

typedef struct lt_lock lt_lock;

/* Takes the lock file path for `what` (a phrase naming the output, e.g. "the run in out/"),
 * creating it. Refused (-1 + lt_err "... is in use by <tool> (PID n) ...") when another process
 * holds it; -1 + lt_err on any other failure (e.g. the folder is not writable). */
int lt_lock_take(const char *path, const char *what, lt_lock **out);
/* Removes the lock file and releases the lock. NULL is a no-op. */
void lt_lock_release(lt_lock *l);

/* lt_lock_take for the rest of the process: released (and its file removed) at exit(). One per
 * process; the tools call it from main(). */
int lt_lock_hold(const char *path, const char *what);

#endif
