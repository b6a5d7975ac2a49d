/* dinov2_cuda.cu: the DINOv2 teacher on the GPU (models/dinov2_cuda.h): weight upload with the
 * LayerScale folded into the output projections, preallocated activations, the forward as a
 * sequence of nn/ops_cuda.h ops on one stream, and two upload slots on a copy stream so the
 * host-to-device copy of one batch overlaps the compute of the previous one.
 *
 * Why it exists: see dinov2_cuda.h; the graph is dinov2.c's, op for op, so the CPU forward is the
 * reference it is tested against (tests/cuda/test_cuda_dinov2.c). */
#include "models/dinov2_cuda.h"

extern "C" {
#include "core/error.h"
}

#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f
#define L2_EPS 1e-12f
#define LT_PROF_EVENTS 640

#define CUDA_TRY(call, what)                                                                      \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess)                                                                    \
            return lt_err_set("%s: %s (%s)", what, cudaGetErrorString(e_), cudaGetErrorName(e_)); \
    } while (0)

/* One transformer block on the device. */
typedef struct {
    float *n1w, *n1b, *n2w, *n2b; /* (D) fp32 */
    void *qkv_w, *qkv_b;          /* (3D, D), (3D): storage type */
    void *proj_w;                 /* (D, D) storage type, rows scaled by ls1 */
    float *proj_b;                /* (D) fp32, ls1 ⊙ proj_b (added into the fp32 stream) */
    void *fc1_w, *fc1_b;          /* (F, D), (F) storage type */
    void *fc2_w;                  /* (D, Hd) storage type, rows scaled by ls2 */
    float *fc2_b;                 /* (D) fp32, ls2 ⊙ fc2_b */
} gblock;

/* One upload slot: device copies of a batch's views and its embeddings. */
typedef struct {
    uint8_t *a, *b;       /* (cap_bytes) device */
    float *lambda;        /* (cap_B) device */
    float *out;           /* (cap_B, D) device */
    float *lambda_host;   /* (cap_B) pinned */
    float *out_host;      /* (cap_B, D) pinned */
    size_t cap_bytes;
    int cap_B;
    cudaEvent_t up0, up1, c0, c1; /* upload start/end, compute start/end */
    int busy, B;
} gslot;

struct lt_dinov2_gpu {
    const lt_dinov2 *cpu;
    lt_dinov2_config cfg;
    lt_precision prec;
    lt_cuda_dtype act; /* storage type of weights and activations */
    int exact_gelu;
    lt_cuda_ctx *ctx;
    cudaStream_t stream; /* the context's (compute) stream */
    cudaStream_t copy;   /* uploads of the slots */
    int K, Kp;           /* patch columns 3p², padded to a multiple of 8 */
    gblock *blocks;
    void *patch_w;       /* (D, Kp) storage type, zero padded */
    float *tok0;         /* (D) cls + pos[0] */
    float *reg;          /* (R, D) or NULL */
    float *norm_w, *norm_b;
    /* position embedding of the current grid, patch bias folded in: (G, D) */
    float *posb;
    int64_t posb_cap;
    int pos_gh, pos_gw, pos_square;
    /* activations */
    int64_t cap_rows, cap_prows;
    float *x;       /* (rows, D) fp32 residual stream */
    void *h;        /* (rows, D) LayerNorm output, then attention output */
    void *qkv;      /* (rows, 3D) */
    void *mlp;      /* (rows, F) (+ (rows, Hd) after it for SwiGLU) */
    void *patches;  /* (prows, Kp) */
    float *pemb;    /* (prows, D) fp32 */
    /* the float-input path */
    float *xin;     /* (B, H, W, 3) device */
    int64_t xin_cap;
    float *sync_out;      /* (cap_B, D) device */
    float *sync_out_host; /* pinned */
    int sync_cap_B;
    gslot slots[LT_DINOV2_GPU_SLOTS];
    lt_dinov2_gpu_stats stats;
    /* profiling (lt_dinov2_gpu_profile_views): an event before each op while prof_on */
    int prof_on, prof_n;
    cudaEvent_t *prof_ev; /* LT_PROF_EVENTS, created on first use */
    int prof_cls[LT_PROF_EVENTS];
    double prof_flops[LT_PROF_EVENTS], prof_bytes[LT_PROF_EVENTS];
};

/* Marks the start of an op of class cls (-1: the end of the forward) with its FLOPs and bytes.
 * A no-op unless profiling; past LT_PROF_EVENTS marks the time goes to the last class marked. */
static int prof_mark(lt_dinov2_gpu *g, int cls, double flops, double bytes) {
    if (!g->prof_on || g->prof_n >= LT_PROF_EVENTS) return 0;
    const int i = g->prof_n;
    if (i == LT_PROF_EVENTS - 1) cls = -1; /* keep the last event for the end */
    CUDA_TRY(cudaEventRecord(g->prof_ev[i], g->stream), "cudaEventRecord(profile)");
    g->prof_cls[i] = cls;
    g->prof_flops[i] = flops;
    g->prof_bytes[i] = bytes;
    g->prof_n++;
    return 0;
}

