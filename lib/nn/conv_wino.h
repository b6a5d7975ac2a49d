/* conv_wino.h: 3×3 stride-1 convolutions by Winograd's F(2×2, 3×3), for cnn_cpu.c.
 *
 * Why it exists: the ResNet student's 3×3 stride-1 convolutions (their forward, their weight
 * gradient, and their input gradient, itself a 3×3 stride-1 conv) were GEMM-bound: with im2col +
 * GEMM at OpenBLAS's peak rate the training step could not get faster. F(2×2, 3×3) computes each 2×2 block of outputs from a
 * 4×4 block of inputs with 16 multiplications per (input, output) channel pair instead of 36:
 * 2.25x fewer FLOPs in the GEMMs, for some additions in the transforms. All fp32; the transforms
 * only add, subtract and halve, so the results stay within a few ulp of the direct sums.
 *
 * Layouts are cnn.h's: x (B, H, W, Cin) and y (B, OH, OW, Cout) NHWC, w (Cout, Cin, 3, 3). The
 * output is split into 2×2 tiles, (B, ⌈OH/2⌉, ⌈OW/2⌉) of them in image-major order; the threads
 * share blocks of consecutive tiles statically. Every output element is one tile's sum in a fixed
 * order, so the forward does not depend on the thread count; the weight gradient sums each
 * thread's blocks into its own partial and folds the partials in thread order (deterministic
 * for a fixed thread count). */
#ifndef LT_NN_CONV_WINO_H
#define LT_NN_CONV_WINO_H

#include <stddef.h>
#include <stdint.h>

/* A 3×3, stride-1 conv: x (B, H, W, Cin) -> y (B, OH, OW, Cout), OH = H + 2·pad − 2. */
typedef struct {
    int B, H, W, Cin, Cout, pad, OH, OW;
} lt_wino_dims;

/* Whether F(2×2, 3×3) computes this conv (3×3 kernel, stride 1, pad 0..2). */
int lt_wino_applies(int kh, int kw, int stride, int pad);
/* Scratch floats lt_wino_forward and lt_wino_dw need for d with `threads` threads. */
int64_t lt_wino_ws_floats(const lt_wino_dims *d, int threads);

/* y (+)= conv(x, w), beta 0 (write) or 1 (add). When flip is 0, w is (Cout, Cin, 3, 3); when 1,
 * w is (Cin, Cout, 3, 3) and is used flipped in space with its channel axes swapped (the input
 * gradient of the conv whose weight w is). */
void lt_wino_forward(const lt_wino_dims *d, int threads, float *y, const float *x,
                     const float *w, int flip, float beta, float *ws);
/* dw (Cout, Cin, 3, 3) (+)= ∂L/∂w given dy (B, OH, OW, Cout) and the forward's x. */
void lt_wino_dw(const lt_wino_dims *d, int threads, float *dw, const float *dy, const float *x,
                int accumulate, float *ws);

#endif
