/* blas_select.c: the OpenBLAS kernel choice (see blas_select.h). */
#include "nn/blas_select.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CHOSEN_ENV "LT_BLAS_CHOSEN"
#define FAKE_ENV "LT_BLAS_FAKE_CORE"

lt_isa lt_cpu_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return LT_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return LT_ISA_AVX2;
    if (__builtin_cpu_supports("avx")) return LT_ISA_AVX;
    return LT_ISA_SSE;
}

const char *lt_isa_name(lt_isa isa) {
    switch (isa) {
    case LT_ISA_AVX512: return "AVX-512";
    case LT_ISA_AVX2: return "AVX2";
    case LT_ISA_AVX: return "AVX";
    case LT_ISA_SSE: return "SSE";
    }
    return "?";
}

lt_isa lt_blas_core_isa(const char *core) {
    static const char *const avx512[] = {"SkylakeX", "CooperLake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "Excavator", "Steamroller"};
    static const char *const avx[] = {"Sandybridge", "Bulldozer", "Piledriver"};
    if (!core) return LT_ISA_SSE;
    for (size_t k = 0; k < sizeof avx512 / sizeof avx512[0]; k++)
        if (!strcasecmp(core, avx512[k])) return LT_ISA_AVX512;
    for (size_t k = 0; k < sizeof avx2 / sizeof avx2[0]; k++)
        if (!strcasecmp(core, avx2[k])) return LT_ISA_AVX2;
    for (size_t k = 0; k < sizeof avx / sizeof avx[0]; k++)
        if (!strcasecmp(core, avx[k])) return LT_ISA_AVX;
    return LT_ISA_SSE;
}

const char *lt_blas_decide(const char *core, lt_isa cpu, const char *user, char *why, size_t cap) {
    if (user && *user) {
        snprintf(why, cap, "OPENBLAS_CORETYPE=%s set by the user", user);
        return NULL;
    }
    lt_isa lib = lt_blas_core_isa(core);
    if (lib >= cpu) {
        snprintf(why, cap, "chosen by OpenBLAS for this %s CPU", lt_isa_name(cpu));
        return NULL;
    }
    const char *want = cpu == LT_ISA_AVX512 ? "SkylakeX" : cpu == LT_ISA_AVX2 ? "Haswell"
                                                                               : "Sandybridge";
    snprintf(why, cap, "OpenBLAS picked %s (%s kernels) on this %s CPU; lt asked for %s",
             core ? core : "?", lt_isa_name(lib), lt_isa_name(cpu), want);
    return want;
}

static const char *library_core(void) {
    const char *fake = getenv(FAKE_ENV);
    if (fake && *fake && !getenv(CHOSEN_ENV)) return fake;
    return openblas_get_corename();
}

void lt_blas_ensure(char **argv) {
    if (getenv(CHOSEN_ENV)) return; /* the second run: OpenBLAS has read our choice */
    char why[256];
    const char *want = lt_blas_decide(library_core(), lt_cpu_isa(), getenv("OPENBLAS_CORETYPE"),
                                      why, sizeof why);
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv(CHOSEN_ENV, why, 1);
    execv("/proc/self/exe", argv);
    /* could not run again: go on with the library's kernels (slower, still correct) */
    fprintf(stderr, "%s: warning: %s, but could not restart to apply it\n",
             argv[0] ? argv[0] : "lt", why);
    unsetenv("OPENBLAS_CORETYPE");
}

void lt_blas_describe(char *buf, size_t cap) {
    char why[256];
    const char *chosen = getenv(CHOSEN_ENV);
    if (chosen) snprintf(why, sizeof why, "%s", chosen);
    else lt_blas_decide(openblas_get_corename(), lt_cpu_isa(), getenv("OPENBLAS_CORETYPE"), why,
                        sizeof why);
    const char *cfg = openblas_get_config();
    char ver[32] = "";
    if (cfg && sscanf(cfg, "OpenBLAS %31s", ver) != 1) ver[0] = 0;
    snprintf(buf, cap, "OpenBLAS %s core %s (%s)", ver, openblas_get_corename(), why);
}
