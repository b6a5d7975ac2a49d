/* rng.h: a counter-based random number generator (Philox4x32-10).
 *
 * A stream is keyed by (seed, a, b, c): e.g. (seed, image, view, purpose). Its n-th output depends
 * only on the key and n, never on which thread draws it or in what order, so every random choice
 * of lt (view recipes, mixup partners, epoch orders) is reproducible across thread counts, batch
 * sizes and machines. */
#ifndef LT_RNG_H
#define LT_RNG_H

#include <stdint.h>

typedef struct {
    uint32_t key[2];
    uint32_t ctr[4]; /* ctr[0..2] = (a, b, c), ctr[3] = block index */
    uint32_t buf[4];
    int pos;         /* next unused word of buf; 4 = empty */
} lt_rng;

/* The Philox4x32-10 block function: out = philox(ctr, key). */
void lt_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

void lt_rng_init(lt_rng *r, uint64_t seed, uint32_t a, uint32_t b, uint32_t c);
uint32_t lt_rng_u32(lt_rng *r);
uint64_t lt_rng_u64(lt_rng *r);
double lt_rng_uniform(lt_rng *r);                   /* [0, 1), 53 bits */
double lt_rng_range(lt_rng *r, double lo, double hi); /* [lo, hi) */
/* Uniform integer in [0, n), n >= 1, without modulo bias. */
uint64_t lt_rng_below(lt_rng *r, uint64_t n);
/* Fisher-Yates shuffle of perm[0..n) (caller fills it). */
void lt_rng_shuffle_u32(lt_rng *r, uint32_t *perm, uint32_t n);

#endif
