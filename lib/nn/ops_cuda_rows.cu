/* ops_cuda_rows.cu: the memory-bound ops of the CUDA backend (nn/ops_cuda.h): GELU, SwiGLU,
 * LayerScale + residual, L2 normalisation, LayerNorm, the CLS head, and the input side (mixup +
 * normalisation of uint8 views, patchify, token assembly with the position embedding).
 *
 * Why it exists: after the GEMMs and the attention, what is left of the teacher only moves
 * memory, so each of these reads and writes an activation as few times as possible (one warp or
 * block per row, the row in registers, 16-byte loads where the shapes allow). The input kernels
 * compute the fp32 pixels bit for bit as the CPU's lt_mix_normalize (no FMA contraction).
 *
 * LayerNorm, the token assembly and views → patches have two kernels each: a vectorised one
 * (16-byte loads and stores, row coordinates once per row) taken whenever the shapes and
 * alignments allow, and a general one (element- or lane-wise) for the rest; both give the same
 * results (LayerNorm: up to the summation order). */
#include "nn/ops_cuda_internal.cuh"

#include <math.h>
#include <string.h>

/* ---- elementwise ops -------------------------------------------------------------------------- */

template <typename T>
__global__ void gelu_kernel(T *out, const T *in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        stf(out, i, gelu_erf(ldf(in, i)));
}

extern "C" int lt_cuda_gelu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t,
                            int64_t n) {
    if (n <= 0) return 0;
    if (t == LT_CUDA_BF16)
        gelu_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>((bf16 *)out, (const bf16 *)in, n);
    else
        gelu_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>((float *)out, (const float *)in, n);
    return launch_check("gelu");
}

/* out (M,H) = silu(in[:, :H]) · in[:, H:], in (M, 2H) */
template <typename T>
__global__ void swiglu_kernel(T *out, const T *in, int64_t M, int H) {
    const int64_t n = M * H;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / H, j = i % H;
        const float a = ldf(in, r * 2 * H + j), g = ldf(in, r * 2 * H + H + j);
        stf(out, i, a / (1.0f + expf(-a)) * g);
    }
}

extern "C" int lt_cuda_swiglu(lt_cuda_ctx *c, void *out, const void *in, lt_cuda_dtype t, int M,
                              int H) {
    if (M <= 0 || H <= 0) return 0;
    const size_t es = lt_cuda_dtype_size(t);
    const char *o = (const char *)out, *i = (const char *)in;
    if (o < i + (size_t)M * 2 * H * es && i < o + (size_t)M * H * es)
        return lt_err_set("cuda swiglu: out overlaps in (no in-place form on the GPU)");
    const int64_t n = (int64_t)M * H;
    if (t == LT_CUDA_BF16)
        swiglu_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>((bf16 *)out, (const bf16 *)in, M, H);
    else
        swiglu_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>((float *)out, (const float *)in, M, H);
    return launch_check("swiglu");
}

template <typename T>
__global__ void layerscale_add_kernel(float *x, const T *y, const float *gamma, int64_t M, int C) {
    const int64_t n = M * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = ldf(y, i);
        x[i] += gamma ? gamma[i % C] * v : v;
    }
}

extern "C" int lt_cuda_layerscale_add(lt_cuda_ctx *c, float *x, const void *y, lt_cuda_dtype yt,
                                      const float *gamma, int M, int C) {
    const int64_t n = (int64_t)M * C;
    if (n <= 0) return 0;
    if (yt == LT_CUDA_BF16)
        layerscale_add_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>(x, (const bf16 *)y, gamma, M, C);
    else
        layerscale_add_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>(x, (const float *)y, gamma, M, C);
    return launch_check("layerscale_add");
}

/* one warp per row: x (M,C) /= max(‖x‖, eps) */
__global__ void l2norm_kernel(float *x, int M, int C, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    float *r = x + (int64_t)row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += r[i] * r[i];
    s = warp_sum(s);
    const float inv = 1.0f / fmaxf(sqrtf(s), eps);
    for (int i = lane; i < C; i += 32) r[i] *= inv;
}

