// optim.cu: the fused optimizer steps. One multi-tensor launch of SGD, Adam(W) or Lion over every
// trained parameter, with the per-segment statistics sums fused into the same pass.
//
// Buffers: w (parameters), g (gradients) and the optimizer's state buffers are FLAT f32 buffers of
// one length. Segment table: `segs` is a device array of MtSegment (56 bytes, see common.cuh)
//     #[repr(C)] struct MtSegment { offset: u64, len: u64, h: [f32; 8], first_chunk: u32, pad: u32 }
// with first_chunk = sum over earlier segments of ceil(len/chunk). Grid = total chunks (one block per
// (segment, chunk), as PyTorch's multi_tensor_apply), block 512, chunk = 65536 (a multiple of 4).
// h[k] are the segment's scalars of this step, formed in f64 on the host and rounded to f32 once,
// as the CPU reference (src/backend/cpu/{sgd,adam,lion}.rs) rounds them. The table lives in device
// memory, so a captured CUDA graph picks up each step's lr, wd and bias corrections after the host
// rewrites the table between replays.
//
// Math per element, in f32, each operation rounded on its own (built with --fmad=false, evaluated
// left to right as written, IEEE division and sqrt): the CPU reference's operations in its order,
// so the results agree with it bitwise for f32.
//   sgd_step_multi (w, g, v, ...)     h = [lr, wd, momentum]        (PyTorch SGD, dampening 0)
//       g' = g + wd*w;  v = momentum*v + g';  w = w - lr*v
//       Bytes: reads w, g, v, writes w, v: 20 B per parameter.
//   adam_step_multi (w, g, m, v, ...)  h = [decay, l2, c1, b2, c2, step, bc2_sqrt, eps] with
//       c1 = 1-beta1, c2 = 1-beta2, step = lr/(1-beta1^t), bc2_sqrt = sqrt(1-beta2^t);
//       AdamW: decay = 1-lr*wd, l2 = 0; Adam with L2: decay = 1, l2 = wd (one kernel, no flag)
//       g' = g + l2*w;  m = m + c1*(g' - m);  v = b2*v + c2*(g'*g');
//       w = w*decay - step*(m/(sqrt(v)/bc2_sqrt + eps))
//       Bytes: reads w, g, m, v, writes w, m, v: 28 B per parameter.
//   lion_step_multi (w, g, m, ...)     h = [lr, decay, b1, c1, b2, c2] with decay = 1-lr*wd,
//       c1 = 1-beta1, c2 = 1-beta2
//       c = b1*m + c1*g;  w = w*decay - lr*sign(c);  m = b2*m + c2*g   (sign(0) = 0, sign(NaN) = NaN)
//       Bytes: reads w, g, m, writes w, m: 20 B per parameter.
//
// Statistics (when `partials` != 0), per segment in f64, with d = (double)w_new - (double)w
// (exact in f64) and the raw gradient g (without any wd term):
//     sums[seg*4 + 0] = sum w^2,  [1] = sum g^2,  [2] = sum d^2,  [3] = sum w*d
// Deterministic two-stage reduction: each block writes its 4 block sums to
// partials[blockIdx.x*4 + k] (a workspace of total_chunks*4 doubles); the last block to finish sums
// every segment's chunk partials in chunk order into `sums` (num_segs*4 doubles) and resets
// *counter (one u32, zeroed once when allocated) to 0. No extra DRAM traffic beyond 32 B per chunk.
// With partials = 0 the statistics are skipped; sums and counter may then be 0 too.

#include "common.cuh"

// The per-element updates. Each is built from its segment's table entry; operator() takes w, g and
// the state (s1 is unused by the one-state optimizers), updates the state and returns w_new.
struct SgdUpdate {
    static constexpr bool kTwoStates = false;
    float lr, wd, mom;
    __device__ explicit SgdUpdate(const MtSegment& s) : lr(s.h[0]), wd(s.h[1]), mom(s.h[2]) {}
    __device__ __forceinline__ float operator()(float w, float g, float& v, float&) const {
        const float gp = g + wd * w;
        v = mom * v + gp;
        return w - lr * v;
    }
};

struct AdamUpdate {
    static constexpr bool kTwoStates = true;
    float decay, l2, c1, b2, c2, step, bc2_sqrt, eps;
    __device__ explicit AdamUpdate(const MtSegment& s)
        : decay(s.h[0]), l2(s.h[1]), c1(s.h[2]), b2(s.h[3]), c2(s.h[4]), step(s.h[5]), bc2_sqrt(s.h[6]),
          eps(s.h[7]) {}
    __device__ __forceinline__ float operator()(float w, float g, float& m, float& v) const {
        const float gl = g + l2 * w;
        m = m + c1 * (gl - m);
        v = b2 * v + c2 * (gl * gl);
        return w * decay - step * (m / (sqrtf(v) / bc2_sqrt + eps));
    }
};

