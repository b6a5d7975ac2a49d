/* ops_cuda_attention.cu: lt_cuda_attention (nn/ops_cuda.h), the fused multi-head self-attention
 * of the CUDA backend: bf16 on the tensor cores (kernel v3, FlashAttention-2 style) and fp32 on
 * the CUDA cores.
 *
 * Why it exists: after the GEMMs, attention is the largest cost of the teacher (a quarter of a
 * ViT-B/14 forward at T = 257), and no library call fuses it for our layout (qkv (B, N, 3, heads,
 * 64) straight out of the qkv GEMM) without an N×N matrix in memory. The earlier bf16 kernels
 * (v1: 64-query blocks; v2: K/V resident in shared memory) are kept, with a benchmark against
 * this one, in dev/cuda/. */
#include "nn/ops_cuda_internal.cuh"
#include "nn/ops_cuda_mma.cuh"

#include <math.h>

/* ---- attention, fp32 (CUDA cores) ------------------------------------------------------------- */

#define AF_Q 64 /* queries per block: one thread each */
#define AF_K 64 /* keys per shared-memory tile */

/* grid (B·heads, ceil(N/64)), block 64. qkv (B, N, 3, heads, 64) → out (B, N, heads·64).
 * Thread = one query row; q and the output accumulator live in registers; keys stream through
 * shared memory; softmax online per key (running max m, running sum l). */
__global__ void __launch_bounds__(AF_Q) attn_f32_kernel(float *out, const float *qkv, int N,
                                                        int heads, float scale) {
    __shared__ __align__(16) float Ks[AF_K][64];
    __shared__ __align__(16) float Vs[AF_K][64];
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int qi = blockIdx.y * AF_Q + threadIdx.x;
    const float *base = qkv + (int64_t)b * N * ld + h * 64;
    const bool valid = qi < N;
    float q[64], o[64];
#pragma unroll
    for (int d = 0; d < 64; d += 4) {
        float4 v = valid ? *reinterpret_cast<const float4 *>(base + qi * ld + d)
                         : make_float4(0.f, 0.f, 0.f, 0.f);
        q[d] = v.x;
        q[d + 1] = v.y;
        q[d + 2] = v.z;
        q[d + 3] = v.w;
        o[d] = o[d + 1] = o[d + 2] = o[d + 3] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < N; k0 += AF_K) {
        __syncthreads(); /* everyone is done with the previous tile */
        for (int i = threadIdx.x; i < AF_K * 16; i += AF_Q) {
            const int key = i >> 4, c4 = (i & 15) * 4;
            float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
            if (k0 + key < N) {
                const float *src = base + (int64_t)(k0 + key) * ld + c4;
                kv = *reinterpret_cast<const float4 *>(src + D);
                vv = *reinterpret_cast<const float4 *>(src + 2 * D);
            }
            *reinterpret_cast<float4 *>(&Ks[key][c4]) = kv;
            *reinterpret_cast<float4 *>(&Vs[key][c4]) = vv;
        }
        __syncthreads();
        const int nk = min(AF_K, N - k0);
        for (int j = 0; j < nk; j++) {
            float s = 0.0f;
#pragma unroll
            for (int d = 0; d < 64; d += 4) {
                const float4 k4 = *reinterpret_cast<const float4 *>(&Ks[j][d]);
                s += q[d] * k4.x + q[d + 1] * k4.y + q[d + 2] * k4.z + q[d + 3] * k4.w;
            }
            s *= scale;
            if (s > m) {
                const float corr = expf(m - s);
                l *= corr;
#pragma unroll
                for (int d = 0; d < 64; d++) o[d] *= corr;
                m = s;
            }
            const float pj = expf(s - m);
            l += pj;
#pragma unroll
            for (int d = 0; d < 64; d += 4) {
                const float4 v4 = *reinterpret_cast<const float4 *>(&Vs[j][d]);
                o[d] += pj * v4.x;
                o[d + 1] += pj * v4.y;
                o[d + 2] += pj * v4.z;
                o[d + 3] += pj * v4.w;
            }
        }
    }
    if (!valid) return;
    const float inv = 1.0f / l;
    float *dst = out + ((int64_t)b * N + qi) * D + h * 64;
#pragma unroll
    for (int d = 0; d < 64; d += 4)
        *reinterpret_cast<float4 *>(dst + d) =
            make_float4(o[d] * inv, o[d + 1] * inv, o[d + 2] * inv, o[d + 3] * inv);
}

