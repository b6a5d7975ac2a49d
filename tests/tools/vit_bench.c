/* vit_bench.c: GPU teacher throughput and checks for scripts/device-check.sh.
 *
 *   vit_bench make-weights OUT.safetensors [--dim 768] [--depth 12] [--grid 37] [--patch 14]
 *                          [--registers 0] [--seed 1]
 *       a random DINOv2 ViT (original key names, F32; ViT-B/14 by default) in about a second
 *   vit_bench run WEIGHTS [--batch 256] [--size 224] [--prec bf16|tf32|fp32] [--iters 10]
 *                 [--warmup 3] [--exact-gelu]
 *       teacher-only throughput on random uint8 views (mixup on) in pinned memory: the median of
 *       synchronous forwards (upload + forward + download, wall clock), then the same batches
 *       pipelined through the two slots (steady state). Prints "RESULT key=value ..." lines.
 *       --label NAME prints impl=ours-NAME (a variant, e.g. run under LT_CUDA_AUTOTUNE=0)
 *   vit_bench profile WEIGHTS [--batch 256] [--size 224] [--prec bf16] [--reps 5] [--warmup 3]
 *                 [--label NAME] [--exact-gelu]
 *       GPU time per op class of one forward (CUDA events; lt_dinov2_gpu_profile_views), with
 *       each class's share, TFLOP/s and GB/s (least bytes it must move); "PROF" lines. The
 *       implementation switches (LT_CUDA_AUTOTUNE, LT_CUDA_ATTN_WARPS; nn/ops_cuda.h) are read
 *       from the environment as always; they are printed.
 *   vit_bench check WEIGHTS IN.f32 OUT.f32 [--batch 4] [--size 224] [--prec bf16]
 *       random normalised input (B, S, S, 3) → IN.f32; GPU embeddings → OUT.f32 (raw float32);
 *       also runs the CPU forward and prints the GPU-vs-CPU NMSE (the PyTorch side reads both files)
 *   vit_bench cache-diff A.h5 B.h5
 *       compares the embeddings of two lt-embed caches: NMSE and the largest cosine distance
 *
 * Exit 0 ok, 1 error (message on stderr), 2 usage. */
#include "core/error.h"
#include "core/fileio.h"
#include "data/cache.h"
#include "data/safetensors.h"
#include "models/dinov2.h"
#include "models/dinov2_cuda.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(void) {
    fprintf(stderr, "vit_bench: error: %s\n", lt_err_msg());
    return 1;
}

static int usage(void) {
    fprintf(stderr,
            "usage: vit_bench make-weights OUT [--dim N] [--depth N] [--grid N] [--patch N] "
            "[--registers N] [--seed N]\n"
            "       vit_bench run WEIGHTS [--batch N] [--size N] [--prec P] [--iters N] "
            "[--warmup N] [--exact-gelu] [--label NAME]\n"
            "       vit_bench profile WEIGHTS [--batch N] [--size N] [--prec P] [--reps N] "
            "[--warmup N] [--label NAME] [--exact-gelu]\n"
            "       vit_bench check WEIGHTS IN.f32 OUT.f32 [--batch N] [--size N] [--prec P]\n"
            "       vit_bench cache-diff A.h5 B.h5\n");
    return 2;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t rs = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
    rs ^= rs >> 12;
    rs ^= rs << 25;
    rs ^= rs >> 27;
    return rs * 2685821657736338717ULL;
}
static double uni(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }
static float gauss(void) {
    double u = uni(), v = uni();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* options: --name value pairs after the positionals */
typedef struct {
    int dim, depth, grid, patch, reg, batch, size, iters, warmup, exact_gelu, reps;
    uint64_t seed;
    lt_precision prec;
    const char *label;
} opts;

static int parse_opts(int argc, char **argv, int first, opts *o) {
    for (int i = first; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--exact-gelu")) {
            o->exact_gelu = 1;
            continue;
        }
        if (i + 1 >= argc) return -1;
        const char *v = argv[++i];
        if (!strcmp(k, "--label")) {
            o->label = v;
            continue;
        }
        if (!strcmp(k, "--prec")) {
            if (lt_precision_parse(v, &o->prec)) return -1;
            continue;
        }
        long n = strtol(v, NULL, 10);
        if (n < 0 || n > 1 << 20) return -1;
        if (!strcmp(k, "--dim")) o->dim = (int)n;
        else if (!strcmp(k, "--depth")) o->depth = (int)n;
        else if (!strcmp(k, "--grid")) o->grid = (int)n;
        else if (!strcmp(k, "--patch")) o->patch = (int)n;
        else if (!strcmp(k, "--registers")) o->reg = (int)n;
        else if (!strcmp(k, "--batch")) o->batch = (int)n;
        else if (!strcmp(k, "--size")) o->size = (int)n;
        else if (!strcmp(k, "--iters")) o->iters = (int)n;
        else if (!strcmp(k, "--warmup")) o->warmup = (int)n;
        else if (!strcmp(k, "--reps")) o->reps = (int)n;
        else if (!strcmp(k, "--seed")) o->seed = (uint64_t)n;
        else return -1;
    }
    return 0;
}

