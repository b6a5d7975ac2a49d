/* optim_multi_cuda.cu: the multi-tensor optimizer step of optim_multi.h on the device.
 *
 * Why it exists: see optim_multi.h. The kernels walk two tables built once: one row per
 * parameter (its pointers, length, decay flag, its range of chunks) and one row per chunk (the
 * parameter and the 64 Ki-element slice it covers), so every kernel of the step is one launch
 * over all parameters.
 *
 * Arithmetic, and why the results equal the per-tensor path's bit for bit: a chunk's Σ x² is
 * lt_block_sumsq (optim_rules.h), the function the per-tensor sumsq_chunks calls, over as many
 * threads (MT_THREADS = SUMSQ_THREADS); a parameter's sum adds its chunks' partials in index
 * order from 0.0 on one thread (as cuda_sum_in_order), the total norm adds the parameters' sums
 * in parameter order (as lt_clip_grad_norm); the scalars are optim_rules.h's (double, rounded
 * once) and the element updates too. No atomics: every result has one writer and a fixed order.
 *
 * LT_CUDA_EMULATE: tests/unit/test_optim_emu.cpp compiles this file as host C++ through
 * tests/unit/cuda_emu.h and checks the step against optim.c on the CPU backend. */
#include "nn/optim_multi.h"

#include "nn/optim_rules.h"

extern "C" {
#include "core/error.h"
}

#ifndef LT_CUDA_EMULATE
#include <cuda_runtime.h>
#define LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MT_CHUNK 65536 /* elements per chunk: the CPU's and sumsq_many's chunk */
#ifndef MT_THREADS
#define MT_THREADS 256 /* threads per chunk: sumsq_chunks' SUMSQ_THREADS (a power of two) */
#endif

/* one parameter as the kernels see it */
typedef struct {
    float *w, *g, *m, *v;
    int64_t n;
    int c0, c1;   /* its chunks [c0, c1) */
    int decay;
    float sgd_wd; /* SGD: (float) weight decay for the decay group, else 0 */
} mt_param;

/* one chunk: elements [a, a + len) of parameter p */
typedef struct {
    int p;
    int64_t a, len;
} mt_chunk;

/* the step's device state */
typedef struct {
    lt_mt_io io; /* the inputs as copied up; the results before they go down */
    int ok;      /* update: loss and gnorm finite */
    int clip;    /* multiply the gradients by coef */
    float coef;
} mt_state;

struct lt_mt {
    cudaStream_t stream;
    lt_mt_config cfg;
    int n, nc;
    mt_param *params; /* (n) device */
    mt_chunk *chunks; /* (nc) device */
    double *part;     /* (nc) device: per-chunk sums */
    double *pss, *gss; /* (n) device: per-parameter Σ p², Σ g² */
    float *scale, *fwd; /* (n) device: LARS factors */
    mt_state *st;     /* device */
    lt_mt_io *io;     /* pinned host */
};

static int ck(cudaError_t e, const char *what) {
    return e == cudaSuccess ? 0
                            : lt_err_set("optimizer (GPU): %s: %s", what, cudaGetErrorString(e));
}

/* ---- kernels ---- */

/* part[c] = Σ x² over chunk c, x = w (which 1) or g (which 0) of the chunk's parameter; one block
 * (MT_THREADS) per chunk */
__global__ void mt_sumsq_part(const mt_param *ps, const mt_chunk *cs, int which, double *part) {
    __shared__ double sh[MT_THREADS];
    const mt_chunk ch = cs[blockIdx.x];
    const float *x = (which ? ps[ch.p].w : ps[ch.p].g) + ch.a;
    const double s = lt_block_sumsq(x, ch.len, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* tot[i] = Σ of parameter i's chunk sums in order; one thread per parameter */
__global__ void mt_sumsq_total(const mt_param *ps, int n, const double *part, double *tot) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    double t = 0.0;
    for (int c = ps[i].c0; c < ps[i].c1; c++) t += part[c];
    tot[i] = t;
}

/* the gate and the clipping factor, one thread: loss, gnorm, ok, clip, coef */
__global__ void mt_norm(mt_state *st, const double *loss, const double *gss, int n) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const double l = *loss;
    st->io.loss = l;
    st->ok = st->clip = 0;
    st->io.gnorm = 0.0;
    if (isfinite(l)) {
        double ss = 0.0;
        for (int i = 0; i < n; i++) ss += gss[i];
        const double total = sqrt(ss);
        st->io.gnorm = total;
        st->ok = isfinite(total);
        st->clip = lt_clip_factor(total, st->io.clip, &st->coef);
    }
    st->io.updated = st->ok;
}

