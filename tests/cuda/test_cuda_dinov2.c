/* test_cuda_dinov2.c: the GPU DINOv2 forward (models/dinov2_cuda.h) against the CPU forward
 * (models/dinov2.h, itself tested against PyTorch), per precision, on random models.
 *
 * Why it exists: the op tests (test_cuda_ops.c) check each op; this checks the whole graph: weight
 * upload (LayerScale folding, patch padding, fused qkv of Hugging Face files), the position
 * embedding of square and non-square grids, registers, SwiGLU, the uint8-views input path and the
 * two-slot asynchronous API. Each model is written to a temporary .safetensors file (original or
 * Hugging Face key names) and loaded by lt_dinov2_load, as lt-embed does.
 *
 * Measures: NMSE = Σ(gpu − cpu)²/Σ cpu² over the (B, D) embeddings, and the largest cosine
 * distance 1 − cos over the B images. Tolerances (NMSE): fp32 1e-8, tf32 1e-4, bf16 1e-3. On
 * an H200 the D192 model gave 3.3e-6 in bf16 and 6.5e-14 in fp32 (docs/cuda.md), so the margins
 * are wide; a wrong index or a dropped term gives 1e-2 to 1. Exit 0 all passed, 1 a failure, 77
 * no GPU. Seeded from /dev/urandom (printed; LT_TEST_SEED=N repeats). */
#include "core/error.h"
#include "data/safetensors.h"
#include "image/render.h"
#include "models/dinov2.h"
#include "models/dinov2_cuda.h"
#include "test_rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int n_fail, n_ok;


