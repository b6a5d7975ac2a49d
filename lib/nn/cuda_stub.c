/* cuda_stub.c: the CUDA API (nn/ops_cuda.h, models/dinov2_cuda.h, lt_backend_cuda of
 * nn/backend.h) in a build without CUDA.
 *
 * Why it exists: `make CUDA=0` (or no nvcc) must still link every tool and test that can use the
 * GPU. Here lt_cuda_available() returns 0, so `--device auto` picks the CPU; anything that would
 * need the GPU fails with one clear message. The pure host helpers (precision names, bf16
 * conversions) work as in the CUDA build. Compiled only when CUDA=0 (see the Makefile). */
#include "core/error.h"
#include "image/render_cuda.h"
#include "models/dinov2_cuda.h"
#include "nn/backend.h"
#include "nn/ops_cuda.h"

#include <stdlib.h>
#include <string.h>

static int no_cuda(const char *what) {
    return lt_err_set("%s: this lt was built without CUDA (CUDA=0 or no nvcc at build time); "
                      "rebuild with nvcc installed to use the GPU, or use --device cpu",
                      what);
}

const char *lt_precision_name(lt_precision p) {
    return p == LT_PREC_BF16 ? "bf16" : p == LT_PREC_TF32 ? "tf32" : "fp32";
}

int lt_precision_parse(const char *s, lt_precision *out) {
    if (!strcmp(s, "bf16")) *out = LT_PREC_BF16;
    else if (!strcmp(s, "tf32")) *out = LT_PREC_TF32;
    else if (!strcmp(s, "fp32")) *out = LT_PREC_FP32;
    else return lt_err_set("precision: expected bf16, tf32 or fp32, got '%s'", s);
    return 0;
}

size_t lt_cuda_dtype_size(lt_cuda_dtype t) { return t == LT_CUDA_BF16 ? 2 : 4; }
lt_cuda_dtype lt_cuda_act_dtype(lt_precision p) {
    return p == LT_PREC_BF16 ? LT_CUDA_BF16 : LT_CUDA_F32;
}

uint16_t lt_cuda_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float lt_cuda_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int lt_cuda_available(void) { return 0; }
int lt_cuda_device_count(void) { return 0; }
int lt_cuda_device_info(char *buf, size_t n) {
    if (n) buf[0] = 0;
    return no_cuda("cuda device");
}

int lt_cuda_malloc(void **p, size_t bytes, const char *what) {
    (void)bytes;
    *p = NULL;
    return no_cuda(what);
}
void lt_cuda_free(void *p) { (void)p; }
int lt_cuda_host_alloc(void **p, size_t bytes, const char *what) {
    (void)bytes;
    *p = NULL;
    return no_cuda(what);
}
void lt_cuda_host_free(void *p) { (void)p; }

int lt_cuda_ctx_create(lt_cuda_ctx **out) {
    *out = NULL;
    return no_cuda("cuda context");
}
void lt_cuda_ctx_free(lt_cuda_ctx *c) { (void)c; }
void *lt_cuda_ctx_stream(lt_cuda_ctx *c) {
    (void)c;
    return NULL;
}
int lt_cuda_sync(lt_cuda_ctx *c) {
    (void)c;
    return no_cuda("cuda sync");
}
int lt_cuda_upload(lt_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    (void)c, (void)dst, (void)src, (void)bytes;
    return no_cuda("cuda upload");
}
int lt_cuda_download(lt_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    (void)c, (void)dst, (void)src, (void)bytes;
    return no_cuda("cuda download");
}
int lt_cuda_upload_f32(lt_cuda_ctx *c, void *dst, lt_cuda_dtype t, const float *src, int64_t n) {
    (void)c, (void)dst, (void)t, (void)src, (void)n;
    return no_cuda("cuda upload");
}
int lt_cuda_download_f32(lt_cuda_ctx *c, float *dst, const void *src, lt_cuda_dtype t, int64_t n) {
    (void)c, (void)dst, (void)src, (void)t, (void)n;
    return no_cuda("cuda download");
}