struct LionUpdate {
    static constexpr bool kTwoStates = false;
    float lr, decay, b1, c1, b2, c2;
    __device__ explicit LionUpdate(const MtSegment& s)
        : lr(s.h[0]), decay(s.h[1]), b1(s.h[2]), c1(s.h[3]), b2(s.h[4]), c2(s.h[5]) {}
    __device__ __forceinline__ float operator()(float w, float g, float& m, float&) const {
        const float c = b1 * m + c1 * g;
        const float sign = c > 0.f ? 1.f : (c < 0.f ? -1.f : c);
        m = b2 * m + c2 * g;
        return w * decay - lr * sign;
    }
};

// This block's chunk: w, s0 (and s1) updated in place by U, the statistics added to `acc`.
template <class U, bool STATS>
__device__ __forceinline__ void step_block(float* __restrict__ w, const float* __restrict__ g,
                                           float* __restrict__ s0, float* __restrict__ s1,
                                           const MtSegment* __restrict__ segs, int num_segs, int chunk,
                                           double (&acc)[4]) {
    constexpr bool two = U::kTwoStates;
    const MtRange r = mt_block_range(segs, num_segs, chunk);
    const U u(segs[r.seg]);
    const bool vec = (r.begin & 3) == 0 && aligned16(w) && aligned16(g) && aligned16(s0) && (!two || aligned16(s1));
    mt_loop(
        r, vec,
        [&](long long i) {
            const float4 wv = ld4(w, i), gv = ld4(g, i);
            float4 a = ld4(s0, i);
            float4 b = two ? ld4(s1, i) : a;
            const float x = u(wv.x, gv.x, a.x, b.x);
            const float y = u(wv.y, gv.y, a.y, b.y);
            const float z = u(wv.z, gv.z, a.z, b.z);
            const float q = u(wv.w, gv.w, a.w, b.w);
            st4(w, i, make_float4(x, y, z, q));
            st4(s0, i, a);
            if (two) st4(s1, i, b);
            if (STATS) {
                acc4(acc, wv.x, true, gv.x, true, x);
                acc4(acc, wv.y, true, gv.y, true, y);
                acc4(acc, wv.z, true, gv.z, true, z);
                acc4(acc, wv.w, true, gv.w, true, q);
            }
        },
        [&](long long i) {
            const float wv = w[i], gv = g[i];
            float a = s0[i];
            float b = two ? s1[i] : 0.f;
            const float x = u(wv, gv, a, b);
            w[i] = x;
            s0[i] = a;
            if (two) s1[i] = b;
            if (STATS) acc4(acc, wv, true, gv, true, x);
        });
}

// The whole kernel body for update U: the step, then (with partials) the statistics epilogue.
template <class U>
__device__ __forceinline__ void step_kernel(float* __restrict__ w, const float* __restrict__ g,
                                            float* __restrict__ s0, float* __restrict__ s1,
                                            const MtSegment* __restrict__ segs, int num_segs, int chunk,
                                            double* __restrict__ partials, double* __restrict__ sums,
                                            unsigned int* __restrict__ counter) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    if (partials == nullptr) {
        step_block<U, false>(w, g, s0, s1, segs, num_segs, chunk, acc);
        return;
    }
    step_block<U, true>(w, g, s0, s1, segs, num_segs, chunk, acc);
    __shared__ double red[32 * 4];
    block_sum_n<double, 4>(acc, red);
    mt_finish<4>(acc, segs, num_segs, chunk, partials, sums, counter);
}

extern "C" __global__ void __launch_bounds__(512, 2)
sgd_step_multi(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ v,
               const MtSegment* __restrict__ segs, int num_segs, int chunk,
               double* __restrict__ partials, double* __restrict__ sums,
               unsigned int* __restrict__ counter) {
    step_kernel<SgdUpdate>(w, g, v, nullptr, segs, num_segs, chunk, partials, sums, counter);
}

extern "C" __global__ void __launch_bounds__(512, 2)
adam_step_multi(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                float* __restrict__ v, const MtSegment* __restrict__ segs, int num_segs, int chunk,
                double* __restrict__ partials, double* __restrict__ sums,
                unsigned int* __restrict__ counter) {
    step_kernel<AdamUpdate>(w, g, m, v, segs, num_segs, chunk, partials, sums, counter);
}

extern "C" __global__ void __launch_bounds__(512, 2)
lion_step_multi(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                const MtSegment* __restrict__ segs, int num_segs, int chunk,
                double* __restrict__ partials, double* __restrict__ sums,
                unsigned int* __restrict__ counter) {
    step_kernel<LionUpdate>(w, g, m, nullptr, segs, num_segs, chunk, partials, sums, counter);
}
