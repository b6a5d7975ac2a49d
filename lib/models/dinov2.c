/* dinov2.c: the DINOv2 ViT teacher: weights from safetensors (original or Hugging Face key names,
 * F32/F16/BF16 converted to fp32 at load) and an explicit fp32 forward over preallocated buffers,
 * written in the ops of nn/ops.h so that a CUDA twin can follow the same graph.
 *
 * Why it exists: lt-embed runs this once per view to produce the cached teacher embeddings; its
 * output is checked against a PyTorch implementation (tests/reference/dinov2_ref.py).
 *
 * Forward, for B images of H×W, patch p, grid gh = H/p, gw = W/p, G = gh·gw, T = 1 + R + G tokens:
 *   patches (B·G, 3p²) = patchify(x)            patch embed: (B·G, 3p²) · (D, 3p²)ᵀ + b → (B·G, D)
 *   tokens (B, T, D) = [cls + pos[0], registers, patch_i + pos[1+i]]   (pos resized as DINOv2)
 *   depth × { x += ls1 ⊙ proj(attn(qkv(LN1(x))));  x += ls2 ⊙ mlp(LN2(x)) }
 *   out (B, D) = l2normalize(LN(x[:, 0]))
 * Weights are kept in PyTorch's (out, in) Linear layout: lt_op_linear multiplies by wᵀ inside the
 * GEMM, which costs nothing extra in OpenBLAS or cuBLAS. */
#include "models/dinov2.h"

#include "core/error.h"
#include "data/safetensors.h"
#include "nn/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f
#define POS_OFFSET 0.1 /* DINOv2's interpolate_offset */

typedef struct {
    float *n1w, *n1b;     /* (D) */
    float *qkv_w, *qkv_b; /* (3D, D), (3D): rows [q; k; v], each (heads, 64) */
    float *proj_w, *proj_b; /* (D, D), (D) */
    float *ls1, *ls2;     /* (D) LayerScale gammas */
    float *n2w, *n2b;     /* (D) */
    float *fc1_w, *fc1_b; /* (F, D), (F): F = hidden (GELU MLP) or 2·hidden (SwiGLU w12) */
    float *fc2_w, *fc2_b; /* (D, hidden), (D) */
} block;

struct lt_dinov2 {
    lt_dinov2_config cfg;
    char *path;
    float *cls;              /* (D) */
    float *reg;              /* (R, D) or NULL */
    float *pos;              /* (1 + M², D) stored position embedding */
    float *patch_w, *patch_b; /* (D, 3·p·p) = conv weight (D, 3, p, p), (D) */
    float *norm_w, *norm_b;  /* (D) final LayerNorm */
    block *blocks;
    /* position embedding for the current grid (1 + gh·gw, D); cur_* say which grid it is for */
    float *pos_cur;
    int cur_gh, cur_gw, cur_square;
    int64_t pos_cap;
    /* activations, sized for the largest call seen (grown on demand) */
    int64_t cap_rows, cap_patch_rows, cap_scratch;
    float *x;       /* (B·T, D) residual stream */
    float *h;       /* (B·T, D) LayerNorm output, then the attention output */
    float *qkv;     /* (B·T, 3D) */
    float *mlp;     /* (B·T, F) */
    float *patches; /* (B·G, 3p²) im2col'd input */
    float *pemb;    /* (B·G, D) patch embeddings */
    float *scratch; /* attention scores, lt_op_attention_scratch(T) floats */
};

const lt_dinov2_config *lt_dinov2_config_of(const lt_dinov2 *m) { return &m->cfg; }

static void free_block(block *b) {
    float **f[] = {&b->n1w, &b->n1b, &b->qkv_w, &b->qkv_b, &b->proj_w, &b->proj_b, &b->ls1,
                   &b->ls2, &b->n2w, &b->n2b, &b->fc1_w, &b->fc1_b, &b->fc2_w, &b->fc2_b};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(*f[i]);
}

