/* comm.h: the processes of a data-parallel lt-train run and the collectives between them.
 *
 * Why it exists: `mpirun -np P lt-train ...` splits every global batch of G images over P
 * processes (G/P each) and must give the run one process gives with the same G, within float
 * summation tolerance (docs/architecture.md §7). The training step (train/step.c) and the run
 * (train/train.c) need only a handful of collectives for that; they call them through this
 * struct of function pointers, so nothing above it depends on MPI: lt_comm_single() is the
 * one-process communicator, lt_comm_mpi_open() (comm_mpi.c, built when MPI is found) the MPI one,
 * lt_comm_nccl_open() (comm_nccl.c, built when NCCL, MPI and CUDA are found) adds collectives on
 * GPU memory to it.
 *
 * Contracts. Every process calls the same collectives in the same order with the same sizes.
 * Buffers are host memory (the *_dev entries: device memory). Every result is identical, bit for bit, on every process (sums are
 * formed in one fixed order, never by an algorithm whose order depends on the rank), so the
 * processes' weights never drift apart. Each returns 0, or -1 with lt_err_set. */
#ifndef LT_TRAIN_COMM_H
#define LT_TRAIN_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct lt_comm lt_comm;
struct lt_comm {
    const char *name; /* "single", "mpi" */
    int rank, size;   /* this process, of `size` */
    int local_size;   /* processes of the run on this machine (the default thread count divides
                         the cores among them) */
    int local_rank;   /* this process among them (0..local_size-1): its GPU, on a GPU machine */
    void *impl;
    void (*destroy)(lt_comm *c);
    /* x (n) = the sum over the processes of x, added in rank order */
    int (*sum_f64)(lt_comm *c, double *x, int n);
    /* x (n) = the mean over the processes of x: (Σ x) / size, each element summed in one order */
    int (*mean_f32)(lt_comm *c, float *x, int64_t n);
    /* dst (size · bytes) = the src (bytes) of rank 0, then of rank 1, ... */
    int (*allgather)(lt_comm *c, void *dst, const void *src, size_t bytes);
    /* buf (bytes) = rank 0's buf */
    int (*bcast)(lt_comm *c, void *buf, size_t bytes);
    /* Ends every process of the run (an error inside the training loop, where the others wait in
     * a collective that this process will never join). Does not return. */
    void (*abort)(lt_comm *c, int code);

    /* Collectives on device memory (a GPU backend's buffers), enqueued on the stream the
     * communicator was opened with and finished when they return; NULL when the communicator has
     * none (the caller then goes through host memory). Results are identical on every process
     * (NCCL's reductions distribute one reduced copy), not in rank order: within float summation
     * tolerance of the host path. */
    /* xs[i] (ns[i]) = the mean over the processes of xs[i], for i < k, in one collective */
    int (*mean_f32_dev)(lt_comm *c, float *const *xs, const int64_t *ns, int k);
    /* dst (size · bytes) = the src (bytes) of rank 0, then of rank 1, ... */
    int (*allgather_dev)(lt_comm *c, void *dst, const void *src, size_t bytes);
    /* buf (bytes) = rank 0's buf */
    int (*bcast_dev)(lt_comm *c, void *buf, size_t bytes);
};

/* The communicator of a run of one process (rank 0 of 1; every collective is the identity). */
lt_comm *lt_comm_single(void);

/* 1 when this process was started by an MPI launcher (mpirun, mpiexec, srun) as one of several
 * processes; *rank, *size from the launcher's environment (read before MPI is initialised, e.g.
 * to let rank 0 alone lock the output folder). 0 (rank 0 of 1) otherwise. */
int lt_comm_launched(int *rank, int *size);

/* The MPI communicator over MPI_COMM_WORLD (initialises MPI, funnelled threads). NULL + lt_err
 * when this build has no MPI ("built without MPI") or MPI fails to start. Free with destroy(),
 * which finalises MPI. */
lt_comm *lt_comm_mpi_open(int *argc, char ***argv);

/* The NCCL communicator of a run on GPUs: the collectives of `host` (the MPI communicator, which
 * must outlive it: destroy() frees only the NCCL part) plus the device ones above, over NCCL on `stream` (a
 * cudaStream_t of the training backend) of the current CUDA device. Rank 0 creates the NCCL id
 * and broadcasts it through `host`. NULL + lt_err when this build has no NCCL ("built without
 * NCCL") or NCCL fails to start (host is then left as it was); every process then returns NULL
 * together, and *own says whether this process's own part failed (its lt_err names the cause:
 * the library missing here, NCCL's error) or another's did (lt_err says so, without the cause). */
lt_comm *lt_comm_nccl_open(lt_comm *host, void *stream, int *own);

/* Setup agreement: every process says whether its setup failed; returns how many did (the same
 * on every process), and *rank0_failed whether rank 0 was one of them (a failure on every
 * process is then reported by rank 0 alone). -1 when the collective itself fails. */
int lt_comm_agree(lt_comm *c, int failed, int *rank0_failed);

#endif