/* ---- random model files --------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int D, depth, patch, grid, reg, hidden, swiglu, hf;
    int B, H, W;
} model_cfg;

#define MAX_T 512
typedef struct {
    lt_st_entry e[MAX_T];
    char names[MAX_T][96];
    float *data[MAX_T];
    int n;
} st_list;

/* Adds a tensor filled as `kind`: 'n' normal·scale, 'o' 1 + normal·scale, 'g' U(0.5, 1). */
static float *add(st_list *L, const char *name, int ndim, const int64_t *shape, char kind,
                  float scale) {
    if (L->n >= MAX_T) {
        fprintf(stderr, "too many tensors\n");
        exit(1);
    }
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *p = malloc((size_t)n * sizeof(float));
    if (!p) exit(1);
    for (int64_t i = 0; i < n; i++)
        p[i] = kind == 'g' ? (float)(0.5 + 0.5 * uni())
               : kind == 'o' ? 1.0f + scale * gauss()
                             : scale * gauss();
    lt_st_entry *e = &L->e[L->n];
    snprintf(L->names[L->n], sizeof L->names[0], "%s", name);
    e->name = L->names[L->n];
    e->dtype = LT_DT_F32;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->data = p;
    L->data[L->n++] = p;
    return p;
}

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define ND(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define ADD(L, name, kind, scale, ...) add(L, name, ND(__VA_ARGS__), SH(__VA_ARGS__), kind, scale)

/* Random weights at a scale where every part matters (as tests/reference/dinov2_ref.py's
 * randomize): Linear weights N(0, 1/fan_in), norms 1 ± 0.2, LayerScale U(0.5, 1), biases 0.1. */
static int write_model(const model_cfg *c, const char *path) {
    st_list *L = calloc(1, sizeof *L);
    if (!L) return -1;
    const int64_t D = c->D, p = c->patch, M = c->grid, Hd = c->hidden;
    const int64_t F = c->swiglu ? 2 * Hd : Hd;
    const float sD = 1.0f / sqrtf((float)D), sH = 1.0f / sqrtf((float)Hd);
    char k[96];
    const int hf = c->hf;
    ADD(L, hf ? "embeddings.cls_token" : "cls_token", 'n', 1.0f, 1, 1, D);
    ADD(L, hf ? "embeddings.position_embeddings" : "pos_embed", 'n', 1.0f, 1, 1 + M * M, D);
    if (c->reg) ADD(L, hf ? "embeddings.register_tokens" : "register_tokens", 'n', 1.0f, 1, c->reg, D);
    ADD(L, hf ? "embeddings.mask_token" : "mask_token", 'n', 1.0f, 1, D);
    ADD(L, hf ? "embeddings.patch_embeddings.projection.weight" : "patch_embed.proj.weight", 'n',
        1.0f / sqrtf(3.0f * p * p), D, 3, p, p);
    ADD(L, hf ? "embeddings.patch_embeddings.projection.bias" : "patch_embed.proj.bias", 'n', 0.1f, D);
    for (int i = 0; i < c->depth; i++) {
#define K(s) (snprintf(k, sizeof k, hf ? "encoder.layer.%d.%s" : "blocks.%d.%s", i, s), k)
        ADD(L, K("norm1.weight"), 'o', 0.2f, D);
        ADD(L, K("norm1.bias"), 'n', 0.1f, D);
        if (hf) {
            static const char *qkv[3] = {"query", "key", "value"};
            for (int j = 0; j < 3; j++) {
                char nm[64];
                snprintf(nm, sizeof nm, "attention.attention.%s.weight", qkv[j]);
                ADD(L, K(nm), 'n', sD, D, D);
                snprintf(nm, sizeof nm, "attention.attention.%s.bias", qkv[j]);
                ADD(L, K(nm), 'n', 0.1f, D);
            }
            ADD(L, K("attention.output.dense.weight"), 'n', sD, D, D);
            ADD(L, K("attention.output.dense.bias"), 'n', 0.1f, D);
            ADD(L, K("layer_scale1.lambda1"), 'g', 0, D);
            ADD(L, K("layer_scale2.lambda1"), 'g', 0, D);
        } else {
            ADD(L, K("attn.qkv.weight"), 'n', sD, 3 * D, D);
            ADD(L, K("attn.qkv.bias"), 'n', 0.1f, 3 * D);
            ADD(L, K("attn.proj.weight"), 'n', sD, D, D);
            ADD(L, K("attn.proj.bias"), 'n', 0.1f, D);
            ADD(L, K("ls1.gamma"), 'g', 0, D);
            ADD(L, K("ls2.gamma"), 'g', 0, D);
        }
        ADD(L, K("norm2.weight"), 'o', 0.2f, D);
        ADD(L, K("norm2.bias"), 'n', 0.1f, D);
        const char *f1 = c->swiglu ? (hf ? "mlp.weights_in" : "mlp.w12") : "mlp.fc1";
        const char *f2 = c->swiglu ? (hf ? "mlp.weights_out" : "mlp.w3") : "mlp.fc2";
        char nm[64];
        snprintf(nm, sizeof nm, "%s.weight", f1);
        ADD(L, K(nm), 'n', sD, F, D);
        snprintf(nm, sizeof nm, "%s.bias", f1);
        ADD(L, K(nm), 'n', 0.1f, F);
        snprintf(nm, sizeof nm, "%s.weight", f2);
        ADD(L, K(nm), 'n', sH, D, Hd);
        snprintf(nm, sizeof nm, "%s.bias", f2);
        ADD(L, K(nm), 'n', 0.1f, D);
#undef K
    }
    ADD(L, hf ? "layernorm.weight" : "norm.weight", 'o', 0.2f, D);
    ADD(L, hf ? "layernorm.bias" : "norm.bias", 'n', 0.1f, D);
    int rc = lt_st_write(path, L->e, L->n, NULL, NULL, 0);
    for (int i = 0; i < L->n; i++) free(L->data[i]);
    free(L);
    return rc;
}

/* ---- comparison -------------------------------------------------------------------------------- */

static void compare(const char *model, const char *what, const char *prec, const float *got,
                    const float *ref, int B, int D, double thr) {
    double num = 0, den = 0, maxcd = 0;
    int bad = 0;
    for (int b = 0; b < B; b++) {
        double dot = 0, ng = 0, nr = 0;
        for (int d = 0; d < D; d++) {
            const double g = got[(int64_t)b * D + d], r = ref[(int64_t)b * D + d];
            if (!isfinite(g)) bad++;
            num += (g - r) * (g - r);
            den += r * r;
            dot += g * r;
            ng += g * g;
            nr += r * r;
        }
        const double cd = 1.0 - dot / sqrt(ng * nr + 1e-300);
        if (cd > maxcd) maxcd = cd;
    }
    const double e = num / (den > 0 ? den : 1);
    const int ok = !bad && e <= thr;
    printf("%-26s %-22s %-5s nmse %.3e  max cos dist %.2e  thr %.0e  %s%s\n", model, what, prec, e,
           maxcd, thr, ok ? "OK" : "FAIL", bad ? " (NaN/Inf)" : "");
    ok ? n_ok++ : n_fail++;
}

static double thr_model(lt_precision p) {
    return p == LT_PREC_BF16 ? 1e-3 : p == LT_PREC_TF32 ? 1e-4 : 1e-8;
}

static void fail(const char *model, const char *what, const char *prec) {
    printf("%-26s %-22s %-5s FAIL: %s\n", model, what, prec, lt_err_msg());
    n_fail++;
}

static float *randn(int64_t n) {
    float *p = malloc((size_t)n * sizeof(float));
    if (!p) exit(1);
    for (int64_t i = 0; i < n; i++) p[i] = gauss();
    return p;
}

static uint8_t *rand_u8(int64_t n) {
    uint8_t *p = malloc((size_t)n);
    if (!p) exit(1);
    for (int64_t i = 0; i < n; i++) p[i] = (uint8_t)(next_u64() >> 56);
    return p;
}

static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};

