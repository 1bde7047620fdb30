// batchnorm.cu: BatchNorm over NCHW f32 activations, with an optional fused ReLU.
//
// Shapes: x, y, dy, dx are [N][C][HW]; M = N*HW values per channel (M < 2^31, the host's guard).
// Loop counters over M are unsigned 32-bit: the last index plus a stride (< 2^31 threads) stays
// below 2^32, so `j += stride` never wraps, where a signed int would overflow (undefined) once
// M > 2^31 - stride; and the index division in chan_index stays 32-bit (a 64-bit one is a call).
// Parameter views (f32, 2*C each):  affine = [gamma (C) | beta (C)],  running = [mean (C) | var (C)],
// saved = [mean (C) | invstd (C)],   d_affine = [d_gamma (C) | d_beta (C)].
//
// The arithmetic follows the CPU reference (src/backend/cpu/batchnorm.rs) operation by operation,
// in f64, rounding to f32 once per output, so GPU and CPU agree to the last bit up to the f64
// summation order of the statistics (in practice: equal, or 1 ulp apart).
//
// Training forward statistics. Per channel, with a shift K = x[n=0][c][0] (a sample of the
// channel, so the one-pass sums do not cancel when |mean| >> std):
//     s1 = sum (x - K),   s2 = sum (x - K)^2          accumulated in f64 (each f32 x is exact in f64)
//     mean = K + s1/M,    var = max(0, s2/M - (s1/M)^2)        (biased)
// (the CPU reference takes two passes in f64; both are exact to a few f64 ulps.) Then in f64:
//     invstd  = 1/sqrt(var + eps);   saved = [ (f32) mean | (f32) invstd ]
//     running = (1-m)*running + [ m*mean | m*var*unbias ],  unbias = M/(M-1) (1 when M = 1)
//     y = (f32) relu?( (x - mean)*(gamma*invstd) + beta )       relu: o > 0 ? o : 0
// Eval forward: the same map with mean = running_mean, invstd = 1/sqrt(running_var + eps).
// Backward of the training forward, with mu, is = the saved f32 values widened to f64:
//     dy' = (relu && y <= 0) ? 0 : dy
//     d_beta = sum dy',   d_gamma = sum (dy'*(x - mu))*is             (f64)
//     dx = (f32) (gamma*is) * ((dy' - d_beta/M) - x_hat*(d_gamma/M)),  x_hat = (x - mu)*is
// which is the contract dx = gamma*invstd/M*(M*dy' - d_beta - x_hat*d_gamma) without the
// multiplication by M. Sums are reduced by fixed shuffle trees and partials are combined in order:
// results are deterministic for a given launch configuration.
//
// Two ways to run each pass (same numbers up to the f64 summation order):
//  (a) fused, one block per channel (grid = C): one launch. With `cache` != 0 the block keeps its
//      channel slice in dynamic shared memory, so x (and dy) come from DRAM once:
//        forward  dynamic smem = M*4 bytes,  8 B/elem (read x, write y)
//        backward dynamic smem = M*8 bytes, 16 B/elem with relu (read x, y, dy, write dx), 12 without
//      Above 48 KiB the host must raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (227 KiB on
//      H100/H200, 163 KiB on A100). With cache = 0 the second read is served mostly by L2.
//      Parallelism is only C blocks: good for small M (late stages), poor for C = 16, M = 131072.
//  (b) split, grid (S, C): a stats kernel writes per-block partial f64 sums to a workspace
//      `partials` [C][S][2] doubles; an apply kernel (any grid (S', C)) reduces the S partials of
//      its channel in order, and its blocks with blockIdx.x == 0 write saved/running (or d_affine).
//      Forward 12 B/elem (read x twice, write y); backward 28 B/elem with relu, 20 without.
//      Two launches, any parallelism. Pick S so that S*C is about 2-4x the SM count.
// Eval forward: one elementwise pass, 8 B/elem, grid (S, C).
//
// Launch: block 256 for the split and eval kernels, block 1024 for the fused kernels. The f64
// per-element math needs registers: bn_bwd_partial is bounded to 256 threads at 40 registers and
// bn_bwd_apply to 256 threads at 64 registers (block <= 256 for both), so that neither spills.
// Vector path (float4) when HW % 4 == 0 and the pointers are 16-byte aligned; scalar otherwise.
// No output may alias an input.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// Per-element pieces
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void acc_shifted(double (&a)[2], float v, double K) {
    const double d = (double)v - K;
    a[0] += d;
    a[1] += d * d;
}

// The per-channel affine map y = relu?((x - mean)*scale + shift), in f64.
struct BnMap {
    double mean, scale, shift;
};

