/* test_rng.h: the random inputs of the CUDA tests (tests/cuda/test_cuda_*.c): one xorshift64*
 * stream, uniform and normal draws, and the seed taken from /dev/urandom (printed) or from
 * LT_TEST_SEED, which repeats a run. One copy for every test, so that a replayed seed means the
 * same thing in each. */
#ifndef LT_TEST_RNG_H
#define LT_TEST_RNG_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static inline uint64_t next_u64(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
/* uniform in [0, 1) */
static inline double uni(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
/* standard normal (Box-Muller) */
static inline float gauss(void) {
    double u = uni(), v = uni();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* The stream's seed: LT_TEST_SEED, else 8 bytes of /dev/urandom; printed so a run can be repeated. */
static inline void seed_rng(void) {
    const char *env = getenv("LT_TEST_SEED");
    uint64_t s = 0;
    if (env) {
        s = strtoull(env, NULL, 10);
    } else {
        FILE *f = fopen("/dev/urandom", "rb");
        if (!f || fread(&s, sizeof s, 1, f) != 1) s = (uint64_t)time(NULL);
        if (f) fclose(f);
    }
    printf("seed %llu (LT_TEST_SEED=%llu repeats this run)\n", (unsigned long long)s,
           (unsigned long long)s);
    rng_state = s ? s : 1;
}

#endif