static void *dev_off(void *p, int64_t elems, lt_cuda_dtype t) {
    return (char *)p + elems * (int64_t)lt_cuda_dtype_size(t);
}

/* ---- weights ------------------------------------------------------------------------------- */

/* Uploads n floats (optionally each row r of a (rows, n/rows) matrix scaled by scale[r]) as
 * type t into a new device array. */
static int upload_param(const float *src, int64_t n, const float *row_scale, int64_t rows,
                        lt_cuda_dtype t, lt_cuda_ctx *ctx, void **dst, const char *what) {
    *dst = NULL;
    float *tmp = NULL;
    if (row_scale) {
        tmp = (float *)lt_malloc((size_t)n * sizeof(float), what);
        if (!tmp) return -1;
        const int64_t cols = n / rows;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) tmp[r * cols + j] = row_scale[r] * src[r * cols + j];
        src = tmp;
    }
    int rc = lt_cuda_malloc(dst, (size_t)n * lt_cuda_dtype_size(t), what);
    if (!rc) rc = lt_cuda_upload_f32(ctx, *dst, t, src, n);
    free(tmp);
    return rc;
}

static int upload_block(lt_dinov2_gpu *g, int i) {
    lt_dinov2_block_weights w;
    lt_dinov2_block_weights_of(g->cpu, i, &w);
    const lt_dinov2_config *c = &g->cfg;
    const int64_t D = c->embed_dim, Hd = c->mlp_hidden, F = c->swiglu ? 2 * Hd : Hd;
    const lt_cuda_dtype t = g->act;
    gblock *b = &g->blocks[i];
    lt_cuda_ctx *x = g->ctx;
    return upload_param(w.n1w, D, NULL, 1, LT_CUDA_F32, x, (void **)&b->n1w, "norm1") ||
                   upload_param(w.n1b, D, NULL, 1, LT_CUDA_F32, x, (void **)&b->n1b, "norm1") ||
                   upload_param(w.n2w, D, NULL, 1, LT_CUDA_F32, x, (void **)&b->n2w, "norm2") ||
                   upload_param(w.n2b, D, NULL, 1, LT_CUDA_F32, x, (void **)&b->n2b, "norm2") ||
                   upload_param(w.qkv_w, 3 * D * D, NULL, 1, t, x, &b->qkv_w, "qkv weight") ||
                   upload_param(w.qkv_b, 3 * D, NULL, 1, t, x, &b->qkv_b, "qkv bias") ||
                   upload_param(w.proj_w, D * D, w.ls1, D, t, x, &b->proj_w, "proj weight") ||
                   upload_param(w.proj_b, D, w.ls1, D, LT_CUDA_F32, x, (void **)&b->proj_b,
                                "proj bias") ||
                   upload_param(w.fc1_w, F * D, NULL, 1, t, x, &b->fc1_w, "fc1 weight") ||
                   upload_param(w.fc1_b, F, NULL, 1, t, x, &b->fc1_b, "fc1 bias") ||
                   upload_param(w.fc2_w, D * Hd, w.ls2, D, t, x, &b->fc2_w, "fc2 weight") ||
                   upload_param(w.fc2_b, D, w.ls2, D, LT_CUDA_F32, x, (void **)&b->fc2_b,
                                "fc2 bias")
               ? -1
               : 0;
}

static void free_block(gblock *b) {
    void *p[] = {b->n1w, b->n1b, b->n2w, b->n2b, b->qkv_w, b->qkv_b, b->proj_w,
                 b->proj_b, b->fc1_w, b->fc1_b, b->fc2_w, b->fc2_b};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) lt_cuda_free(p[i]);
}

static int upload_weights(lt_dinov2_gpu *g) {
    const lt_dinov2_config *c = &g->cfg;
    const int D = c->embed_dim, R = c->n_reg;
    lt_dinov2_weights w;
    lt_dinov2_weights_of(g->cpu, &w);
    /* patch embedding, columns padded with zeros: (D, Kp) */
    float *pw = (float *)lt_calloc((size_t)D * g->Kp, sizeof(float), "patch weight");
    if (!pw) return -1;
    for (int d = 0; d < D; d++)
        memcpy(pw + (int64_t)d * g->Kp, w.patch_w + (int64_t)d * g->K, (size_t)g->K * sizeof(float));
    int rc = upload_param(pw, (int64_t)D * g->Kp, NULL, 1, g->act, g->ctx, &g->patch_w, "patch weight");
    free(pw);
    if (rc) return -1;
    float *t0 = (float *)lt_malloc((size_t)D * sizeof(float), "class token");
    if (!t0) return -1;
    for (int d = 0; d < D; d++) t0[d] = w.cls[d] + w.pos[d];
    rc = upload_param(t0, D, NULL, 1, LT_CUDA_F32, g->ctx, (void **)&g->tok0, "class token");
    free(t0);
    if (rc) return -1;
    if (R > 0 && upload_param(w.reg, (int64_t)R * D, NULL, 1, LT_CUDA_F32, g->ctx,
                              (void **)&g->reg, "register tokens"))
        return -1;
    if (upload_param(w.norm_w, D, NULL, 1, LT_CUDA_F32, g->ctx, (void **)&g->norm_w, "norm") ||
        upload_param(w.norm_b, D, NULL, 1, LT_CUDA_F32, g->ctx, (void **)&g->norm_b, "norm"))
        return -1;
    g->blocks = (gblock *)lt_calloc((size_t)c->depth, sizeof(gblock), "gpu blocks");
    if (!g->blocks) return -1;
    for (int i = 0; i < c->depth; i++)
        if (upload_block(g, i)) return -1;
    return 0;
}

