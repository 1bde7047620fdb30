// common.cuh: shared helpers for the ilr kernels.
//
// - warp and block sums for f32 and f64 (fixed shuffle trees: for a given blockDim the result is
//   bitwise reproducible run to run);
// - float4 alignment checks and grid-stride index helpers;
// - the multi-tensor segment table (MtSegment) shared by optim.cu and reduce.cu, the chunk -> segment
//   lookup, and the deterministic "last block sums the per-chunk partials in order" epilogue.
//
// Conventions for every kernel in this folder:
// - blockDim.x is a multiple of 32 and at most the kernel's __launch_bounds__; grids are 1-D unless
//   a kernel says otherwise. The bounds say "(max threads, 1)": the explicit minimum of one block
//   per SM stops ptxas (for sm_80, JIT of our compute_80 PTX) from capping kernels at 32 registers
//   to fit two 1024-thread blocks, which made it spill;
// - element counts that can exceed 2^31 are `long long`; shape dimensions are `int`;
// - a "nullable" pointer may be passed as 0 to switch an output off;
// - no input aliases an output unless the kernel says so (all pointers are __restrict__).
//
// Built with --fmad=false (see build.rs): every a*b+c rounds twice, as in the Rust CPU reference,
// so elementwise results can be compared at the last bit where the order of operations agrees.
#pragma once

#include <stdint.h>

#define ILR_FULL_MASK 0xffffffffu

// Dynamic shared memory declaration; the host emulator in kernels/emu/ redefines it.
#ifndef ILR_DYNAMIC_SMEM
#define ILR_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif

// ---------------------------------------------------------------------------------------------
// Warp and block reductions
// ---------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(ILR_FULL_MASK, v, o);
    return v;  // every lane holds the same sum
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(ILR_FULL_MASK, v, o));
    return v;
}

// Sums N values across the block at once (one pair of barriers for all N).
// `scratch` must hold 32*N elements of T. The sums are returned to EVERY thread.
// Safe to call repeatedly with the same scratch (it syncs before returning).
template <typename T, int N>
__device__ __forceinline__ void block_sum_n(T (&v)[N], T* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = warp_sum(v[k]);
    if (lane == 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) scratch[warp * N + k] = v[k];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) {
            T t = lane < nwarps ? scratch[lane * N + k] : T(0);
            t = warp_sum(t);
            if (lane == 0) scratch[k] = t;
        }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = scratch[k];
    __syncthreads();  // scratch may be reused right away
}

template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch /* >= 32 elements */) {
    T a[1] = {v};
    block_sum_n<T, 1>(a, scratch);
    return a[0];
}

// ---------------------------------------------------------------------------------------------
// Indexing and alignment
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ long long global_tid() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long global_stride() { return (long long)gridDim.x * blockDim.x; }

__device__ __forceinline__ bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// float4 load/store at element i (p + i must be 16-byte aligned).
__device__ __forceinline__ float4 ld4(const float* p, long long i) { return *reinterpret_cast<const float4*>(p + i); }
__device__ __forceinline__ void st4(float* p, long long i, float4 v) { *reinterpret_cast<float4*>(p + i) = v; }

// ---------------------------------------------------------------------------------------------
// Multi-tensor segment table (optim.cu, reduce.cu)
// ---------------------------------------------------------------------------------------------
//
// One entry per contiguous run of a flat buffer. 56 bytes, 8-byte aligned; the Rust side is
//   #[repr(C)] struct MtSegment { offset: u64, len: u64, h: [f32; 8], first_chunk: u32, pad: u32 }
// `first_chunk` is the prefix sum of ceil(len / chunk) over the segments before this one, so the
// launch grid is  first_chunk[last] + ceil(len[last] / chunk)  blocks, one per (segment, chunk).
// Segments of length 0 own no chunk (their sums come out 0). `chunk` must be a multiple of 4.
// `h` holds the segment's f32 scalars for this step, formed on the host; each kernel of optim.cu
// says what its h[k] are (reduce.cu ignores them). Being in device memory, they reach a captured
// CUDA graph when the host rewrites the table between replays.
struct MtSegment {
    unsigned long long offset;  // first element in the flat buffers
    unsigned long long len;     // number of elements
    float h[8];                 // per-step scalars of the optimizer kernel (see optim.cu)
    unsigned int first_chunk;   // index of this segment's first block
    unsigned int pad;
};
static_assert(sizeof(MtSegment) == 56, "MtSegment must stay 56 bytes (Rust #[repr(C)] mirror)");