/* ---- make-weights ------------------------------------------------------------------------------ */

#define MAXT 1024
static lt_st_entry ents[MAXT];
static char names[MAXT][80];
static float *datas[MAXT];
static int nt;

/* kind: 'n' normal·scale, 'o' 1 + normal·scale, 'g' U(0.5, 1) */
static int put(const char *name, int ndim, const int64_t *shape, char kind, float scale) {
    if (nt >= MAXT) return lt_err_set("too many tensors");
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *p = lt_malloc((size_t)n * sizeof(float), name);
    if (!p) return -1;
    for (int64_t i = 0; i < n; i++)
        p[i] = kind == 'g' ? (float)(0.5 + 0.5 * uni()) : kind == 'o' ? 1.0f + scale * gauss()
                                                                       : scale * gauss();
    snprintf(names[nt], sizeof names[0], "%s", name);
    ents[nt].name = names[nt];
    ents[nt].dtype = LT_DT_F32;
    ents[nt].ndim = ndim;
    for (int d = 0; d < ndim; d++) ents[nt].shape[d] = shape[d];
    ents[nt].data = p;
    datas[nt++] = p;
    return 0;
}
#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define ND(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define PUT(name, kind, scale, ...) put(name, ND(__VA_ARGS__), SH(__VA_ARGS__), kind, scale)

static int make_weights(const char *out, const opts *o) {
    const int64_t D = o->dim, M = o->grid, p = o->patch, F = 4 * D;
    const float sD = 1.0f / sqrtf((float)D), sF = 1.0f / sqrtf((float)F);
    if (D % 64 || D <= 0 || o->depth <= 0) return lt_err_set("--dim must be a multiple of 64");
    rs ^= o->seed * 0x2545F4914F6CDD1DULL;
    int rc = PUT("cls_token", 'n', 1.0f, 1, 1, D) || PUT("pos_embed", 'n', 1.0f, 1, 1 + M * M, D) ||
             (o->reg && PUT("register_tokens", 'n', 1.0f, 1, o->reg, D)) ||
             PUT("patch_embed.proj.weight", 'n', 1.0f / sqrtf(3.0f * p * p), D, 3, p, p) ||
             PUT("patch_embed.proj.bias", 'n', 0.1f, D);
    char k[80];
    for (int i = 0; !rc && i < o->depth; i++) {
#define K(s) (snprintf(k, sizeof k, "blocks.%d.%s", i, s), k)
        rc = PUT(K("norm1.weight"), 'o', 0.2f, D) || PUT(K("norm1.bias"), 'n', 0.1f, D) ||
             PUT(K("attn.qkv.weight"), 'n', sD, 3 * D, D) || PUT(K("attn.qkv.bias"), 'n', 0.1f, 3 * D) ||
             PUT(K("attn.proj.weight"), 'n', sD, D, D) || PUT(K("attn.proj.bias"), 'n', 0.1f, D) ||
             PUT(K("ls1.gamma"), 'g', 0, D) || PUT(K("norm2.weight"), 'o', 0.2f, D) ||
             PUT(K("norm2.bias"), 'n', 0.1f, D) || PUT(K("mlp.fc1.weight"), 'n', sD, F, D) ||
             PUT(K("mlp.fc1.bias"), 'n', 0.1f, F) || PUT(K("mlp.fc2.weight"), 'n', sF, D, F) ||
             PUT(K("mlp.fc2.bias"), 'n', 0.1f, D) || PUT(K("ls2.gamma"), 'g', 0, D);
#undef K
    }
    if (!rc) rc = PUT("norm.weight", 'o', 0.2f, D) || PUT("norm.bias", 'n', 0.1f, D);
    if (!rc) rc = lt_st_write(out, ents, nt, NULL, NULL, 0);
    for (int i = 0; i < nt; i++) free(datas[i]);
    if (!rc) printf("wrote %s: D=%d depth=%d grid=%d patch=%d registers=%d\n", out, o->dim,
                    o->depth, o->grid, o->patch, o->reg);
    return rc;
}

