/* test_blas.c: lt's choice of OpenBLAS kernels (nn/blas_select.h).
 *
 * The decision over the cases that matter: an AVX-512 CPU that OpenBLAS calls Prescott (the
 * Xeon its model table does not know), an AVX2-only CPU in the same state, an AVX CPU, a library
 * choice that already fits, and a user's explicit OPENBLAS_CORETYPE (which always wins). Then the
 * machine itself: after lt_blas_ensure, the kernels OpenBLAS runs are not below what this CPU
 * supports (the check fails on a machine where lt would leave SSE kernels on an AVX2 CPU). */
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "nn/blas_select.h"

static const char *decide(const char *core, lt_isa cpu, const char *user) {
    char why[256];
    return lt_blas_decide(core, cpu, user, why, sizeof why);
}

static int same(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

int main(int argc, char **argv) {
    (void)argc;
    lt_blas_ensure(argv);
    /* misdetected: the library's table does not know the CPU */
    CHECK(same(decide("Prescott", LT_ISA_AVX512, NULL), "SkylakeX"));
    CHECK(same(decide("Prescott", LT_ISA_AVX2, NULL), "Haswell"));
    CHECK(same(decide("Core2", LT_ISA_AVX, NULL), "Sandybridge"));
    CHECK(same(decide("Sandybridge", LT_ISA_AVX2, NULL), "Haswell"));
    CHECK(same(decide("Haswell", LT_ISA_AVX512, NULL), "SkylakeX"));
    CHECK(same(decide(NULL, LT_ISA_AVX2, NULL), "Haswell"));
    /* the library's choice fits: kept */
    CHECK(same(decide("Haswell", LT_ISA_AVX2, NULL), NULL));
    CHECK(same(decide("Zen", LT_ISA_AVX2, NULL), NULL));
    CHECK(same(decide("SkylakeX", LT_ISA_AVX512, NULL), NULL));
    CHECK(same(decide("Cooperlake", LT_ISA_AVX512, NULL), NULL));
    CHECK(same(decide("Prescott", LT_ISA_SSE, NULL), NULL));
    /* the user's setting wins, even a slower one, and the reason says so */
    char why[256];
    CHECK(same(lt_blas_decide("Prescott", LT_ISA_AVX512, "Prescott", why, sizeof why), NULL));
    CHECK(strstr(why, "set by the user") != NULL);
    CHECK(same(lt_blas_decide("Prescott", LT_ISA_AVX512, "", why, sizeof why), "SkylakeX"));
    CHECK(strstr(why, "OpenBLAS picked Prescott") && strstr(why, "AVX-512"));
    /* names of the levels */
    CHECK(lt_blas_core_isa("zen") == LT_ISA_AVX2 && lt_blas_core_isa("Nehalem") == LT_ISA_SSE);
    /* this machine, after lt's choice */
    const char *core = openblas_get_corename();
    lt_isa cpu = lt_cpu_isa();
    const char *user = getenv("OPENBLAS_CORETYPE");
    printf("CPU %s, OpenBLAS core %s%s\n", lt_isa_name(cpu), core,
           getenv("LT_BLAS_CHOSEN") ? " (chosen by lt)" : "");
    if (!getenv("LT_BLAS_CHOSEN") && user && *user)
        printf("OPENBLAS_CORETYPE=%s set by the user: not checked\n", user);
    else
        CHECK_MSG(lt_blas_core_isa(core) >= cpu, "OpenBLAS runs %s kernels (%s) on a %s CPU", core,
                  lt_isa_name(lt_blas_core_isa(core)), lt_isa_name(cpu));
    CHECK_DONE();
}