/* g *= coef over one chunk per block, when the gate and clipping say so */
__global__ void mt_clip(const mt_param *ps, const mt_chunk *cs, const mt_state *st) {
    if (!st->ok || !st->clip) return;
    const mt_chunk ch = cs[blockIdx.x];
    float *g = ps[ch.p].g + ch.a;
    const float c = st->coef;
    for (int64_t i = threadIdx.x; i < ch.len; i += blockDim.x) g[i] = LT_OR_MUL(g[i], c);
}

/* LARS: each parameter's factors (lt_lars_factors; the no-decay group: 1, 0) */
__global__ void mt_lars(const mt_param *ps, int n, const double *pss, const double *gss,
                        double wd, double trust, double eps, float *scale, float *fwd) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    lt_lars_factors(pss[i], gss[i], ps[i].decay ? wd : 0.0, trust, eps, &scale[i], &fwd[i]);
}

/* the update of one chunk per block */
__global__ void mt_update(const mt_param *ps, const mt_chunk *cs, const mt_state *st, int kind,
                          float mu, const float *scale, const float *fwd) {
    if (!st->ok) return;
    const mt_chunk ch = cs[blockIdx.x];
    const mt_param p = ps[ch.p];
    const int64_t a = ch.a, e = ch.a + ch.len;
    const float lr = st->io.lr;
    const int first = st->io.first;
    if (kind == LT_MT_ADAMW) {
        const lt_adamw_scalars k = st->io.adam[p.decay ? 1 : 0];
        for (int64_t i = a + threadIdx.x; i < e; i += blockDim.x)
            lt_adamw_elem(&p.w[i], p.g[i], &p.m[i], &p.v[i], &k);
        return;
    }
    const float s = kind == LT_MT_LARS ? scale[ch.p] : 1.0f;
    const float wd = kind == LT_MT_LARS ? fwd[ch.p] : p.sgd_wd;
    for (int64_t i = a + threadIdx.x; i < e; i += blockDim.x)
        lt_momentum_elem(&p.w[i], p.g[i], p.m ? &p.m[i] : NULL, p.m != NULL, s, wd, mu, lr,
                         first);
}

/* ---- the step ---- */

static unsigned per_param_blocks(int n) { return (unsigned)((n + 127) / 128); }

/* tot[i] = Σ x² of every parameter (x = w when which, else g) */
static void sumsq_all(lt_mt *mt, int which, double *tot) {
    LAUNCH(mt_sumsq_part, (unsigned)mt->nc, MT_THREADS, mt->stream, mt->params, mt->chunks, which,
           mt->part);
    LAUNCH(mt_sumsq_total, per_param_blocks(mt->n), 128, mt->stream, mt->params, mt->n, mt->part,
           tot);
}

extern "C" int lt_mt_step(lt_mt *mt, const double *loss_dev) {
    cudaStream_t s = mt->stream;
    const lt_mt_config *c = &mt->cfg;
    if (ck(cudaMemcpyAsync(&mt->st->io, mt->io, sizeof *mt->io, cudaMemcpyHostToDevice, s),
           "copying the step's scalars up"))
        return -1;
    if (mt->nc > 0) {
        sumsq_all(mt, 0, mt->gss);
        LAUNCH(mt_norm, 1, 1, s, mt->st, loss_dev, mt->gss, mt->n);
        LAUNCH(mt_clip, (unsigned)mt->nc, MT_THREADS, s, mt->params, mt->chunks, mt->st);
        if (c->kind == LT_MT_LARS) {
            sumsq_all(mt, 1, mt->pss);
            sumsq_all(mt, 0, mt->gss);
            LAUNCH(mt_lars, per_param_blocks(mt->n), 128, s, mt->params, mt->n, mt->pss, mt->gss,
                   c->weight_decay, c->trust_coef, c->eps, mt->scale, mt->fwd);
        }
        LAUNCH(mt_update, (unsigned)mt->nc, MT_THREADS, s, mt->params, mt->chunks, mt->st,
               c->kind, c->momentum, mt->scale, mt->fwd);
    } else { /* no elements: the gate alone */
        LAUNCH(mt_norm, 1, 1, s, mt->st, loss_dev, mt->gss, 0);
    }
    if (ck(cudaGetLastError(), "launching the optimizer's kernels")) return -1;
    /* the results down (the inputs come back unchanged) */
    return ck(cudaMemcpyAsync(mt->io, &mt->st->io, sizeof *mt->io, cudaMemcpyDeviceToHost, s),
              "copying the step's results down");
}

extern "C" lt_mt_io *lt_mt_io_of(lt_mt *mt) { return mt->io; }