extern "C" int lt_cuda_l2norm(lt_cuda_ctx *c, float *x, int M, int C, float eps) {
    if (M <= 0) return 0;
    l2norm_kernel<<<(M + 7) / 8, 256, 0, c->stream>>>(x, M, C, eps);
    return launch_check("l2norm");
}

/* ---- LayerNorm and the head ------------------------------------------------------------------- */

/* LayerNorm of one row (C <= 32·NV) held in registers by one warp: lane owns columns lane + 32·i.
 * v receives the normalised, affine-transformed values (0 beyond C). */
template <int NV>
__device__ __forceinline__ void ln_row(const float *x, int C, const float *w, const float *b,
                                       float eps, float (&v)[NV], int lane) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int col = lane + 32 * i;
        v[i] = col < C ? x[col] : 0.0f;
        s += v[i];
    }
    const float mean = warp_sum(s) / (float)C;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int col = lane + 32 * i;
        const float d = col < C ? v[i] - mean : 0.0f;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(warp_sum(q) / (float)C + eps);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int col = lane + 32 * i;
        v[i] = col < C ? (v[i] - mean) * rstd * w[col] + b[col] : 0.0f;
    }
}

/* one warp per row; 8 rows per block of 256 */
template <typename T, int NV>
__global__ void layernorm_kernel(T *out, const float *in, const float *w, const float *b, int M,
                                 int C, float eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    float v[NV];
    ln_row<NV>(in + (int64_t)row * C, C, w, b, eps, v, lane);
    T *o = out + (int64_t)row * C;
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (lane + 32 * i < C) stf(o, lane + 32 * i, v[i]);
}

/* out (B,D) = l2normalize(LN(x[b, 0, :])) */
template <int NV>
__global__ void cls_head_kernel(float *out, const float *x, int B, int64_t T, int D, const float *w,
                                const float *b, float ln_eps, float l2_eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= B) return;
    float v[NV];
    ln_row<NV>(x + (int64_t)row * T * D, D, w, b, ln_eps, v, lane);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) s += v[i] * v[i];
    const float inv = 1.0f / fmaxf(sqrtf(warp_sum(s)), l2_eps);
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (lane + 32 * i < D) out[(int64_t)row * D + lane + 32 * i] = v[i] * inv;
}

/* Registers per lane for a row of C: the smallest instantiated NV with 32·NV >= C. */
#define LN_DISPATCH(C, MACRO)                                                                     \
    do {                                                                                          \
        const int nv_ = ((C) + 31) / 32;                                                          \
        if (nv_ <= 2) { MACRO(2); }                                                               \
        else if (nv_ <= 4) { MACRO(4); }                                                          \
        else if (nv_ <= 8) { MACRO(8); }                                                          \
        else if (nv_ <= 16) { MACRO(16); }                                                        \
        else if (nv_ <= 24) { MACRO(24); }                                                        \
        else if (nv_ <= 32) { MACRO(32); }                                                        \
        else if (nv_ <= 48) { MACRO(48); }                                                        \
        else { MACRO(64); }                                                                       \
    } while (0)

typedef struct {
    float mean[3], std[3];
} norm3;

/* The CPU's lt_mix_normalize expression, rounded step by step (no FMA contraction). */
__device__ __forceinline__ float mix_norm(const uint8_t *a, const uint8_t *b, float wa, float wb,
                                          int64_t i, int ch, const norm3 &n) {
    float v = __fmul_rn(wa, (float)a[i]);
    if (b) v = __fadd_rn(v, __fmul_rn(wb, (float)b[i]));
    return __fdiv_rn(__fsub_rn(v, n.mean[ch]), n.std[ch]);
}

/* Without a partner (b NULL) λ is 1, whatever lambda holds (as lt-embed calls the CPU twin). */
__device__ __forceinline__ void mix_weights(const float *lambda, const uint8_t *b, int s,
                                            float *wa, float *wb) {
    const float l = lambda && b ? lambda[s] : 1.0f;
    *wa = __fdiv_rn(l, 255.0f);
    *wb = __fdiv_rn(__fsub_rn(1.0f, l), 255.0f);
}

/* The vectorised row kernels ("v2"; the general ones, "v1", were the first written): 16-byte
 * loads and stores, row coordinates computed once per row (the general kernels compute them per
 * element with 64-bit divisions). */
