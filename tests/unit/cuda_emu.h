/* cuda_emu.h: just enough of the CUDA runtime and language to compile a kernel file as host C++
 * and run its kernels on the CPU: grids and blocks as loops, __syncthreads as a barrier.
 *
 * Why it exists: CI has no GPU, yet the CUDA renderer (lib/image/render_cuda.cu) must give the
 * CPU's bytes and the multi-tensor optimizer (lib/nn/optim_multi_cuda.cu) optim.c's updates.
 * tests/unit/test_render_emu.cpp and test_optim_emu.cpp include those files after this one (with
 * LT_CUDA_EMULATE defined), so every `make test` runs the kernels' index arithmetic, scratch
 * layout and block reductions against the CPU code. What it cannot check: anything the GPU does
 * differently from C++ on the host (its float units, memory model, races between blocks); those
 * stay with tests/cuda/ on a GPU.
 *
 * Execution: a kernel listed in EMU_THREADED (one that calls __syncthreads) runs each block as
 * blockDim.x real threads meeting at a std::barrier; every other kernel runs its blocks and
 * threads one after another. __shared__ arrays become statics, shared by a block's threads
 * (blocks run one at a time). */
#ifndef LT_CUDA_EMU_H
#define LT_CUDA_EMU_H

#include <barrier>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define LT_CUDA_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;
inline thread_local std::barrier<> *emu_bar;

inline void __syncthreads() {
    if (emu_bar) emu_bar->arrive_and_wait();
}

typedef void *cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind,
                                   cudaStream_t) {
    std::memcpy(dst, src, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t) {
    std::memset(dst, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t n) { return (*p = std::malloc(n ? n : 1)) ? 0 : 2; }
inline cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void *p) { return std::free(p), cudaSuccess; }
inline cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
typedef int *cudaEvent_t; /* work is done when enqueued: events are always complete */
enum { cudaEventDisableTiming = 2 };
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
    static int ev;
    *e = &ev;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind) {
    std::memcpy(dst, src, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t *fr, size_t *total) {
    *fr = *total = (size_t)1 << 30;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char *cudaGetErrorString(cudaError_t) { return "emulated"; }

/* The kernels that meet at __syncthreads: the including test may name its own before this
 * header (a comma-separated list of string literals). */
#ifndef EMU_THREADED
#define EMU_THREADED "k_color"
#endif

inline bool emu_threaded(const char *name) {
    static const char *const names[] = {EMU_THREADED};
    for (const char *n : names)
        if (!std::strcmp(n, name)) return true;
    return false;
}

inline void emu_launch(const char *name, dim3 grid, dim3 block, const std::function<void()> &k) {
    const bool threaded = emu_threaded(name);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                auto set = [&](unsigned tx) {
                    gridDim = grid, blockDim = block, blockIdx = dim3(bx, by, bz);
                    threadIdx = dim3(tx, 0, 0);
                };
                if (!threaded) {
                    emu_bar = nullptr;
                    for (unsigned tx = 0; tx < block.x; tx++) set(tx), k();
                    continue;
                }
                std::barrier<> bar((std::ptrdiff_t)block.x);
                std::vector<std::thread> ts;
                for (unsigned tx = 0; tx < block.x; tx++)
                    ts.emplace_back([&, tx] {
                        set(tx);
                        emu_bar = &bar;
                        k();
                        emu_bar = nullptr;
                    });
                for (auto &t : ts) t.join();
            }
}

#define LAUNCH(kernel, grid, block, stream, ...)                                                  \
    emu_launch(#kernel, dim3(grid), dim3(block), [&] { kernel(__VA_ARGS__); })

#endif