/* ---- run ------------------------------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};

static int run(const char *weights, const opts *o) {
    lt_dinov2 *m = NULL;
    if (lt_dinov2_load(weights, &m)) return -1;
    const lt_dinov2_config *c = lt_dinov2_config_of(m);
    const int B = o->batch, S = o->size, D = c->embed_dim;
    const double gflop = lt_dinov2_flops_per_image(c, S, S) * 1e-9;
    lt_dinov2_gpu *g = NULL;
    uint8_t *a = NULL, *b = NULL;
    float *out = lt_malloc((size_t)B * D * sizeof(float), "embeddings"), lambda[4096];
    double *t = lt_calloc((size_t)(o->iters > 0 ? o->iters : 1), sizeof(double), "times");
    const size_t nb = (size_t)B * S * S * 3;
    int rc = !out || !t || B > 4096 ? -1 : 0;
    if (!rc) rc = lt_dinov2_gpu_create(m, o->prec, B, S, S, &g);
    if (!rc) rc = lt_cuda_host_alloc((void **)&a, nb, "views a") ||
                  lt_cuda_host_alloc((void **)&b, nb, "views b");
    if (rc) goto done;
    lt_dinov2_gpu_set_exact_gelu(g, o->exact_gelu);
    for (size_t i = 0; i < nb; i++) a[i] = (uint8_t)(rnd() >> 56), b[i] = (uint8_t)(rnd() >> 56);
    for (int i = 0; i < B; i++) lambda[i] = (float)uni();
    double t0 = now_s();
    for (int i = 0; i < o->warmup && !rc; i++)
        rc = lt_dinov2_gpu_forward_views(g, a, b, lambda, MEAN, STD, B, S, S, out);
    const double warm_s = now_s() - t0;
    lt_dinov2_gpu_stats s0, s1;
    lt_dinov2_gpu_get_stats(g, &s0);
    for (int i = 0; i < o->iters && !rc; i++) {
        t0 = now_s();
        rc = lt_dinov2_gpu_forward_views(g, a, b, lambda, MEAN, STD, B, S, S, out);
        t[i] = now_s() - t0;
    }
    lt_dinov2_gpu_get_stats(g, &s1);
    if (rc) goto done;
    /* pipelined: slot i % 2, waiting for the previous one after submitting the next */
    t0 = now_s();
    for (int i = 0; i < o->iters && !rc; i++) {
        rc = lt_dinov2_gpu_submit_views(g, i % 2, a, b, lambda, MEAN, STD, B, S, S);
        if (!rc && i > 0) rc = lt_dinov2_gpu_wait(g, (i - 1) % 2, out);
    }
    if (!rc && o->iters > 0) rc = lt_dinov2_gpu_wait(g, (o->iters - 1) % 2, out);
    const double pipe_s = now_s() - t0;
    if (rc) goto done;
    int finite = 1;
    for (int i = 0; i < B * D; i++) finite &= isfinite(out[i]) != 0;
    qsort(t, (size_t)o->iters, sizeof(double), cmp_d);
    const double med = t[o->iters / 2], vps = B / med, pvps = o->iters * B / pipe_s;
    const double gpu_ms = (s1.teacher_ms - s0.teacher_ms) / (double)(s1.batches - s0.batches);
    const double copy_ms = (s1.copy_ms - s0.copy_ms) / (double)(s1.batches - s0.batches);
    printf("RESULT impl=ours%s%s prec=%s%s batch=%d size=%d D=%d depth=%d gflop_per_view=%.2f "
           "warmup_s=%.2f median_ms=%.2f min_ms=%.2f max_ms=%.2f views_per_s=%.0f "
           "pipelined_views_per_s=%.0f gpu_teacher_ms=%.2f gpu_copy_ms=%.2f "
           "gpu_views_per_s=%.0f tflops=%.1f finite=%d\n",
           o->label ? "-" : "", o->label ? o->label : "", lt_precision_name(o->prec),
           o->exact_gelu ? "+erf" : "", B, S, D, c->depth, gflop,
           warm_s, med * 1e3, t[0] * 1e3, t[o->iters - 1] * 1e3, vps, pvps, gpu_ms, copy_ms,
           B * 1e3 / gpu_ms, pvps * gflop * 1e-3, finite);
    if (!finite) rc = lt_err_set("non-finite embeddings");