__device__ __forceinline__ void st4(float *p, int64_t i, float4 v) {
    *reinterpret_cast<float4 *>(p + i) = v;
}
__device__ __forceinline__ void st4(bf16 *p, int64_t i, float4 v) {
    uint2 u;
    u.x = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.x)) |
          ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.y)) << 16);
    u.y = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.z)) |
          ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.w)) << 16);
    *reinterpret_cast<uint2 *>(p + i) = u;
}

/* LayerNorm, one warp per row, 8 rows per block of 256; lane owns the float4 columns
 * 4·(lane + 32·i). Needs C % 4 == 0 and 16-byte aligned rows (8-byte for a bf16 out). */
template <typename T, int NV4>
__global__ void layernorm_v2_kernel(T *out, const float *in, const float *w, const float *b, int M,
                                    int C, float eps) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    const int C4 = C >> 2;
    const float4 *x = reinterpret_cast<const float4 *>(in + (int64_t)row * C);
    float4 v[NV4];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV4; i++) {
        const int c4 = lane + 32 * i;
        v[i] = c4 < C4 ? x[c4] : make_float4(0.f, 0.f, 0.f, 0.f);
        s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
    }
    const float mean = warp_sum(s) / (float)C;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < NV4; i++)
        if (lane + 32 * i < C4) {
            const float d0 = v[i].x - mean, d1 = v[i].y - mean, d2 = v[i].z - mean,
                        d3 = v[i].w - mean;
            q += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    const float rstd = 1.0f / sqrtf(warp_sum(q) / (float)C + eps);
    const float4 *w4 = reinterpret_cast<const float4 *>(w);
    const float4 *b4 = reinterpret_cast<const float4 *>(b);
#pragma unroll
    for (int i = 0; i < NV4; i++) {
        const int c4 = lane + 32 * i;
        if (c4 < C4) {
            const float4 ww = w4[c4], bw = b4[c4];
            float4 y;
            y.x = (v[i].x - mean) * rstd * ww.x + bw.x;
            y.y = (v[i].y - mean) * rstd * ww.y + bw.y;
            y.z = (v[i].z - mean) * rstd * ww.z + bw.z;
            y.w = (v[i].w - mean) * rstd * ww.w + bw.w;
            st4(out, (int64_t)row * C + 4 * c4, y);
        }
    }
}

/* x (B·T, D) fp32: one block per token row; D % 4 == 0, 16-byte aligned arrays */
__global__ void tokens_v2_kernel(float *x, const float *pemb, const float *tok0, const float *reg,
                                 const float *posb, int T, int G, int R, int D) {
    const int row = blockIdx.x, t = row % T, bi = row / T, D4 = D >> 2;
    float4 *dst = reinterpret_cast<float4 *>(x + (int64_t)row * D);
    if (t <= R) { /* the class token (t = 0) or a register */
        const float *s = t == 0 ? tok0 : reg + (int64_t)(t - 1) * D;
        const float4 *src = reinterpret_cast<const float4 *>(s);
        for (int i = threadIdx.x; i < D4; i += blockDim.x) dst[i] = src[i];
        return;
    }
    const int g = t - 1 - R;
    const float4 *pe = reinterpret_cast<const float4 *>(pemb + ((int64_t)bi * G + g) * D);
    const float4 *pb = reinterpret_cast<const float4 *>(posb + (int64_t)g * D);
    for (int i = threadIdx.x; i < D4; i += blockDim.x) {
        const float4 a = pe[i], p = pb[i];
        dst[i] = make_float4(a.x + p.x, a.y + p.y, a.z + p.z, a.w + p.w);
    }
}

