/* attention_v1.cu: the first bf16 attention kernel of lt (the library's default until the
 * second device run; LT_CUDA_ATTN=v1 selected it later), kept with a check and a benchmark
 * against the production kernel (attention_bench.cuh; ops_cuda_attention.cu has v3).
 *
 * Why it exists: v1 is the simplest of the tensor-core kernels (4 warps × 16 queries per block,
 * K/V tiles of 64 keys through shared memory, V transposed by plain stores), the baseline that
 * docs/cuda.md measures v2 and v3 against; keeping it runnable keeps those numbers checkable.
 *
 *   make dev-cuda && build/dev/cuda/attention_v1 [--batch 256 --tokens 257 --heads 12 --reps 20]
 *
 * The kernel below is the one that ran in the library, unchanged. */
#include "attention_bench.cuh"
#include "nn/ops_cuda_mma.cuh"

/* ---- attention, bf16, v1 (tensor cores, mma.sync m16n8k16) -------------------------------------
 *
 * Block = 4 warps = 64 query rows of one (image, head); warp w owns rows 16w..16w+15. Keys come in
 * tiles of 64 through shared memory: K as [key][dim], V transposed as [dim][key], rows padded to
 * 72 elements so that the fragment loads below hit 32 different banks. Fragment layouts:
 * nn/ops_cuda_mma.cuh. */

#define AB_Q 64  /* queries per block */
#define AB_K 64  /* keys per tile */
#define AB_LD 72 /* padded shared row (bf16 elements) */

/* grid (B·heads, ceil(N/64)), block 128. */
__global__ void __launch_bounds__(128) attn_bf16_kernel(bf16 *out, const bf16 *qkv, int N,
                                                        int heads, float scale_log2) {
    __shared__ __align__(16) bf16 Ks[AB_K * AB_LD]; /* [key][dim] */
    __shared__ __align__(16) bf16 Vt[64 * AB_LD];   /* [dim][key] */
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.y * AB_Q + warp * 16 + g, r1 = r0 + 8; /* this lane's two rows */
    const bf16 *qb = qkv + (int64_t)b * N * ld + h * 64;          /* Q of token 0 */
    const bf16 *kb = qb + D, *vb = qb + 2 * D;

    /* Q as A fragments, 4 steps of 16 dims; rows past N are zeros */
    uint32_t qf[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const int col = kk * 16 + 2 * t;
        qf[kk][0] = r0 < N ? ld_u32(qb + r0 * ld + col) : 0u;
        qf[kk][1] = r1 < N ? ld_u32(qb + r1 * ld + col) : 0u;
        qf[kk][2] = r0 < N ? ld_u32(qb + r0 * ld + col + 8) : 0u;
        qf[kk][3] = r1 < N ? ld_u32(qb + r1 * ld + col + 8) : 0u;
    }
    float o[8][4]; /* O (16 rows × 64 dims) as 8 C fragments of 8 dims */
#pragma unroll
    for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY; /* running max of rows r0, r1 (log2 units) */
    float l0 = 0.0f, l1 = 0.0f;           /* running sums, this lane's share */

    for (int k0 = 0; k0 < N; k0 += AB_K) {
        __syncthreads(); /* all warps are done with the previous tile */
        /* K tile: 8 lanes read one key's 128 bytes (coalesced), store 16 bytes each */
        for (int i = threadIdx.x; i < AB_K * 8; i += 128) {
            const int key = i >> 3, ch = i & 7;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + key < N) v = *reinterpret_cast<const uint4 *>(kb + (k0 + key) * ld + ch * 8);
            *reinterpret_cast<uint4 *>(&Ks[key * AB_LD + ch * 8]) = v;
        }
        /* V tile, transposed: consecutive lanes take consecutive keys of one 8-dim chunk, so the
         * 2-byte stores of a warp fall in 16 consecutive words (no bank conflicts) */
        for (int i = threadIdx.x; i < AB_K * 8; i += 128) {
            const int key = i & (AB_K - 1), ch = i / AB_K;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + key < N) v = *reinterpret_cast<const uint4 *>(vb + (k0 + key) * ld + ch * 8);
            const bf16 *e = reinterpret_cast<const bf16 *>(&v);
#pragma unroll
            for (int k = 0; k < 8; k++) Vt[(ch * 8 + k) * AB_LD + key] = e[k];
        }
        __syncthreads();

        /* S (16 × 64 keys) = Q Kᵀ: B[k = dim][n = key] = Ks[key][dim] */
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const bf16 *kp = &Ks[(8 * j + g) * AB_LD + kk * 16 + 2 * t];
                mma_16816(s[j], qf[kk], ld_u32(kp), ld_u32(kp + 8));
            }
        }
        uint32_t pf[4][4];
        old_online_softmax(s, k0, t, N, scale_log2, m0, m1, l0, l1, o, pf);
        /* O += P V: B[k = key][n = dim] = Vt[dim][key] */
#pragma unroll
        for (int jd = 0; jd < 8; jd++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const bf16 *vp = &Vt[(8 * jd + g) * AB_LD + kk * 16 + 2 * t];
                mma_16816(o[jd], pf[kk], ld_u32(vp), ld_u32(vp + 8));
            }
    }
    /* full row sums: add the shares of the 4 lanes of each row */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    bf16 *ob = out + (int64_t)b * N * D + h * 64;
#pragma unroll
    for (int jd = 0; jd < 8; jd++) {
        const int col = 8 * jd + 2 * t;
        if (r0 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r0 * D + col) =
                pack_bf16x2(o[jd][0] * i0, o[jd][1] * i0);
        if (r1 < N)
            *reinterpret_cast<uint32_t *>(ob + (int64_t)r1 * D + col) =
                pack_bf16x2(o[jd][2] * i1, o[jd][3] * i1);
    }
}

static int launch_v1(lt_cuda_ctx *c, bf16 *out, const bf16 *qkv, int B, int N, int heads) {
    dim3 grid((unsigned)(B * heads), (unsigned)((N + AB_Q - 1) / AB_Q));
    const float scale_log2 = 0.125f * 1.4426950408889634f; /* 64^-½ · log2(e) */
    attn_bf16_kernel<<<grid, 128, 0, c->stream>>>(out, qkv, N, heads, scale_log2);
    return launch_check("attention (bf16, mma.sync)");
}

int main(int argc, char **argv) { return attention_bench_main(argc, argv, "v1", launch_v1); }