__device__ __forceinline__ float bn_map(float v, const BnMap& m, int relu) {
    double o = ((double)v - m.mean) * m.scale + m.shift;
    if (relu) o = o > 0.0 ? o : 0.0;
    return (float)o;
}

__device__ __forceinline__ float4 bn_map4(float4 v, const BnMap& m, int relu) {
    return make_float4(bn_map(v.x, m, relu), bn_map(v.y, m, relu), bn_map(v.z, m, relu), bn_map(v.w, m, relu));
}

// dy' of the contract: 0 where the ReLU was inactive (y <= 0), as the CPU reference.
__device__ __forceinline__ float relu_mask(float dy, float y) { return y <= 0.f ? 0.f : dy; }

__device__ __forceinline__ float4 relu_mask4(float4 d, float4 y) {
    return make_float4(relu_mask(d.x, y.x), relu_mask(d.y, y.y), relu_mask(d.z, y.z), relu_mask(d.w, y.w));
}

// Backward sums: a[0] += dy', a[1] += (dy' * (x - mu)) * is.
__device__ __forceinline__ void acc_bwd(double (&a)[2], float xv, float dyp, double mu, double is) {
    const double d = (double)dyp;
    a[0] += d;
    a[1] += d * ((double)xv - mu) * is;
}

struct BnBwdCoef {
    double mu, is, k, dbeta_m, dgamma_m;  // k = gamma*is, d*_m = d*/M
};

__device__ __forceinline__ float bn_dx(float xv, float dyp, const BnBwdCoef& q) {
    const double xhat = ((double)xv - q.mu) * q.is;
    return (float)(q.k * (((double)dyp - q.dbeta_m) - xhat * q.dgamma_m));
}

__device__ __forceinline__ float4 bn_dx4(float4 xv, float4 d, const BnBwdCoef& q) {
    return make_float4(bn_dx(xv.x, d.x, q), bn_dx(xv.y, d.y, q), bn_dx(xv.z, d.z, q), bn_dx(xv.w, d.w, q));
}

// ---------------------------------------------------------------------------------------------
// Per-channel finalisation (shared by the fused and split kernels)
// ---------------------------------------------------------------------------------------------

// From the shifted sums: the channel's map; if `writer`, writes saved and updates running.
__device__ __forceinline__ BnMap bn_finalize(const double (&a)[2], double K, unsigned int M, int C, int c, double eps,
                                             double momentum, bool writer, const float* __restrict__ affine,
                                             float* __restrict__ running, float* __restrict__ saved) {
    const double m1 = a[0] / (double)M;
    const double mean = K + m1;
    double var = a[1] / (double)M - m1 * m1;
    if (var < 0.0) var = 0.0;
    const double invstd = 1.0 / sqrt(var + eps);
    if (writer) {
        saved[c] = (float)mean;
        saved[C + c] = (float)invstd;
        const double unbias = M > 1 ? (double)M / (double)(M - 1) : 1.0;
        running[c] = (float)((1.0 - momentum) * (double)running[c] + momentum * mean);
        running[C + c] = (float)((1.0 - momentum) * (double)running[C + c] + momentum * var * unbias);
    }
    BnMap m;
    m.mean = mean;
    m.scale = (double)affine[c] * invstd;
    m.shift = (double)affine[C + c];
    return m;
}

// From the backward sums: the dx coefficients; if `writer`, writes d_affine = [d_gamma | d_beta].
__device__ __forceinline__ BnBwdCoef bn_bwd_coef(const double (&a)[2], unsigned int M, int C, int c, bool writer,
                                                 const float* __restrict__ affine, const float* __restrict__ saved,
                                                 float* __restrict__ d_affine) {
    if (writer) {
        d_affine[c] = (float)a[1];
        d_affine[C + c] = (float)a[0];
    }
    BnBwdCoef q;
    q.mu = (double)saved[c];
    q.is = (double)saved[C + c];
    q.k = (double)affine[c] * q.is;
    q.dbeta_m = a[0] / (double)M;
    q.dgamma_m = a[1] / (double)M;
    return q;
}

// Reduce the S partial pairs of channel c, in order (lane-strided, then a fixed shuffle tree), and
// return them to every thread of the block.
__device__ __forceinline__ void bn_reduce_partials(const double* __restrict__ partials, int S, int c,
                                                   double (&a)[2]) {
    __shared__ double sh[2];
    if (threadIdx.x < 32) {
        double a0 = 0.0, a1 = 0.0;
        const double* p = partials + (long long)c * S * 2;
        for (int s = threadIdx.x; s < S; s += 32) {
            a0 += p[2 * s];
            a1 += p[2 * s + 1];
        }
        a0 = warp_sum(a0);
        a1 = warp_sum(a1);
        if (threadIdx.x == 0) {
            sh[0] = a0;
            sh[1] = a1;
        }
    }
    __syncthreads();
    a[0] = sh[0];
    a[1] = sh[1];
}

