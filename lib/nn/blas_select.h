/* blas_select.h: makes sure OpenBLAS runs the GEMM kernels this CPU can run.
 *
 * Why it exists: OpenBLAS (a DYNAMIC_ARCH build, as Debian's) picks its kernels from a table of
 * CPU models when it loads. A model newer than the table (e.g. an AVX-512 Xeon that OpenBLAS
 * 0.3.21 does not know) falls back to "Prescott" SSE3 kernels: GEMMs 4-7x slower, silently. lt
 * decides from the CPU's feature flags (cpuid) instead: when the library's choice is below what the
 * CPU supports, lt sets OPENBLAS_CORETYPE to the matching core and runs itself again (OpenBLAS
 * reads the variable only when it loads). A user's own OPENBLAS_CORETYPE always wins: some set it
 * on purpose (older OpenBLAS builds miscompute or crash on some processors). */
#ifndef LT_NN_BLAS_SELECT_H
#define LT_NN_BLAS_SELECT_H

#include <stddef.h>

/* What the CPU can run, by OpenBLAS's kernel families. */
typedef enum { LT_ISA_SSE = 1, LT_ISA_AVX = 2, LT_ISA_AVX2 = 3, LT_ISA_AVX512 = 4 } lt_isa;

/* The CPU's level from cpuid (AVX-512 F+BW+DQ+VL for the AVX-512 kernels, AVX2+FMA for AVX2). */
lt_isa lt_cpu_isa(void);
const char *lt_isa_name(lt_isa isa);
/* The level of an OpenBLAS core name (openblas_get_corename()), e.g. "Prescott" -> SSE,
 * "Haswell" and "Zen" -> AVX2, "SkylakeX" -> AVX-512; unknown names count as SSE. */
lt_isa lt_blas_core_isa(const char *core);

/* The decision. core: what OpenBLAS picked; user: $OPENBLAS_CORETYPE or NULL. Returns the core
 * type lt must ask for ("SkylakeX", "Haswell", "Sandybridge"), or NULL to keep the library's
 * choice (it matches the CPU, or the user chose). why (cap bytes) says why, for -v. */
const char *lt_blas_decide(const char *core, lt_isa cpu, const char *user, char *why, size_t cap);

/* Called first thing in main(): applies the decision, re-executing the program with
 * OPENBLAS_CORETYPE set when needed (at most once: LT_BLAS_CHOSEN marks the second run). Returns
 * only when no re-execution was needed or it failed. Test hook: LT_BLAS_FAKE_CORE=NAME makes lt
 * believe OpenBLAS picked NAME. */
void lt_blas_ensure(char **argv);
/* One line for -v and benchmark headers, e.g. "OpenBLAS 0.3.21 core Zen (chosen by OpenBLAS for
 * this AVX2 CPU)". */
void lt_blas_describe(char *buf, size_t cap);

#endif
