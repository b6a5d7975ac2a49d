/* crc32c.h: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TensorBoard's
 * record framing (lib/core/tfevents.h). Not zlib's CRC-32, which the cache's row checksums use. */
#ifndef LT_CRC32C_H
#define LT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues crc (0 to start) over n bytes: lt_crc32c(lt_crc32c(0, a, na), b, nb) is the CRC-32C
 * of a then b. lt_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t lt_crc32c(uint32_t crc, const void *data, size_t n);

#endif
