/* simd.c: the run-time choice between lt's AVX-512 and AVX2 loop variants (see simd.h). */
#include "nn/simd.h"

#include <stdlib.h>
#include <string.h>

#include "nn/blas_select.h"

static int use_avx512;

/* Decided before main() so that every thread reads a settled value. */
__attribute__((constructor)) static void simd_decide(void) {
    const char *want = getenv("LT_ISA");
    if (want && !strcmp(want, "avx2")) return;
#if defined(__x86_64__)
    use_avx512 = lt_cpu_isa() >= LT_ISA_AVX512;
#endif
}

int lt_simd_avx512(void) { return use_avx512; }

const char *lt_simd_name(void) {
    if (use_avx512) return "AVX-512";
#if defined(__AVX2__)
    return "AVX2";
#elif defined(__AVX__)
    return "AVX";
#else
    return "SSE";
#endif
}
