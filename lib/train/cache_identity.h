/* cache_identity.h: what makes two caches the same training data for lt-train. A checkpoint
 * records the digest, so a resumed run cannot go on with another cache that merely has the same
 * counts, seed and teacher (formats/checkpoint.md, "cache_identity"). */
#ifndef LT_CACHE_IDENTITY_H
#define LT_CACHE_IDENTITY_H

#include "data/cache.h"

/* SHA-256 (hex, 65 bytes) over the counts, every image's stored SHA-256 and every sample's
 * recipe, field by field in little-endian order. The same pass checks each stored mixup weight:
 * -1 + lt_err naming the cache (name) and the first sample whose lambda is not a finite value in [0, 1]. */
int lt_cache_identity(lt_cache *c, const char *name, char hex[65]);

#endif