/* uint8 views → patch rows: one block per patch row r = (b, gy, gx), threads over its columns */
template <typename T>
__global__ void patchify_views_v2_kernel(T *out, int ld, const uint8_t *a, const uint8_t *b,
                                         const float *lambda, norm3 n, int H, int W, int p) {
    const int r = blockIdx.x, gw = W / p, G = (H / p) * gw, K = 3 * p * p, pp = p * p;
    const int bi = r / G, gi = r % G, y0 = (gi / gw) * p, x0 = (gi % gw) * p;
    float wa, wb;
    mix_weights(lambda, b, bi, &wa, &wb);
    T *o = out + (int64_t)r * ld;
    for (int k = threadIdx.x; k < ld; k += blockDim.x) {
        float v = 0.0f;
        if (k < K) {
            const int ch = k / pp, rem = k - ch * pp, ky = rem / p, kx = rem - ky * p;
            const int64_t src = (((int64_t)bi * H + y0 + ky) * W + x0 + kx) * 3 + ch;
            v = mix_norm(a, b, wa, wb, src, ch, n);
        }
        stf(o, k, v);
    }
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

extern "C" int lt_cuda_layernorm(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type,
                                 const float *in, const float *w, const float *b, int M, int C,
                                 float eps) {
    if (M <= 0) return 0;
    if (C <= 0 || C > 2048) return lt_err_set("cuda layernorm: C = %d (1..2048 supported)", C);
    if (C % 4 == 0 && aligned16(in) && aligned16(w) && aligned16(b) &&
        ((uintptr_t)out & (out_type == LT_CUDA_BF16 ? 7 : 15)) == 0) {
        const int grid = (M + 7) / 8;
        const int nv4 = (C / 4 + 31) / 32;
#define LN2_LAUNCH(NV4)                                                                           \
    if (out_type == LT_CUDA_BF16)                                                                 \
        layernorm_v2_kernel<bf16, NV4><<<grid, 256, 0, c->stream>>>((bf16 *)out, in, w, b, M, C,   \
                                                                    eps);                         \
    else                                                                                          \
        layernorm_v2_kernel<float, NV4><<<grid, 256, 0, c->stream>>>((float *)out, in, w, b, M, C, \
                                                                     eps)
        if (nv4 <= 1) { LN2_LAUNCH(1); }
        else if (nv4 <= 2) { LN2_LAUNCH(2); }
        else if (nv4 <= 4) { LN2_LAUNCH(4); }
        else if (nv4 <= 6) { LN2_LAUNCH(6); }
        else if (nv4 <= 8) { LN2_LAUNCH(8); }
        else if (nv4 <= 12) { LN2_LAUNCH(12); }
        else { LN2_LAUNCH(16); }
#undef LN2_LAUNCH
        return launch_check("layernorm (v2)");
    }
    return lt_cuda_layernorm_general(c, out, out_type, in, w, b, M, C, eps);
}

/* the general LayerNorm: any C <= 2048, any alignment */
int lt_cuda_layernorm_general(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, const float *in,
                              const float *w, const float *b, int M, int C, float eps) {
    if (M <= 0) return 0;
    if (C <= 0 || C > 2048) return lt_err_set("cuda layernorm: C = %d (1..2048 supported)", C);
    const int grid = (M + 7) / 8;
#define LN_LAUNCH(NV)                                                                             \
    if (out_type == LT_CUDA_BF16)                                                                 \
        layernorm_kernel<bf16, NV><<<grid, 256, 0, c->stream>>>((bf16 *)out, in, w, b, M, C, eps); \
    else                                                                                          \
        layernorm_kernel<float, NV><<<grid, 256, 0, c->stream>>>((float *)out, in, w, b, M, C, eps)
    LN_DISPATCH(C, LN_LAUNCH);
#undef LN_LAUNCH
    return launch_check("layernorm");
}

extern "C" int lt_cuda_cls_head(lt_cuda_ctx *c, float *out, const float *x, int B, int T, int D,
                                const float *w, const float *b, float ln_eps, float l2_eps) {
    if (B <= 0) return 0;
    if (D <= 0 || D > 2048) return lt_err_set("cuda cls head: D = %d (1..2048 supported)", D);
    const int grid = (B + 7) / 8;
#define HEAD_LAUNCH(NV)                                                                           \
    cls_head_kernel<NV><<<grid, 256, 0, c->stream>>>(out, x, B, T, D, w, b, ln_eps, l2_eps)
    LN_DISPATCH(D, HEAD_LAUNCH);
#undef HEAD_LAUNCH
    return launch_check("cls_head");
}

/* ---- input: normalisation, patchify, tokens -------------------------------------------------- */

__global__ void mix_normalize_kernel(float *out, const uint8_t *a, const uint8_t *b,
                                     const float *lambda, norm3 n, int B, int64_t npix) {
    const int64_t total = (int64_t)B * npix * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float wa, wb;
        mix_weights(lambda, b, (int)(i / (npix * 3)), &wa, &wb);
        out[i] = mix_norm(a, b, wa, wb, i, (int)(i % 3), n);
    }
}

