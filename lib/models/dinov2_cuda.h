/* dinov2_cuda.h: the DINOv2 ViT teacher on a CUDA GPU, the twin of models/dinov2.h.
 *
 * Why it exists: lt-embed runs the teacher once per view, ~46 GFLOP per 224² view for ViT-B/14;
 * on one GPU this is the throughput-critical part of the pipeline (issue 6). It computes the same
 * graph as lt_dinov2_forward (see dinov2.c) with the ops of nn/ops_cuda.h:
 *   patches = patchify(normalise(mix(a, b)))            (B·G, Kp)  one kernel from uint8 views
 *   pemb = patches · patch_wᵀ                            (B·G, D)   cuBLASLt
 *   x = [cls + pos0, registers, pemb + pos + patch_b]    (B·T, D)   fp32 residual stream
 *   depth × { x += proj'(attn(qkv(LN1(x))));  x += fc2'(act(fc1(LN2(x)))) }
 *   out = l2normalize(LN(x[:, 0]))                       (B, D)     fp32
 * where proj' and fc2' have the LayerScale gammas folded into their weights and biases (so the
 * LayerScale + residual add is the GEMM's own "+ beta·C", in place on x).
 *
 * Precisions (lt_precision): BF16 (default on the GPU): bf16 weights and activations, fp32
 * accumulation, fp32 residual stream and LayerNorm statistics, GELU fused into the fc1 GEMM
 * (cuBLASLt's tanh form; lt_dinov2_gpu_set_exact_gelu switches to the exact erf GELU); TF32: fp32
 * storage, tf32 tensor-core GEMMs, exact GELU; FP32: fp32 everywhere. The fp32 master weights
 * stay on the host in the lt_dinov2 the GPU model was made from.
 *
 * Asynchronous use (lt-embed): two slots. Render batch k+1 into pinned buffers
 * (lt_cuda_host_alloc) while the GPU runs batch k:
 *     submit(slot 0, batch 0); submit(slot 1, batch 1);
 *     wait(slot 0) → write; render batch 2 into slot 0's buffers; submit(slot 0, batch 2);
 *     wait(slot 1) → write; ...
 * Uploads run on a copy stream of their own, so the upload of one slot overlaps the compute of
 * the other. The host buffers given to submit must stay unchanged until that slot's wait
 * returns. Host memory that is not pinned works too, but its copies do not overlap.
 *
 * Not thread-safe: one host thread drives a lt_dinov2_gpu. All functions return 0 or -1 with
 * lt_err naming the failing CUDA / cuBLASLt call. */
#ifndef LT_DINOV2_CUDA_H
#define LT_DINOV2_CUDA_H

#include <stdint.h>

#include "nn/ops_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "models/dinov2.h" /* a C header without its own extern "C" */

typedef struct lt_dinov2_gpu lt_dinov2_gpu;

#define LT_DINOV2_GPU_SLOTS 2

/* Uploads the weights of cpu (converted to the precision's storage type) and allocates the
 * activations for max_batch images of H×W (larger calls grow them later, after a sync). cpu must
 * stay alive (and unchanged) until lt_dinov2_gpu_free: the position embedding of a new grid is
 * computed from it on the host. Head dim 64, embed dim <= 2048. */
int lt_dinov2_gpu_create(const lt_dinov2 *cpu, lt_precision prec, int max_batch, int H, int W,
                         lt_dinov2_gpu **out);
void lt_dinov2_gpu_free(lt_dinov2_gpu *g);
lt_precision lt_dinov2_gpu_precision(const lt_dinov2_gpu *g);
/* bf16 only: 1 = exact erf GELU as a separate kernel (slower, ~+5% time), 0 = cuBLASLt's fused
 * tanh GELU (default). tf32/fp32 always use the exact GELU. */
void lt_dinov2_gpu_set_exact_gelu(lt_dinov2_gpu *g, int on);

/* Same contract as lt_dinov2_forward: x_host (B, H, W, 3) float NHWC, normalised; out_host (B, D)
 * L2-normalised CLS embeddings. Synchronous. */
int lt_dinov2_gpu_forward(lt_dinov2_gpu *g, const float *x_host, int B, int H, int W,
                          float *out_host);

/* The teacher on uint8 views: input x = (λ·a/255 + (1−λ)·b/255 − mean)/std computed on the GPU,
 * bitwise as lt_mix_normalize does on the CPU. a, b (B, H, W, 3) uint8 (b NULL: no mixup),
 * lambda (B) or NULL (all 1). Synchronous (submit + wait on a free slot). */
int lt_dinov2_gpu_forward_views(lt_dinov2_gpu *g, const uint8_t *a, const uint8_t *b,
                                const float *lambda, const float mean[3], const float std[3],
                                int B, int H, int W, float *out_host);

/* Asynchronous form of lt_dinov2_gpu_forward_views: enqueues the upload and the forward of one
 * batch in slot (0 or 1) and returns. The slot must be free (never submitted, or waited for).
 * a and b must stay unchanged until lt_dinov2_gpu_wait(slot) returns; lambda is copied at once. */
int lt_dinov2_gpu_submit_views(lt_dinov2_gpu *g, int slot, const uint8_t *a, const uint8_t *b,
                               const float *lambda, const float mean[3], const float std[3],
                               int B, int H, int W);
