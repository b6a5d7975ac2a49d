/* simd.h: which instruction set lt's own hot loops run with.
 *
 * Why it exists: lt is compiled for x86-64-v3 (AVX2 + FMA) so that one binary runs on every x86
 * CPU of the last decade. A few of its own loops (the Winograd transforms of conv_wino.c) also
 * have an AVX-512 variant, compiled next to the AVX2 one and chosen at run time when the CPU has
 * AVX-512 F/BW/DQ/VL. Where an AVX-512 variant did not measure faster, there is none
 * (docs/architecture.md, "CPU kernels"). -v and the benchmark header name the choice.
 *
 * LT_ISA=avx2 in the environment makes lt run the AVX2 variants on an AVX-512 CPU (to compare
 * them, and for the tests that check both give the same bytes). */
#ifndef LT_NN_SIMD_H
#define LT_NN_SIMD_H

/* The attribute of an AVX-512 variant (512-bit vectors in its `omp simd` loops). */
#define LT_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")))

/* 1 when the AVX-512 variants run (decided once, when the program loads). */
int lt_simd_avx512(void);
/* "AVX-512" or the build's own level ("AVX2" for x86-64-v3). */
const char *lt_simd_name(void);

#endif