/* ---- attention, bf16, v3: FlashAttention-2 style, K/V tiles streamed and double-buffered -------
 *
 * v2 (dev/cuda/attention_v2.cu) loads the whole K and V of an (image, head) before any product
 * (the load latency is exposed once per block, and with 78 KB of shared memory only 2 blocks of 6
 * warps fit an SM), and its warps walk several 16-query chunks one after another, each fetching
 * its Q from global memory.
 * v3 is the FlashAttention-2 loop: a block of nw <= A3_MAXW warps owns 16·nw consecutive queries
 * of one (image, head), one 16-row chunk per warp; Q goes through shared memory once (cp.async,
 * then ldmatrix into A fragments that stay in registers); K and V stream through shared memory in
 * tiles of 64 keys, two stages deep (cp.async: tile kt + 1 is in flight while tile kt is used), B
 * fragments by ldmatrix (x4: K as [key][dim], V with .trans, no transposed copy). S = Q·Kᵀ and
 * O += P·V on mma.sync.m16n8k16 (bf16 in, fp32 accumulation); the online softmax stays in
 * registers in raw score units, with the 1/√64 · log2(e) scale folded into one FMA before ex2
 * (ex2.approx.ftz); P is rounded to bf16 (cvt.rn.bf16x2) straight into A fragments (the m16n8k16
 * C layout of two 8-key S tiles is the A layout of one 16-key step: no shared-memory round trip).
 * Ragged ends: the last key tile loads and multiplies only ceil16 of its live keys (T = 257: one
 * 8-key S tile and one 16-key P·V step instead of 64), scores of keys >= N are −∞, rows of K/V
 * past N are zero-filled (never NaN garbage); the query chunks are balanced over the blocks of an
 * (image, head): nqb = ceil(chunks / maxw) blocks of nw = ceil(chunks / nqb) warps, maxw =
 * LT_CUDA_ATTN_WARPS (default 8; T = 257: 17 chunks → 3 blocks of 6 warps, one idle warp in 18,
 * K/V read 3 times per (image, head); maxw = 4: 5 blocks of 4), and a warp whose chunk starts
 * past N only helps to load. The grid is 1-D with the nqb blocks of one (image, head) adjacent, so
 * they run together and K/V come from HBM once and from L2 after. Registers: 125 of the 128 that
 * __launch_bounds__(256, 2) allows, no spills (96 at 3 blocks of 6 warps: 56 bytes spilled, as
 * 18 warps put 5 on one scheduler). Shared memory (16·nw + 4·64) · 144 bytes (50.7 KB at nw = 6).
 * Occupancy at T = 257: 2 blocks of 6 warps per SM (registers); at maxw = 4: 4 blocks of 4. */

#define A3_MAXW 8 /* warps per block at most (16 query rows each) = LT_CUDA_ATTN_WARPS_MAX */
#define A3_MINB 2 /* blocks per SM the register budget is sized for (65536 / (2·256) → <= 128) */
#define A3_KT 64  /* keys per tile */
#define A3_LD 72  /* padded shared row (bf16 elements): 144 bytes, conflict-free ldmatrix phases */