__device__ __forceinline__ bool bn_vec_ok(int HW, const void* p, const void* q, const void* r) {
    return (HW & 3) == 0 && aligned16(p) && (q == nullptr || aligned16(q)) && (r == nullptr || aligned16(r));
}

// ---------------------------------------------------------------------------------------------
// Training forward, fused: grid = C, block <= 1024, dynamic smem = cache ? M*4 : 0 bytes
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(1024, 2)
bn_fwd_train_fused(const float* __restrict__ x, const float* __restrict__ affine,
                   float* __restrict__ running, float* __restrict__ saved, float* __restrict__ y,
                   int N, int C, int HW, double eps, double momentum, int relu, int cache) {
    ILR_DYNAMIC_SMEM(float4, bn_cache4);
    float* bn_cache = reinterpret_cast<float*>(bn_cache4);
    __shared__ double red[32 * 2];
    const int c = blockIdx.x;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    const double K = (double)x[(long long)c * HW];
    const bool vec = bn_vec_ok(HW, x, y, nullptr);
    double a[2] = {0.0, 0.0};

    if (vec) {
        for (unsigned int g = threadIdx.x; g < M / 4; g += blockDim.x) {
            const float4 v = ld4(x, chan_index(4u * g, C, c, HW));
            if (cache) bn_cache4[g] = v;
            acc_shifted(a, v.x, K); acc_shifted(a, v.y, K); acc_shifted(a, v.z, K); acc_shifted(a, v.w, K);
        }
    } else {
        for (unsigned int j = threadIdx.x; j < M; j += blockDim.x) {
            const float v = x[chan_index(j, C, c, HW)];
            if (cache) bn_cache[j] = v;
            acc_shifted(a, v, K);
        }
    }
    block_sum_n<double, 2>(a, red);
    const BnMap m = bn_finalize(a, K, M, C, c, eps, momentum, threadIdx.x == 0, affine, running, saved);

    // Each thread reads back exactly the cache entries it wrote: no barrier needed.
    if (vec) {
        for (unsigned int g = threadIdx.x; g < M / 4; g += blockDim.x) {
            const long long idx = chan_index(4u * g, C, c, HW);
            st4(y, idx, bn_map4(cache ? bn_cache4[g] : ld4(x, idx), m, relu));
        }
    } else {
        for (unsigned int j = threadIdx.x; j < M; j += blockDim.x) {
            const long long idx = chan_index(j, C, c, HW);
            y[idx] = bn_map(cache ? bn_cache[j] : x[idx], m, relu);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Training forward, split: stats (grid (S, C)) then apply (grid (S', C))
// ---------------------------------------------------------------------------------------------

// partials[(c*S + s)*2 + {0,1}] = this block's shifted sums {sum(x-K), sum(x-K)^2}, S = gridDim.x.
// Reads 4 B/elem.
extern "C" __global__ void __launch_bounds__(1024, 2)
bn_fwd_stats_partial(const float* __restrict__ x, double* __restrict__ partials, int N, int C, int HW) {
    __shared__ double red[32 * 2];
    const int c = blockIdx.y;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    const double K = (double)x[(long long)c * HW];
    const unsigned int t0 = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int stride = gridDim.x * blockDim.x;
    double a[2] = {0.0, 0.0};
    if (bn_vec_ok(HW, x, nullptr, nullptr)) {
        for (unsigned int g = t0; g < M / 4; g += stride) {
            const float4 v = ld4(x, chan_index(4u * g, C, c, HW));
            acc_shifted(a, v.x, K); acc_shifted(a, v.y, K); acc_shifted(a, v.z, K); acc_shifted(a, v.w, K);
        }
    } else {
        for (unsigned int j = t0; j < M; j += stride) acc_shifted(a, x[chan_index(j, C, c, HW)], K);
    }
    block_sum_n<double, 2>(a, red);
    if (threadIdx.x == 0) {
        double* p = partials + ((long long)c * gridDim.x + blockIdx.x) * 2;
        p[0] = a[0];
        p[1] = a[1];
    }
}

// Reduces the S partials of its channel (written by bn_fwd_stats_partial with gridDim.x = S),
// then y = map(x). Blocks with blockIdx.x == 0 write saved and update running.
// Reads x, writes y: 8 B/elem (plus 16*S bytes per block).
extern "C" __global__ void __launch_bounds__(1024, 2)
bn_fwd_apply(const float* __restrict__ x, const float* __restrict__ affine,
             const double* __restrict__ partials, int S, float* __restrict__ running,
             float* __restrict__ saved, float* __restrict__ y, int N, int C, int HW, double eps,
             double momentum, int relu) {
    const int c = blockIdx.y;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    const double K = (double)x[(long long)c * HW];
    double a[2];
    bn_reduce_partials(partials, S, c, a);
    const BnMap m = bn_finalize(a, K, M, C, c, eps, momentum, blockIdx.x == 0 && threadIdx.x == 0, affine,
                                running, saved);
    const unsigned int t0 = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int stride = gridDim.x * blockDim.x;
    if (bn_vec_ok(HW, x, y, nullptr)) {
        for (unsigned int g = t0; g < M / 4; g += stride) {
            const long long idx = chan_index(4u * g, C, c, HW);
            st4(y, idx, bn_map4(ld4(x, idx), m, relu));
        }
    } else {
        for (unsigned int j = t0; j < M; j += stride) {
            const long long idx = chan_index(j, C, c, HW);
            y[idx] = bn_map(x[idx], m, relu);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Eval forward: grid (S, C). Reads x, writes y: 8 B/elem.
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(1024, 2)
bn_fwd_eval(const float* __restrict__ x, const float* __restrict__ affine,
            const float* __restrict__ running, float* __restrict__ y, int N, int C, int HW, double eps,
            int relu) {
    const int c = blockIdx.y;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    BnMap m;
    m.mean = (double)running[c];
    m.scale = (double)affine[c] * (1.0 / sqrt((double)running[C + c] + eps));
    m.shift = (double)affine[C + c];
    const unsigned int t0 = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int stride = gridDim.x * blockDim.x;
    if (bn_vec_ok(HW, x, y, nullptr)) {
        for (unsigned int g = t0; g < M / 4; g += stride) {
            const long long idx = chan_index(4u * g, C, c, HW);
            st4(y, idx, bn_map4(ld4(x, idx), m, relu));
        }
    } else {
        for (unsigned int j = t0; j < M; j += stride) {
            const long long idx = chan_index(j, C, c, HW);
            y[idx] = bn_map(x[idx], m, relu);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// Fused backward: grid = C, block <= 1024, dynamic smem = cache ? M*8 : 0 bytes.
// `y` is the forward output, used only for the ReLU mask: pass 0 when the forward had no ReLU.
// Writes dx and d_affine (both overwritten).
extern "C" __global__ void __launch_bounds__(1024, 1)
bn_bwd_fused(const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ dy,
             const float* __restrict__ affine, const float* __restrict__ saved, float* __restrict__ dx,
             float* __restrict__ d_affine, int N, int C, int HW, int cache) {
    ILR_DYNAMIC_SMEM(float4, bn_cache4);
    __shared__ double red[32 * 2];
    const int c = blockIdx.x;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    const double mu = (double)saved[c], is = (double)saved[C + c];
    const bool vec = bn_vec_ok(HW, x, dy, dx) && (y == nullptr || aligned16(y));
    double a[2] = {0.0, 0.0};
    // cache layout: x in [0, M), dy' in [M, 2M) floats (M % 4 == 0 on the vector path).
    float* cx = reinterpret_cast<float*>(bn_cache4);
    float* cd = cx + M;

    if (vec) {
        for (unsigned int g = threadIdx.x; g < M / 4; g += blockDim.x) {
            const long long idx = chan_index(4u * g, C, c, HW);
            const float4 xv = ld4(x, idx);
            float4 d = ld4(dy, idx);
            if (y) d = relu_mask4(d, ld4(y, idx));
            if (cache) {
                reinterpret_cast<float4*>(cx)[g] = xv;
                reinterpret_cast<float4*>(cd)[g] = d;
            }
            acc_bwd(a, xv.x, d.x, mu, is); acc_bwd(a, xv.y, d.y, mu, is);
            acc_bwd(a, xv.z, d.z, mu, is); acc_bwd(a, xv.w, d.w, mu, is);
        }
    } else {
        for (unsigned int j = threadIdx.x; j < M; j += blockDim.x) {
            const long long idx = chan_index(j, C, c, HW);
            const float xv = x[idx];
            const float d = y ? relu_mask(dy[idx], y[idx]) : dy[idx];
            if (cache) {
                cx[j] = xv;
                cd[j] = d;
            }
            acc_bwd(a, xv, d, mu, is);
        }
    }
    block_sum_n<double, 2>(a, red);
    const BnBwdCoef q = bn_bwd_coef(a, M, C, c, threadIdx.x == 0, affine, saved, d_affine);

    if (vec) {
        for (unsigned int g = threadIdx.x; g < M / 4; g += blockDim.x) {
            const long long idx = chan_index(4u * g, C, c, HW);
            float4 xv, d;
            if (cache) {
                xv = reinterpret_cast<const float4*>(cx)[g];
                d = reinterpret_cast<const float4*>(cd)[g];
            } else {
                xv = ld4(x, idx);
                d = ld4(dy, idx);
                if (y) d = relu_mask4(d, ld4(y, idx));
            }
            st4(dx, idx, bn_dx4(xv, d, q));
        }
    } else {
        for (unsigned int j = threadIdx.x; j < M; j += blockDim.x) {
            const long long idx = chan_index(j, C, c, HW);
            float xv, d;
            if (cache) {
                xv = cx[j];
                d = cd[j];
            } else {
                xv = x[idx];
                d = y ? relu_mask(dy[idx], y[idx]) : dy[idx];
            }
            dx[idx] = bn_dx(xv, d, q);
        }
    }
}

// Split backward, stage 1: grid (S, C), block <= 256. partials[(c*S + s)*2 + {0,1}] = {sum dy', sum dy'*x_hat}.
// Reads x, dy (and y): 12 B/elem with relu, 8 without.
extern "C" __global__ void __launch_bounds__(256, 6)
bn_bwd_partial(const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ dy,
               const float* __restrict__ saved, double* __restrict__ partials, int N, int C, int HW) {
    __shared__ double red[32 * 2];
    const int c = blockIdx.y;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    const double mu = (double)saved[c], is = (double)saved[C + c];
    const unsigned int t0 = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int stride = gridDim.x * blockDim.x;
    double a[2] = {0.0, 0.0};
    if (bn_vec_ok(HW, x, dy, y)) {
        for (unsigned int g = t0; g < M / 4; g += stride) {
            const long long idx = chan_index(4u * g, C, c, HW);
            const float4 xv = ld4(x, idx);
            float4 d = ld4(dy, idx);
            if (y) d = relu_mask4(d, ld4(y, idx));
            acc_bwd(a, xv.x, d.x, mu, is); acc_bwd(a, xv.y, d.y, mu, is);
            acc_bwd(a, xv.z, d.z, mu, is); acc_bwd(a, xv.w, d.w, mu, is);
        }
    } else {
        for (unsigned int j = t0; j < M; j += stride) {
            const long long idx = chan_index(j, C, c, HW);
            acc_bwd(a, x[idx], y ? relu_mask(dy[idx], y[idx]) : dy[idx], mu, is);
        }
    }
    block_sum_n<double, 2>(a, red);
    if (threadIdx.x == 0) {
        double* p = partials + ((long long)c * gridDim.x + blockIdx.x) * 2;
        p[0] = a[0];
        p[1] = a[1];
    }
}

// Split backward, stage 2: grid (S', C), block <= 256. Reduces the S partials of its channel in
// order; blocks with blockIdx.x == 0 write d_affine; all write dx. Reads x, dy (and y), writes dx:
// 16 B/elem with relu, 12 without.
extern "C" __global__ void __launch_bounds__(256, 4)
bn_bwd_apply(const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ dy,
             const float* __restrict__ affine, const float* __restrict__ saved,
             const double* __restrict__ partials, int S, float* __restrict__ dx,
             float* __restrict__ d_affine, int N, int C, int HW) {
    const int c = blockIdx.y;
    const unsigned int M = (unsigned int)N * (unsigned int)HW;
    double a[2];
    bn_reduce_partials(partials, S, c, a);
    const BnBwdCoef q = bn_bwd_coef(a, M, C, c, blockIdx.x == 0 && threadIdx.x == 0, affine, saved, d_affine);
    const unsigned int t0 = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int stride = gridDim.x * blockDim.x;
    if (bn_vec_ok(HW, x, dy, dx) && (y == nullptr || aligned16(y))) {
        for (unsigned int g = t0; g < M / 4; g += stride) {
            const long long idx = chan_index(4u * g, C, c, HW);
            float4 d = ld4(dy, idx);
            if (y) d = relu_mask4(d, ld4(y, idx));
            st4(dx, idx, bn_dx4(ld4(x, idx), d, q));
        }
    } else {
        for (unsigned int j = t0; j < M; j += stride) {
            const long long idx = chan_index(j, C, c, HW);
            dx[idx] = bn_dx(x[idx], y ? relu_mask(dy[idx], y[idx]) : dy[idx], q);
        }
    }
}