/* The same with views made on the device (the GPU renderer, image/render_cuda.h): slot_views
 * gives the slot's device buffers a, b ((B, H, W, 3) uint8 each, sized for B views of H×W) and
 * the stream (a cudaStream_t) on which to enqueue the work that fills them; submit_filled then
 * enqueues the forward of those views (has_b: b holds partner views), run once that work is done.
 * The slot must be free for both; nothing may be enqueued for it on other streams. In the stats,
 * copy_ms then counts that work (uploads and rendering). */
int lt_dinov2_gpu_slot_views(lt_dinov2_gpu *g, int slot, int B, int H, int W, uint8_t **a,
                             uint8_t **b, void **stream);
int lt_dinov2_gpu_submit_filled(lt_dinov2_gpu *g, int slot, int has_b, const float *lambda,
                                const float mean[3], const float std[3], int B, int H, int W);
/* After lt_dinov2_gpu_wait(slot): copies the slot's views to the host, a and (when not NULL) b
 * (B, H, W, 3) uint8 each (lt-embed --dump-views of views rendered on the GPU). Synchronous. */
int lt_dinov2_gpu_download_views(lt_dinov2_gpu *g, int slot, uint8_t *a, uint8_t *b, int B,
                                 int H, int W);
/* Waits for the slot's batch and copies its (B, D) embeddings to out_host. Frees the slot. */
int lt_dinov2_gpu_wait(lt_dinov2_gpu *g, int slot, float *out_host);

/* Where GPU time went, summed over the batches waited for (CUDA events): host-to-device copies of
 * the views, and the teacher (normalisation through the embeddings' copy back). */
typedef struct {
    int64_t batches, views;
    double copy_ms, teacher_ms;
} lt_dinov2_gpu_stats;
void lt_dinov2_gpu_get_stats(const lt_dinov2_gpu *g, lt_dinov2_gpu_stats *s);

/* Per-op GPU time of the forward (vit_bench profile, scripts/device-check.sh): CUDA events between
 * the op classes of one forward on the compute stream, reps forwards of the same batch of uint8
 * views (mixup on when b is given), after one unprofiled warm-up forward. For each class: time
 * per forward, calls per forward, and the FLOPs (multiply-add = 2) and the least bytes it must
 * move (each operand read once, each output written once) per forward, for achieved TFLOP/s
 * and GB/s. The events add a few microseconds per op: total_ms is their sum, a little above the
 * unprofiled time. CUDA builds only (not in cuda_stub.c): guard calls with #ifdef LT_HAVE_CUDA. */
enum {
    LT_DINOV2_PROF_INPUT = 0, /* views → normalised patches (mixup, bf16 cast) */
    LT_DINOV2_PROF_PATCH,     /* patch-embedding GEMM */
    LT_DINOV2_PROF_TOKENS,    /* token assembly + position embedding */
    LT_DINOV2_PROF_LN,        /* LayerNorm 1 and 2 of every block */
    LT_DINOV2_PROF_QKV,       /* qkv GEMM + bias */
    LT_DINOV2_PROF_ATTN,      /* fused attention */
    LT_DINOV2_PROF_PROJ,      /* proj GEMM + LayerScale + residual (fp32 C read and written) */
    LT_DINOV2_PROF_FC1,       /* fc1 GEMM + bias + GELU (or + the SwiGLU gate) */
    LT_DINOV2_PROF_FC2,       /* fc2 GEMM + LayerScale + residual */
    LT_DINOV2_PROF_HEAD,      /* CLS gather, final LayerNorm, L2 normalisation */
    LT_DINOV2_PROF_N
};
typedef struct {
    double ms[LT_DINOV2_PROF_N], flops[LT_DINOV2_PROF_N], bytes[LT_DINOV2_PROF_N];
    int calls[LT_DINOV2_PROF_N];
    double total_ms; /* per forward, sum over the classes */
    int reps, B;
} lt_dinov2_gpu_profile;
const char *lt_dinov2_gpu_profile_name(int cls); /* "input", "patch gemm", ... */
int lt_dinov2_gpu_profile_views(lt_dinov2_gpu *g, const uint8_t *a, const uint8_t *b,
                                const float *lambda, const float mean[3], const float std[3],
                                int B, int H, int W, int reps, lt_dinov2_gpu_profile *out);

/* FLOPs of one forward of one H×W image with this config (multiply-add = 2): patch embedding,
 * the four GEMMs and the two attention products per block (elementwise work not counted). For
 * throughput reports: ViT-B/14 at 224 (T = 257) is 46.3 GFLOP. */
static inline double lt_dinov2_flops_per_image(const lt_dinov2_config *c, int H, int W) {
    const double p = c->patch, D = c->embed_dim, G = (double)(H / c->patch) * (W / c->patch);
    const double T = 1 + c->n_reg + G, Hd = c->mlp_hidden, F = c->swiglu ? 2 * Hd : Hd;
    const double block = 2 * T * D * (3 * D + D + F + Hd) + 4 * T * T * D;
    return 2 * G * 3 * p * p * D + c->depth * block;
}

#ifdef __cplusplus
}
#endif

#endif
