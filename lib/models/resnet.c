/* resnet.c: torchvision's resnet18/34/50 backbones, forward and backward over preallocated
 * buffers (see resnet.h for the architecture and the tensor table).
 *
 * Why it exists: the student of lt-train. Layout of the work:
 *  - create: the graph is built once (convs, BNs, blocks), every tensor registered in
 *    torchvision's state_dict order, then parameters, gradients, running stats, activations and
 *    scratch are allocated for the maximum batch.
 *  - forward keeps, per block, each conv output (the BN input, needed by the BN backward) and each
 *    BN/ReLU output (the next conv's input and the ReLU mask). BN, ReLU and the residual add are
 *    one fused op.
 *  - backward walks the blocks in reverse with four rotating gradient buffers of the largest
 *    activation size: A = ∂out of the block, B = ∂in of the block, C/D = inner gradients (the
 *    roles of A and B swap from block to block).
 *
 * Activation shapes (NHWC, B the batch of the call): stem t0/a0 (B, H/2, W/2, 64), p0
 * (B, H/4, W/4, 64); block k of a layer: conv outputs t1, t2 (t3), post-BN a1 (a2), out, and for a
 * downsampling block td (conv) and sd (BN) of the output shape. */
#include "models/resnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "nn/backend.h"
#include "nn/cnn.h"

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define MAX_TENSORS 512
#define MAX_BLOCKS 16
#define MAX_ALLOCS 512

typedef struct {
    int ti;              /* index of its weight in the tensor table */
    lt_conv2d_dims d;    /* dims at max_B; B is replaced per call */
    float *w, *dw;       /* (Cout, Cin, kh, kw) */
} rconv;

typedef struct {
    int ti;              /* index of its weight; bias, running_mean, running_var, nbt follow */
    int C;
    float *g, *b, *dg, *db;  /* (C) */
    float *rm, *rv;          /* (C) running stats */
    int64_t *nbt;
    float *mean, *invstd;    /* (C) saved by the training forward */
} rbn;

typedef struct {
    int bottleneck, has_ds;
    rconv c1, c2, c3, cd;
    rbn b1, b2, b3, bd;
    const float *x;      /* block input (B, H, W, Cin): the previous block's out, or p0 */
    int64_t in_n, mid1_n, mid2_n, out_n; /* floats per image: input, t1/a1, t2/a2, output */
    float *t1, *a1, *t2, *a2, *t3, *td, *sd, *out;
} rblock;

struct lt_resnet_net {
    rconv conv1;
    rbn bn1;
    lt_pool_dims pool;   /* at max_B */
    float *in;           /* (max_B, H, W, 3) copy of the input */
    float *t0, *a0, *p0; /* stem activations */
    int32_t *argmax;     /* (max_B, H/4, W/4, 64) */
    int n_blocks;
    rblock blocks[MAX_BLOCKS];
    int64_t max_act;     /* floats of the largest activation at max_B */
    float *g[4];         /* gradient buffers, (max_act) each */
    void *ws;            /* conv and batch-norm scratch, on the backend */
    size_t ws_bytes;
    int max_bn_C;        /* widest batch norm (sizes its scratch) */
    void *allocs[MAX_ALLOCS];
    int n_allocs;
    int n_bns;
    rbn *bns[MAX_TENSORS / 5];
};

/* ---- construction ---- */

typedef struct {
    lt_resnet *m;
    int plan_only;           /* describe the model (tensors, shapes, offsets) and stop */
    int64_t n_params, n_buffers;
    int64_t off[MAX_TENSORS]; /* offset of each tensor in params or buffers */
    int err;
} builder;