void lt_dinov2_free(lt_dinov2 *m) {
    if (!m) return;
    if (m->blocks)
        for (int i = 0; i < m->cfg.depth; i++) free_block(&m->blocks[i]);
    free(m->blocks);
    free(m->cls);
    free(m->reg);
    free(m->pos);
    free(m->patch_w);
    free(m->patch_b);
    free(m->norm_w);
    free(m->norm_b);
    free(m->pos_cur);
    free(m->x);
    free(m->h);
    free(m->qkv);
    free(m->mlp);
    free(m->patches);
    free(m->pemb);
    free(m->scratch);
    free(m->path);
    free(m);
}

/* ---- loading ------------------------------------------------------------------------------ */

typedef struct {
    const lt_safetensors *st;
    const char *path;
    int hf;
    int *chunk; /* original names: chunk index of block i for "blocks.C.i." (or -1) */
} loader;

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Finds `name` and checks its shape equals (d0, d1, ...) (ndim entries); NULL + lt_err if not. */
static const lt_st_tensor *find_checked(const loader *L, const char *name, int ndim,
                                        const int64_t *shape) {
    const lt_st_tensor *t = lt_st_find(L->st, name);
    if (!t) {
        lt_err_set("%s: missing tensor '%s' (not a DINOv2 checkpoint with %s key names?)",
                   L->path, name, L->hf ? "Hugging Face" : "original");
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char got[128], want[128];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        lt_err_set("%s: tensor '%s' has shape %s, expected %s", L->path, name, got, want);
        return NULL;
    }
    return t;
}

/* Finds `name`, checks its shape equals (d0, d1, ...) (ndim entries) and converts it into dst
 * (dst NULL: malloc'd and returned through *out). */
static int load_into(const loader *L, const char *name, int ndim, const int64_t *shape,
                     float *dst, float **out) {
    const lt_st_tensor *t = find_checked(L, name, ndim, shape);
    if (!t) return -1;
    if (!dst) {
        dst = lt_malloc((size_t)t->numel * sizeof(float), name);
        if (!dst) return lt_err_prefix("%s", L->path);
        *out = dst;
    }
    return lt_st_read_f32(L->st, t, dst);
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* Loads tensor `name` of the given shape into a new buffer *out. */
#define LOAD(L, name, out, ...) load_into(L, name, NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__), NULL, out)

static const char *block_prefix(const loader *L, int i, char *buf, size_t n) {
    if (L->hf)
        snprintf(buf, n, "encoder.layer.%d.", i);
    else if (L->chunk[i] >= 0)
        snprintf(buf, n, "blocks.%d.%d.", L->chunk[i], i);
    else
        snprintf(buf, n, "blocks.%d.", i);
    return buf;
}

/* Parses a non-negative decimal at *s followed by '.', advancing *s past the dot; -1 if none. */
static int parse_index(const char **s) {
    const char *p = *s;
    long v = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 1000000) return -1;
        p++;
    }
    if (*p != '.') return -1;
    *s = p + 1;
    return (int)v;
}

/* Finds the block indices from the keys "<prefix>N.norm1.weight" (or "blocks.C.N.norm1.weight").
 * Fills chunk (size cap) and returns the depth, or -1 + lt_err. */
static int find_depth(const lt_safetensors *st, const char *path, int hf, int **chunk_out) {
    const char *prefix = hf ? "encoder.layer." : "blocks.";
    size_t pl = strlen(prefix);
    int maxi = -1, count = 0;
    for (int pass = 0; pass < 2; pass++) {
        int *chunk = NULL;
        if (pass == 1) {
            if (maxi < 0) return lt_err_set("%s: no transformer blocks found (no '%sN.norm1.weight')",
                                            path, prefix);
            chunk = lt_malloc((size_t)(maxi + 1) * sizeof(int), "block table");
            if (!chunk) return -1;
            for (int i = 0; i <= maxi; i++) chunk[i] = -2; /* -2: not seen */
            *chunk_out = chunk;
        }
        for (int k = 0; k < st->n; k++) {
            const char *s = st->tensors[k].name;
            if (strncmp(s, prefix, pl) != 0) continue;
            s += pl;
            int a = parse_index(&s), c = -1;
            if (a < 0) continue;
            if (!hf) {
                const char *s2 = s;
                int b = parse_index(&s2);
                if (b >= 0) { /* BlockChunk naming: blocks.<chunk>.<block>. */
                    c = a;
                    a = b;
                    s = s2;
                }
            }
            if (strcmp(s, "norm1.weight") != 0) continue;
            if (pass == 0) {
                if (a > maxi) maxi = a;
                count++;
            } else {
                if (chunk[a] != -2)
                    return lt_err_set("%s: block %d appears twice in the key names", path, a);
                chunk[a] = c;
            }
        }
    }
    for (int i = 0; i <= maxi; i++)
        if ((*chunk_out)[i] == -2)
            return lt_err_set("%s: missing tensor '%s%d.norm1.weight' (blocks 0..%d expected)",
                              path, prefix, i, maxi);
    (void)count;
    return maxi + 1;
}