/* ---- buffers ------------------------------------------------------------------------------ */

/* Waits for both streams: before any buffer in use is freed or rewritten from the host. */
static int sync_all(lt_dinov2_gpu *g) {
    CUDA_TRY(cudaStreamSynchronize(g->copy), "cudaStreamSynchronize(copy stream)");
    return lt_cuda_sync(g->ctx);
}

static int grow_dev(void **p, size_t bytes, const char *what) {
    lt_cuda_free(*p);
    *p = NULL;
    return lt_cuda_malloc(p, bytes, what);
}

/* Activations for B images of H×W. */
static int ensure_activations(lt_dinov2_gpu *g, int B, int H, int W) {
    const lt_dinov2_config *c = &g->cfg;
    const int64_t G = (int64_t)(H / c->patch) * (W / c->patch), T = 1 + c->n_reg + G;
    const int64_t rows = B * T, prows = B * G, D = c->embed_dim, Hd = c->mlp_hidden;
    const int64_t F = c->swiglu ? 3 * Hd : Hd; /* SwiGLU: (2Hd) gate input + (Hd) output */
    const size_t es = lt_cuda_dtype_size(g->act);
    if (rows <= g->cap_rows && prows <= g->cap_prows) return 0;
    if (sync_all(g)) return -1;
    if (rows > g->cap_rows) {
        g->cap_rows = 0;
        if (grow_dev((void **)&g->x, (size_t)(rows * D) * 4, "activations (residual)") ||
            grow_dev(&g->h, (size_t)(rows * D) * es, "activations (normed)") ||
            grow_dev(&g->qkv, (size_t)(rows * 3 * D) * es, "activations (qkv)") ||
            grow_dev(&g->mlp, (size_t)(rows * F) * es, "activations (mlp)"))
            return -1;
        g->cap_rows = rows;
    }
    if (prows > g->cap_prows) {
        g->cap_prows = 0;
        if (grow_dev(&g->patches, (size_t)(prows * g->Kp) * es, "patches") ||
            grow_dev((void **)&g->pemb, (size_t)(prows * D) * 4, "patch embeddings"))
            return -1;
        g->cap_prows = prows;
    }
    return 0;
}

/* The position embedding of the H×W grid with the patch bias folded in, on the device. */
static int ensure_pos(lt_dinov2_gpu *g, int H, int W) {
    const lt_dinov2_config *c = &g->cfg;
    const int gh = H / c->patch, gw = W / c->patch, D = c->embed_dim, square = H == W;
    if (g->posb && gh == g->pos_gh && gw == g->pos_gw && square == g->pos_square) return 0;
    const int64_t G = (int64_t)gh * gw;
    float *pos = (float *)lt_malloc((size_t)((1 + G) * D) * sizeof(float), "position embedding");
    if (!pos) return -1;
    lt_dinov2_weights w;
    lt_dinov2_weights_of(g->cpu, &w);
    lt_dinov2_pos_embed(g->cpu, H, W, pos);
    for (int64_t i = 0; i < G; i++)
        for (int d = 0; d < D; d++) pos[(1 + i) * D + d] += w.patch_b[d];
    int rc = sync_all(g); /* the old table may still be read by a queued forward */
    if (!rc && G * D > g->posb_cap) {
        g->posb_cap = 0;
        rc = grow_dev((void **)&g->posb, (size_t)(G * D) * 4, "position embedding");
        if (!rc) g->posb_cap = G * D;
    }
    if (!rc) rc = lt_cuda_upload_f32(g->ctx, g->posb, LT_CUDA_F32, pos + D, G * D);
    free(pos);
    if (rc) return -1;
    g->pos_gh = gh;
    g->pos_gw = gw;
    g->pos_square = square;
    return 0;
}

static void free_slot(gslot *s) {
    lt_cuda_free(s->a);
    lt_cuda_free(s->b);
    lt_cuda_free(s->lambda);
    lt_cuda_free(s->out);
    lt_cuda_host_free(s->lambda_host);
    lt_cuda_host_free(s->out_host);
    s->a = s->b = NULL;
    s->lambda = s->out = s->lambda_host = s->out_host = NULL;
    s->cap_bytes = 0;
    s->cap_B = 0;
}