extern "C" int lt_cuda_mix_normalize(lt_cuda_ctx *c, float *out, const uint8_t *a,
                                     const uint8_t *b, const float *lambda, const float mean[3],
                                     const float std[3], int B, int64_t npix) {
    const int64_t total = (int64_t)B * npix * 3;
    if (total <= 0) return 0;
    norm3 n;
    for (int i = 0; i < 3; i++) {
        n.mean[i] = mean[i];
        n.std[i] = std[i];
    }
    mix_normalize_kernel<<<grid_1d(total, 256), 256, 0, c->stream>>>(out, a, b, lambda, n, B, npix);
    return launch_check("mix_normalize");
}

/* Patch rows r = (b, gy, gx), columns k = (c, ky, kx) (+ zero padding up to ld):
 * out[r, k] = x[b, gy·p + ky, gx·p + kx, c], x either fp32 NHWC or uint8 views (then normalised). */
template <typename T, bool VIEWS>
__global__ void patchify_kernel(T *out, int ld, const float *x, const uint8_t *a, const uint8_t *b,
                                const float *lambda, norm3 n, int B, int H, int W, int C, int p) {
    const int gh = H / p, gw = W / p, K = C * p * p;
    const int64_t total = (int64_t)B * gh * gw * ld;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / ld;
        const int k = (int)(i % ld);
        if (k >= K) {
            stf(out, i, 0.0f);
            continue;
        }
        const int ch = k / (p * p), rem = k % (p * p), ky = rem / p, kx = rem % p;
        const int bi = (int)(r / ((int64_t)gh * gw)), g = (int)(r % ((int64_t)gh * gw));
        const int y = (g / gw) * p + ky, xx = (g % gw) * p + kx;
        const int64_t src = (((int64_t)bi * H + y) * W + xx) * C + ch;
        float v;
        if (VIEWS) {
            float wa, wb;
            mix_weights(lambda, b, bi, &wa, &wb);
            v = mix_norm(a, b, wa, wb, src, ch, n);
        } else {
            v = x[src];
        }
        stf(out, i, v);
    }
}

static int patchify_args(int ld_out, int B, int H, int W, int C, int p) {
    if (p <= 0 || H / p <= 0 || W / p <= 0 || B <= 0)
        return lt_err_set("cuda patchify: %d images of %dx%d, patch %d", B, H, W, p);
    if (ld_out < C * p * p) return lt_err_set("cuda patchify: ld_out %d < %d", ld_out, C * p * p);
    return 0;
}

extern "C" int lt_cuda_patchify(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out,
                                const float *x, int B, int H, int W, int C, int p) {
    if (patchify_args(ld_out, B, H, W, C, p)) return -1;
    const int64_t total = (int64_t)B * (H / p) * (W / p) * ld_out;
    norm3 n;
    memset(&n, 0, sizeof n);
    if (out_type == LT_CUDA_BF16)
        patchify_kernel<bf16, false><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (bf16 *)out, ld_out, x, NULL, NULL, NULL, n, B, H, W, C, p);
    else
        patchify_kernel<float, false><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (float *)out, ld_out, x, NULL, NULL, NULL, n, B, H, W, C, p);
    return launch_check("patchify");
}

extern "C" int lt_cuda_patchify_views(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type,
                                      int ld_out, const uint8_t *a, const uint8_t *b,
                                      const float *lambda, const float mean[3],
                                      const float std[3], int B, int H, int W, int p) {
    if (patchify_args(ld_out, B, H, W, 3, p)) return -1;
    const int64_t prow = (int64_t)B * (H / p) * (W / p);
    if (prow <= 0x7fffffff) {
        norm3 n;
        for (int i = 0; i < 3; i++) {
            n.mean[i] = mean[i];
            n.std[i] = std[i];
        }
        const int threads = ld_out >= 256 ? 256 : 32 * ((ld_out + 31) / 32);
        if (out_type == LT_CUDA_BF16)
            patchify_views_v2_kernel<bf16><<<(unsigned)prow, threads, 0, c->stream>>>(
                (bf16 *)out, ld_out, a, b, lambda, n, H, W, p);
        else
            patchify_views_v2_kernel<float><<<(unsigned)prow, threads, 0, c->stream>>>(
                (float *)out, ld_out, a, b, lambda, n, H, W, p);
        return launch_check("patchify_views (v2)");
    }
    return lt_cuda_patchify_views_general(c, out, out_type, ld_out, a, b, lambda, mean, std, B, H,
                                          W, p);
}