done:
    free(out);
    free(t);
    lt_cuda_host_free(a);
    lt_cuda_host_free(b);
    lt_dinov2_gpu_free(g);
    lt_dinov2_free(m);
    return rc;
}

/* ---- profile ---------------------------------------------------------------------------------- */

static int profile(const char *weights, const opts *o) {
#ifdef LT_HAVE_CUDA
    lt_dinov2 *m = NULL;
    if (lt_dinov2_load(weights, &m)) return -1;
    const lt_dinov2_config *c = lt_dinov2_config_of(m);
    const int B = o->batch, S = o->size, D = c->embed_dim;
    const char *label = o->label ? o->label : "default";
    lt_dinov2_gpu *g = NULL;
    uint8_t *a = NULL, *b = NULL;
    float *out = lt_malloc((size_t)B * D * sizeof(float), "embeddings"), lambda[4096];
    const size_t nb = (size_t)B * S * S * 3;
    lt_cuda_switches sw;
    lt_cuda_switches_from_env(&sw);
    int rc = !out || B > 4096 ? -1 : 0;
    if (!rc) rc = lt_dinov2_gpu_create(m, o->prec, B, S, S, &g);
    if (!rc) rc = lt_cuda_host_alloc((void **)&a, nb, "views a") ||
                  lt_cuda_host_alloc((void **)&b, nb, "views b");
    if (rc) goto done;
    lt_dinov2_gpu_set_exact_gelu(g, o->exact_gelu);
    for (size_t i = 0; i < nb; i++) a[i] = (uint8_t)(rnd() >> 56), b[i] = (uint8_t)(rnd() >> 56);
    for (int i = 0; i < B; i++) lambda[i] = (float)uni();
    for (int i = 0; i < o->warmup && !rc; i++) /* builds (and autotunes) the GEMM plans */
        rc = lt_dinov2_gpu_forward_views(g, a, b, lambda, MEAN, STD, B, S, S, out);
    lt_dinov2_gpu_profile p;
    if (!rc) rc = lt_dinov2_gpu_profile_views(g, a, b, lambda, MEAN, STD, B, S, S, o->reps, &p);
    if (rc) goto done;
    const double fl = lt_dinov2_flops_per_image(c, S, S) * B;
    printf("PROF [%s] %s B=%d %dx%d D=%d depth=%d; autotune=%d attn=v3 (<=%d warps)%s; mean of "
           "%d forwards: %.2f ms (%.0f views/s, %.1f TFLOP/s)\n",
           label, lt_precision_name(o->prec), B, S, S, D, c->depth, sw.autotune, sw.attn_warps,
           o->exact_gelu ? " exact-gelu" : "", p.reps, p.total_ms, B * 1e3 / p.total_ms,
           fl / (p.total_ms * 1e9));
    printf("PROF [%s]   %-24s %5s %9s %7s %9s %9s\n", label, "op class", "calls", "ms", "share",
           "TFLOP/s", "GB/s");
    for (int k = 0; k < LT_DINOV2_PROF_N; k++) {
        if (!p.calls[k]) continue;
        char tf[32] = "-";
        if (p.flops[k] > 0) snprintf(tf, sizeof tf, "%.1f", p.flops[k] / (p.ms[k] * 1e9));
        printf("PROF [%s]   %-24s %5d %9.3f %6.1f%% %9s %9.0f\n", label,
               lt_dinov2_gpu_profile_name(k), p.calls[k], p.ms[k], 100.0 * p.ms[k] / p.total_ms,
               tf, p.bytes[k] / (p.ms[k] * 1e6));
    }
    printf("RESULT profile=%s prec=%s batch=%d total_ms=%.3f", label, lt_precision_name(o->prec),
           B, p.total_ms);
    static const char *const keys[LT_DINOV2_PROF_N] = {"input", "patch", "tokens", "ln", "qkv",
                                                       "attn", "proj", "fc1", "fc2", "head"};
    for (int k = 0; k < LT_DINOV2_PROF_N; k++) printf(" %s_ms=%.3f", keys[k], p.ms[k]);
    printf("\n");
done:
    free(out);
    lt_cuda_host_free(a);
    lt_cuda_host_free(b);
    lt_dinov2_gpu_free(g);
    lt_dinov2_free(m);
    return rc;
#else
    (void)weights;
    (void)o;
    return lt_err_set("vit_bench profile: this build has no CUDA backend");
#endif
}