int lt_cuda_gemm(lt_cuda_ctx *c, lt_precision prec, int trans_a, int trans_b, int M, int N, int K,
                 float alpha, const void *A, int lda, const void *B, int ldb, float beta, void *C,
                 int ldc, lt_cuda_dtype c_type) {
    (void)c, (void)prec, (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)alpha;
    (void)A, (void)lda, (void)B, (void)ldb, (void)beta, (void)C, (void)ldc, (void)c_type;
    return no_cuda("cuda gemm");
}
int lt_cuda_linear(lt_cuda_ctx *c, lt_precision prec, void *out, lt_cuda_dtype out_type,
                   const void *in, const void *w, const void *bias, int M, int K, int N,
                   lt_cuda_act act, float beta) {
    (void)c, (void)prec, (void)out, (void)out_type, (void)in, (void)w, (void)bias, (void)M;
    (void)K, (void)N, (void)act, (void)beta;
    return no_cuda("cuda linear");
}
int lt_cuda_layernorm(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, const float *in,
                      const float *w, const float *b, int M, int C, float eps) {
    (void)c, (void)out, (void)out_type, (void)in, (void)w, (void)b, (void)M, (void)C, (void)eps;
    return no_cuda("cuda layernorm");
}
int lt_cuda_gelu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t, int64_t n) {
    (void)c, (void)out, (void)in, (void)t, (void)n;
    return no_cuda("cuda gelu");
}
int lt_cuda_swiglu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t, int M, int H) {
    (void)c, (void)out, (void)in, (void)t, (void)M, (void)H;
    return no_cuda("cuda swiglu");
}
int lt_cuda_attention(lt_cuda_ctx *c, void *out, const void *qkv, lt_cuda_dtype t, int B, int N,
                      int heads, int hd) {
    (void)c, (void)out, (void)qkv, (void)t, (void)B, (void)N, (void)heads, (void)hd;
    return no_cuda("cuda attention");
}
int lt_cuda_layerscale_add(lt_cuda_ctx *c, float *x, const void *y, lt_cuda_dtype yt,
                           const float *gamma, int M, int C) {
    (void)c, (void)x, (void)y, (void)yt, (void)gamma, (void)M, (void)C;
    return no_cuda("cuda layerscale");
}
int lt_cuda_l2norm(lt_cuda_ctx *c, float *x, int M, int C, float eps) {
    (void)c, (void)x, (void)M, (void)C, (void)eps;
    return no_cuda("cuda l2norm");
}
int lt_cuda_patchify(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out, const float *x,
                     int B, int H, int W, int C, int p) {
    (void)c, (void)out, (void)out_type, (void)ld_out, (void)x, (void)B, (void)H, (void)W, (void)C;
    (void)p;
    return no_cuda("cuda patchify");
}
int lt_cuda_mix_normalize(lt_cuda_ctx *c, float *out, const uint8_t *a, const uint8_t *b,
                          const float *lambda, const float mean[3], const float std[3], int B,
                          int64_t npix) {
    (void)c, (void)out, (void)a, (void)b, (void)lambda, (void)mean, (void)std, (void)B, (void)npix;
    return no_cuda("cuda mix_normalize");
}
int lt_cuda_patchify_views(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out,
                           const uint8_t *a, const uint8_t *b, const float *lambda,
                           const float mean[3], const float std[3], int B, int H, int W, int p) {
    (void)c, (void)out, (void)out_type, (void)ld_out, (void)a, (void)b, (void)lambda, (void)mean;
    (void)std, (void)B, (void)H, (void)W, (void)p;
    return no_cuda("cuda patchify");
}
int lt_cuda_tokens(lt_cuda_ctx *c, float *x, const float *pemb, const float *tok0,
                   const float *reg, const float *posb, int B, int G, int R, int D) {
    (void)c, (void)x, (void)pemb, (void)tok0, (void)reg, (void)posb, (void)B, (void)G, (void)R;
    (void)D;
    return no_cuda("cuda tokens");
}
int lt_cuda_cls_head(lt_cuda_ctx *c, float *out, const float *x, int B, int T, int D,
                     const float *w, const float *b, float ln_eps, float l2_eps) {
    (void)c, (void)out, (void)x, (void)B, (void)T, (void)D, (void)w, (void)b, (void)ln_eps;
    (void)l2_eps;
    return no_cuda("cuda head");
}

