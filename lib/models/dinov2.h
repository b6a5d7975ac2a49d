/* dinov2.h: the DINOv2 ViT teacher, forward only, fp32 on the CPU.
 *
 * Weights from a .safetensors file with the original (facebookresearch/dinov2) or Hugging Face
 * (facebook/dinov2-*) key names, F32/F16/BF16. Dimensions come from the tensor shapes; heads =
 * embed_dim / 64. Architecture: patch embedding (conv patch x patch, stride patch), CLS token
 * (+ register tokens if present, inserted after CLS and after the position embedding is added),
 * position embeddings resized as DINOv2 does (bicubic, scale (g + 0.1) / M, no antialias), pre-norm
 * blocks (LayerNorm eps 1e-6, attention, LayerScale, MLP with GELU, or SwiGLU when the weights
 * say so), final LayerNorm, CLS token out, L2-normalised.
 *
 * Key names: original (cls_token, pos_embed, blocks.N.*; also BlockChunk "blocks.C.N.*" as in the
 * ViT-g checkpoints) or Hugging Face (embeddings.*, encoder.layer.N.*, layernorm.*; the separate
 * query/key/value weights are fused into one qkv matrix at load). mask_token and any other extra
 * tensors are ignored. Depth from the block keys, D and the MLP width from the shapes, the
 * register count from register_tokens (absent = 0), M from pos_embed (1, 1 + M², D). */
#ifndef LT_DINOV2_H
#define LT_DINOV2_H

#include <stdint.h>

typedef struct {
    int embed_dim;  /* D: 768 for ViT-B */
    int depth;      /* number of blocks */
    int heads;      /* D / 64 */
    int patch;      /* 14 */
    int n_reg;      /* register tokens, 0 or 4 */
    int pos_grid;   /* M: stored position-embedding grid side (37 for 518 px) */
    int mlp_hidden; /* hidden size of the MLP (per branch for SwiGLU) */
    int swiglu;     /* 1 for the SwiGLU MLP of ViT-g */
    int hf_names;   /* the file used Hugging Face key names */
} lt_dinov2_config;

typedef struct lt_dinov2 lt_dinov2;

/* -1 + lt_err naming the file and the missing/invalid key. */
int lt_dinov2_load(const char *path, lt_dinov2 **out);
const lt_dinov2_config *lt_dinov2_config_of(const lt_dinov2 *m);
/* x: (B, H, W, 3) float, normalised, NHWC; H and W multiples of patch (extra pixels are
 * ignored, as the conv would). out: (B, D) L2-normalised CLS embeddings. Uses lt_threads_get()
 * threads. -1 + lt_err on OOM. Activation buffers are kept in the model and grown to the largest
 * B·tokens seen; the resized position embedding is cached for the last grid. Not thread-safe on
 * one model (one forward at a time); bitwise reproducible for a fixed thread count. */
int lt_dinov2_forward(lt_dinov2 *m, const float *x, int B, int H, int W, float *out);
void lt_dinov2_free(lt_dinov2 *m);

/* Read-only views of the loaded fp32 weights (the host master copies), for the GPU twin
 * (models/dinov2_cuda.h). Valid until lt_dinov2_free. Shapes as in PyTorch: Linear weights
 * (out, in); qkv rows [q; k; v]; fc1 (F, D) with F = mlp_hidden, or 2·mlp_hidden for SwiGLU's w12;
 * patch_w (D, 3·p·p) = the conv weight (D, 3, p, p); pos (1 + M², D); reg NULL when n_reg = 0. */
typedef struct {
    const float *cls, *reg, *pos, *patch_w, *patch_b, *norm_w, *norm_b;
} lt_dinov2_weights;
typedef struct {
    const float *n1w, *n1b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ls1, *ls2, *n2w, *n2b;
    const float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} lt_dinov2_block_weights;
void lt_dinov2_weights_of(const lt_dinov2 *m, lt_dinov2_weights *w);
/* Block i, 0 <= i < depth. */
void lt_dinov2_block_weights_of(const lt_dinov2 *m, int i, lt_dinov2_block_weights *w);
/* The position embedding the forward adds for an H×W input (resized as DINOv2 does): out
 * (1 + gh·gw, D), gh = H/patch, gw = W/patch. Thread-safe (does not touch the model's cache). */
void lt_dinov2_pos_embed(const lt_dinov2 *m, int H, int W, float *out);

#endif