/* CPU reference of the views path: lt_mix_normalize per sample, then the CPU forward. */
static int cpu_views(lt_dinov2 *m, const uint8_t *a, const uint8_t *b, const float *lambda, int B,
                     int H, int W, float *out) {
    const int64_t npix = (int64_t)H * W;
    float *x = malloc((size_t)B * npix * 3 * sizeof(float));
    if (!x) return -1;
    for (int i = 0; i < B; i++)
        lt_mix_normalize(a + i * npix * 3, b ? b + i * npix * 3 : NULL, b ? lambda[i] : 1.0f,
                         MEAN, STD, npix, x + i * npix * 3);
    int rc = lt_dinov2_forward(m, x, B, H, W, out);
    free(x);
    return rc;
}

/* ---- one model ---------------------------------------------------------------------------------- */

static void test_model(const model_cfg *c, int full) {
    char path[256];
    snprintf(path, sizeof path, "%s/lt_test_cuda_dinov2_%d.safetensors",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    lt_dinov2 *m = NULL;
    if (write_model(c, path) || lt_dinov2_load(path, &m)) {
        unlink(path);
        fail(c->name, "write/load weights", "-");
        return;
    }
    unlink(path);
    const lt_dinov2_config *mc = lt_dinov2_config_of(m);
    const int D = mc->embed_dim, B = c->B, H = c->H, W = c->W;
    printf("-- %s: D=%d depth=%d reg=%d mlp=%s%d names=%s, %d images of %dx%d (%d tokens)\n",
           c->name, D, mc->depth, mc->n_reg, mc->swiglu ? "swiglu" : "gelu", mc->mlp_hidden,
           mc->hf_names ? "hf" : "original", B, H, W,
           1 + mc->n_reg + (H / mc->patch) * (W / mc->patch));
    float *x = randn((int64_t)B * H * W * 3);
    float *ref = malloc((size_t)B * D * sizeof(float)), *got = malloc((size_t)B * D * sizeof(float));
    if (!ref || !got || lt_dinov2_forward(m, x, B, H, W, ref)) {
        fail(c->name, "cpu forward", "-");
        goto done;
    }
    static const lt_precision precs[] = {LT_PREC_FP32, LT_PREC_TF32, LT_PREC_BF16};
    for (int pi = 0; pi < 3; pi++) {
        const lt_precision pr = precs[pi];
        const char *pn = lt_precision_name(pr);
        lt_dinov2_gpu *g = NULL;
        /* max_batch 1: the forward must grow the buffers */
        if (lt_dinov2_gpu_create(m, pr, full ? 1 : B, H, W, &g)) {
            fail(c->name, "create", pn);
            continue;
        }
        if (lt_dinov2_gpu_forward(g, x, B, H, W, got)) fail(c->name, "forward", pn);
        else compare(c->name, "forward", pn, got, ref, B, D, thr_model(pr));
        if (pr == LT_PREC_BF16 && !mc->swiglu) {
            lt_dinov2_gpu_set_exact_gelu(g, 1);
            if (lt_dinov2_gpu_forward(g, x, B, H, W, got)) fail(c->name, "forward exact gelu", pn);
            else compare(c->name, "forward, exact gelu", pn, got, ref, B, D, thr_model(pr));
            lt_dinov2_gpu_set_exact_gelu(g, 0);
        }
        lt_dinov2_gpu_free(g);
    }
    if (full) {
        /* uint8 views with mixup, synchronous and through the two slots */
        const int64_t nb = (int64_t)B * H * W * 3;
        uint8_t *a = rand_u8(nb), *b = rand_u8(nb), *a2 = rand_u8(nb);
        float lambda[64], *ref2 = malloc((size_t)B * D * sizeof(float));
        float *got2 = malloc((size_t)B * D * sizeof(float));
        for (int i = 0; i < B; i++) lambda[i] = i == 0 ? 1.0f : (float)uni();
        if (!ref2 || !got2 || cpu_views(m, a, b, lambda, B, H, W, ref) ||
            cpu_views(m, a2, NULL, lambda, B, H, W, ref2)) {
            fail(c->name, "cpu views", "-");
        } else {
            for (int pi = 0; pi < 3; pi++) {
                const lt_precision pr = precs[pi];
                const char *pn = lt_precision_name(pr);
                lt_dinov2_gpu *g = NULL;
                if (lt_dinov2_gpu_create(m, pr, B, H, W, &g)) {
                    fail(c->name, "create", pn);
                    continue;
                }
                if (lt_dinov2_gpu_forward_views(g, a, b, lambda, MEAN, STD, B, H, W, got))
                    fail(c->name, "views (mixup)", pn);
                else
                    compare(c->name, "views (mixup)", pn, got, ref, B, D, thr_model(pr));
                /* the two slots in flight at once, then each waited for */
                float *s0 = malloc((size_t)B * D * sizeof(float));
                float *s1 = malloc((size_t)B * D * sizeof(float));
                if (!s0 || !s1 ||
                    lt_dinov2_gpu_submit_views(g, 0, a, b, lambda, MEAN, STD, B, H, W) ||
                    lt_dinov2_gpu_submit_views(g, 1, a2, NULL, lambda, MEAN, STD, B, H, W)) {
                    fail(c->name, "submit", pn);
                } else {
                    /* a busy slot is refused */
                    if (lt_dinov2_gpu_submit_views(g, 0, a, b, lambda, MEAN, STD, B, H, W) == 0) {
                        printf("%-26s %-22s %-5s FAIL: a busy slot was accepted\n", c->name,
                               "slots", pn);
                        n_fail++;
                    }
                    if (lt_dinov2_gpu_wait(g, 0, s0) || lt_dinov2_gpu_wait(g, 1, s1)) {
                        fail(c->name, "wait", pn);
                    } else {
                        const int same = !memcmp(s0, got, (size_t)B * D * sizeof(float));
                        printf("%-26s %-22s %-5s slot 0 %s the synchronous result  %s\n", c->name,
                               "async slots", pn, same ? "bitwise equals" : "DIFFERS from",
                               same ? "OK" : "FAIL");
                        same ? n_ok++ : n_fail++;
                        compare(c->name, "async slot 1 (no mixup)", pn, s1, ref2, B, D,
                                thr_model(pr));
                    }
                }
                lt_dinov2_gpu_stats st;
                lt_dinov2_gpu_get_stats(g, &st);
                printf("%-26s %-22s %-5s %lld batches, %lld views, copy %.3f ms, teacher %.3f ms\n",
                       c->name, "stats", pn, (long long)st.batches, (long long)st.views,
                       st.copy_ms, st.teacher_ms);
                free(s0);
                free(s1);
                lt_dinov2_gpu_free(g);
            }
        }
        free(a);
        free(b);
        free(a2);
        free(ref2);
        free(got2);
    }
done:
    free(x);
    free(ref);
    free(got);
    lt_dinov2_free(m);
}

int main(void) {
    if (!lt_cuda_available()) {
        printf("test_cuda_dinov2: SKIP: no CUDA device (or a CPU-only build)\n");
        return 77;
    }
    char info[256];
    if (lt_cuda_device_info(info, sizeof info) == 0) printf("device: %s\n", info);
    seed_rng();

    static const model_cfg cfgs[] = {
        /* name                      D  depth p  M  R  hidden swiglu hf  B  H    W */
        {"D64 orig r0 56x56", 64, 2, 14, 4, 0, 256, 0, 0, 3, 56, 56},
        {"D128 hf r4 70x84", 128, 3, 14, 5, 4, 512, 0, 1, 2, 70, 84},
        {"D128 swiglu orig 42x42", 128, 2, 14, 4, 0, 192, 1, 0, 4, 42, 42},
        {"D128 swiglu hf r4 98x98", 128, 2, 14, 4, 4, 160, 1, 1, 2, 98, 98},
        {"D192 hf r4 224x224", 192, 2, 14, 16, 4, 768, 0, 1, 2, 224, 224},
        {"D64 orig p16 64x48", 64, 1, 16, 3, 0, 256, 0, 0, 5, 64, 48},
        {"D256 orig r0 224x224", 256, 4, 14, 16, 0, 1024, 0, 0, 3, 224, 224},
    };
    const int n = (int)(sizeof cfgs / sizeof cfgs[0]);
    for (int i = 0; i < n; i++) test_model(&cfgs[i], i == 1 || i == 4);
    /* the switches of nn/ops_cuda.h inside the whole forward, whatever the defaults are: the
     * GEMMs without autotuning (the heuristic's first algorithm), and the attention in blocks of
     * at most 4 warps. The GPU model reads them from the environment at create. */
    static const char *const envs[][2] = {{"LT_CUDA_AUTOTUNE", "0"}, {"LT_CUDA_ATTN_WARPS", "4"}};
    for (int e = 0; e < 2; e++) {
        const char *name = envs[e][0], *val = envs[e][1], *old = getenv(name);
        char saved[64] = "";
        if (old) snprintf(saved, sizeof saved, "%s", old);
        if (old && strcmp(old, val) == 0) continue;
        setenv(name, val, 1);
        printf("-- %s=%s\n", name, val);
        test_model(&cfgs[4], 0);
        if (e == 0) test_model(&cfgs[6], 0);
        if (old) setenv(name, saved, 1);
        else unsetenv(name);
    }
    printf("test_cuda_dinov2: %d passed, %d failed\n", n_ok, n_fail);
    return n_fail ? 1 : 0;
}