static int add_tensor(builder *bd, const char *name, int ndim, const int64_t *shape,
                      int is_buffer, int is_i64) {
    lt_resnet *m = bd->m;
    if (m->n_tensors >= MAX_TENSORS) {
        bd->err = 1;
        return 0;
    }
    int i = m->n_tensors++;
    lt_resnet_tensor *t = &m->tensors[i];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int k = 0; k < ndim; k++) t->shape[k] = shape[k], t->numel *= shape[k];
    t->is_buffer = is_buffer;
    t->weight_decay = !is_buffer && ndim > 1;
    t->mem = is_i64 || !m->be ? LT_MEM_HOST : m->be->mem; /* counters stay on the host */
    t->dtype = is_i64 ? LT_DT_I64 : LT_DT_F32;
    if (is_i64) {
        bd->off[i] = m->n_bn++;
    } else if (is_buffer) {
        bd->off[i] = bd->n_buffers;
        bd->n_buffers += t->numel;
    } else {
        bd->off[i] = bd->n_params;
        bd->n_params += t->numel;
    }
    return i;
}

static void make_conv(builder *bd, rconv *c, const char *name, int H, int W, int Cin, int Cout,
                      int k, int stride, int pad) {
    char key[64];
    snprintf(key, sizeof key, "%s.weight", name);
    int64_t shape[4] = {Cout, Cin, k, k};
    c->ti = add_tensor(bd, key, 4, shape, 0, 0);
    if (lt_conv2d_dims_init(&c->d, bd->m->max_B, H, W, Cin, Cout, k, k, stride, pad)) bd->err = 1;
}

static void make_bn(builder *bd, rbn *b, const char *name, int C) {
    static const char *const sfx[5] = {"weight", "bias", "running_mean", "running_var",
                                       "num_batches_tracked"};
    char key[64];
    int64_t shape[1] = {C};
    b->C = C;
    for (int k = 0; k < 5; k++) {
        snprintf(key, sizeof key, "%s.%s", name, sfx[k]);
        int i = add_tensor(bd, key, k < 4 ? 1 : 0, shape, k >= 2, k == 4);
        if (k == 0) b->ti = i;
    }
}

static void *net_alloc(lt_resnet *m, size_t bytes, const char *what) {
    struct lt_resnet_net *n = m->net;
    if (n->n_allocs >= MAX_ALLOCS) {
        lt_err_set("resnet: too many allocations");
        return NULL;
    }
    void *p = m->be->alloc(m->be, bytes, what);
    if (p) n->allocs[n->n_allocs++] = p;
    return p;
}

static void resolve_conv(lt_resnet *m, rconv *c) {
    c->w = m->tensors[c->ti].data;
    c->dw = m->tensors[c->ti].grad;
}

static void resolve_bn(lt_resnet *m, rbn *b) {
    lt_resnet_tensor *t = &m->tensors[b->ti];
    b->g = t[0].data, b->dg = t[0].grad;
    b->b = t[1].data, b->db = t[1].grad;
    b->rm = t[2].data, b->rv = t[3].data;
    b->nbt = t[4].data_i64;
}

static void track_ws(lt_resnet *m, const rconv *c) {
    struct lt_resnet_net *n = m->net;
    size_t s = m->be->conv2d_ws_bytes(m->be, &c->d);
    if (s > n->ws_bytes) n->ws_bytes = s;
}

/* Builds the description (graph, tensor table with shapes and offsets, activation sizes); with
 * plan_only it stops there, else it allocates everything on be and initialises the weights. */
