/* attention_v2.cu: the second bf16 attention kernel of lt (the default of the second device run;
 * LT_CUDA_ATTN=v2 selected it later), kept with a check and a benchmark against the production
 * kernel (attention_bench.cuh; ops_cuda_attention.cu has v3).
 *
 * Why it exists: v2 (K and V of one (image, head) resident in shared memory) was as fast as v3 on
 * the H200 at T = 257 (docs/cuda.md, third device run); whoever tunes the attention again wants
 * it at hand to compare, and it must still build to be of use.
 *
 *   make dev-cuda && build/dev/cuda/attention_v2 [--batch 256 --tokens 257 --heads 12 --reps 20]
 *
 * The kernel below is the one that ran in the library, unchanged. Sequences whose K and V do not
 * fit the shared memory of a block (N above ~800 on H100/H200) are not run (the library fell back
 * to v1 there). */
#include "attention_bench.cuh"
#include "nn/ops_cuda_mma.cuh"

/* ---- attention, bf16, v2: K and V of one (image, head) resident in shared memory ---------------
 *
 * v1 (attention_v1.cu) gives each block 64 queries and streams K and V through shared memory in
 * 64-key tiles. At ViT-B/14's N = 257 that costs twice: (1) each (image, head) is read from L2 by
 * 5 blocks (5 × 80 KB per (image, head), ~1.3 GB per layer at batch 256), and (2) the work is
 * padded to 320 × 320 (the last query block has 1 live row of 64, the last key tile 1 live key of
 * 64): 1.55× the useful products. v2: one block of 6 warps per (image, head) loads the whole K and V once
 * (cp.async, 16-byte rows, keys >= N zero-filled) into [key][dim] tiles padded to 72 elements
 * (rows 144 bytes apart: every 8-row ldmatrix phase hits 32 different banks); the warps then take
 * 16-query chunks in turn (17 for N = 257) and sweep the keys in 64-key steps, skipping the
 * 16-key granules past ceil16(N): 272 × 272 padded work (1.12×). K fragments come from ldmatrix
 * (x4: two 16-dim steps of one 8-key tile), V fragments from ldmatrix.trans (so V needs no
 * transposed copy); softmax and P as in v1 (same arithmetic, so the same results up to the order
 * of the row sums). Shared memory 2 · ceil16(N) · 144 bytes (78 KB at N = 257: 2 blocks per SM). */

#define A2_WARPS 6
#define A2_LD 72

/* grid (B·heads), block A2_WARPS·32, dynamic shared memory 2 · ceil16(N) · A2_LD · 2 bytes */
__global__ void __launch_bounds__(A2_WARPS * 32, 2)
    attn_bf16_v2_kernel(bf16 *out, const bf16 *qkv, int N, int heads, float scale_log2) {
    extern __shared__ __align__(16) unsigned char a2_smem[];
    const int Np = (N + 15) & ~15;
    bf16 *Ks = reinterpret_cast<bf16 *>(a2_smem); /* [Np][A2_LD] */
    bf16 *Vs = Ks + (int64_t)Np * A2_LD;           /* [Np][A2_LD] */
    const int D = heads * 64;
    const int64_t ld = 3 * (int64_t)D;
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int lr = lane & 7, li = lane >> 3; /* ldmatrix: row of matrix li this lane addresses */
    const bf16 *qb = qkv + (int64_t)b * N * ld + h * 64; /* Q of token 0 */
    const bf16 *kb = qb + D, *vb = qb + 2 * D;

    for (int i = threadIdx.x; i < Np * 8; i += A2_WARPS * 32) {
        const int key = i >> 3, c8 = (i & 7) * 8;
        const int in = key < N;
        const int64_t off = (int64_t)(in ? key : 0) * ld + c8;
        cp_async16(&Ks[key * A2_LD + c8], kb + off, in ? 16 : 0);
        cp_async16(&Vs[key * A2_LD + c8], vb + off, in ? 16 : 0);
    }
    cp_async_wait_all();
    __syncthreads();

    bf16 *ob = out + (int64_t)b * N * D + h * 64;
    for (int chunk = warp; chunk < (Np >> 4); chunk += A2_WARPS) {
        const int r0 = chunk * 16 + g, r1 = r0 + 8; /* this lane's two query rows */
        uint32_t qf[4][4];
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const int col = kk * 16 + 2 * t;
            qf[kk][0] = r0 < N ? ld_u32(qb + r0 * ld + col) : 0u;
            qf[kk][1] = r1 < N ? ld_u32(qb + r1 * ld + col) : 0u;
            qf[kk][2] = r0 < N ? ld_u32(qb + r0 * ld + col + 8) : 0u;
            qf[kk][3] = r1 < N ? ld_u32(qb + r1 * ld + col + 8) : 0u;
        }
        float o[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
        float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

        for (int k0 = 0; k0 < Np; k0 += 64) {
            const int n16 = min(4, (Np - k0) >> 4); /* live 16-key granules of this step */
            float s[8][4];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
                if (j < 2 * n16) {
#pragma unroll
                    for (int kk = 0; kk < 4; kk += 2) {
                        uint32_t kf[4]; /* B fragments of dim steps kk (0, 1) and kk + 1 (2, 3) */
                        ldsm_x4(kf, &Ks[(k0 + 8 * j + lr) * A2_LD + kk * 16 + 8 * li]);
                        mma_16816(s[j], qf[kk], kf[0], kf[1]);
                        mma_16816(s[j], qf[kk + 1], kf[2], kf[3]);
                    }
                }
            }
            uint32_t pf[4][4];
            old_online_softmax(s, k0, t, N, scale_log2, m0, m1, l0, l1, o, pf);
            /* O += P V: keys 16kk.., B fragments of dims 8jd (0, 1) and 8(jd + 1) (2, 3) */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                if (kk < n16) {
#pragma unroll
                    for (int jd = 0; jd < 8; jd += 2) {
                        uint32_t vf[4];
                        ldsm_x4_t(vf, &Vs[(k0 + 16 * kk + 8 * (li & 1) + lr) * A2_LD + 8 * jd +
                                          8 * (li >> 1)]);
                        mma_16816(o[jd], pf[kk], vf[0], vf[1]);
                        mma_16816(o[jd + 1], pf[kk], vf[2], vf[3]);
                    }
                }
            }
        }
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float i0 = 1.0f / l0, i1 = 1.0f / l1;
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
}

static int launch_v2(lt_cuda_ctx *c, bf16 *out, const bf16 *qkv, int B, int N, int heads) {
    const int smem = 2 * ((N + 15) & ~15) * A2_LD * (int)sizeof(bf16);
    if (smem > c->smem_optin) {
        printf("(attention v2: N = %d needs %d bytes of shared memory, the device allows %d)\n", N,
               smem, c->smem_optin);
        return 1;
    }
    static int smem_set;
    if (smem > 48 * 1024 && !smem_set) {
        CUDA_TRY(cudaFuncSetAttribute(attn_bf16_v2_kernel,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, c->smem_optin),
                 "cudaFuncSetAttribute(attention v2, %d bytes of shared memory)", c->smem_optin);
        smem_set = 1;
    }
    const float scale_log2 = 0.125f * 1.4426950408889634f;
    attn_bf16_v2_kernel<<<(unsigned)(B * heads), A2_WARPS * 32, smem, c->stream>>>(out, qkv, N,
                                                                                   heads, scale_log2);
    return launch_check("attention (bf16 v2, K/V resident)");
}

int main(int argc, char **argv) { return attention_bench_main(argc, argv, "v2", launch_v2); }
