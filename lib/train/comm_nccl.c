/* comm_nccl.c: the collectives of a data-parallel lt-train run on GPUs over NCCL (see comm.h).
 *
 * Why it exists: with the student on GPUs, averaging the gradients through host memory (download,
 * MPI, upload: two PCIe crossings of every gradient per step) costs more than the step; NCCL
 * moves them GPU to GPU (NVLink, or PCIe / InfiniBand between machines) the way llm.c does. The
 * host collectives (setup agreement, sums of doubles, state broadcast) stay those of the MPI
 * communicator this one wraps; MPI also carries the NCCL id from rank 0 to the others, so there is
 * no second launcher. Built when the Makefile finds NCCL, MPI and CUDA (LT_HAVE_NCCL); otherwise
 * lt_comm_nccl_open says the build has none.
 *
 * NCCL is loaded when a run first asks for it (dlopen of libnccl.so.2: the library's folder at
 * build time, then the loader's usual search), not linked: lt-train then starts on machines
 * without NCCL (a CPU run, one GPU), and NCCL is a few hundred megabytes that only data-parallel
 * GPU runs need. The types and constants come from nccl.h at build time.
 *
 * Failures during setup are agreed over MPI before and after ncclCommInitRank, so no process
 * waits in a collective the others left; a process that fails inside ncclCommInitRank itself
 * (NCCL's own bootstrap) may still leave the others blocked there until the launcher ends them.
 *
 * The mean of many gradient tensors is one NCCL group of ncclAvg all-reduces on the backend's
 * stream, waited for before returning (the optimizer reads the results next on that stream, but
 * an error must surface here). */
#include "train/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#if LT_HAVE_NCCL
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

/* ---- the library, loaded at the first use ---- */

#ifndef LT_NCCL_LIBDIR
#define LT_NCCL_LIBDIR ""
#endif

static struct {
    int tried, ok;
    char why[512];
    const char *(*GetErrorString)(ncclResult_t);
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*CommAbort)(ncclComm_t);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                              ncclComm_t, cudaStream_t);
    ncclResult_t (*AllGather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t,
                              cudaStream_t);
    ncclResult_t (*Broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t,
                              cudaStream_t);
} nc;

/* 0, or -1 + lt_err when libnccl.so.2 or one of its functions cannot be found */
static int nccl_load(void) {
    if (!nc.tried) {
        nc.tried = 1;
        void *h = NULL;
        char path[1024];
        if (LT_NCCL_LIBDIR[0]) {
            snprintf(path, sizeof path, "%s/libnccl.so.2", LT_NCCL_LIBDIR);
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        }
        if (!h) h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *e = dlerror();
            snprintf(nc.why, sizeof nc.why, "%s", e ? e : "not found");
        } else {
            static const char *const names[] = {
                "ncclGetErrorString", "ncclGetUniqueId", "ncclCommInitRank", "ncclCommAbort",
                "ncclCommDestroy", "ncclGroupStart", "ncclGroupEnd", "ncclAllReduce",
                "ncclAllGather", "ncclBroadcast"};
            void **slots[] = {(void **)&nc.GetErrorString, (void **)&nc.GetUniqueId,
                              (void **)&nc.CommInitRank, (void **)&nc.CommAbort,
                              (void **)&nc.CommDestroy, (void **)&nc.GroupStart,
                              (void **)&nc.GroupEnd, (void **)&nc.AllReduce,
                              (void **)&nc.AllGather, (void **)&nc.Broadcast};
            nc.ok = 1;
            for (size_t i = 0; i < sizeof names / sizeof names[0] && nc.ok; i++)
                if (!(*slots[i] = dlsym(h, names[i]))) {
                    snprintf(nc.why, sizeof nc.why, "libnccl.so.2 has no %s", names[i]);
                    nc.ok = 0;
                }
            /* ncclAvg, the gradient mean's operation, came with NCCL 2.10 */
            ncclResult_t (*get_version)(int *) =
                (ncclResult_t(*)(int *))dlsym(h, "ncclGetVersion");
            int v = 0;
            if (nc.ok && (!get_version || get_version(&v) != ncclSuccess || v < 21000)) {
                snprintf(nc.why, sizeof nc.why, "NCCL %d.%d found, 2.10 or later needed",
                         v / 10000, v / 100 % 100);
                nc.ok = 0;
            }
        }
    }
    if (nc.ok) return 0;
    return lt_err_set("NCCL: could not load libnccl.so.2 (%s): data-parallel training on GPUs "
                      "needs NCCL; install it (the libnccl2 package, or the nvidia-nccl wheel) "
                      "or put its folder on LD_LIBRARY_PATH",
                      nc.why);
}

typedef struct {
    lt_comm *host;       /* the MPI communicator, whose host collectives are ours */
    ncclComm_t nccl;
    cudaStream_t stream;
} nccl_state;

static int nccl_fail(ncclResult_t r, const char *what) {
    return lt_err_set("NCCL: %s failed: %s", what, nc.GetErrorString(r));
}

static int wait_stream(nccl_state *s, const char *what) {
    cudaError_t e = cudaStreamSynchronize(s->stream);
    return e == cudaSuccess ? 0 : lt_err_set("NCCL: %s: %s", what, cudaGetErrorString(e));
}

