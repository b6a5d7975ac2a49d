/* test_render_emu.cpp: the CUDA renderer's kernels (lib/image/render_cuda.cu) run on the CPU
 * through tests/unit/cuda_emu.h, against lt_render, byte for byte.
 *
 * Why it exists: CI has no GPU, and the GPU renderer must give the CPU's bytes. This compiles the
 * kernel file and the GPU test (tests/cuda/test_cuda_render.c) as host C++, with host memory for
 * device memory and fewer views: every `make test` then checks the kernels' index arithmetic,
 * scratch layout, tap tables, flip, jitter order, contrast's block reduction (64 real threads
 * meeting at barriers) and blur against the CPU renderer. Built by its own Makefile rule (g++,
 * -ffp-contract=off like lib/image/). */
#include "cuda_emu.h"

#define COLOR_THREADS 64
#include "image/render_cuda.cu"

#include "../cuda/test_cuda_render.c"