static lt_resnet *build(lt_backend *be, const char *arch, int max_B, int H, int W, int plan_only) {
    int depth;
    if (!strcmp(arch, "resnet18")) depth = 18;
    else if (!strcmp(arch, "resnet34")) depth = 34;
    else if (!strcmp(arch, "resnet50")) depth = 50;
    else {
        lt_err_set("unknown student '%s' (expected resnet18, resnet34 or resnet50)", arch);
        return NULL;
    }
    if (max_B < 1 || H < 1 || W < 1) {
        lt_err_set("resnet: bad batch or input size (%d, %d×%d)", max_B, H, W);
        return NULL;
    }
    lt_resnet *m = lt_calloc(1, sizeof *m, "resnet");
    if (!m) return NULL;
    struct lt_resnet_net *n = lt_calloc(1, sizeof *n, "resnet graph");
    m->tensors = lt_calloc(MAX_TENSORS, sizeof *m->tensors, "resnet tensor table");
    builder *bd = lt_calloc(1, sizeof *bd, "resnet builder");
    if (!n || !m->tensors || !bd) {
        free(n), free(m->tensors), free(bd), free(m);
        return NULL;
    }
    m->net = n;
    m->be = be;
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->max_B = max_B, m->H = H, m->W = W;
    bd->m = m;
    bd->plan_only = plan_only;

    /* ---- the graph, registered in state_dict order ---- */
    const int bottleneck = depth == 50;
    const int expansion = bottleneck ? 4 : 1;
    static const int nblk18[4] = {2, 2, 2, 2}, nblk34[4] = {3, 4, 6, 3};
    const int *nblk = depth == 18 ? nblk18 : nblk34; /* resnet50 has resnet34's counts */
    make_conv(bd, &n->conv1, "conv1", H, W, 3, 64, 7, 2, 3);
    make_bn(bd, &n->bn1, "bn1", 64);
    if (bd->err) goto fail_dims;
    int h = n->conv1.d.OH, w = n->conv1.d.OW;
    if (lt_pool_dims_init(&n->pool, max_B, h, w, 64, 3, 2, 1)) goto fail_dims;
    int64_t max_act = (int64_t)h * w * 64;
    h = n->pool.OH, w = n->pool.OW;
    int inplanes = 64;
    for (int L = 0; L < 4; L++) {
        const int planes = 64 << L, stride_l = L == 0 ? 1 : 2;
        for (int k = 0; k < nblk[L]; k++) {
            rblock *bk = &n->blocks[n->n_blocks++];
            const int s = k == 0 ? stride_l : 1, outc = planes * expansion;
            char pre[48], name[64];
            snprintf(pre, sizeof pre, "layer%d.%d", L + 1, k);
            bk->bottleneck = bottleneck;
            bk->has_ds = k == 0 && (s != 1 || inplanes != outc);
            bk->in_n = (int64_t)h * w * inplanes;
            if (bottleneck) {
                snprintf(name, sizeof name, "%s.conv1", pre);
                make_conv(bd, &bk->c1, name, h, w, inplanes, planes, 1, 1, 0);
                snprintf(name, sizeof name, "%s.bn1", pre);
                make_bn(bd, &bk->b1, name, planes);
                snprintf(name, sizeof name, "%s.conv2", pre);
                make_conv(bd, &bk->c2, name, h, w, planes, planes, 3, s, 1);
                snprintf(name, sizeof name, "%s.bn2", pre);
                make_bn(bd, &bk->b2, name, planes);
                if (bd->err) goto fail_dims;
                int oh = bk->c2.d.OH, ow = bk->c2.d.OW;
                snprintf(name, sizeof name, "%s.conv3", pre);
                make_conv(bd, &bk->c3, name, oh, ow, planes, outc, 1, 1, 0);
                snprintf(name, sizeof name, "%s.bn3", pre);
                make_bn(bd, &bk->b3, name, outc);
                bk->mid1_n = (int64_t)h * w * planes;
                bk->mid2_n = (int64_t)oh * ow * planes;
            } else {
                snprintf(name, sizeof name, "%s.conv1", pre);
                make_conv(bd, &bk->c1, name, h, w, inplanes, planes, 3, s, 1);
                snprintf(name, sizeof name, "%s.bn1", pre);
                make_bn(bd, &bk->b1, name, planes);
                if (bd->err) goto fail_dims;
                int oh = bk->c1.d.OH, ow = bk->c1.d.OW;
                snprintf(name, sizeof name, "%s.conv2", pre);
                make_conv(bd, &bk->c2, name, oh, ow, planes, planes, 3, 1, 1);
                snprintf(name, sizeof name, "%s.bn2", pre);
                make_bn(bd, &bk->b2, name, planes);
                bk->mid1_n = (int64_t)oh * ow * planes;
                bk->mid2_n = 0;
            }
            if (bk->has_ds) {
                snprintf(name, sizeof name, "%s.downsample.0", pre);
                make_conv(bd, &bk->cd, name, h, w, inplanes, outc, 1, s, 0);
                snprintf(name, sizeof name, "%s.downsample.1", pre);
                make_bn(bd, &bk->bd, name, outc);
            }
            if (bd->err) goto fail_dims;
            const rconv *last = bottleneck ? &bk->c3 : &bk->c2;
            h = last->d.OH, w = last->d.OW;
            bk->out_n = (int64_t)h * w * outc;
            inplanes = outc;
            int64_t sizes[4] = {bk->in_n, bk->mid1_n, bk->mid2_n, bk->out_n};
            for (int q = 0; q < 4; q++)
                if (sizes[q] > max_act) max_act = sizes[q];
        }
    }
    m->C = inplanes;
    n->max_act = max_act * max_B;
    for (int i = 0; i < m->n_tensors; i++) /* BN vectors are the 1-D tensors */
        if (m->tensors[i].ndim == 1 && m->tensors[i].shape[0] > n->max_bn_C)
            n->max_bn_C = (int)m->tensors[i].shape[0];
    m->n_params = bd->n_params, m->n_buffers = bd->n_buffers;
    if (bd->plan_only) { /* the description is complete: no storage */
        free(bd);
        return m;
    }

    /* ---- storage, on the backend: parameters, gradients, buffers ---- */
    m->params = net_alloc(m, sizeof(float) * m->n_params, "resnet parameters");
    m->grads = net_alloc(m, sizeof(float) * m->n_params, "resnet gradients");
    m->buffers = net_alloc(m, sizeof(float) * m->n_buffers, "resnet running statistics");
    m->nbt = lt_calloc((size_t)m->n_bn, sizeof(int64_t), "resnet counters"); /* host: the walk
                                                                               counts steps */
    if (!m->params || !m->grads || !m->buffers || !m->nbt) goto fail;
    for (int i = 0; i < m->n_tensors; i++) {
        lt_resnet_tensor *t = &m->tensors[i];
        if (t->ndim == 0) t->data_i64 = m->nbt + bd->off[i];
        else if (t->is_buffer) t->data = m->buffers + bd->off[i];
        else t->data = m->params + bd->off[i], t->grad = m->grads + bd->off[i];
    }

    /* ---- resolve pointers, activations, scratch ---- */
    const int64_t B = max_B;
#define ALLOC_F(n_floats, what) ((float *)net_alloc(m, sizeof(float) * (size_t)(n_floats), what))
#define SAVE_BN(bnp)                                                                  \
    do {                                                                              \
        resolve_bn(m, (bnp));                                                         \
        (bnp)->mean = ALLOC_F((bnp)->C, "bn mean");                                   \
        (bnp)->invstd = ALLOC_F((bnp)->C, "bn invstd");                               \
        if (!(bnp)->mean || !(bnp)->invstd) goto fail;                                \
        n->bns[n->n_bns++] = (bnp);                                                   \
    } while (0)
    resolve_conv(m, &n->conv1);
    track_ws(m, &n->conv1);
    SAVE_BN(&n->bn1);
    int64_t stem_n = (int64_t)n->conv1.d.OH * n->conv1.d.OW * 64;
    n->in = ALLOC_F(B * H * W * 3, "resnet input");
    n->t0 = ALLOC_F(B * stem_n, "resnet activations");
    n->a0 = ALLOC_F(B * stem_n, "resnet activations");
    n->p0 = ALLOC_F(B * n->pool.OH * n->pool.OW * 64, "resnet activations");
    n->argmax = net_alloc(m, sizeof(int32_t) * B * n->pool.OH * n->pool.OW * 64, "max pool");
    if (!n->in || !n->t0 || !n->a0 || !n->p0 || !n->argmax) goto fail;
    const float *prev = n->p0;
    for (int i = 0; i < n->n_blocks; i++) {
        rblock *bk = &n->blocks[i];
        bk->x = prev;
        resolve_conv(m, &bk->c1);
        track_ws(m, &bk->c1);
        SAVE_BN(&bk->b1);
        resolve_conv(m, &bk->c2);
        track_ws(m, &bk->c2);
        SAVE_BN(&bk->b2);
        bk->t1 = ALLOC_F(B * bk->mid1_n, "resnet activations");
        bk->a1 = ALLOC_F(B * bk->mid1_n, "resnet activations");
        if (!bk->t1 || !bk->a1) goto fail;
        if (bk->bottleneck) {
            resolve_conv(m, &bk->c3);
        track_ws(m, &bk->c3);
        SAVE_BN(&bk->b3);
            bk->t2 = ALLOC_F(B * bk->mid2_n, "resnet activations");
            bk->a2 = ALLOC_F(B * bk->mid2_n, "resnet activations");
            bk->t3 = ALLOC_F(B * bk->out_n, "resnet activations");
            if (!bk->t2 || !bk->a2 || !bk->t3) goto fail;
        } else {
            bk->t2 = ALLOC_F(B * bk->out_n, "resnet activations");
            if (!bk->t2) goto fail;
        }
        if (bk->has_ds) {
            resolve_conv(m, &bk->cd);
        track_ws(m, &bk->cd);
        SAVE_BN(&bk->bd);
            bk->td = ALLOC_F(B * bk->out_n, "resnet activations");
            bk->sd = ALLOC_F(B * bk->out_n, "resnet activations");
            if (!bk->td || !bk->sd) goto fail;
        }
        bk->out = ALLOC_F(B * bk->out_n, "resnet activations");
        if (!bk->out) goto fail;
        prev = bk->out;
    }
#undef SAVE_BN
    for (int k = 0; k < 4; k++)
        if (!(n->g[k] = ALLOC_F(n->max_act, "resnet gradient buffers"))) goto fail;
    m->features = ALLOC_F(B * m->C, "resnet features");
    if (!m->features) goto fail;
    size_t bn_ws = be->bn_ws_bytes(be, n->max_bn_C);
    if (bn_ws > n->ws_bytes) n->ws_bytes = bn_ws; /* the ops run one at a time: one scratch */
    if (n->ws_bytes && !(n->ws = net_alloc(m, n->ws_bytes, "conv scratch"))) goto fail;
#undef ALLOC_F
    free(bd);
    if (lt_resnet_init_weights(m, 0) != 0) goto fail_init;
    return m;

fail_dims:
    if (bd->err && !lt_err_msg()[0]) lt_err_set("resnet: bad graph");
    lt_err_prefix("%s at input %dx%d", arch, H, W);
fail:
    free(bd);
fail_init:
    lt_resnet_free(m);
    return NULL;
}

