/* fuzz_decode.c: the image decode path lt-embed and lt-train run on every stored file: format
 * sniffing, the header probe (lt_image_probe) and the full decode to RGB (lt_image_decode) with a
 * small pixel limit, so that the fuzzer spends its time in parsing rather than in huge IDCTs.
 * A decoded image must have the size the probe announced and every byte of it must be readable. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "image/decode.h"

#define FUZZ_MAX_PIXELS (1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    int pw = 0, ph = 0;
    int probed = lt_image_probe(data, n, &pw, &ph) == 0;
    lt_image im;
    if (lt_image_decode(data, n, FUZZ_MAX_PIXELS, &im) == 0) {
        if (im.w <= 0 || im.h <= 0 || (int64_t)im.w * im.h > FUZZ_MAX_PIXELS || !im.rgb) abort();
        if (!probed || pw != im.w || ph != im.h) {
            fprintf(stderr, "fuzz_decode: probe said %dx%d (ok=%d), decode gave %dx%d\n", pw, ph,
                    probed, im.w, im.h);
            abort();
        }
        /* touch every pixel byte (ASan: inside the buffer; MSan-style: initialised) */
        unsigned acc = 0;
        size_t bytes = (size_t)im.w * (size_t)im.h * 3;
        for (size_t i = 0; i < bytes; i++) acc += im.rgb[i];
        volatile unsigned sink = acc;
        (void)sink;
        lt_image_free(&im);
    } else if (!lt_err_msg()[0]) {
        fprintf(stderr, "fuzz_decode: decode failed without a message\n");
        abort();
    }
    lt_err_clear();
    return 0;
}