/* One key tile of the online softmax (FlashAttention-2) for this lane's two query rows, g and
 * g + 8 of its warp's 16: s holds the raw scores Q·Kᵀ of the tile as 8 C fragments (8 keys each;
 * keys >= N already −∞), n8 the number of S tiles holding a live key (every tile holds one, so
 * the new maxima are finite). Updates the running maxima m0, m1 (raw score units) and the
 * running sums l0, l1 (this lane's share), rescales the output accumulator o, and writes
 * P = 2^(S·scale − m·scale) rounded to bf16 as A fragments pf for the P·V product: keys 16kk..
 * = S tiles 2kk (a0, a1) and 2kk + 1 (a2, a3); S tiles past the live keys give 0 without an
 * ex2. */
static __device__ __forceinline__ void online_softmax_tile(const float (&s)[8][4], int n8,
                                                           float scale_log2, float &m0, float &m1,
                                                           float &l0, float &l1, float (&o)[8][4],
                                                           uint32_t (&pf)[4][4]) {
    float mx0 = s[0][0], mx1 = s[0][2];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float c0 = fast_exp2((m0 - n0) * scale_log2); /* 0 on the first tile */
    const float c1 = fast_exp2((m1 - n1) * scale_log2);
    m0 = n0;
    m1 = n1;
    const float ms0 = n0 * scale_log2, ms1 = n1 * scale_log2;
    l0 *= c0;
    l1 *= c1;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        o[j][0] *= c0;
        o[j][1] *= c0;
        o[j][2] *= c1;
        o[j][3] *= c1;
    }
    /* P as A fragments */
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int j = 2 * kk + half;
            float p0 = 0.0f, p1 = 0.0f, p2 = 0.0f, p3 = 0.0f;
            if (j < n8) {
                p0 = fast_exp2(fmaf(s[j][0], scale_log2, -ms0));
                p1 = fast_exp2(fmaf(s[j][1], scale_log2, -ms0));
                p2 = fast_exp2(fmaf(s[j][2], scale_log2, -ms1));
                p3 = fast_exp2(fmaf(s[j][3], scale_log2, -ms1));
            }
            l0 += p0 + p1;
            l1 += p2 + p3;
            pf[kk][2 * half] = pack_bf16x2_rn(p0, p1);     /* row g */
            pf[kk][2 * half + 1] = pack_bf16x2_rn(p2, p3); /* row g + 8 */
        }
}

/* grid (B·heads·nqb), block nw·32 (nw <= A3_MAXW), dynamic shared memory
 * (16·nw + 4·A3_KT) · A3_LD · 2 bytes */