static int load_block(const loader *L, const lt_dinov2_config *c, int i, block *b) {
    char pre[64], k[160];
    const int64_t D = c->embed_dim, F = c->swiglu ? 2 * c->mlp_hidden : c->mlp_hidden,
                  Hd = c->mlp_hidden;
    block_prefix(L, i, pre, sizeof pre);
#define K(s) (snprintf(k, sizeof k, "%s%s", pre, s), k)
    if (LOAD(L, K("norm1.weight"), &b->n1w, D) || LOAD(L, K("norm1.bias"), &b->n1b, D) ||
        LOAD(L, K("norm2.weight"), &b->n2w, D) || LOAD(L, K("norm2.bias"), &b->n2b, D))
        return -1;
    /* The fused qkv buffers are allocated before the tensors are read: check first that the
     * file really holds them, so a lying header cannot make us allocate 3·D² floats for nothing. */
    if (L->hf) {
        const char *qkv[3] = {"query", "key", "value"};
        for (int j = 0; j < 3; j++) {
            char name[64];
            snprintf(name, sizeof name, "attention.attention.%s.weight", qkv[j]);
            if (!find_checked(L, K(name), 2, SHAPE(D, D))) return -1;
            snprintf(name, sizeof name, "attention.attention.%s.bias", qkv[j]);
            if (!find_checked(L, K(name), 1, SHAPE(D))) return -1;
        }
    } else if (!find_checked(L, K("attn.qkv.weight"), 2, SHAPE(3 * D, D)) ||
               !find_checked(L, K("attn.qkv.bias"), 1, SHAPE(3 * D))) {
        return -1;
    }
    b->qkv_w = lt_malloc((size_t)(3 * D * D) * sizeof(float), "qkv weight");
    b->qkv_b = lt_malloc((size_t)(3 * D) * sizeof(float), "qkv bias");
    if (!b->qkv_w || !b->qkv_b) return -1;
    if (L->hf) {
        const char *qkv[3] = {"query", "key", "value"};
        for (int j = 0; j < 3; j++) {
            char name[64];
            snprintf(name, sizeof name, "attention.attention.%s.weight", qkv[j]);
            if (load_into(L, K(name), 2, SHAPE(D, D), b->qkv_w + j * D * D, NULL)) return -1;
            snprintf(name, sizeof name, "attention.attention.%s.bias", qkv[j]);
            if (load_into(L, K(name), 1, SHAPE(D), b->qkv_b + j * D, NULL)) return -1;
        }
        if (LOAD(L, K("attention.output.dense.weight"), &b->proj_w, D, D) ||
            LOAD(L, K("attention.output.dense.bias"), &b->proj_b, D) ||
            LOAD(L, K("layer_scale1.lambda1"), &b->ls1, D) ||
            LOAD(L, K("layer_scale2.lambda1"), &b->ls2, D))
            return -1;
        if (c->swiglu)
            return LOAD(L, K("mlp.weights_in.weight"), &b->fc1_w, F, D) ||
                           LOAD(L, K("mlp.weights_in.bias"), &b->fc1_b, F) ||
                           LOAD(L, K("mlp.weights_out.weight"), &b->fc2_w, D, Hd) ||
                           LOAD(L, K("mlp.weights_out.bias"), &b->fc2_b, D)
                       ? -1
                       : 0;
    } else {
        if (load_into(L, K("attn.qkv.weight"), 2, SHAPE(3 * D, D), b->qkv_w, NULL) ||
            load_into(L, K("attn.qkv.bias"), 1, SHAPE(3 * D), b->qkv_b, NULL) ||
            LOAD(L, K("attn.proj.weight"), &b->proj_w, D, D) ||
            LOAD(L, K("attn.proj.bias"), &b->proj_b, D) || LOAD(L, K("ls1.gamma"), &b->ls1, D) ||
            LOAD(L, K("ls2.gamma"), &b->ls2, D))
            return -1;
        if (c->swiglu)
            return LOAD(L, K("mlp.w12.weight"), &b->fc1_w, F, D) ||
                           LOAD(L, K("mlp.w12.bias"), &b->fc1_b, F) ||
                           LOAD(L, K("mlp.w3.weight"), &b->fc2_w, D, Hd) ||
                           LOAD(L, K("mlp.w3.bias"), &b->fc2_b, D)
                       ? -1
                       : 0;
    }
    return LOAD(L, K("mlp.fc1.weight"), &b->fc1_w, F, D) ||
                   LOAD(L, K("mlp.fc1.bias"), &b->fc1_b, F) ||
                   LOAD(L, K("mlp.fc2.weight"), &b->fc2_w, D, Hd) ||
                   LOAD(L, K("mlp.fc2.bias"), &b->fc2_b, D)
               ? -1
               : 0;
#undef K
}

