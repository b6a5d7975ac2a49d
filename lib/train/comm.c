/* comm.c: the one-process communicator, the launcher's environment and the setup agreement
 * (see comm.h). */
#include "train/comm.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static void single_destroy(lt_comm *c) { (void)c; }
static int single_sum_f64(lt_comm *c, double *x, int n) {
    (void)c, (void)x, (void)n;
    return 0;
}
static int single_mean_f32(lt_comm *c, float *x, int64_t n) {
    (void)c, (void)x, (void)n;
    return 0;
}
static int single_allgather(lt_comm *c, void *dst, const void *src, size_t bytes) {
    (void)c;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return 0;
}
static int single_bcast(lt_comm *c, void *buf, size_t bytes) {
    (void)c, (void)buf, (void)bytes;
    return 0;
}
static void single_abort(lt_comm *c, int code) {
    (void)c;
    exit(code);
}

lt_comm *lt_comm_single(void) {
    static lt_comm one = {.name = "single", .rank = 0, .size = 1, .local_size = 1,
                          .destroy = single_destroy, .sum_f64 = single_sum_f64,
                          .mean_f32 = single_mean_f32, .allgather = single_allgather,
                          .bcast = single_bcast, .abort = single_abort};
    return &one;
}

/* A non-negative integer from the first of names that is set, or -1. */
static long env_int(const char *const *names) {
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (!v || !*v) continue;
        char *end;
        long x = strtol(v, &end, 10);
        if (*end == 0 && x >= 0) return x;
    }
    return -1;
}

int lt_comm_launched(int *rank, int *size) {
    /* Open MPI, then MPICH/Hydra and Slurm's PMI, then PMIx */
    static const char *const sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", NULL};
    static const char *const ranks[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", NULL};
    long s = env_int(sizes), r = env_int(ranks);
    *rank = 0;
    *size = 1;
    if (s <= 1 || r < 0 || r >= s) return 0;
    *rank = (int)r;
    *size = (int)s;
    return 1;
}

int lt_comm_agree(lt_comm *c, int failed, int *rank0_failed) {
    double v[2] = {failed ? 1.0 : 0.0, failed && c->rank == 0 ? 1.0 : 0.0};
    if (c->sum_f64(c, v, 2) != 0) return -1;
    *rank0_failed = v[1] > 0;
    return (int)v[0];
}