__global__ void __launch_bounds__(A3_MAXW * 32, A3_MINB)
    attn_bf16_v3_kernel(bf16 *out, const bf16 *qkv, int N, int heads, int nqb, float scale_log2) {
    extern __shared__ __align__(16) unsigned char a2_smem[];
    const int nw = blockDim.x >> 5, nthr = blockDim.x;
    bf16 *Qs = reinterpret_cast<bf16 *>(a2_smem); /* [16·nw][A3_LD] */
    bf16 *KVs = Qs + nw * 16 * A3_LD;              /* stage s: K [A3_KT][A3_LD], then V */
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int bh = blockIdx.x / nqb, qblk = blockIdx.x - bh * nqb;
    const int b = bh / heads, h = bh - b * heads;
    const int q0 = qblk * nw * 16; /* first query of the block */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int lr = lane & 7, li = lane >> 3; /* ldmatrix: row of matrix li this lane addresses */
    const bf16 *qb = qkv + (int64_t)b * N * ld + h * 64; /* Q of token 0 */
    const bf16 *kb = qb + D, *vb = qb + 2 * D;

    /* Q rows q0 .. q0 + 16nw − 1 (rows >= N zero-filled): group 0 with the first K/V tile */
    for (int i = tid; i < nw * 16 * 8; i += nthr) {
        const int r = i >> 3, c8 = (i & 7) * 8, q = q0 + r;
        const int in = q < N;
        cp_async16(&Qs[r * A3_LD + c8], qb + (int64_t)(in ? q : 0) * ld + c8, in ? 16 : 0);
    }
    const int nkt = (N + A3_KT - 1) / A3_KT;
    /* K/V tile kt → stage kt & 1; only the first ceil16(live keys) rows, zero-filled past N */
    auto load_kv = [&](int kt) {
        const int k0 = kt * A3_KT;
        const int rows = min(A3_KT, (N - k0 + 15) & ~15);
        bf16 *Kd = KVs + (kt & 1) * (2 * A3_KT * A3_LD), *Vd = Kd + A3_KT * A3_LD;
        for (int i = tid; i < rows * 8; i += nthr) {
            const int r = i >> 3, c8 = (i & 7) * 8, key = k0 + r;
            const int in = key < N;
            const int64_t off = (int64_t)(in ? key : 0) * ld + c8;
            cp_async16(&Kd[r * A3_LD + c8], kb + off, in ? 16 : 0);
            cp_async16(&Vd[r * A3_LD + c8], vb + off, in ? 16 : 0);
        }
    };
    load_kv(0);
    cp_async_commit();

    const bool live = q0 + warp * 16 < N; /* this warp's chunk holds a query */
    uint32_t qf[4][4];                    /* Q as A fragments, 4 steps of 16 dims */
    float o[8][4];                        /* O (16 rows × 64 dims) as 8 C fragments */
#pragma unroll
    for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY; /* running max of rows g, g + 8 (raw scores) */
    float l0 = 0.0f, l1 = 0.0f;           /* running sums, this lane's share */

    for (int kt = 0; kt < nkt; kt++) {
        if (kt + 1 < nkt) {
            load_kv(kt + 1); /* into the stage tile kt − 1 used (freed by the barrier below) */
            cp_async_commit();
            cp_async_wait<1>(); /* this thread's copies of tile kt (and Q) have landed */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); /* ... and everybody's */
        if (live) {
            if (kt == 0) {
#pragma unroll
                for (int kk = 0; kk < 4; kk++)
                    ldsm_x4(qf[kk], &Qs[(warp * 16 + (lane & 15)) * A3_LD + kk * 16 + (lane >> 4) * 8]);
            }
            const bf16 *Kt = KVs + (kt & 1) * (2 * A3_KT * A3_LD), *Vt = Kt + A3_KT * A3_LD;
            const int k0 = kt * A3_KT;
            const int n8 = min(8, (N - k0 + 7) >> 3); /* 8-key S tiles holding a live key */
            const int n16 = (n8 + 1) >> 1;             /* 16-key P·V steps */
            /* S (16 × 64 keys) = Q Kᵀ: B[k = dim][n = key] = K[key][dim] */
            float s[8][4];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
                if (j < n8) {
#pragma unroll
                    for (int kk = 0; kk < 4; kk += 2) {
                        uint32_t kf[4]; /* B fragments of dim steps kk (0, 1) and kk + 1 (2, 3) */
                        ldsm_x4(kf, &Kt[(8 * j + lr) * A3_LD + kk * 16 + 8 * li]);
                        mma_16816(s[j], qf[kk], kf[0], kf[1]);
                        mma_16816(s[j], qf[kk + 1], kf[2], kf[3]);
                    }
                }
            }
            if (k0 + A3_KT > N) { /* the ragged last tile: keys >= N (and S tiles not computed) */
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        if (k0 + 8 * j + 2 * t + e >= N) s[j][e] = s[j][2 + e] = -INFINITY;
            }
            uint32_t pf[4][4]; /* P = softmax numerators as A fragments for O += P·V */
            online_softmax_tile(s, n8, scale_log2, m0, m1, l0, l1, o, pf);
            /* O += P V: keys 16kk.., B fragments of dims 8jd (0, 1) and 8(jd + 1) (2, 3) */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                if (kk < n16) {
#pragma unroll
                    for (int jd = 0; jd < 8; jd += 2) {
                        uint32_t vf[4];
                        ldsm_x4_t(vf, &Vt[(16 * kk + 8 * (li & 1) + lr) * A3_LD + 8 * jd +
                                          8 * (li >> 1)]);
                        mma_16816(o[jd], pf[kk], vf[0], vf[1]);
                        mma_16816(o[jd + 1], pf[kk], vf[2], vf[3]);
                    }
                }
            }
        }
        __syncthreads(); /* all warps are done with stage kt & 1 before tile kt + 2 goes there */
    }
    if (!live) return;
    /* full row sums: add the shares of the 4 lanes of each row */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    const int r0 = q0 + warp * 16 + g, r1 = r0 + 8; /* this lane's two query rows */
    bf16 *ob = out + (int64_t)b * N * D + h * 64;