static int load_model(lt_dinov2 *m, const lt_safetensors *st, const char *path) {
    lt_dinov2_config *c = &m->cfg;
    loader L = {.st = st, .path = path};
    const char *k_cls, *k_pos, *k_reg, *k_pw, *k_pb, *k_nw, *k_nb;
    if (lt_st_find(st, "embeddings.cls_token")) {
        L.hf = 1;
        k_cls = "embeddings.cls_token";
        k_pos = "embeddings.position_embeddings";
        k_reg = "embeddings.register_tokens";
        k_pw = "embeddings.patch_embeddings.projection.weight";
        k_pb = "embeddings.patch_embeddings.projection.bias";
        k_nw = "layernorm.weight";
        k_nb = "layernorm.bias";
    } else if (lt_st_find(st, "cls_token")) {
        k_cls = "cls_token";
        k_pos = "pos_embed";
        k_reg = "register_tokens";
        k_pw = "patch_embed.proj.weight";
        k_pb = "patch_embed.proj.bias";
        k_nw = "norm.weight";
        k_nb = "norm.bias";
    } else {
        return lt_err_set("%s: not a DINOv2 checkpoint: no tensor 'cls_token' (original key names) "
                          "or 'embeddings.cls_token' (Hugging Face key names)", path);
    }
    c->hf_names = L.hf;
    const lt_st_tensor *t = lt_st_find(st, k_cls);
    if (t->ndim != 3 || t->shape[0] != 1 || t->shape[1] != 1 || t->shape[2] <= 0)
        return lt_err_set("%s: tensor '%s' should have shape [1, 1, D]", path, k_cls);
    const int64_t D = t->shape[2];
    if (D % 64 != 0 || D > 65536)
        return lt_err_set("%s: embed dim %lld (from '%s') is not a multiple of the head dim 64",
                          path, (long long)D, k_cls);
    c->embed_dim = (int)D;
    c->heads = (int)(D / 64);
    if (LOAD(&L, k_cls, &m->cls, 1, 1, D)) return -1;

    const lt_st_tensor *pw = lt_st_find(st, k_pw);
    if (!pw) return lt_err_set("%s: missing tensor '%s'", path, k_pw);
    if (pw->ndim != 4 || pw->shape[0] != D || pw->shape[1] != 3 || pw->shape[2] != pw->shape[3] ||
        pw->shape[2] <= 0 || pw->shape[2] > 1024)
        return lt_err_set("%s: tensor '%s' should have shape [%lld, 3, p, p]", path, k_pw,
                          (long long)D);
    c->patch = (int)pw->shape[2];
    const int64_t p = c->patch;
    if (LOAD(&L, k_pw, &m->patch_w, D, 3, p, p) || LOAD(&L, k_pb, &m->patch_b, D)) return -1;

    const lt_st_tensor *pe = lt_st_find(st, k_pos);
    if (!pe) return lt_err_set("%s: missing tensor '%s'", path, k_pos);
    int64_t M = 0;
    if (pe->ndim == 3 && pe->shape[0] == 1 && pe->shape[2] == D && pe->shape[1] >= 2) {
        M = (int64_t)llround(sqrt((double)(pe->shape[1] - 1)));
        if (M * M != pe->shape[1] - 1) M = 0;
    }
    if (M <= 0)
        return lt_err_set("%s: tensor '%s' should have shape [1, 1 + M*M, %lld]", path, k_pos,
                          (long long)D);
    c->pos_grid = (int)M;
    if (LOAD(&L, k_pos, &m->pos, 1, 1 + M * M, D)) return -1;

    const lt_st_tensor *rt = lt_st_find(st, k_reg);
    c->n_reg = 0;
    if (rt) {
        if (rt->ndim != 3 || rt->shape[0] != 1 || rt->shape[2] != D || rt->shape[1] > 1024)
            return lt_err_set("%s: tensor '%s' should have shape [1, R, %lld]", path, k_reg,
                              (long long)D);
        c->n_reg = (int)rt->shape[1];
        if (c->n_reg > 0 && LOAD(&L, k_reg, &m->reg, 1, (int64_t)c->n_reg, D)) return -1;
    }
    if (LOAD(&L, k_nw, &m->norm_w, D) || LOAD(&L, k_nb, &m->norm_b, D)) return -1;

    int depth = find_depth(st, path, L.hf, &L.chunk);
    if (depth < 0) {
        free(L.chunk);
        return -1;
    }
    c->depth = depth;
    /* MLP kind and width from block 0 */
    char pre[64], k[160];
    block_prefix(&L, 0, pre, sizeof pre);
    snprintf(k, sizeof k, "%s%s", pre, L.hf ? "mlp.weights_in.weight" : "mlp.w12.weight");
    const lt_st_tensor *f1 = lt_st_find(st, k);
    c->swiglu = f1 != NULL;
    if (!f1) {
        snprintf(k, sizeof k, "%smlp.fc1.weight", pre);
        f1 = lt_st_find(st, k);
    }
    if (!f1 || f1->ndim != 2 || f1->shape[0] <= 0 || f1->shape[0] > (1 << 20) ||
        (c->swiglu && f1->shape[0] % 2)) {
        free(L.chunk);
        return lt_err_set(f1 ? "%s: tensor '%s' has an invalid shape"
                             : "%s: missing tensor '%s' (no MLP weights in block 0)",
                          path, k);
    }
    c->mlp_hidden = (int)(c->swiglu ? f1->shape[0] / 2 : f1->shape[0]);

    m->blocks = lt_calloc((size_t)depth, sizeof(block), "blocks");
    if (!m->blocks) {
        free(L.chunk);
        return -1;
    }
    for (int i = 0; i < depth; i++)
        if (load_block(&L, c, i, &m->blocks[i])) {
            free(L.chunk);
            return -1;
        }
    free(L.chunk);
    return 0;
}