/* Slot buffers for B views of `bytes` bytes each (a and b). Called only on a free slot. */
static int ensure_slot(lt_dinov2_gpu *g, gslot *s, int B, size_t bytes) {
    const int D = g->cfg.embed_dim;
    if ((size_t)B * bytes <= s->cap_bytes && B <= s->cap_B) return 0;
    if (sync_all(g)) return -1;
    const size_t nb = (size_t)B * bytes > s->cap_bytes ? (size_t)B * bytes : s->cap_bytes;
    const int nB = B > s->cap_B ? B : s->cap_B;
    free_slot(s);
    if (lt_cuda_malloc((void **)&s->a, nb, "views (a)") ||
        lt_cuda_malloc((void **)&s->b, nb, "views (b)") ||
        lt_cuda_malloc((void **)&s->lambda, (size_t)nB * 4, "mixup weights") ||
        lt_cuda_malloc((void **)&s->out, (size_t)nB * D * 4, "embeddings") ||
        lt_cuda_host_alloc((void **)&s->lambda_host, (size_t)nB * 4, "mixup weights") ||
        lt_cuda_host_alloc((void **)&s->out_host, (size_t)nB * D * 4, "embeddings"))
        return -1;
    s->cap_bytes = nb;
    s->cap_B = nB;
    return 0;
}

/* ---- create / free ------------------------------------------------------------------------ */

extern "C" void lt_dinov2_gpu_free(lt_dinov2_gpu *g) {
    if (!g) return;
    if (g->copy) cudaStreamSynchronize(g->copy);
    if (g->ctx) lt_cuda_sync(g->ctx);
    if (g->blocks)
        for (int i = 0; i < g->cfg.depth; i++) free_block(&g->blocks[i]);
    free(g->blocks);
    void *p[] = {g->patch_w, g->tok0, g->reg, g->norm_w, g->norm_b, g->posb, g->x, g->h,
                 g->qkv, g->mlp, g->patches, g->pemb, g->xin, g->sync_out};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) lt_cuda_free(p[i]);
    lt_cuda_host_free(g->sync_out_host);
    for (int i = 0; i < LT_DINOV2_GPU_SLOTS; i++) {
        gslot *s = &g->slots[i];
        free_slot(s);
        cudaEvent_t ev[] = {s->up0, s->up1, s->c0, s->c1};
        for (int k = 0; k < 4; k++)
            if (ev[k]) cudaEventDestroy(ev[k]);
    }
    if (g->prof_ev) {
        for (int i = 0; i < LT_PROF_EVENTS; i++)
            if (g->prof_ev[i]) cudaEventDestroy(g->prof_ev[i]);
        free(g->prof_ev);
    }
    if (g->copy) cudaStreamDestroy(g->copy);
    lt_cuda_ctx_free(g->ctx);
    free(g);
}

extern "C" int lt_dinov2_gpu_create(const lt_dinov2 *cpu, lt_precision prec, int max_batch, int H,
                                    int W, lt_dinov2_gpu **out) {
    *out = NULL;
    const lt_dinov2_config *c = lt_dinov2_config_of(cpu);
    if (c->embed_dim > 2048 || c->embed_dim % 64)
        return lt_err_set("dinov2 gpu: embed dim %d not supported (multiple of 64, <= 2048)",
                          c->embed_dim);
    if (max_batch <= 0 || H / c->patch <= 0 || W / c->patch <= 0)
        return lt_err_set("dinov2 gpu: batch %d of %dx%d images: need at least one %dx%d patch",
                          max_batch, H, W, c->patch, c->patch);
    lt_dinov2_gpu *g = (lt_dinov2_gpu *)lt_calloc(1, sizeof *g, "dinov2 gpu");
    if (!g) return -1;
    g->cpu = cpu;
    g->cfg = *c;
    g->prec = prec;
    g->act = lt_cuda_act_dtype(prec);
    g->K = 3 * c->patch * c->patch;
    g->Kp = (g->K + 7) / 8 * 8;
    int rc = lt_cuda_ctx_create(&g->ctx);
    if (!rc) {
        g->stream = (cudaStream_t)lt_cuda_ctx_stream(g->ctx);
        cudaError_t e = cudaStreamCreateWithFlags(&g->copy, cudaStreamNonBlocking);
        if (e != cudaSuccess)
            rc = lt_err_set("cudaStreamCreateWithFlags(copy stream): %s", cudaGetErrorString(e));
    }
    for (int i = 0; !rc && i < LT_DINOV2_GPU_SLOTS; i++) {
        gslot *s = &g->slots[i];
        cudaEvent_t *ev[] = {&s->up0, &s->up1, &s->c0, &s->c1};
        for (int k = 0; !rc && k < 4; k++) {
            cudaError_t e = cudaEventCreate(ev[k]);
            if (e != cudaSuccess) rc = lt_err_set("cudaEventCreate: %s", cudaGetErrorString(e));
        }
    }
    if (!rc) rc = upload_weights(g);
    if (!rc) rc = ensure_activations(g, max_batch, H, W);
    if (!rc) rc = ensure_pos(g, H, W);
    if (rc) {
        lt_err_prefix("dinov2 gpu (%s)", lt_precision_name(prec));
        lt_dinov2_gpu_free(g);
        return -1;
    }
    *out = g;
    return 0;
}

