/* threads.h: one place that sets how many threads lt uses (OpenMP loops and OpenBLAS GEMMs),
 * so the two never oversubscribe the machine. */
#ifndef LT_THREADS_H
#define LT_THREADS_H

/* n <= 0 means "all cores". Returns the number in effect. */
int lt_threads_set(int n);
int lt_threads_get(void);
/* Number of online CPU cores. */
int lt_cpu_count(void);

#endif