lt_resnet *lt_resnet_create(lt_backend *be, const char *arch, int max_B, int H, int W) {
    if (!be) {
        lt_err_set("resnet: no backend");
        return NULL;
    }
    return build(be, arch, max_B, H, W, 0);
}

int lt_resnet_plan(const char *arch, int max_B, int H, int W, lt_resnet_sizes *out) {
    memset(out, 0, sizeof *out);
    lt_resnet *m = build(NULL, arch, max_B, H, W, 1);
    if (!m) return -1;
    const struct lt_resnet_net *n = m->net;
    out->n_tensors = m->n_tensors;
    out->n_params = m->n_params;
    out->n_buffers = m->n_buffers;
    out->n_bn = m->n_bn;
    out->C = m->C;
    out->max_activation = n->max_act;
    out->max_bn_C = n->max_bn_C;
    lt_resnet_free(m);
    return 0;
}

void lt_resnet_free(lt_resnet *m) {
    if (!m) return;
    if (m->net) {
        for (int i = 0; i < m->net->n_allocs; i++) m->be->free(m->be, m->net->allocs[i]);
        free(m->net);
    }
    free(m->nbt);
    free(m->tensors);
    free(m);
}

/* ---- weights by name ---- */

int lt_resnet_init_weights(lt_resnet *m, uint64_t seed) {
    lt_backend *be = m->be;
    float *host = NULL; /* a tensor's values on the host, for a device backend */
    int rc = 0;
    for (int i = 0; i < m->n_tensors && rc == 0; i++) {
        lt_resnet_tensor *t = &m->tensors[i];
        const char *dot = strrchr(t->name, '.');
        const char *field = dot ? dot + 1 : t->name;
        if (t->ndim == 0) {
            *t->data_i64 = 0;
            continue;
        }
        float *v = t->data;
        if (t->mem != LT_MEM_HOST) {
            free(host);
            if (!(host = lt_malloc(sizeof(float) * (size_t)t->numel, "resnet initial weights"))) {
                rc = -1;
                break;
            }
            v = host;
        }
        if (t->ndim == 4) {
            /* kaiming_normal_, mode fan_out, gain sqrt(2): std = sqrt(2 / (Cout·kh·kw)) */
            double std = sqrt(2.0 / (double)(t->shape[0] * t->shape[2] * t->shape[3]));
            lt_rng r;
            lt_rng_init(&r, seed, (uint32_t)i, 0x52534e54u /* 'RSNT' */, 0);
            for (int64_t j = 0; j < t->numel; j += 2) {
                double u1 = 1.0 - lt_rng_uniform(&r); /* (0, 1] */
                double u2 = lt_rng_uniform(&r);
                double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
                v[j] = (float)(std * rad * cos(th));
                if (j + 1 < t->numel) v[j + 1] = (float)(std * rad * sin(th));
            }
        } else {
            float x = (!strcmp(field, "weight") || !strcmp(field, "running_var")) ? 1.0f : 0.0f;
            for (int64_t j = 0; j < t->numel; j++) v[j] = x;
        }
        if (v != t->data) rc = be->upload(be, t->data, v, sizeof(float) * (size_t)t->numel);
    }
    free(host);
    return rc;
}

