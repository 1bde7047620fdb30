// elementwise.cu: the small memory-bound ops of a ResNet step.
//
//  add_assign_f32     y += x                                              12 B/elem
//  shortcut_fwd       option-A shortcut: y = zero-pad channels(subsample(x, stride))
//                                                        writes 4 B per y element, reads 4 B per copied one
//  shortcut_bwd_acc   dx += adjoint of the shortcut applied to dy          12 B per copied element
//  avgpool_fwd        y[r] = (f32)(sum_i x[r][i] (f64) / hw)               4 B/elem in, 4 B per row out
//  avgpool_bwd        dx[r][i] = dy[r] / hw (f32 division)                 4 B/elem out
//  softmax_xent       per-sample loss (f64), arg-max, dlogits = (softmax - onehot)/n, optional totals
//                                                        reads 4 B and writes 4 B per logit, 12 B per sample
//  cast_f32_to_bf16   round to nearest even                                6 B/elem
//  cast_bf16_to_f32   exact                                                6 B/elem
//
// Grid-stride loops: any grid works; 256 threads a block and a grid of min(ceil(work/256), 8*SMs)
// is a good default. Vector (float4) paths when the pointers are 16-byte aligned (8 for bf16), with
// a scalar tail, so every size works.

#include <cuda_bf16.h>

#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// y += x over n elements.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(1024, 1)
add_assign_f32(float* __restrict__ y, const float* __restrict__ x, long long n) {
    const long long t = global_tid(), stride = global_stride();
    const long long n4 = (aligned16(y) && aligned16(x)) ? n / 4 : 0;
    float4* y4 = reinterpret_cast<float4*>(y);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (long long k = t; k < n4; k += stride) {
        float4 a = y4[k];
        const float4 b = x4[k];
        a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
        y4[k] = a;
    }
    for (long long i = 4 * n4 + t; i < n; i += stride) y[i] += x[i];
}

// ---------------------------------------------------------------------------------------------
// Option-A shortcut. x: [N][C_in][H][W], y: [N][C_out][Ho][Wo] with Ho = ceil(H/stride),
// Wo = ceil(W/stride), C_out >= C_in, off = (C_out - C_in)/2:
//     y[n][co][i][j] = x[n][co - off][i*stride][j*stride]   if off <= co < off + C_in, else 0.
// One thread per y element (y is fully overwritten). Both shortcut kernels need tensor sizes
// < 2^31 elements (32-bit index arithmetic).
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(1024, 2)
shortcut_fwd(const float* __restrict__ x, float* __restrict__ y, int N, int C_in, int H, int W, int C_out,
             int stride) {
    const int Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;
    const int off = (C_out - C_in) / 2;
    const unsigned int total = (unsigned int)N * C_out * Ho * Wo;
    for (unsigned int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        unsigned int q = o;
        const int j = (int)(q % Wo); q /= Wo;
        const int i = (int)(q % Ho); q /= Ho;
        const int co = (int)(q % C_out);
        const long long n = q / C_out;
        const int ci = co - off;
        float v = 0.f;
        if (ci >= 0 && ci < C_in) v = x[((n * C_in + ci) * H + (long long)i * stride) * W + (long long)j * stride];
        y[o] = v;
    }
}

// Adjoint, accumulating: dx[n][ci][i*stride][j*stride] += dy[n][ci + off][i][j] for every
// n, ci < C_in, i < Ho, j < Wo; every other dx element is left as it is. The written positions are
// distinct, so no atomics. One thread per copied element.
extern "C" __global__ void __launch_bounds__(1024, 2)
shortcut_bwd_acc(const float* __restrict__ dy, float* __restrict__ dx, int N, int C_in, int H, int W,
                 int C_out, int stride) {
    const int Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;
    const int off = (C_out - C_in) / 2;
    const unsigned int total = (unsigned int)N * C_in * Ho * Wo;
    for (unsigned int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        unsigned int q = o;
        const int j = (int)(q % Wo); q /= Wo;
        const int i = (int)(q % Ho); q /= Ho;
        const int ci = (int)(q % C_in);
        const long long n = q / C_in;
        const long long src = ((n * C_out + ci + off) * Ho + i) * Wo + j;
        const long long dst = ((n * C_in + ci) * H + (long long)i * stride) * W + (long long)j * stride;
        dx[dst] += dy[src];
    }
}

// ---------------------------------------------------------------------------------------------
// Global average pooling over rows of length hw (rows = N*C). One warp per row; the sum is
// accumulated in f64 (lane-strided, then a fixed shuffle tree) and y = (f32)(sum / hw).
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(1024, 1)
avgpool_fwd(const float* __restrict__ x, float* __restrict__ y, int rows, int hw) {
    const int lane = threadIdx.x & 31;
    const long long warp = global_tid() >> 5;
    const long long nwarps = global_stride() >> 5;
    for (long long r = warp; r < rows; r += nwarps) {
        const float* p = x + r * hw;
        double s = 0.0;
        for (unsigned int i = lane; i < (unsigned int)hw; i += 32) s += (double)p[i];
        s = warp_sum(s);
        if (lane == 0) y[r] = (float)(s / (double)hw);
    }
}

