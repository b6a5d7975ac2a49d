/* comm_mpi.c: the MPI communicator of a data-parallel lt-train run (see comm.h), over
 * MPI_COMM_WORLD. Built with MPI when the Makefile finds it (LT_HAVE_MPI); otherwise
 * lt_comm_mpi_open says the build has none.
 *
 * Identical results on every rank: sums of doubles are gathered and added in rank order on each
 * process; the gradient mean is a reduce-scatter (each element summed by exactly one rank) and an
 * allgather of the sums, which moves as many bytes as a ring allreduce. */
#include "train/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#if LT_HAVE_MPI
#include <mpi.h>

typedef struct {
    double *gather; /* (size, cap_f64) for sum_f64 */
    int cap_f64;
    float *part;    /* (chunk) this rank's share of a mean_f32 */
    int64_t cap_part;
} mpi_state;

static int mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return lt_err_set("MPI: %s failed: %s", what, msg);
}

static int mpi_sum_f64(lt_comm *c, double *x, int n) {
    mpi_state *s = c->impl;
    if (n > s->cap_f64) {
        double *g = realloc(s->gather, (size_t)c->size * (size_t)n * sizeof *g);
        if (!g) return lt_err_set("out of memory");
        s->gather = g;
        s->cap_f64 = n;
    }
    int rc = MPI_Allgather(x, n, MPI_DOUBLE, s->gather, n, MPI_DOUBLE, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "allgather");
    for (int i = 0; i < n; i++) {
        double v = 0.0;
        for (int r = 0; r < c->size; r++) v += s->gather[(size_t)r * n + i];
        x[i] = v;
    }
    return 0;
}

/* MPI counts are int: collectives over more elements go in pieces of at most this many. */
#define MPI_PIECE ((int64_t)1 << 28)

static int mpi_mean_f32(lt_comm *c, float *x, int64_t n) {
    mpi_state *s = c->impl;
    const int P = c->size;
    for (int64_t off = 0; off < n; off += MPI_PIECE * P) {
        int64_t len = n - off < MPI_PIECE * P ? n - off : MPI_PIECE * P;
        int64_t chunk = (len + P - 1) / P; /* elements per rank; the last rank's may be short */
        if (chunk > s->cap_part) {
            float *p = realloc(s->part, (size_t)chunk * sizeof *p);
            if (!p) return lt_err_set("out of memory");
            s->part = p;
            s->cap_part = chunk;
        }
        int counts[P], displs[P];
        for (int r = 0; r < P; r++) {
            int64_t a = (int64_t)r * chunk, b = a + chunk < len ? a + chunk : len;
            counts[r] = (int)(b > a ? b - a : 0);
            displs[r] = (int)(a < len ? a : len);
        }
        int rc = MPI_Reduce_scatter(x + off, s->part, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "reduce-scatter");
        const float inv = 1.0f / (float)P;
        for (int i = 0; i < counts[c->rank]; i++) s->part[i] *= inv;
        rc = MPI_Allgatherv(s->part, counts[c->rank], MPI_FLOAT, x + off, counts, displs,
                            MPI_FLOAT, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "allgather");
    }
    return 0;
}

static int mpi_allgather(lt_comm *c, void *dst, const void *src, size_t bytes) {
    (void)c;
    if (bytes > (size_t)INT32_MAX) return lt_err_set("MPI: allgather of %zu bytes", bytes);
    int rc = MPI_Allgather(src, (int)bytes, MPI_BYTE, dst, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "allgather");
}

static int mpi_bcast(lt_comm *c, void *buf, size_t bytes) {
    (void)c;
    for (size_t off = 0; off < bytes; off += (size_t)MPI_PIECE) {
        size_t len = bytes - off < (size_t)MPI_PIECE ? bytes - off : (size_t)MPI_PIECE;
        int rc = MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast");
    }
    return 0;
}

static void mpi_abort(lt_comm *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static void mpi_destroy(lt_comm *c) {
    mpi_state *s = c->impl;
    free(s->gather);
    free(s->part);
    free(s);
    free(c);
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

lt_comm *lt_comm_mpi_open(int *argc, char ***argv) {
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        mpi_fail(rc, "initialisation");
        return NULL;
    }
    /* errors come back as return codes, to be reported in lt's words */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    lt_comm *c = calloc(1, sizeof *c);
    mpi_state *s = calloc(1, sizeof *s);
    if (!c || !s) {
        free(c);
        free(s);
        lt_err_set("out of memory");
        return NULL;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    MPI_Comm local;
    c->local_size = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_size(local, &c->local_size);
        MPI_Comm_rank(local, &c->local_rank);
        MPI_Comm_free(&local);
    }
    c->name = "mpi";
    c->impl = s;
    c->destroy = mpi_destroy;
    c->sum_f64 = mpi_sum_f64;
    c->mean_f32 = mpi_mean_f32;
    c->allgather = mpi_allgather;
    c->bcast = mpi_bcast;
    c->abort = mpi_abort;
    return c;
}

#else

lt_comm *lt_comm_mpi_open(int *argc, char ***argv) {
    (void)argc, (void)argv;
    lt_err_set("this lt-train was built without MPI: install Open MPI (scripts/install-deps.sh) "
               "and rebuild to train over several processes");
    return NULL;
}

#endif
