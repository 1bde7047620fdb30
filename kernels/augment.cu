// augment.cu: build a training batch on the GPU from a dataset resident in device memory, with the
// semantics of the CPU path (src/data/augment.rs: torchvision RandomCrop(padding) +
// RandomHorizontalFlip + Normalize), bit for bit.
//
// data:   u8 images, [num_images][C][H][W] (CHW per image, as in the CIFAR binary files)
// idx:    [n] u32 image index of each batch sample
// aug:    [n][3] i32 per sample: {dy, dx, flip}, dy and dx in [-pad, pad] (the crop's shift relative
//         to the unpadded image, as the CPU's `Augment`), flip != 0 for a horizontal flip. Drawn on
//         the host by the same code that drives the CPU path, so both produce identical batches.
//         Nullable: 0 means no augmentation (dy = dx = 0, no flip), for evaluation.
// table:  [C][256] f32 normalisation lookup table, table[c*256 + v] = (v/255 - mean_c)/std_c
//         computed on the host (the CPU's `NormTable`), so the normalisation is bit-identical.
// out:    [n][C][H][W] f32.
//
// Math (crop, then mirror the crop):
//     xx = flip ? W-1-j : j;   r = i + dy;   s = xx + dx
//     v  = (0 <= r < H && 0 <= s < W) ? data[idx[b]][c][r][s] : 0       (padding is a raw 0 pixel)
//     out[b][c][i][j] = table[c*256 + v]
// Labels (both nullable): labels_out[b] = labels_all[idx[b]].
// Bytes: ~1 B read (plus a cached table load) + 4 B written per output element (+ 8 B per label).
// Grid-stride, one thread per output element; block 256. Requires n*C*H*W < 2^31 (32-bit index
// arithmetic: 64-bit divisions cost a call and spill).

#include "common.cuh"

extern "C" __global__ void __launch_bounds__(1024, 2)
augment_batch(const unsigned char* __restrict__ data, const unsigned int* __restrict__ idx,
              const int* __restrict__ aug, const float* __restrict__ table, float* __restrict__ out, int n,
              int C, int H, int W, const unsigned int* __restrict__ labels_all,
              unsigned int* __restrict__ labels_out) {
    const unsigned int total = (unsigned int)n * C * H * W;
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    for (unsigned int o = t; o < total; o += stride) {
        unsigned int q = o;
        const int j = (int)(q % W); q /= W;
        const int i = (int)(q % H); q /= H;
        const int c = (int)(q % C);
        const int b = (int)(q / C);
        int dy = 0, dx = 0, flip = 0;
        if (aug) {
            dy = aug[3 * b];
            dx = aug[3 * b + 1];
            flip = aug[3 * b + 2];
        }
        const int r = i + dy;
        const int s = (flip ? W - 1 - j : j) + dx;
        unsigned int v = 0;
        if (r >= 0 && r < H && s >= 0 && s < W)
            v = data[(((long long)idx[b] * C + c) * H + r) * W + s];
        out[o] = table[c * 256 + v];
    }
    if (labels_out != nullptr && labels_all != nullptr)
        for (unsigned int b = t; b < (unsigned int)n; b += stride) labels_out[b] = labels_all[idx[b]];
}