/* the general views → patches: any number of patch rows (the vectorised kernel has one block
 * per row, so at most 2³¹ − 1 of them) */
int lt_cuda_patchify_views_general(lt_cuda_ctx *c, void *out, lt_cuda_dtype out_type, int ld_out,
                                   const uint8_t *a, const uint8_t *b, const float *lambda,
                                   const float mean[3], const float std[3], int B, int H, int W,
                                   int p) {
    if (patchify_args(ld_out, B, H, W, 3, p)) return -1;
    const int64_t total = (int64_t)B * (H / p) * (W / p) * ld_out;
    norm3 n;
    for (int i = 0; i < 3; i++) {
        n.mean[i] = mean[i];
        n.std[i] = std[i];
    }
    if (out_type == LT_CUDA_BF16)
        patchify_kernel<bf16, true><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (bf16 *)out, ld_out, NULL, a, b, lambda, n, B, H, W, 3, p);
    else
        patchify_kernel<float, true><<<grid_1d(total, 256), 256, 0, c->stream>>>(
            (float *)out, ld_out, NULL, a, b, lambda, n, B, H, W, 3, p);
    return launch_check("patchify_views");
}

/* x (B,T,D): [tok0, reg, pemb + posb] per image */
__global__ void tokens_kernel(float *x, const float *pemb, const float *tok0, const float *reg,
                              const float *posb, int B, int G, int R, int D) {
    const int T = 1 + R + G;
    const int64_t total = (int64_t)B * T * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % D);
        const int64_t row = i / D;
        const int t = (int)(row % T), bi = (int)(row / T);
        float v;
        if (t == 0) v = tok0[d];
        else if (t <= R) v = reg[(int64_t)(t - 1) * D + d];
        else {
            const int g = t - 1 - R;
            v = pemb[((int64_t)bi * G + g) * D + d] + posb[(int64_t)g * D + d];
        }
        x[i] = v;
    }
}

extern "C" int lt_cuda_tokens(lt_cuda_ctx *c, float *x, const float *pemb, const float *tok0,
                              const float *reg, const float *posb, int B, int G, int R, int D) {
    const int64_t total = (int64_t)B * (1 + R + G) * D;
    if (total <= 0) return 0;
    if (R > 0 && !reg) return lt_err_set("cuda tokens: %d registers but no register tokens", R);
    if (D % 4 == 0 && aligned16(x) && aligned16(pemb) && aligned16(tok0) &&
        (!reg || aligned16(reg)) && aligned16(posb) && (int64_t)B * (1 + R + G) <= 0x7fffffff) {
        const int threads = D / 4 >= 128 ? 128 : 32 * ((D / 4 + 31) / 32);
        tokens_v2_kernel<<<(unsigned)(B * (1 + R + G)), threads, 0, c->stream>>>(x, pemb, tok0, reg,
                                                                                posb, 1 + R + G, G,
                                                                                R, D);
        return launch_check("tokens (v2)");
    }
    return lt_cuda_tokens_general(c, x, pemb, tok0, reg, posb, B, G, R, D);
}

/* the general token assembly: any D, any alignment */
int lt_cuda_tokens_general(lt_cuda_ctx *c, float *x, const float *pemb, const float *tok0,
                           const float *reg, const float *posb, int B, int G, int R, int D) {
    const int64_t total = (int64_t)B * (1 + R + G) * D;
    if (total <= 0) return 0;
    if (R > 0 && !reg) return lt_err_set("cuda tokens: %d registers but no register tokens", R);
    tokens_kernel<<<grid_1d(total, 256), 256, 0, c->stream>>>(x, pemb, tok0, reg, posb, B, G, R, D);
    return launch_check("tokens");
}
