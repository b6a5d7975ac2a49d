/* ops_cuda_mma.cuh: the PTX building blocks of the bf16 tensor-core attention: mma.sync
 * m16n8k16, ldmatrix, cp.async, ex2.approx and the bf16x2 packing.
 *
 * Why it exists: ops_cuda_attention.cu uses them, and so do the earlier attention kernels kept in
 * dev/cuda/ for benchmarking; one copy keeps the two sides on the same instructions. Each needs
 * sm_80 or newer (older targets get a trap or nothing; the Makefile builds sm_80 and sm_90).
 *
 * Fragments of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4·g + t:
 *   A (16×16, row-major), 4 regs of 2 bf16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1],
 *                                            a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]
 *   B (16×8, k×n), 2 regs: b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
 *   C/D (16×8 fp32), 4 floats: c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
 * (the lower-indexed element in the low 16 bits). S = Q·Kᵀ per 8-key tile j is a C fragment;
 * two adjacent tiles (2kk, 2kk+1) form exactly the A fragment of P for keys 16kk..16kk+15, so the
 * probabilities never leave registers (the FlashAttention-2 arrangement). */
#ifndef LT_NN_OPS_CUDA_MMA_CUH
#define LT_NN_OPS_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <stdint.h>

/* d += a · b for one 16×16 bf16 A fragment and one 16×8 B fragment (b0, b1), fp32 d */
static __device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                                 uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void)d; (void)a; (void)b0; (void)b1;
    __trap(); /* bf16 tensor-core attention needs sm_80 or newer */
#endif
}

static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16-byte global → shared copy; src_bytes 0 writes zeros (src is not read) */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(src_bytes));
#else
    (void)dst; (void)src; (void)src_bytes;
    __trap();
#endif
}

static __device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* waits until at most N of this thread's committed cp.async groups are still in flight */
template <int N> static __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* ldmatrix x4: lanes 8i..8i+7 give the row addresses of 8×8 matrix i (16 bytes each); lane
 * 4g + t receives r[i] = M_i[g][2t..2t+1] (trans: M_i[2t..2t+1][g]). */
static __device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const __nv_bfloat16 *p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
#else
    (void)p;
    r[0] = r[1] = r[2] = r[3] = 0u;
    __trap();
#endif
}

static __device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const __nv_bfloat16 *p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
#else
    (void)p;
    r[0] = r[1] = r[2] = r[3] = 0u;
    __trap();
#endif
}

/* 2^x, MUFU.EX2 with flush-to-zero (2^−∞ = 0; relative error ~2^−22, far under bf16's) */
static __device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* (lo, hi) → bf16x2 in one cvt.rn.bf16x2.f32: lo in the low half */
static __device__ __forceinline__ uint32_t pack_bf16x2_rn(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

#endif
