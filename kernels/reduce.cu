// reduce.cu: multi-tensor per-segment reductions in f64 (statistics without an optimizer step).
//
// Same segment table, grid and deterministic epilogue as optim.cu (see common.cuh, MtSegment):
// grid = total chunks, block 512, chunk = 65536 (a multiple of 4); every block writes its block sums
// to `partials` (total_chunks*K doubles), the last block sums each segment's chunks in chunk order
// into `out` (num_segs*K doubles) and resets *counter (one u32, zeroed once) to 0.
// Kernels that may run concurrently (different streams) need their own partials and counter.
// Each f32 value is widened to f64 before any product, so every term is exact.
//
//  multi_sums4   K = 4: out = [sum w^2, sum g^2, sum d^2, sum w*d] with d = (double)w_next - (double)w,
//                the same sums as the optim.cu kernels' statistics (given w_t, g and w_{t+1}).
//                g and w_next are nullable: their sums then come out 0.
//                Bytes: 4 per element per buffer given (12 with all three).
//  multi_sqnorm  K = 1: out = sum x^2.                                      4 B/elem.
//  multi_dot     K = 1: out = sum x*y (cosines of the gradient with the weight or the momentum).
//                                                                           8 B/elem.

#include "common.cuh"

extern "C" __global__ void __launch_bounds__(512, 2)
multi_sums4(const float* __restrict__ w, const float* __restrict__ g, const float* __restrict__ w_next,
            const MtSegment* __restrict__ segs, int num_segs, int chunk, double* __restrict__ partials,
            double* __restrict__ out, unsigned int* __restrict__ counter) {
    const MtRange r = mt_block_range(segs, num_segs, chunk);
    const bool hg = g != nullptr, hn = w_next != nullptr;
    const bool vec = (r.begin & 3) == 0 && aligned16(w) && (!hg || aligned16(g)) && (!hn || aligned16(w_next));
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    mt_loop(
        r, vec,
        [&](long long i) {
            const float4 a = ld4(w, i);
            const float4 b = hg ? ld4(g, i) : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 c = hn ? ld4(w_next, i) : make_float4(0.f, 0.f, 0.f, 0.f);
            acc4(s, a.x, hg, b.x, hn, c.x);
            acc4(s, a.y, hg, b.y, hn, c.y);
            acc4(s, a.z, hg, b.z, hn, c.z);
            acc4(s, a.w, hg, b.w, hn, c.w);
        },
        [&](long long i) { acc4(s, w[i], hg, hg ? g[i] : 0.f, hn, hn ? w_next[i] : 0.f); });
    __shared__ double red[32 * 4];
    block_sum_n<double, 4>(s, red);
    mt_finish<4>(s, segs, num_segs, chunk, partials, out, counter);
}

extern "C" __global__ void __launch_bounds__(512, 2)
multi_sqnorm(const float* __restrict__ x, const MtSegment* __restrict__ segs, int num_segs, int chunk,
             double* __restrict__ partials, double* __restrict__ out, unsigned int* __restrict__ counter) {
    const MtRange r = mt_block_range(segs, num_segs, chunk);
    const bool vec = (r.begin & 3) == 0 && aligned16(x);
    double s[1] = {0.0};
    auto sq = [&](float v) {
        const double a = (double)v;
        s[0] += a * a;
    };
    mt_loop(
        r, vec,
        [&](long long i) {
            const float4 a = ld4(x, i);
            sq(a.x); sq(a.y); sq(a.z); sq(a.w);
        },
        [&](long long i) { sq(x[i]); });
    __shared__ double red[32];
    block_sum_n<double, 1>(s, red);
    mt_finish<1>(s, segs, num_segs, chunk, partials, out, counter);
}

extern "C" __global__ void __launch_bounds__(512, 2)
multi_dot(const float* __restrict__ x, const float* __restrict__ y, const MtSegment* __restrict__ segs,
          int num_segs, int chunk, double* __restrict__ partials, double* __restrict__ out,
          unsigned int* __restrict__ counter) {
    const MtRange r = mt_block_range(segs, num_segs, chunk);
    const bool vec = (r.begin & 3) == 0 && aligned16(x) && aligned16(y);
    double s[1] = {0.0};
    auto dot = [&](float a, float b) { s[0] += (double)a * (double)b; };
    mt_loop(
        r, vec,
        [&](long long i) {
            const float4 a = ld4(x, i), b = ld4(y, i);
            dot(a.x, b.x); dot(a.y, b.y); dot(a.z, b.z); dot(a.w, b.w);
        },
        [&](long long i) { dot(x[i], y[i]); });
    __shared__ double red[32];
    block_sum_n<double, 1>(s, red);
    mt_finish<1>(s, segs, num_segs, chunk, partials, out, counter);
}