extern "C" lt_precision lt_dinov2_gpu_precision(const lt_dinov2_gpu *g) { return g->prec; }
extern "C" void lt_dinov2_gpu_set_exact_gelu(lt_dinov2_gpu *g, int on) { g->exact_gelu = on; }

extern "C" void lt_dinov2_gpu_get_stats(const lt_dinov2_gpu *g, lt_dinov2_gpu_stats *s) {
    *s = g->stats;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* Enqueues everything after the patches: (B·G, Kp) patches → out (B, D) on the device. */
static int run_body(lt_dinov2_gpu *g, int B, int H, int W, float *out) {
    const lt_dinov2_config *c = &g->cfg;
    const int D = c->embed_dim, R = c->n_reg, Hd = c->mlp_hidden, F = c->swiglu ? 2 * Hd : Hd;
    const int G = (H / c->patch) * (W / c->patch), T = 1 + R + G, rows = B * T;
    const lt_precision pr = g->prec;
    const lt_cuda_dtype t = g->act;
    lt_cuda_ctx *x = g->ctx;
    const lt_cuda_act gelu = c->swiglu                               ? LT_CUDA_ACT_NONE
                             : pr == LT_PREC_BF16 && !g->exact_gelu ? LT_CUDA_ACT_GELU_TANH
                                                                     : LT_CUDA_ACT_GELU_ERF;
    /* patch embedding (B·G, D) fp32, then the tokens (B, T, D) with the position embedding */
    const double PG = (double)B * G, esz = (double)lt_cuda_dtype_size(t);
    if (prof_mark(g, LT_DINOV2_PROF_PATCH, 2 * PG * g->K * D,
                  esz * (PG * g->Kp + (double)D * g->Kp) + 4 * PG * D) ||
        lt_cuda_linear(x, pr, g->pemb, LT_CUDA_F32, g->patches, g->patch_w, NULL, B * G, g->Kp, D,
                       LT_CUDA_ACT_NONE, 0.0f) ||
        prof_mark(g, LT_DINOV2_PROF_TOKENS, 0, 4.0 * D * (PG + (double)G + (double)B * T)) ||
        lt_cuda_tokens(x, g->x, g->pemb, g->tok0, g->reg, g->posb, B, G, R, D))
        return -1;
    void *gate = c->swiglu ? dev_off(g->mlp, (int64_t)rows * F, t) : g->mlp; /* (rows, Hd) */
    /* FLOPs and least bytes moved per op, for the profile */
    const double es = (double)lt_cuda_dtype_size(t), R_ = rows, D_ = D, F_ = F, H_ = Hd;
    const double ln_bytes = R_ * D_ * (4 + es);
    for (int l = 0; l < c->depth; l++) {
        const gblock *b = &g->blocks[l];
        if (prof_mark(g, LT_DINOV2_PROF_LN, 0, ln_bytes) ||
            lt_cuda_layernorm(x, g->h, t, g->x, b->n1w, b->n1b, rows, D, LN_EPS) ||
            prof_mark(g, LT_DINOV2_PROF_QKV, 2 * R_ * D_ * 3 * D_,
                      es * (R_ * D_ + 3 * D_ * D_ + 3 * D_ + R_ * 3 * D_)) ||
            lt_cuda_linear(x, pr, g->qkv, t, g->h, b->qkv_w, b->qkv_b, rows, D, 3 * D,
                           LT_CUDA_ACT_NONE, 0.0f) ||
            prof_mark(g, LT_DINOV2_PROF_ATTN, 4.0 * B * (double)T * T * D_, es * R_ * 4 * D_) ||
            lt_cuda_attention(x, g->h, g->qkv, t, B, T, c->heads, 64) ||
            /* x += ls1 ⊙ (attn · projᵀ + b): the gammas are in proj_w / proj_b */
            prof_mark(g, LT_DINOV2_PROF_PROJ, 2 * R_ * D_ * D_,
                      es * (R_ * D_ + D_ * D_) + 4 * (D_ + 2 * R_ * D_)) ||
            lt_cuda_linear(x, pr, g->x, LT_CUDA_F32, g->h, b->proj_w, b->proj_b, rows, D, D,
                           LT_CUDA_ACT_NONE, 1.0f) ||
            prof_mark(g, LT_DINOV2_PROF_LN, 0, ln_bytes) ||
            lt_cuda_layernorm(x, g->h, t, g->x, b->n2w, b->n2b, rows, D, LN_EPS) ||
            prof_mark(g, LT_DINOV2_PROF_FC1, 2 * R_ * D_ * F_,
                      es * (R_ * D_ + F_ * D_ + F_ + R_ * F_ + (c->swiglu ? R_ * (F_ + H_) : 0))) ||
            lt_cuda_linear(x, pr, g->mlp, t, g->h, b->fc1_w, b->fc1_b, rows, D, F, gelu, 0.0f) ||
            (c->swiglu && lt_cuda_swiglu(x, gate, g->mlp, t, rows, Hd)) ||
            prof_mark(g, LT_DINOV2_PROF_FC2, 2 * R_ * H_ * D_,
                      es * (R_ * H_ + D_ * H_) + 4 * (D_ + 2 * R_ * D_)) ||
            lt_cuda_linear(x, pr, g->x, LT_CUDA_F32, gate, b->fc2_w, b->fc2_b, rows, Hd, D,
                           LT_CUDA_ACT_NONE, 1.0f))
            return lt_err_prefix("block %d", l);
    }
    if (prof_mark(g, LT_DINOV2_PROF_HEAD, 0, (double)B * D * 4 * 2) ||
        lt_cuda_cls_head(x, out, g->x, B, T, D, g->norm_w, g->norm_b, LN_EPS, L2_EPS))
        return -1;
    return prof_mark(g, -1, 0, 0);
}

static int check_args(const lt_dinov2_gpu *g, int B, int H, int W) {
    const int p = g->cfg.patch;
    if (B <= 0 || H / p <= 0 || W / p <= 0)
        return lt_err_set("dinov2 gpu: %d images of %dx%d: need at least one %dx%d patch", B, H,
                          W, p, p);
    const int64_t T = 1 + g->cfg.n_reg + (int64_t)(H / p) * (W / p);
    if ((int64_t)B * T * 4 * g->cfg.embed_dim > 0x7fffffffLL || T > 65535 * 64)
        return lt_err_set("dinov2 gpu: batch of %d images of %dx%d is too large", B, H, W);
    return 0;
}

extern "C" int lt_dinov2_gpu_forward(lt_dinov2_gpu *g, const float *x_host, int B, int H, int W,
                                     float *out_host) {
    const int D = g->cfg.embed_dim;
    if (check_args(g, B, H, W) || ensure_activations(g, B, H, W) || ensure_pos(g, H, W)) return -1;
    const int64_t n = (int64_t)B * H * W * 3;
    if (n > g->xin_cap) {
        if (sync_all(g)) return -1;
        g->xin_cap = 0;
        if (grow_dev((void **)&g->xin, (size_t)n * 4, "input images")) return -1;
        g->xin_cap = n;
    }
    if (B > g->sync_cap_B) {
        if (sync_all(g)) return -1;
        g->sync_cap_B = 0;
        lt_cuda_host_free(g->sync_out_host);
        g->sync_out_host = NULL;
        if (grow_dev((void **)&g->sync_out, (size_t)B * D * 4, "embeddings") ||
            lt_cuda_host_alloc((void **)&g->sync_out_host, (size_t)B * D * 4, "embeddings"))
            return -1;
        g->sync_cap_B = B;
    }
    if (lt_cuda_upload(g->ctx, g->xin, x_host, (size_t)n * 4) ||
        lt_cuda_patchify(g->ctx, g->patches, g->act, g->Kp, g->xin, B, H, W, 3, g->cfg.patch) ||
        run_body(g, B, H, W, g->sync_out) ||
        lt_cuda_download(g->ctx, g->sync_out_host, g->sync_out, (size_t)B * D * 4) ||
        lt_cuda_sync(g->ctx))
        return lt_err_prefix("dinov2 gpu forward (%s)", lt_precision_name(g->prec));
    memcpy(out_host, g->sync_out_host, (size_t)B * D * sizeof(float));
    return 0;
}

/* Slot `slot` ready for a batch of B views of H×W (free, buffers large enough); *s_out. */
static int slot_ready(lt_dinov2_gpu *g, int slot, int B, int H, int W, gslot **s_out) {
    if (slot < 0 || slot >= LT_DINOV2_GPU_SLOTS)
        return lt_err_set("dinov2 gpu: slot %d (0..%d)", slot, LT_DINOV2_GPU_SLOTS - 1);
    gslot *s = &g->slots[slot];
    if (s->busy) return lt_err_set("dinov2 gpu: slot %d is busy: wait for it first", slot);
    if (check_args(g, B, H, W) || ensure_activations(g, B, H, W) || ensure_pos(g, H, W) ||
        ensure_slot(g, s, B, (size_t)H * W * 3))
        return -1;
    *s_out = s;
    return 0;
}

/* After the slot's views are in s->a / s->b (work enqueued on the copy stream since up0): the
 * mixup weights, then the forward on the compute stream once that work is done. */
static int submit_forward(lt_dinov2_gpu *g, gslot *s, int has_b, const float *lambda,
                          const float mean[3], const float std[3], int B, int H, int W) {
    for (int i = 0; i < B; i++) s->lambda_host[i] = lambda ? lambda[i] : 1.0f;
    CUDA_TRY(cudaMemcpyAsync(s->lambda, s->lambda_host, (size_t)B * 4, cudaMemcpyHostToDevice,
                             g->copy),
             "cudaMemcpyAsync(mixup weights to the device)");
    CUDA_TRY(cudaEventRecord(s->up1, g->copy), "cudaEventRecord(upload end)");
    CUDA_TRY(cudaStreamWaitEvent(g->stream, s->up1, 0), "cudaStreamWaitEvent(upload)");
    CUDA_TRY(cudaEventRecord(s->c0, g->stream), "cudaEventRecord(compute start)");
    const int D = g->cfg.embed_dim;
    if (lt_cuda_patchify_views(g->ctx, g->patches, g->act, g->Kp, s->a, has_b ? s->b : NULL,
                               s->lambda, mean, std, B, H, W, g->cfg.patch) ||
        run_body(g, B, H, W, s->out) ||
        lt_cuda_download(g->ctx, s->out_host, s->out, (size_t)B * D * 4))
        return lt_err_prefix("dinov2 gpu forward (%s)", lt_precision_name(g->prec));
    CUDA_TRY(cudaEventRecord(s->c1, g->stream), "cudaEventRecord(compute end)");
    s->busy = 1;
    s->B = B;
    return 0;
}

extern "C" int lt_dinov2_gpu_submit_views(lt_dinov2_gpu *g, int slot, const uint8_t *a,
                                          const uint8_t *b, const float *lambda,
                                          const float mean[3], const float std[3], int B, int H,
                                          int W) {
    gslot *s;
    if (!a) return lt_err_set("dinov2 gpu: no views");
    if (slot_ready(g, slot, B, H, W, &s)) return -1;
    const size_t nb = (size_t)B * H * W * 3;
    CUDA_TRY(cudaEventRecord(s->up0, g->copy), "cudaEventRecord(upload start)");
    CUDA_TRY(cudaMemcpyAsync(s->a, a, nb, cudaMemcpyHostToDevice, g->copy),
             "cudaMemcpyAsync(views a to the device)");
    if (b)
        CUDA_TRY(cudaMemcpyAsync(s->b, b, nb, cudaMemcpyHostToDevice, g->copy),
                 "cudaMemcpyAsync(views b to the device)");
    return submit_forward(g, s, b != NULL, lambda, mean, std, B, H, W);
}

extern "C" int lt_dinov2_gpu_slot_views(lt_dinov2_gpu *g, int slot, int B, int H, int W,
                                        uint8_t **a, uint8_t **b, void **stream) {
    gslot *s;
    if (slot_ready(g, slot, B, H, W, &s)) return -1;
    CUDA_TRY(cudaEventRecord(s->up0, g->copy), "cudaEventRecord(input start)");
    *a = s->a;
    *b = s->b;
    *stream = (void *)g->copy;
    return 0;
}

extern "C" int lt_dinov2_gpu_submit_filled(lt_dinov2_gpu *g, int slot, int has_b,
                                           const float *lambda, const float mean[3],
                                           const float std[3], int B, int H, int W) {
    gslot *s;
    if (slot_ready(g, slot, B, H, W, &s)) return -1;
    return submit_forward(g, s, has_b, lambda, mean, std, B, H, W);
}

extern "C" int lt_dinov2_gpu_download_views(lt_dinov2_gpu *g, int slot, uint8_t *a, uint8_t *b,
                                            int B, int H, int W) {
    if (slot < 0 || slot >= LT_DINOV2_GPU_SLOTS)
        return lt_err_set("dinov2 gpu: slot %d (0..%d)", slot, LT_DINOV2_GPU_SLOTS - 1);
    gslot *s = &g->slots[slot];
    const size_t nb = (size_t)B * H * W * 3;
    if (s->busy || nb > s->cap_bytes)
        return lt_err_set("dinov2 gpu: slot %d holds no finished batch of %d views", slot, B);
    CUDA_TRY(cudaMemcpy(a, s->a, nb, cudaMemcpyDeviceToHost), "cudaMemcpy(views a to the host)");
    if (b) CUDA_TRY(cudaMemcpy(b, s->b, nb, cudaMemcpyDeviceToHost), "cudaMemcpy(views b to the host)");
    return 0;
}

extern "C" int lt_dinov2_gpu_wait(lt_dinov2_gpu *g, int slot, float *out_host) {
    if (slot < 0 || slot >= LT_DINOV2_GPU_SLOTS)
        return lt_err_set("dinov2 gpu: slot %d (0..%d)", slot, LT_DINOV2_GPU_SLOTS - 1);
    gslot *s = &g->slots[slot];
    if (!s->busy) return lt_err_set("dinov2 gpu: slot %d has nothing to wait for", slot);
    s->busy = 0;
    CUDA_TRY(cudaEventSynchronize(s->c1),
             "dinov2 gpu forward: cudaEventSynchronize (a kernel or copy failed)");
    float up = 0.0f, comp = 0.0f;
    CUDA_TRY(cudaEventElapsedTime(&up, s->up0, s->up1), "cudaEventElapsedTime(upload)");
    CUDA_TRY(cudaEventElapsedTime(&comp, s->c0, s->c1), "cudaEventElapsedTime(compute)");
    g->stats.batches++;
    g->stats.views += s->B;
    g->stats.copy_ms += up;
    g->stats.teacher_ms += comp;
    memcpy(out_host, s->out_host, (size_t)s->B * g->cfg.embed_dim * sizeof(float));
    return 0;
}

extern "C" int lt_dinov2_gpu_forward_views(lt_dinov2_gpu *g, const uint8_t *a, const uint8_t *b,
                                           const float *lambda, const float mean[3],
                                           const float std[3], int B, int H, int W,
                                           float *out_host) {
    int slot = 0;
    while (slot < LT_DINOV2_GPU_SLOTS && g->slots[slot].busy) slot++;
    if (slot == LT_DINOV2_GPU_SLOTS)
        return lt_err_set("dinov2 gpu: both slots are busy: wait for one first");
    if (lt_dinov2_gpu_submit_views(g, slot, a, b, lambda, mean, std, B, H, W)) return -1;
    return lt_dinov2_gpu_wait(g, slot, out_host);
}

/* ---- profile ------------------------------------------------------------------------------ */

extern "C" const char *lt_dinov2_gpu_profile_name(int cls) {
    static const char *const names[LT_DINOV2_PROF_N] = {
        "input (views->patches)", "patch-embed GEMM", "tokens + pos", "LayerNorm (x2/block)",
        "qkv GEMM +bias", "attention", "proj GEMM +resid", "fc1 GEMM +GELU", "fc2 GEMM +resid",
        "head (LN, L2)"};
    return cls >= 0 && cls < LT_DINOV2_PROF_N ? names[cls] : "?";
}

extern "C" int lt_dinov2_gpu_profile_views(lt_dinov2_gpu *g, const uint8_t *a, const uint8_t *b,
                                           const float *lambda, const float mean[3],
                                           const float std[3], int B, int H, int W, int reps,
                                           lt_dinov2_gpu_profile *out) {
    memset(out, 0, sizeof *out);
    if (reps <= 0) reps = 1;
    gslot *s = &g->slots[0];
    if (s->busy) return lt_err_set("dinov2 gpu profile: slot 0 is busy: wait for it first");
    if (!a) return lt_err_set("dinov2 gpu profile: no views");
    const size_t bytes = (size_t)H * W * 3, nb = (size_t)B * bytes;
    if (check_args(g, B, H, W) || ensure_activations(g, B, H, W) || ensure_pos(g, H, W) ||
        ensure_slot(g, s, B, bytes))
        return -1;
    if (!g->prof_ev) {
        g->prof_ev = (cudaEvent_t *)lt_calloc(LT_PROF_EVENTS, sizeof(cudaEvent_t), "profile events");
        if (!g->prof_ev) return -1;
        for (int i = 0; i < LT_PROF_EVENTS; i++)
            CUDA_TRY(cudaEventCreate(&g->prof_ev[i]), "cudaEventCreate(profile)");
    }
    for (int i = 0; i < B; i++) s->lambda_host[i] = lambda ? lambda[i] : 1.0f;
    CUDA_TRY(cudaMemcpyAsync(s->a, a, nb, cudaMemcpyHostToDevice, g->copy), "cudaMemcpyAsync(views a)");
    if (b) CUDA_TRY(cudaMemcpyAsync(s->b, b, nb, cudaMemcpyHostToDevice, g->copy), "cudaMemcpyAsync(views b)");
    CUDA_TRY(cudaMemcpyAsync(s->lambda, s->lambda_host, (size_t)B * 4, cudaMemcpyHostToDevice, g->copy),
             "cudaMemcpyAsync(mixup weights)");
    if (sync_all(g)) return -1;
    const int G = (H / g->cfg.patch) * (W / g->cfg.patch);
    const double in_bytes = (double)nb * (b ? 2 : 1) +
                            (double)B * G * g->Kp * (double)lt_cuda_dtype_size(g->act);
    int rc = 0;
    for (int r = -1; r < reps && !rc; r++) { /* r = -1: warm-up, not profiled */
        g->prof_on = r >= 0;
        g->prof_n = 0;
        rc = prof_mark(g, LT_DINOV2_PROF_INPUT, 0, in_bytes) ||
             lt_cuda_patchify_views(g->ctx, g->patches, g->act, g->Kp, s->a, b ? s->b : NULL,
                                    s->lambda, mean, std, B, H, W, g->cfg.patch) ||
             run_body(g, B, H, W, s->out) || lt_cuda_sync(g->ctx);
        g->prof_on = 0;
        if (rc || r < 0) continue;
        for (int i = 0; i + 1 < g->prof_n; i++) {
            const int cls = g->prof_cls[i];
            float ms = 0.0f;
            CUDA_TRY(cudaEventElapsedTime(&ms, g->prof_ev[i], g->prof_ev[i + 1]),
                     "cudaEventElapsedTime(profile)");
            if (cls < 0 || cls >= LT_DINOV2_PROF_N) continue;
            out->ms[cls] += ms;
            out->total_ms += ms;
            if (r == 0) {
                out->calls[cls]++;
                out->flops[cls] += g->prof_flops[i];
                out->bytes[cls] += g->prof_bytes[i];
            }
        }
    }
    g->prof_on = 0;
    if (rc) return lt_err_prefix("dinov2 gpu profile (%s)", lt_precision_name(g->prec));
    for (int k = 0; k < LT_DINOV2_PROF_N; k++) out->ms[k] /= reps;
    out->total_ms /= reps;
    out->reps = reps;
    out->B = B;
    return 0;
}
