// cuda_emu.hpp: a minimal host emulator that runs the kernels of kernels/*.cu on the CPU, so their
// logic (indexing, vector/scalar paths, reductions, the last-block epilogues) can be tested on
// machines without a GPU. Not a performance model and not a memory-model checker.
//
// - every CUDA thread of a block is a std::thread; blocks run one after another, so `__shared__`
//   can be a function-local `static` (one instance, shared by the block's threads);
// - __syncthreads() is a std::barrier over the block; warp shuffles exchange through a per-warp
//   slot array between two per-warp barriers (the kernels only shuffle with full warps);
// - blockDim must be 1-D and a multiple of 32, as the kernels require;
// - f32 arithmetic is IEEE with no contraction (compile with -ffp-contract=off), like --fmad=false.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
    unsigned int x = 0, y = 0, z = 0;
};
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

inline thread_local uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim, gridDim;

namespace ilr_emu {
struct Warp {
    std::unique_ptr<std::barrier<>> bar;
    uint64_t slot[32];
};
inline std::unique_ptr<std::barrier<>> block_bar;
inline std::vector<Warp> warps;
inline std::vector<unsigned char> dyn;  // dynamic shared memory of the running block
inline unsigned char* dyn_smem() { return dyn.data(); }
}  // namespace ilr_emu

#define ILR_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(ilr_emu::dyn_smem())

inline void __syncthreads() { ilr_emu::block_bar->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
inline T __shfl_xor_sync(unsigned int, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    ilr_emu::Warp& w = ilr_emu::warps[threadIdx.x / 32];
    const unsigned int lane = threadIdx.x & 31;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.slot[lane] = bits;
    w.bar->arrive_and_wait();
    const uint64_t other = w.slot[lane ^ (unsigned)lane_mask];
    w.bar->arrive_and_wait();
    T r;
    std::memcpy(&r, &other, sizeof(T));
    return r;
}

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
template <typename T>
inline T __ldcg(const T* p) {
    return *p;
}
inline double __longlong_as_double(long long v) {
    double d;
    std::memcpy(&d, &v, 8);
    return d;
}

namespace ilr_emu {
// Runs f() as every thread of every block of the grid.
template <typename F>
void launch(dim3 grid, dim3 block, size_t dyn_bytes, F f) {
    if (block.y != 1 || block.z != 1 || block.x % 32 != 0 || block.x == 0)
        throw std::runtime_error("emu: blockDim must be 1-D and a multiple of 32");
    gridDim = grid;
    blockDim = block;
    const unsigned int nthreads = block.x;
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                blockIdx = uint3{bx, by, bz};
                dyn.assign(dyn_bytes + 16, 0xCD);  // garbage-filled, like real shared memory
                block_bar = std::make_unique<std::barrier<>>(nthreads);
                warps = std::vector<Warp>(nthreads / 32);
                for (auto& w : warps) w.bar = std::make_unique<std::barrier<>>(32);
                std::vector<std::thread> ts;
                ts.reserve(nthreads);
                for (unsigned int t = 0; t < nthreads; ++t)
                    ts.emplace_back([t, &f] {
                        threadIdx = uint3{t, 0, 0};
                        f();
                    });
                for (auto& t : ts) t.join();
            }
}
}  // namespace ilr_emu