int lt_dinov2_load(const char *path, lt_dinov2 **out) {
    *out = NULL;
    lt_safetensors st;
    if (lt_st_open(path, &st)) return -1;
    lt_dinov2 *m = lt_calloc(1, sizeof *m, "dinov2 model");
    if (!m) {
        lt_st_close(&st);
        return -1;
    }
    m->path = strdup(path);
    int rc = m->path ? load_model(m, &st, path) : lt_err_set("out of memory");
    lt_st_close(&st);
    if (rc) {
        lt_dinov2_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

/* ---- forward ------------------------------------------------------------------------------ */

static int grow(float **buf, int64_t n, const char *what) {
    free(*buf);
    *buf = lt_malloc((size_t)n * sizeof(float), what);
    return *buf ? 0 : -1;
}

/* Makes sure the activation buffers hold B images of T tokens / G patches. */
static int ensure_buffers(lt_dinov2 *m, int B, int T, int G) {
    const lt_dinov2_config *c = &m->cfg;
    const int64_t D = c->embed_dim, F = c->swiglu ? 2 * c->mlp_hidden : c->mlp_hidden;
    const int64_t rows = (int64_t)B * T, prow = (int64_t)B * G, K = 3LL * c->patch * c->patch;
    if (rows > m->cap_rows) {
        m->cap_rows = 0;
        if (grow(&m->x, rows * D, "activations") || grow(&m->h, rows * D, "activations") ||
            grow(&m->qkv, rows * 3 * D, "activations") || grow(&m->mlp, rows * F, "activations"))
            return -1;
        m->cap_rows = rows;
    }
    if (prow > m->cap_patch_rows) {
        m->cap_patch_rows = 0;
        if (grow(&m->patches, prow * K, "patches") || grow(&m->pemb, prow * D, "patches"))
            return -1;
        m->cap_patch_rows = prow;
    }
    const int64_t ns = lt_op_attention_scratch(T); /* depends on the thread count too */
    if (ns > m->cap_scratch) {
        m->cap_scratch = 0;
        if (grow(&m->scratch, ns, "attention scores")) return -1;
        m->cap_scratch = ns;
    }
    return 0;
}

/* The (1 + gh·gw, D) position embedding of a gh × gw grid into out (see prepare_pos). */
static void pos_embed_into(const lt_dinov2 *m, int gh, int gw, int square, float *out) {
    const int D = m->cfg.embed_dim, M = m->cfg.pos_grid;
    if ((int64_t)gh * gw == (int64_t)M * M && square) {
        memcpy(out, m->pos, (size_t)(1 + (int64_t)gh * gw) * D * sizeof(float));
    } else {
        memcpy(out, m->pos, (size_t)D * sizeof(float)); /* class token's */
        lt_op_bicubic(out + D, m->pos + D, M, M, gh, gw, D, (gh + POS_OFFSET) / M,
                      (gw + POS_OFFSET) / M);
    }
}

void lt_dinov2_pos_embed(const lt_dinov2 *m, int H, int W, float *out) {
    pos_embed_into(m, H / m->cfg.patch, W / m->cfg.patch, H == W, out);
}

void lt_dinov2_weights_of(const lt_dinov2 *m, lt_dinov2_weights *w) {
    w->cls = m->cls;
    w->reg = m->reg;
    w->pos = m->pos;
    w->patch_w = m->patch_w;
    w->patch_b = m->patch_b;
    w->norm_w = m->norm_w;
    w->norm_b = m->norm_b;
}

void lt_dinov2_block_weights_of(const lt_dinov2 *m, int i, lt_dinov2_block_weights *w) {
    const block *b = &m->blocks[i];
    w->n1w = b->n1w;
    w->n1b = b->n1b;
    w->qkv_w = b->qkv_w;
    w->qkv_b = b->qkv_b;
    w->proj_w = b->proj_w;
    w->proj_b = b->proj_b;
    w->ls1 = b->ls1;
    w->ls2 = b->ls2;
    w->n2w = b->n2w;
    w->n2b = b->n2b;
    w->fc1_w = b->fc1_w;
    w->fc1_b = b->fc1_b;
    w->fc2_w = b->fc2_w;
    w->fc2_b = b->fc2_b;
}

/* The position embedding for a gh × gw grid of an H × W image, as DINOv2's
 * interpolate_pos_encoding: unchanged when the grid has M² patches and the image is square,
 * otherwise the patch part resized by bicubic with scale_factor ((gh + 0.1)/M, (gw + 0.1)/M). */
static int prepare_pos(lt_dinov2 *m, int gh, int gw, int square) {
    const int D = m->cfg.embed_dim;
    if (m->pos_cur && m->cur_gh == gh && m->cur_gw == gw && m->cur_square == square) return 0;
    int64_t n = (1 + (int64_t)gh * gw) * D;
    if (n > m->pos_cap) {
        m->pos_cap = 0;
        if (grow(&m->pos_cur, n, "position embedding")) return -1;
        m->pos_cap = n;
    }
    pos_embed_into(m, gh, gw, square, m->pos_cur);
    m->cur_gh = gh;
    m->cur_gw = gw;
    m->cur_square = square;
    return 0;
}

int lt_dinov2_forward(lt_dinov2 *m, const float *x, int B, int H, int W, float *out) {
    const lt_dinov2_config *c = &m->cfg;
    const int D = c->embed_dim, p = c->patch, R = c->n_reg, Hd = c->mlp_hidden;
    const int F = c->swiglu ? 2 * Hd : Hd;
    const int gh = H / p, gw = W / p, G = gh * gw, T = 1 + R + G, K = 3 * p * p;
    if (B <= 0 || gh <= 0 || gw <= 0)
        return lt_err_set("dinov2: %d images of %dx%d: need at least one %dx%d patch", B, H, W, p,
                          p);
    if ((int64_t)B * T > (1LL << 31) / (3 * D) || (int64_t)T * T > (1LL << 31))
        return lt_err_set("dinov2: batch of %d images of %dx%d is too large", B, H, W);
    if (ensure_buffers(m, B, T, G) || prepare_pos(m, gh, gw, H == W))
        return lt_err_prefix("dinov2 forward (%s)", m->path);

    /* patch embedding: (B·G, K) · (D, K)ᵀ + b → pemb (B·G, D) */
    lt_op_patchify(m->patches, x, B, H, W, 3, p);
    lt_op_linear(m->pemb, m->patches, m->patch_w, m->patch_b, B * G, K, D);

    /* tokens (B, T, D): [cls + pos[0], registers, patches + pos[1..]] */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *xb = m->x + (int64_t)b * T * D;
        for (int d = 0; d < D; d++) xb[d] = m->cls[d] + m->pos_cur[d];
        if (R) memcpy(xb + D, m->reg, (size_t)R * D * sizeof(float));
        for (int i = 0; i < G; i++) {
            float *dst = xb + (int64_t)(1 + R + i) * D;
            const float *src = m->pemb + ((int64_t)b * G + i) * D;
            const float *pp = m->pos_cur + (int64_t)(1 + i) * D;
            for (int d = 0; d < D; d++) dst[d] = src[d] + pp[d];
        }
    }

    const int rows = B * T;
    for (int l = 0; l < c->depth; l++) {
        const block *bl = &m->blocks[l];
        /* attention branch */
        lt_op_layernorm(m->h, m->x, bl->n1w, bl->n1b, rows, D, LN_EPS);          /* (rows, D) */
        lt_op_linear(m->qkv, m->h, bl->qkv_w, bl->qkv_b, rows, D, 3 * D);        /* (rows, 3D) */
        lt_op_attention(m->h, m->qkv, m->scratch, B, T, c->heads, 64);            /* (rows, D) */
        lt_op_linear(m->qkv, m->h, bl->proj_w, bl->proj_b, rows, D, D);          /* (rows, D) */
        lt_op_layerscale_add(m->x, m->qkv, bl->ls1, rows, D);
        /* MLP branch */
        lt_op_layernorm(m->h, m->x, bl->n2w, bl->n2b, rows, D, LN_EPS);
        lt_op_linear(m->mlp, m->h, bl->fc1_w, bl->fc1_b, rows, D, F);            /* (rows, F) */
        if (c->swiglu)
            lt_op_swiglu(m->mlp, m->mlp, rows, Hd);                               /* (rows, Hd) */
        else
            lt_op_gelu(m->mlp, m->mlp, (int64_t)rows * Hd);
        lt_op_linear(m->qkv, m->mlp, bl->fc2_w, bl->fc2_b, rows, Hd, D);         /* (rows, D) */
        lt_op_layerscale_add(m->x, m->qkv, bl->ls2, rows, D);
    }

    /* final LayerNorm on the CLS tokens only, then L2 normalisation: out (B, D) */
    for (int b = 0; b < B; b++)
        memcpy(out + (int64_t)b * D, m->x + (int64_t)b * T * D, (size_t)D * sizeof(float));
    lt_op_layernorm(out, out, m->norm_w, m->norm_b, B, D, LN_EPS);
    lt_op_l2norm(out, NULL, out, B, D);
    return 0;
}
