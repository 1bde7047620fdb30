// sgd.cu: one multi-tensor launch of SGD + L2 weight decay + heavy-ball momentum over every
// trained parameter, with the per-segment statistics sums fused into the same pass.
//
// Buffers: w, g, v are the FLAT parameter, gradient and momentum buffers (f32, same length).
// Segment table: `segs` is a device array of MtSegment (32 bytes, see common.cuh):
//     #[repr(C)] struct MtSegment { offset: u64, len: u64, lr: f32, wd: f32, momentum: f32, first_chunk: u32 }
// with first_chunk = sum over earlier segments of ceil(len/chunk). Grid = total chunks (one block per
// (segment, chunk), as PyTorch's multi_tensor_apply), block 512, chunk = 65536 (a multiple of 4).
// The table lives in device memory, so a captured CUDA graph picks up a new lr/wd after the host
// rewrites the table between replays.
//
// Math per element, in f32 with the segment's f32-rounded hyperparameters, each operation rounded
// on its own (built with --fmad=false, evaluated left to right as written):
//     g' = g + wd*w;   v = momentum*v + g';   w_new = w - lr*v
// (PyTorch SGD, dampening 0; with v starting at 0 the first step gives v = g' exactly.)
// Bytes: reads w, g, v and writes w, v: 20 B per parameter.
//
// Statistics (when `partials` != 0), per segment in f64, with d = (double)w_new - (double)w
// (exact in f64) and the raw gradient g (without the wd term):
//     sums[seg*4 + 0] = sum w^2,  [1] = sum g^2,  [2] = sum d^2,  [3] = sum w*d
// Deterministic two-stage reduction: each block writes its 4 block sums to
// partials[blockIdx.x*4 + k] (a workspace of total_chunks*4 doubles); the last block to finish sums
// every segment's chunk partials in chunk order into `sums` (num_segs*4 doubles) and resets
// *counter (one u32, zeroed once when allocated) to 0. No extra DRAM traffic beyond 32 B per chunk.
// With partials = 0 the statistics are skipped; sums and counter may then be 0 too.

#include "common.cuh"

struct SgdElem {
    float w_new, v_new;
};

__device__ __forceinline__ SgdElem sgd_elem(float w, float g, float v, float lr, float wd, float mom) {
    const float gp = g + wd * w;
    const float vn = mom * v + gp;
    SgdElem r;
    r.v_new = vn;
    r.w_new = w - lr * vn;
    return r;
}

__device__ __forceinline__ void sgd_acc(double (&s)[4], float w, float g, float w_new) {
    const double wd = (double)w;
    const double gd = (double)g;
    const double d = (double)w_new - wd;
    s[0] += wd * wd;
    s[1] += gd * gd;
    s[2] += d * d;
    s[3] += wd * d;
}

template <bool STATS>
__device__ __forceinline__ void sgd_block(float* __restrict__ w, const float* __restrict__ g,
                                          float* __restrict__ v, const MtSegment* __restrict__ segs,
                                          int num_segs, int chunk, double (&s)[4]) {
    const MtRange r = mt_block_range(segs, num_segs, chunk);
    const MtSegment seg = segs[r.seg];
    const float lr = seg.lr, wd = seg.wd, mom = seg.momentum;
    const long long n = r.end - r.begin;
    const bool vec = (r.begin & 3) == 0 && aligned16(w) && aligned16(g) && aligned16(v);
    const long long nv = vec ? n / 4 : 0;

    float4* w4 = reinterpret_cast<float4*>(w + r.begin);
    const float4* g4 = reinterpret_cast<const float4*>(g + r.begin);
    float4* v4 = reinterpret_cast<float4*>(v + r.begin);
    for (long long k = threadIdx.x; k < nv; k += blockDim.x) {
        const float4 wv = w4[k], gv = g4[k], vv = v4[k];
        const SgdElem a = sgd_elem(wv.x, gv.x, vv.x, lr, wd, mom);
        const SgdElem b = sgd_elem(wv.y, gv.y, vv.y, lr, wd, mom);
        const SgdElem c = sgd_elem(wv.z, gv.z, vv.z, lr, wd, mom);
        const SgdElem d = sgd_elem(wv.w, gv.w, vv.w, lr, wd, mom);
        w4[k] = make_float4(a.w_new, b.w_new, c.w_new, d.w_new);
        v4[k] = make_float4(a.v_new, b.v_new, c.v_new, d.v_new);
        if (STATS) {
            sgd_acc(s, wv.x, gv.x, a.w_new);
            sgd_acc(s, wv.y, gv.y, b.w_new);
            sgd_acc(s, wv.z, gv.z, c.w_new);
            sgd_acc(s, wv.w, gv.w, d.w_new);
        }
    }
    for (long long i = r.begin + 4 * nv + threadIdx.x; i < r.end; i += blockDim.x) {
        const float wv = w[i], gv = g[i];
        const SgdElem a = sgd_elem(wv, gv, v[i], lr, wd, mom);
        w[i] = a.w_new;
        v[i] = a.v_new;
        if (STATS) sgd_acc(s, wv, gv, a.w_new);
    }
}

extern "C" __global__ void __launch_bounds__(512, 2)
sgd_step_multi(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ v,
               const MtSegment* __restrict__ segs, int num_segs, int chunk,
               double* __restrict__ partials, double* __restrict__ sums,
               unsigned int* __restrict__ counter) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    if (partials == nullptr) {
        sgd_block<false>(w, g, v, segs, num_segs, chunk, s);
        return;
    }
    sgd_block<true>(w, g, v, segs, num_segs, chunk, s);
    __shared__ double red[32 * 4];
    block_sum_n<double, 4>(s, red);
    mt_finish<4>(s, segs, num_segs, chunk, partials, sums, counter);
}