/* ---- check ------------------------------------------------------------------------------------ */

static void diff(const float *a, const float *r, int B, int D, double *nmse, double *maxcd) {
    double num = 0, den = 0;
    *maxcd = 0;
    for (int i = 0; i < B; i++) {
        double dot = 0, na = 0, nr = 0;
        for (int d = 0; d < D; d++) {
            const double x = a[(int64_t)i * D + d], y = r[(int64_t)i * D + d];
            num += (x - y) * (x - y);
            den += y * y;
            dot += x * y;
            na += x * x;
            nr += y * y;
        }
        const double cd = 1 - dot / sqrt(na * nr + 1e-300);
        if (cd > *maxcd || cd != cd) *maxcd = cd;
    }
    *nmse = num / (den > 0 ? den : 1);
}

static int check(const char *weights, const char *in_path, const char *out_path, const opts *o) {
    lt_dinov2 *m = NULL;
    if (lt_dinov2_load(weights, &m)) return -1;
    const int B = o->batch, S = o->size, D = lt_dinov2_config_of(m)->embed_dim;
    const int64_t n = (int64_t)B * S * S * 3;
    float *x = lt_malloc((size_t)n * sizeof(float), "input");
    float *gpu = lt_malloc((size_t)B * D * sizeof(float), "out");
    float *cpu = lt_malloc((size_t)B * D * sizeof(float), "out");
    lt_dinov2_gpu *g = NULL;
    int rc = !x || !gpu || !cpu ? -1 : 0;
    if (!rc) {
        for (int64_t i = 0; i < n; i++) x[i] = gauss();
        rc = lt_dinov2_gpu_create(m, o->prec, B, S, S, &g);
    }
    if (!rc) {
        lt_dinov2_gpu_set_exact_gelu(g, o->exact_gelu);
        rc = lt_dinov2_gpu_forward(g, x, B, S, S, gpu);
    }
    if (!rc) rc = lt_write_file_atomic(in_path, x, (size_t)n * sizeof(float));
    if (!rc) rc = lt_write_file_atomic(out_path, gpu, (size_t)B * D * sizeof(float));
    double t0 = now_s();
    if (!rc) rc = lt_dinov2_forward(m, x, B, S, S, cpu);
    if (!rc) {
        double e, cd;
        diff(gpu, cpu, B, D, &e, &cd);
        printf("RESULT check=ours_%s_vs_cpu_fp32 batch=%d size=%d nmse=%.3e max_cos_dist=%.3e "
               "cpu_s=%.1f\n",
               lt_precision_name(o->prec), B, S, e, cd, now_s() - t0);
        char p[4096];
        snprintf(p, sizeof p, "%s.cpu", out_path);
        rc = lt_write_file_atomic(p, cpu, (size_t)B * D * sizeof(float));
    }
    free(x);
    free(gpu);
    free(cpu);
    lt_dinov2_gpu_free(g);
    lt_dinov2_free(m);
    return rc;
}

