/* sha256.h: SHA-256 (FIPS 180-4), to identify teacher weights and stored images by content. */
#ifndef LT_SHA256_H
#define LT_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;       /* bytes hashed so far */
    uint8_t block[64];
    size_t fill;
} lt_sha256;

void lt_sha256_init(lt_sha256 *s);
void lt_sha256_update(lt_sha256 *s, const void *data, size_t n);
void lt_sha256_final(lt_sha256 *s, uint8_t out[32]);
/* One-shot; hex is 65 bytes (64 hex digits + NUL). */
void lt_sha256_hex(const void *data, size_t n, char hex[65]);
void lt_sha256_tohex(const uint8_t d[32], char hex[65]);
/* Hashes a whole file; -1 with lt_err set if it cannot be read. */
int lt_sha256_file(const char *path, char hex[65]);

#endif