// dx[r][i] = dy[r] / hw over rows*hw elements (dx overwritten; f32 division, correctly rounded).
// rows*hw < 2^31.
extern "C" __global__ void __launch_bounds__(1024, 2)
avgpool_bwd(const float* __restrict__ dy, float* __restrict__ dx, int rows, int hw) {
    const unsigned int total = (unsigned int)rows * hw;  // < 2^31
    const float fhw = (float)hw;
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    if ((hw & 3) == 0 && aligned16(dx)) {
        const unsigned int hw4 = hw / 4;
        float4* dx4 = reinterpret_cast<float4*>(dx);
        for (unsigned int k = t; k < total / 4; k += stride) {
            const float v = dy[k / hw4] / fhw;
            dx4[k] = make_float4(v, v, v, v);
        }
    } else {
        for (unsigned int i = t; i < total; i += stride) dx[i] = dy[i / hw] / fhw;
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy, one warp per sample (row of `classes` logits), everything in f64, in the
// CPU reference's order (src/backend/cpu/loss.rs):
//     m = max_k z_k;  S = sum_k exp(z_k - m);  loss[i] = (m - z_label) + log(S)
//     pred[i] = arg-max_k z_k, ties to the lowest index
//     dlogits[i][k] = (f32)((exp(z_k - m)/S - [k == label]) * (1/n))      (when dlogits != 0)
// A label >= classes gives loss NaN and no one-hot term.
// totals (nullable, 2 doubles): when given, the last block to finish writes
//     totals[0] = sum_i loss[i],  totals[1] = #{i : pred[i] == labels[i]}
// summed over the per-sample arrays in a fixed order (deterministic), and resets *counter (one u32,
// zeroed once) to 0. loss and pred are required. Block 256 (8 samples a block), grid ceil(n/8)
// (any grid works).
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(1024, 1)
softmax_xent(const float* __restrict__ logits, const unsigned int* __restrict__ labels, int n, int classes,
             float* __restrict__ dlogits, double* __restrict__ loss, unsigned int* __restrict__ pred,
             double* __restrict__ totals, unsigned int* __restrict__ counter) {
    const int lane = threadIdx.x & 31;
    const long long nwarps = global_stride() >> 5;
    const double inv_n = 1.0 / (double)n;
    for (long long r = global_tid() >> 5; r < n; r += nwarps) {
        const float* z = logits + r * classes;
        // arg-max: lanes visit increasing k and keep the first maximum; the tree prefers the
        // lower index on ties.
        float best = -INFINITY;
        int besti = 0x7fffffff;
        for (unsigned int k = lane; k < (unsigned int)classes; k += 32) {
            const float v = z[k];
            if (v > best || besti == 0x7fffffff) {
                best = v;
                besti = k;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(ILR_FULL_MASK, best, o);
            const int oi = __shfl_xor_sync(ILR_FULL_MASK, besti, o);
            if (oi != 0x7fffffff && (besti == 0x7fffffff || ob > best || (ob == best && oi < besti))) {
                best = ob;
                besti = oi;
            }
        }
        const double m = (double)best;
        double se = 0.0;
        for (unsigned int k = lane; k < (unsigned int)classes; k += 32) se += exp((double)z[k] - m);
        se = warp_sum(se);
        const unsigned int y = labels[r];
        const bool valid = y < (unsigned int)classes;
        if (lane == 0) {
            loss[r] = valid ? (m - (double)z[y]) + log(se) : __longlong_as_double(0x7ff8000000000000LL);
            pred[r] = (unsigned int)besti;
        }
        if (dlogits) {
            float* d = dlogits + r * classes;
            for (unsigned int k = lane; k < (unsigned int)classes; k += 32) {
                const double p = exp((double)z[k] - m) / se;
                d[k] = (float)((p - ((unsigned int)k == y ? 1.0 : 0.0)) * inv_n);
            }
        }
    }
    if (totals == nullptr) return;

    // Deterministic totals: last block sums the per-sample arrays.
    __shared__ bool am_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) am_last = (atomicAdd(counter, 1u) == gridDim.x - 1);
    __syncthreads();
    if (!am_last) return;
    __threadfence();
    __shared__ double red[32 * 2];
    double s[2] = {0.0, 0.0};
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        s[0] += __ldcg(loss + i);
        s[1] += __ldcg(pred + i) == labels[i] ? 1.0 : 0.0;
    }
    block_sum_n<double, 2>(s, red);
    if (threadIdx.x == 0) {
        totals[0] = s[0];
        totals[1] = s[1];
        *counter = 0u;
    }
}

// ---------------------------------------------------------------------------------------------
// bf16 casts (bf16 as raw u16 bits on the Rust side).
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(1024, 2)
cast_f32_to_bf16(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, long long n) {
    const long long t = global_tid(), stride = global_stride();
    const long long n4 = (aligned16(x) && ((uintptr_t)y & 7u) == 0) ? n / 4 : 0;
    for (long long k = t; k < n4; k += stride) {
        const float4 v = reinterpret_cast<const float4*>(x)[k];
        __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y);
        __nv_bfloat162 hi = __floats2bfloat162_rn(v.z, v.w);
        uint2 packed;
        packed.x = *reinterpret_cast<unsigned int*>(&lo);
        packed.y = *reinterpret_cast<unsigned int*>(&hi);
        reinterpret_cast<uint2*>(y)[k] = packed;
    }
    for (long long i = 4 * n4 + t; i < n; i += stride) y[i] = __float2bfloat16_rn(x[i]);
}

extern "C" __global__ void __launch_bounds__(1024, 2)
cast_bf16_to_f32(const __nv_bfloat16* __restrict__ x, float* __restrict__ y, long long n) {
    const long long t = global_tid(), stride = global_stride();
    const long long n4 = (((uintptr_t)x & 7u) == 0 && aligned16(y)) ? n / 4 : 0;
    for (long long k = t; k < n4; k += stride) {
        const uint2 packed = reinterpret_cast<const uint2*>(x)[k];
        const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&packed.x);
        const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&packed.y);
        const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
        reinterpret_cast<float4*>(y)[k] = make_float4(a.x, a.y, b.x, b.y);
    }
    for (long long i = 4 * n4 + t; i < n; i += stride) y[i] = __bfloat162float(x[i]);
}