// The segment that owns chunk `b`: the last s with first_chunk <= b (binary search; every thread of
// a block reads the same addresses, so the loads are broadcasts).
__device__ __forceinline__ int mt_find_segment(const MtSegment* __restrict__ segs, int num_segs,
                                               unsigned int b) {
    int lo = 0, hi = num_segs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (segs[mid].first_chunk <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// This block's element range [begin, end) inside its segment.
struct MtRange {
    int seg;
    long long begin;  // absolute element index into the flat buffers
    long long end;
};

__device__ __forceinline__ MtRange mt_block_range(const MtSegment* __restrict__ segs, int num_segs,
                                                  int chunk) {
    MtRange r;
    r.seg = mt_find_segment(segs, num_segs, blockIdx.x);
    const MtSegment s = segs[r.seg];
    const long long local = (long long)(blockIdx.x - s.first_chunk) * chunk;
    long long n = (long long)s.len - local;
    if (n > chunk) n = chunk;
    if (n < 0) n = 0;
    r.begin = (long long)s.offset + local;
    r.end = r.begin + n;
    return r;
}

// Walks this block's range [r.begin, r.end): f4(i) for each float4 group starting at element i
// (when the range start and the pointers allow), then f1(i) for each element of the scalar tail.
// The callers accumulate the 4 lanes of a group in order, so each thread sums its elements in the
// same order in optim.cu and reduce.cu (so their statistics agree bitwise for the same chunk and
// block size).
template <typename F4, typename F1>
__device__ __forceinline__ void mt_loop(const MtRange& r, bool vec, F4 f4, F1 f1) {
    const long long n = r.end - r.begin;
    const long long nv = vec ? n / 4 : 0;
    for (long long k = threadIdx.x; k < nv; k += blockDim.x) f4(r.begin + 4 * k);
    for (long long i = r.begin + 4 * nv + threadIdx.x; i < r.end; i += blockDim.x) f1(i);
}

// The statistics of one element: s += {w^2, g^2, d^2, w*d} with d = (double)wn - (double)w, every
// term exact in f64 (optim.cu with w = w_t, g the raw gradient, wn = w_{t+1}; reduce.cu passes a
// buffer that is not given as 0 with its `has` flag false).
__device__ __forceinline__ void acc4(double (&s)[4], float w, bool has_g, float g, bool has_wn, float wn) {
    const double a = (double)w;
    s[0] += a * a;
    if (has_g) {
        const double b = (double)g;
        s[1] += b * b;
    }
    if (has_wn) {
        const double d = (double)wn - a;
        s[2] += d * d;
        s[3] += a * d;
    }
}

// Deterministic two-stage epilogue of a multi-tensor reduction with N f64 sums per segment.
// Each block passes its block-reduced sums `v` (valid in every thread, as block_sum_n leaves them).
// Thread 0 writes them to partials[blockIdx.x*N + k]; the last block to finish (counted on
// *counter) then sums, for each segment, its chunks' partials in chunk order and writes
// out[seg*N + k]. The result does not depend on block scheduling. The last block resets *counter
// to 0, so the counter (one u32, zeroed once at allocation) is ready for the next launch, also
// inside a CUDA graph. If a launch is aborted half way, zero the counter again.
template <int N>
__device__ __forceinline__ void mt_finish(const double (&v)[N], const MtSegment* __restrict__ segs,
                                          int num_segs, int chunk, double* __restrict__ partials,
                                          double* __restrict__ out, unsigned int* __restrict__ counter) {
    __shared__ bool am_last;
    if (threadIdx.x == 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) partials[(long long)blockIdx.x * N + k] = v[k];
        __threadfence();  // make the partials visible device-wide before counting this block
        const unsigned int done = atomicAdd(counter, 1u);
        am_last = (done == gridDim.x - 1);
    }
    __syncthreads();
    if (!am_last) return;
    __threadfence();
    for (int s = threadIdx.x; s < num_segs; s += blockDim.x) {
        const MtSegment seg = segs[s];
        const unsigned int nchunks = (unsigned int)((seg.len + chunk - 1) / chunk);
        double acc[N];
#pragma unroll
        for (int k = 0; k < N; ++k) acc[k] = 0.0;
        for (unsigned int c = 0; c < nchunks; ++c) {
            const double* p = partials + (long long)(seg.first_chunk + c) * N;
#pragma unroll
            for (int k = 0; k < N; ++k) acc[k] += __ldcg(p + k);  // L2, not a stale L1 line
        }
#pragma unroll
        for (int k = 0; k < N; ++k) out[(long long)s * N + k] = acc[k];
    }
    if (threadIdx.x == 0) *counter = 0u;
}

// ---------------------------------------------------------------------------------------------
// Per-channel iteration for NCHW tensors (batchnorm.cu)
// ---------------------------------------------------------------------------------------------
//
// The M = N*HW elements of channel c of an [N][C][HW] tensor, flattened as j = n*HW + i, live at
// (n*C + c)*HW + i. When HW % 4 == 0 and the base pointers are 16-byte aligned they are walked as
// M/4 float4 groups (a group never crosses a sample); otherwise element by element.
// j < M < 2^31: the division is 32-bit (a 64-bit one is a slow call); the result is 64-bit.
__device__ __forceinline__ long long chan_index(unsigned int j, int C, int c, int HW) {
    const unsigned int n = j / (unsigned int)HW;
    const unsigned int i = j - n * (unsigned int)HW;
    return ((long long)n * C + c) * HW + i;
}