int lt_dinov2_gpu_create(const lt_dinov2 *cpu, lt_precision prec, int max_batch, int H, int W,
                         lt_dinov2_gpu **out) {
    (void)cpu, (void)prec, (void)max_batch, (void)H, (void)W;
    *out = NULL;
    return no_cuda("dinov2 gpu");
}
void lt_dinov2_gpu_free(lt_dinov2_gpu *g) { (void)g; }
lt_precision lt_dinov2_gpu_precision(const lt_dinov2_gpu *g) {
    (void)g;
    return LT_PREC_FP32;
}
void lt_dinov2_gpu_set_exact_gelu(lt_dinov2_gpu *g, int on) { (void)g, (void)on; }
int lt_dinov2_gpu_forward(lt_dinov2_gpu *g, const float *x, int B, int H, int W, float *out) {
    (void)g, (void)x, (void)B, (void)H, (void)W, (void)out;
    return no_cuda("dinov2 gpu");
}
int lt_dinov2_gpu_forward_views(lt_dinov2_gpu *g, const uint8_t *a, const uint8_t *b,
                                const float *lambda, const float mean[3], const float std[3],
                                int B, int H, int W, float *out) {
    (void)g, (void)a, (void)b, (void)lambda, (void)mean, (void)std, (void)B, (void)H, (void)W;
    (void)out;
    return no_cuda("dinov2 gpu");
}
int lt_dinov2_gpu_submit_views(lt_dinov2_gpu *g, int slot, const uint8_t *a, const uint8_t *b,
                               const float *lambda, const float mean[3], const float std[3],
                               int B, int H, int W) {
    (void)g, (void)slot, (void)a, (void)b, (void)lambda, (void)mean, (void)std, (void)B, (void)H;
    (void)W;
    return no_cuda("dinov2 gpu");
}
int lt_dinov2_gpu_slot_views(lt_dinov2_gpu *g, int slot, int B, int H, int W, uint8_t **a,
                             uint8_t **b, void **stream) {
    (void)g, (void)slot, (void)B, (void)H, (void)W, (void)a, (void)b, (void)stream;
    return no_cuda("dinov2 gpu");
}
int lt_dinov2_gpu_submit_filled(lt_dinov2_gpu *g, int slot, int has_b, const float *lambda,
                                const float mean[3], const float std[3], int B, int H, int W) {
    (void)g, (void)slot, (void)has_b, (void)lambda, (void)mean, (void)std, (void)B, (void)H,
        (void)W;
    return no_cuda("dinov2 gpu");
}
int lt_dinov2_gpu_download_views(lt_dinov2_gpu *g, int slot, uint8_t *a, uint8_t *b, int B,
                                 int H, int W) {
    (void)g, (void)slot, (void)a, (void)b, (void)B, (void)H, (void)W;
    return no_cuda("dinov2 gpu");
}
int lt_dinov2_gpu_wait(lt_dinov2_gpu *g, int slot, float *out) {
    (void)g, (void)slot, (void)out;
    return no_cuda("dinov2 gpu");
}
void lt_dinov2_gpu_get_stats(const lt_dinov2_gpu *g, lt_dinov2_gpu_stats *s) {
    (void)g;
    memset(s, 0, sizeof *s);
}

size_t lt_render_cuda_ws_bytes(const lt_render_job *jobs, int n, int size) {
    (void)jobs, (void)n, (void)size;
    return 0;
}

int lt_render_cuda(const lt_render_job *jobs, int n, int size, uint8_t *out, void *ws,
                   size_t ws_bytes, void *stream) {
    (void)jobs, (void)n, (void)size, (void)out, (void)ws, (void)ws_bytes, (void)stream;
    return no_cuda("render on the GPU");
}

int lt_render_gpu_create(lt_render_gpu **out) {
    *out = NULL;
    return no_cuda("render on the GPU");
}
void lt_render_gpu_free(lt_render_gpu *r) { (void)r; }
int lt_render_gpu_pairs(lt_render_gpu *r, const lt_image *images, int n_images,
                        const lt_sample *smp, const int *img, int count, int size, uint8_t *a,
                        uint8_t *b, void *stream) {
    (void)r, (void)images, (void)n_images, (void)smp, (void)img, (void)count, (void)size, (void)a,
        (void)b, (void)stream;
    return no_cuda("render on the GPU");
}

int lt_render_gpu_pairs_resident(lt_render_gpu *r, const uint8_t *block, const int64_t *offset,
                                 const int32_t *width, const int32_t *height, int64_t n_images,
                                 const lt_sample *smp, const int64_t *img, int count, int size,
                                 uint8_t *a, uint8_t *b, void *stream) {
    (void)r, (void)block, (void)offset, (void)width, (void)height, (void)n_images, (void)smp,
        (void)img, (void)count, (void)size, (void)a, (void)b, (void)stream;
    return no_cuda("render on the GPU");
}

int lt_render_gpu_upload_block(const uint8_t *host, size_t bytes, uint8_t **dev) {
    (void)host, (void)bytes;
    *dev = NULL;
    return no_cuda("render on the GPU");
}
void lt_render_gpu_free_block(uint8_t *dev) { (void)dev; }
size_t lt_render_gpu_free_memory(void) { return 0; }

int lt_backend_cuda_set_precision(lt_backend *be, lt_precision p) {
    (void)be;
    return lt_err_set("--precision %s: the CPU backend computes in fp32", lt_precision_name(p));
}

lt_backend *lt_backend_cuda(int device_index) {
    (void)device_index;
    no_cuda("cuda backend");
    return NULL;
}