lt_resnet_tensor *lt_resnet_find(lt_resnet *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

int lt_resnet_set(lt_resnet *m, const char *name, const float *data, int64_t numel) {
    lt_resnet_tensor *t = lt_resnet_find(m, name);
    if (!t) return lt_err_set("%s has no tensor '%s'", m->arch, name);
    if (numel != t->numel)
        return lt_err_set("%s: tensor '%s' has %lld elements, got %lld", m->arch, name,
                          (long long)t->numel, (long long)numel);
    if (t->data_i64) *t->data_i64 = (int64_t)data[0];
    else if (t->mem != LT_MEM_HOST)
        return m->be->upload(m->be, t->data, data, sizeof(float) * (size_t)numel);
    else memcpy(t->data, data, sizeof(float) * (size_t)numel);
    return 0;
}


/* ---- forward ---- */

static int conv_fwd(lt_resnet *m, const rconv *c, int B, float *y, const float *x) {
    lt_conv2d_dims d = c->d;
    d.B = B;
    lt_backend *be = m->be;
    return be->conv2d_forward(be, &d, y, x, c->w, m->net->ws);
}

/* y = act(bn(x) [+ res]) in the mode of the call */
static int bn_fwd(lt_resnet *m, rbn *b, int train, float *y, const float *x, const float *res,
                  int64_t M, int relu) {
    lt_backend *be = m->be;
    if (!train)
        return be->bn_forward_eval(be, y, x, res, b->g, b->b, b->rm, b->rv, (int)M, b->C, BN_EPS,
                                   relu);
    (*b->nbt)++;
    return be->bn_forward_train(be, y, x, res, b->g, b->b, b->mean, b->invstd, b->rm, b->rv,
                                (int)M, b->C, BN_EPS, BN_MOMENTUM, relu, m->net->ws);
}

static int block_fwd(lt_resnet *m, rblock *bk, int B, int train) {
    const float *res = bk->x;
    if (bk->has_ds) {
        if (conv_fwd(m, &bk->cd, B, bk->td, bk->x) ||
            bn_fwd(m, &bk->bd, train, bk->sd, bk->td, NULL, (int64_t)B * bk->out_n / bk->bd.C, 0))
            return -1;
        res = bk->sd;
    }
    if (conv_fwd(m, &bk->c1, B, bk->t1, bk->x) ||
        bn_fwd(m, &bk->b1, train, bk->a1, bk->t1, NULL, (int64_t)B * bk->mid1_n / bk->b1.C, 1) ||
        conv_fwd(m, &bk->c2, B, bk->t2, bk->a1))
        return -1;
    if (!bk->bottleneck)
        return bn_fwd(m, &bk->b2, train, bk->out, bk->t2, res, (int64_t)B * bk->out_n / bk->b2.C,
                      1);
    if (bn_fwd(m, &bk->b2, train, bk->a2, bk->t2, NULL, (int64_t)B * bk->mid2_n / bk->b2.C, 1) ||
        conv_fwd(m, &bk->c3, B, bk->t3, bk->a2))
        return -1;
    return bn_fwd(m, &bk->b3, train, bk->out, bk->t3, res, (int64_t)B * bk->out_n / bk->b3.C, 1);
}

int lt_resnet_forward(lt_resnet *m, const float *x, int B, int train) {
    struct lt_resnet_net *n = m->net;
    if (B < 1 || B > m->max_B)
        return lt_err_set("%s: batch %d outside 1..%d (the size it was built for)", m->arch, B,
                          m->max_B);
    m->last_B = 0;
    lt_backend *be = m->be;
    if (x != n->in && be->act_bf16)
        return lt_err_set("%s: a backend with bf16 activations takes the input through its "
                          "mix_normalize into lt_resnet_input, not from host floats", m->arch);
    if (x != n->in && be->upload(be, n->in, x, sizeof(float) * (size_t)B * m->H * m->W * 3))
        return -1;
    int64_t M0 = (int64_t)B * n->conv1.d.OH * n->conv1.d.OW;
    if (conv_fwd(m, &n->conv1, B, n->t0, n->in) || bn_fwd(m, &n->bn1, train, n->a0, n->t0, NULL, M0, 1))
        return lt_err_prefix("%s stem", m->arch);
    lt_pool_dims pd = n->pool;
    pd.B = B;
    if (be->maxpool_forward(be, &pd, n->p0, n->argmax, n->a0)) return -1;
    for (int i = 0; i < n->n_blocks; i++)
        if (block_fwd(m, &n->blocks[i], B, train)) return lt_err_prefix("%s block %d", m->arch, i);
    const rblock *lb = &n->blocks[n->n_blocks - 1];
    if (be->avgpool_forward(be, m->features, lb->out, B, (int)(lb->out_n / m->C), m->C))
        return -1;
    m->last_B = B;
    m->last_train = train;
    return 0;
}

float *lt_resnet_input(lt_resnet *m) { return m->net->in; }

void lt_resnet_count_train_batch(lt_resnet *m) {
    for (int i = 0; i < m->n_bn; i++) m->nbt[i]++; /* bn_fwd's (*b->nbt)++, for every one */
}

/* ---- backward ---- */

static int conv_bwd(lt_resnet *m, const rconv *c, int B, float *dx, const float *dy,
                    const float *x, int accumulate, int accumulate_dx) {
    lt_conv2d_dims d = c->d;
    d.B = B;
    lt_backend *be = m->be;
    return be->conv2d_backward(be, &d, dx, c->dw, dy, x, c->w, m->net->ws, accumulate,
                               accumulate_dx);
}

static int bn_bwd(lt_resnet *m, const rbn *b, float *dx, const float *dy, const float *x,
                  const float *y, int64_t M, int relu, int accumulate) {
    lt_backend *be = m->be;
    return be->bn_backward(be, dx, b->dg, b->db, dy, x, y, b->g, b->mean, b->invstd, (int)M, b->C,
                           relu, accumulate, m->net->ws);
}

/* A: ∂out (B, out) on entry (masked in place); dX: ∂in written; C, D: scratch. */
static int block_bwd(lt_resnet *m, const rblock *bk, int B, float *A, float *dX, float *C,
                     float *D, int acc) {
    const int64_t Mo = (int64_t)B * bk->out_n, M1 = (int64_t)B * bk->mid1_n;
    lt_backend *be = m->be;
    int r = be->relu_backward(be, A, A, bk->out, Mo); /* through the final ReLU: A = g */
    if (bk->bottleneck) {
        const int64_t M2 = (int64_t)B * bk->mid2_n;
        r = r || bn_bwd(m, &bk->b3, C, A, bk->t3, NULL, Mo / bk->b3.C, 0, acc);
        r = r || conv_bwd(m, &bk->c3, B, D, C, bk->a2, acc, 0);
        r = r || bn_bwd(m, &bk->b2, D, D, bk->t2, bk->a2, M2 / bk->b2.C, 1, acc);
        r = r || conv_bwd(m, &bk->c2, B, C, D, bk->a1, acc, 0);
        r = r || bn_bwd(m, &bk->b1, C, C, bk->t1, bk->a1, M1 / bk->b1.C, 1, acc);
        r = r || conv_bwd(m, &bk->c1, B, dX, C, bk->x, acc, 0);
    } else {
        r = r || bn_bwd(m, &bk->b2, C, A, bk->t2, NULL, Mo / bk->b2.C, 0, acc);
        r = r || conv_bwd(m, &bk->c2, B, D, C, bk->a1, acc, 0);
        r = r || bn_bwd(m, &bk->b1, D, D, bk->t1, bk->a1, M1 / bk->b1.C, 1, acc);
        r = r || conv_bwd(m, &bk->c1, B, dX, D, bk->x, acc, 0);
    }
    if (bk->has_ds) {
        r = r || bn_bwd(m, &bk->bd, C, A, bk->td, NULL, Mo / bk->bd.C, 0, acc);
        r = r || conv_bwd(m, &bk->cd, B, dX, C, bk->x, acc, 1);
    } else {
        r = r || be->add(be, dX, dX, A, Mo);
    }
    return r ? -1 : 0;
}

int lt_resnet_backward(lt_resnet *m, const float *dfeat, float *dinput, int accumulate) {
    struct lt_resnet_net *n = m->net;
    if (!m->last_B || !m->last_train)
        return lt_err_set("%s: backward needs a training-mode forward first", m->arch);
    const int B = m->last_B;
    const rblock *lb = &n->blocks[n->n_blocks - 1];
    float *cur = n->g[0], *nxt = n->g[1];
    lt_backend *be = m->be;
    if (be->avgpool_backward(be, cur, dfeat, B, (int)(lb->out_n / m->C), m->C)) return -1;
    for (int i = n->n_blocks - 1; i >= 0; i--) {
        if (block_bwd(m, &n->blocks[i], B, cur, nxt, n->g[2], n->g[3], accumulate))
            return lt_err_prefix("%s block %d backward", m->arch, i);
        float *t = cur;
        cur = nxt, nxt = t;
    }
    /* cur = ∂p0; maxpool → ∂a0 in nxt; bn1 (fused ReLU) in place; conv1 */
    lt_pool_dims pd = n->pool;
    pd.B = B;
    int64_t M0 = (int64_t)B * n->conv1.d.OH * n->conv1.d.OW;
    if (be->maxpool_backward(be, &pd, nxt, cur, n->argmax) ||
        bn_bwd(m, &n->bn1, nxt, nxt, n->t0, n->a0, M0, 1, accumulate) ||
        conv_bwd(m, &n->conv1, B, dinput, nxt, n->in, accumulate, 0))
        return lt_err_prefix("%s stem backward", m->arch);
    return 0;
}

/* ---- introspection ---- */

const float *lt_resnet_relu_output(const lt_resnet *m, int i, int64_t shape[4]) {
    const struct lt_resnet_net *n = m->net;
    if (i == 0) {
        shape[0] = m->last_B, shape[1] = n->conv1.d.OH, shape[2] = n->conv1.d.OW, shape[3] = 64;
        return n->a0;
    }
    i--;
    for (int k = 0; k < n->n_blocks; k++) {
        const rblock *bk = &n->blocks[k];
        const rconv *lc = bk->bottleneck ? &bk->c3 : &bk->c2;
        const int per = bk->bottleneck ? 3 : 2;
        if (i >= per) {
            i -= per;
            continue;
        }
        const rconv *c = i == 0 ? &bk->c1 : i == 1 && bk->bottleneck ? &bk->c2 : lc;
        const float *p = i == 0 ? bk->a1 : i == 1 && bk->bottleneck ? bk->a2 : bk->out;
        shape[0] = m->last_B, shape[1] = c->d.OH, shape[2] = c->d.OW, shape[3] = c->d.Cout;
        return p;
    }
    return NULL;
}

const int32_t *lt_resnet_maxpool_argmax(const lt_resnet *m, int64_t shape[4]) {
    const struct lt_resnet_net *n = m->net;
    shape[0] = m->last_B, shape[1] = n->pool.OH, shape[2] = n->pool.OW, shape[3] = 64;
    return n->argmax;
}