/* ---- cache-diff -------------------------------------------------------------------------------- */

static int cache_diff(const char *pa, const char *pb) {
    lt_cache *a = NULL, *b = NULL;
    float *ea = NULL, *eb = NULL;
    int rc = lt_cache_open(pa, &a) || lt_cache_open(pb, &b) ? -1 : 0;
    if (!rc) {
        const int64_t S = lt_cache_n_samples(a);
        const int D = lt_cache_meta_of(a)->embed_dim;
        if (S != lt_cache_n_samples(b) || D != lt_cache_meta_of(b)->embed_dim) {
            rc = lt_err_set("%s and %s differ in shape", pa, pb);
        } else {
            ea = lt_malloc((size_t)S * D * sizeof(float), "embeddings");
            eb = lt_malloc((size_t)S * D * sizeof(float), "embeddings");
            rc = !ea || !eb || lt_cache_embeddings(a, 0, S, ea) || lt_cache_embeddings(b, 0, S, eb);
            if (!rc) {
                double e, cd;
                diff(ea, eb, (int)S, D, &e, &cd);
                printf("RESULT cache_diff samples=%lld D=%d nmse=%.3e max_cos_dist=%.3e\n",
                       (long long)S, D, e, cd);
            }
        }
    }
    free(ea);
    free(eb);
    if (a) lt_cache_close(a);
    if (b) lt_cache_close(b);
    return rc;
}

int main(int argc, char **argv) {
    opts o = {.dim = 768, .depth = 12, .grid = 37, .patch = 14, .reg = 0, .batch = 256,
              .size = 224, .iters = 10, .warmup = 3, .seed = 1, .prec = LT_PREC_BF16, .reps = 5,
              .label = NULL};
    if (argc < 3) return usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "make-weights")) {
        if (parse_opts(argc, argv, 3, &o)) return usage();
        return make_weights(argv[2], &o) ? fail() : 0;
    }
    if (!strcmp(cmd, "cache-diff")) {
        if (argc != 4) return usage();
        return cache_diff(argv[2], argv[3]) ? fail() : 0;
    }
    if (!lt_cuda_available()) {
        fprintf(stderr, "vit_bench: no CUDA device\n");
        return 77;
    }
    if (!strcmp(cmd, "run")) {
        if (parse_opts(argc, argv, 3, &o) || o.batch <= 0 || o.iters <= 0) return usage();
        return run(argv[2], &o) ? fail() : 0;
    }
    if (!strcmp(cmd, "profile")) {
        if (parse_opts(argc, argv, 3, &o) || o.batch <= 0 || o.reps <= 0) return usage();
        return profile(argv[2], &o) ? fail() : 0;
    }
    if (!strcmp(cmd, "check")) {
        o.batch = 4;
        if (argc < 5 || parse_opts(argc, argv, 5, &o) || o.batch <= 0) return usage();
        return check(argv[2], argv[3], argv[4], &o) ? fail() : 0;
    }
    return usage();
}