#pragma unroll
    for (int jd = 0; jd < 8; jd++) {
        const int col = 8 * jd + 2 * t;
        if (r0 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r0 * D + col) =
                pack_bf16x2_rn(o[jd][0] * i0, o[jd][1] * i0);
        if (r1 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r1 * D + col) =
                pack_bf16x2_rn(o[jd][2] * i1, o[jd][3] * i1);
    }
}

extern "C" int lt_cuda_attention(lt_cuda_ctx *c, void *out, const void *qkv, lt_cuda_dtype t,
                                 int B, int N, int heads, int hd) {
    if (B <= 0 || N <= 0) return 0;
    if (hd != 64) return lt_err_set("cuda attention: head dim %d (only 64 is implemented)", hd);
    if (heads <= 0 || (int64_t)B * heads > 0x7fffffff || N > 65535 * 64)
        return lt_err_set("cuda attention: B=%d N=%d heads=%d out of range", B, N, heads);
    if (((uintptr_t)qkv | (uintptr_t)out) & 15)
        return lt_err_set("cuda attention: qkv and out must be 16-byte aligned");
    if (t == LT_CUDA_BF16) {
        /* 16-query chunks balanced over nqb blocks of nw warps per (image, head) */
        const int nch = (N + 15) / 16;
        const int maxw = c->sw.attn_warps;
        const int nqb = (nch + maxw - 1) / maxw;
        const int nw = (nch + nqb - 1) / nqb;
        const int smem = (nw * 16 + 4 * A3_KT) * A3_LD * (int)sizeof(bf16);
        const int smem_max = (A3_MAXW * 16 + 4 * A3_KT) * A3_LD * (int)sizeof(bf16);
        if ((int64_t)B * heads * nqb > 0x7fffffff)
            return lt_err_set("cuda attention: B=%d N=%d heads=%d out of range", B, N, heads);
        /* 54 KB: every device of cc >= 8.0 (the architectures built) lets a block have more */
        if (smem_max > c->smem_optin)
            return lt_err_set("cuda attention: the bf16 kernel needs %d bytes of shared memory "
                              "per block, this device allows %d", smem_max, c->smem_optin);
        if (smem_max > 48 * 1024 && !c->attn3_smem_set) {
            CUDA_TRY(cudaFuncSetAttribute(attn_bf16_v3_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max),
                     "cudaFuncSetAttribute(attention v3, %d bytes of shared memory)", smem_max);
            c->attn3_smem_set = 1;
        }
        static_assert(A3_MAXW == LT_CUDA_ATTN_WARPS_MAX, "v3 block size");
        const float scale_log2 = 0.125f * 1.4426950408889634f; /* 64^-½ · log2(e) */
        attn_bf16_v3_kernel<<<(unsigned)((int64_t)B * heads * nqb), nw * 32, smem, c->stream>>>(
            (bf16 *)out, (const bf16 *)qkv, N, heads, nqb, scale_log2);
        return launch_check("attention (bf16 v3, K/V tiles streamed)");
    }
    dim3 grid((unsigned)(B * heads), (unsigned)((N + AF_Q - 1) / AF_Q));
    attn_f32_kernel<<<grid, AF_Q, 0, c->stream>>>((float *)out, (const float *)qkv, N, heads,
                                                  0.125f);
    return launch_check("attention (fp32)");
}