#define HOST(c) (((nccl_state *)(c)->impl)->host)

static int n_sum_f64(lt_comm *c, double *x, int n) { return HOST(c)->sum_f64(HOST(c), x, n); }
static int n_mean_f32(lt_comm *c, float *x, int64_t n) { return HOST(c)->mean_f32(HOST(c), x, n); }
static int n_allgather(lt_comm *c, void *dst, const void *src, size_t bytes) {
    return HOST(c)->allgather(HOST(c), dst, src, bytes);
}
static int n_bcast(lt_comm *c, void *buf, size_t bytes) {
    return HOST(c)->bcast(HOST(c), buf, bytes);
}
static void n_abort(lt_comm *c, int code) { HOST(c)->abort(HOST(c), code); }

static int n_mean_f32_dev(lt_comm *c, float *const *xs, const int64_t *ns, int k) {
    nccl_state *s = c->impl;
    ncclResult_t r = nc.GroupStart();
    for (int i = 0; i < k && r == ncclSuccess; i++)
        r = nc.AllReduce(xs[i], xs[i], (size_t)ns[i], ncclFloat32, ncclAvg, s->nccl, s->stream);
    ncclResult_t r2 = nc.GroupEnd();
    if (r != ncclSuccess) return nccl_fail(r, "all-reduce (gradient mean)");
    if (r2 != ncclSuccess) return nccl_fail(r2, "all-reduce (gradient mean)");
    return wait_stream(s, "gradient mean");
}

static int n_allgather_dev(lt_comm *c, void *dst, const void *src, size_t bytes) {
    nccl_state *s = c->impl;
    ncclResult_t r = nc.AllGather(src, dst, bytes, ncclUint8, s->nccl, s->stream);
    return r != ncclSuccess ? nccl_fail(r, "all-gather") : wait_stream(s, "all-gather");
}

static int n_bcast_dev(lt_comm *c, void *buf, size_t bytes) {
    nccl_state *s = c->impl;
    ncclResult_t r = nc.Broadcast(buf, buf, bytes, ncclUint8, 0, s->nccl, s->stream);
    return r != ncclSuccess ? nccl_fail(r, "broadcast") : wait_stream(s, "broadcast");
}

static void n_destroy(lt_comm *c) {
    nccl_state *s = c->impl;
    nc.CommDestroy(s->nccl);
    free(s);
    free(c);
}

lt_comm *lt_comm_nccl_open(lt_comm *host, void *stream, int *own) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r = ncclSuccess;
    nccl_state *s = calloc(1, sizeof *s);
    lt_comm *c = calloc(1, sizeof *c);
    /* rank 0 makes the id; everyone learns whether that (and every allocation and the library's
     * load) worked, then the id itself: no process enters ncclCommInitRank unless all of them
     * will */
    double bad = !s || !c ? 2 : nccl_load() != 0 ? 3 : 0, mine = bad;
    *own = 0;
    if (bad == 0 && host->rank == 0 && (r = nc.GetUniqueId(&id)) != ncclSuccess) bad = mine = 1;
    if (host->sum_f64(host, &bad, 1) != 0 || bad > 0) {
        if (mine == 2) lt_err_set("out of memory");
        else if (mine == 3) { /* lt_err says why */ }
        else if (mine == 1) nccl_fail(r, "ncclGetUniqueId");
        else if (bad > 0) lt_err_set("NCCL: another process could not set up the communicator");
        *own = mine != 0;
        free(s);
        free(c);
        return NULL;
    }
    if (host->bcast(host, &id, sizeof id) != 0) {
        *own = 1;
        free(s);
        free(c);
        return NULL;
    }
    r = nc.CommInitRank(&s->nccl, host->size, id, host->rank);
    /* agree: a rank whose init failed must not leave the others waiting in a collective */
    bad = r != ncclSuccess;
    double any = bad;
    if (host->sum_f64(host, &any, 1) != 0 || any > 0) {
        *own = bad > 0;
        if (bad) nccl_fail(r, "ncclCommInitRank");
        else {
            lt_err_set("NCCL: another process could not join the communicator");
            nc.CommAbort(s->nccl); /* its peers are gone: destroy could wait for them */
        }
        free(s);
        free(c);
        return NULL;
    }
    s->host = host;
    s->stream = (cudaStream_t)stream;
    *c = *host; /* name, rank, size, local_size */
    c->name = "nccl";
    c->impl = s;
    c->destroy = n_destroy;
    c->sum_f64 = n_sum_f64;
    c->mean_f32 = n_mean_f32;
    c->allgather = n_allgather;
    c->bcast = n_bcast;
    c->abort = n_abort;
    c->mean_f32_dev = n_mean_f32_dev;
    c->allgather_dev = n_allgather_dev;
    c->bcast_dev = n_bcast_dev;
    return c;
}

#else

lt_comm *lt_comm_nccl_open(lt_comm *host, void *stream, int *own) {
    (void)host, (void)stream;
    *own = 0; /* the same on every process: rank 0 says it */
    lt_err_set("this lt-train was built without NCCL (it needs CUDA, MPI and NCCL at build time): "
               "data-parallel training on GPUs is not available; train on the CPU (--device cpu)");
    return NULL;
}

#endif
