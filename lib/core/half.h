/* half.h: IEEE binary16 <-> float32 conversion (round to nearest even), for float16 embeddings. */
#ifndef LT_HALF_H
#define LT_HALF_H

#include <stdint.h>

uint16_t lt_f32_to_f16(float f);
float lt_f16_to_f32(uint16_t h);
float lt_bf16_to_f32(uint16_t h);

#endif