extern "C" void lt_mt_free(lt_mt *mt) {
    if (!mt) return;
    if (mt->stream) cudaStreamSynchronize(mt->stream);
    void *dev[] = {mt->params, mt->chunks, mt->part, mt->pss, mt->gss, mt->scale, mt->fwd, mt->st};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (mt->io) cudaFreeHost(mt->io);
    free(mt);
}

extern "C" lt_mt *lt_mt_create(void *stream, const lt_mt_config *cfg, const lt_mt_param *ps,
                               int n) {
    if (n < 0) return lt_err_set("optimizer (GPU): %d parameters", n), (lt_mt *)NULL;
    if (cfg->kind != LT_MT_LARS && cfg->kind != LT_MT_SGD && cfg->kind != LT_MT_ADAMW)
        return lt_err_set("optimizer (GPU): unknown kind %d", cfg->kind), (lt_mt *)NULL;
    lt_mt *mt = (lt_mt *)lt_calloc(1, sizeof *mt, "the GPU optimizer");
    if (!mt) return NULL;
    mt->stream = (cudaStream_t)stream;
    mt->cfg = *cfg;
    mt->n = n;
    mt_param *hp = (mt_param *)lt_calloc(n > 0 ? (size_t)n : 1, sizeof *hp, "parameter table");
    int64_t nc = 0;
    for (int i = 0; i < n; i++) {
        if (ps[i].n < 0) {
            free(hp);
            lt_mt_free(mt);
            return lt_err_set("optimizer (GPU): parameter %d has %lld elements", i,
                              (long long)ps[i].n),
                   (lt_mt *)NULL;
        }
        nc += (ps[i].n + MT_CHUNK - 1) / MT_CHUNK;
    }
    if (nc > (1 << 30)) {
        free(hp);
        lt_mt_free(mt);
        return lt_err_set("optimizer (GPU): %lld chunks", (long long)nc), (lt_mt *)NULL;
    }
    mt->nc = (int)nc;
    mt_chunk *hc = (mt_chunk *)lt_calloc(nc > 0 ? (size_t)nc : 1, sizeof *hc, "chunk table");
    int rc = hp && hc ? 0 : -1;
    for (int i = 0, c = 0; rc == 0 && i < n; i++) {
        mt_param *q = &hp[i];
        q->w = ps[i].w, q->g = ps[i].g, q->m = ps[i].m, q->v = ps[i].v, q->n = ps[i].n;
        q->decay = ps[i].decay;
        q->sgd_wd = ps[i].decay ? (float)cfg->weight_decay : 0.0f;
        q->c0 = c;
        for (int64_t a = 0; a < ps[i].n; a += MT_CHUNK, c++) {
            hc[c].p = i;
            hc[c].a = a;
            hc[c].len = ps[i].n - a < MT_CHUNK ? ps[i].n - a : MT_CHUNK;
        }
        q->c1 = c;
    }
    const size_t np = n > 0 ? (size_t)n : 1, ncs = nc > 0 ? (size_t)nc : 1;
#define DEV(p, bytes, what) (rc == 0 && (rc = ck(cudaMalloc((void **)&(p), bytes), "cudaMalloc(" what ")")))
    DEV(mt->params, np * sizeof *hp, "parameter table");
    DEV(mt->chunks, ncs * sizeof *hc, "chunk table");
    DEV(mt->part, ncs * sizeof(double), "chunk sums");
    DEV(mt->pss, np * sizeof(double), "sums of squares");
    DEV(mt->gss, np * sizeof(double), "sums of squares");
    DEV(mt->scale, np * sizeof(float), "LARS factors");
    DEV(mt->fwd, np * sizeof(float), "LARS factors");
    DEV(mt->st, sizeof *mt->st, "optimizer state");
#undef DEV
    if (rc == 0)
        rc = ck(cudaHostAlloc((void **)&mt->io, sizeof *mt->io, 0), "cudaHostAlloc(step scalars)");
    if (rc == 0) {
        memset(mt->io, 0, sizeof *mt->io);
        rc = ck(cudaMemcpyAsync(mt->params, hp, np * sizeof *hp, cudaMemcpyHostToDevice,
                                mt->stream),
                "uploading the parameter table");
    }
    if (rc == 0)
        rc = ck(cudaMemcpyAsync(mt->chunks, hc, ncs * sizeof *hc, cudaMemcpyHostToDevice,
                                mt->stream),
                "uploading the chunk table");
    if (rc == 0) rc = ck(cudaStreamSynchronize(mt->stream), "uploading the optimizer's tables");
    free(hp);
    free(hc);
    if (rc != 0) {
        lt_mt_free(mt);
        return NULL;
    }
    return mt;
}
