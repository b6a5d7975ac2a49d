/* threads.c: thread-count control for OpenMP and OpenBLAS (see threads.h). */
#include "threads.h"

#include <omp.h>
#include <unistd.h>

/* OpenBLAS's own setter; declared here to avoid depending on which cblas.h variant is installed. */
void openblas_set_num_threads(int num_threads);

static int g_threads = 0;

int lt_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int lt_threads_set(int n) {
    if (n <= 0) n = lt_cpu_count();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

int lt_threads_get(void) { return g_threads > 0 ? g_threads : lt_cpu_count(); }
