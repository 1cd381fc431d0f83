// One minibatch step of an online linear probe on the GPU, in four kernels on one stream
// (`src/probe/online_gpu.rs` launches them). The same arithmetic as the host kernel
// `host::online_step` and the candle form in `OnlineProbes::update`:
//
//   running statistics:  mean, var <- the batch's (first step), else moved towards them
//   standardised rows:   z = (x - mean) * scale, scale = 1 / std (1 where std is at rounding
//                        level of the probe's largest: std <= 1e-6 max std + 1e-30)
//   logits:              z theta[0..d] + theta[d]              (theta is (d + 1) x k, bias last)
//   minibatch readings:  wrong count and mean cross-entropy, before the step
//   gradient:            z^T (softmax - onehot) / n, plus l2 theta on the weights
//   Adam:                m, v, theta in place, the bias corrections folded into step and eps
//
// Layouts are row-major f32: x [n, d], mean and var [d], theta, m and v [d + 1, k], labels [n]
// u32, g [n, k] scratch, part [blocks, n * k] scratch. `top` is the largest std as its bits
// (a non-negative float orders as its bits), zeroed before the step.
//
// Every sum runs in a fixed order (no atomic additions), so a step is deterministic.

#define THREADS 256
// Logits a thread of `online_logits` accumulates: a block covers THREADS * MAX_OUT of them.
#define MAX_OUT 16

__device__ __forceinline__ float scale_of(float va, float floor_) {
    float s = sqrtf(va);
    return s > floor_ ? 1.0f / s : 1.0f;
}

__device__ __forceinline__ float floor_of(const unsigned int* top) {
    return __uint_as_float(*top) * 1e-6f + 1e-30f;
}

// One thread per feature: the batch's mean and variance (two passes, rows in order), the
// running statistics, and the block's largest std into `top`.
extern "C" __global__ void online_stats(const float* x, int n, int d, float* mean, float* var,
                                        int seen, float mom, unsigned int* top) {
    __shared__ float sh[THREADS];
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    float s = 0.0f;
    if (j < d) {
        float inv = 1.0f / (float)n;
        float bm = 0.0f;
        for (int b = 0; b < n; ++b) bm += x[(size_t)b * d + j];
        bm *= inv;
        float bv = 0.0f;
        for (int b = 0; b < n; ++b) {
            float t = x[(size_t)b * d + j] - bm;
            bv += t * t;
        }
        bv *= inv;
        float mu = bm, va = bv;
        if (seen) {
            mu = mean[j] * (1.0f - mom) + bm * mom;
            va = var[j] * (1.0f - mom) + bv * mom;
        }
        mean[j] = mu;
        var[j] = va;
        s = sqrtf(va);
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + w]);
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicMax(top, __float_as_uint(sh[0]));
}

// Partial logits: block (bx, by) sums features [bx * feats, (bx + 1) * feats) for logits
// [by * THREADS * MAX_OUT, ...) of the n * k, in tiles of `tile` features held in shared memory
// (`tile * (n + k)` floats), and writes them to part[bx][...].
extern "C" __global__ void online_logits(const float* x, int n, int d, const float* mean,
                                         const float* var, const unsigned int* top,
                                         const float* theta, int k, int feats, int tile,
                                         float* part) {
    extern __shared__ float sm[];
    float* zs = sm;             // [tile][n]
    float* ts = sm + tile * n;  // [tile][k]
    float fl = floor_of(top);
    int outs = n * k;
    int o0 = blockIdx.y * THREADS * MAX_OUT;
    int j0 = blockIdx.x * feats;
    int j1 = min(j0 + feats, d);
    float acc[MAX_OUT];
#pragma unroll
    for (int q = 0; q < MAX_OUT; ++q) acc[q] = 0.0f;
    for (int t0 = j0; t0 < j1; t0 += tile) {
        int tl = min(tile, j1 - t0);
        for (int e = threadIdx.x; e < tl * n; e += blockDim.x) {
            int f = e % tl, b = e / tl, j = t0 + f;
            zs[f * n + b] = (x[(size_t)b * d + j] - mean[j]) * scale_of(var[j], fl);
        }
        for (int e = threadIdx.x; e < tl * k; e += blockDim.x) ts[e] = theta[(size_t)t0 * k + e];
        __syncthreads();
#pragma unroll
        for (int q = 0; q < MAX_OUT; ++q) {
            int o = o0 + threadIdx.x + q * THREADS;
            if (o < outs) {
                int b = o / k, c = o % k;
                float a = acc[q];
                for (int f = 0; f < tl; ++f) a += zs[f * n + b] * ts[f * k + c];
                acc[q] = a;
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < MAX_OUT; ++q) {
        int o = o0 + threadIdx.x + q * THREADS;
        if (o < outs) part[(size_t)blockIdx.x * outs + o] = acc[q];
    }
}

// One block: the logits (partials summed over the `blocks` feature blocks in order, plus the
// bias row) into g, then per row the softmax, the wrong count and the cross-entropy (floored
// at p = 1e-30, as the candle form), g <- (softmax - onehot) / n, and out[0], out[1] <- the
// wrong count and the mean cross-entropy.
extern "C" __global__ void online_softmax(const float* part, int blocks, int n, int d, int k,
                                          const float* theta, const unsigned int* labels,
                                          float* g, float* out) {
    __shared__ double wrong[THREADS];
    __shared__ double loss[THREADS];
    int outs = n * k;
    for (int o = threadIdx.x; o < outs; o += blockDim.x) {
        float a = theta[(size_t)d * k + o % k];
        for (int bl = 0; bl < blocks; ++bl) a += part[(size_t)bl * outs + o];
        g[o] = a;
    }
    __syncthreads();
    double w = 0.0, l = 0.0;
    float inv = 1.0f / (float)n;
    for (int b = threadIdx.x; b < n; b += blockDim.x) {
        float* r = g + (size_t)b * k;
        int best = 0;
        for (int c = 1; c < k; ++c)
            if (r[c] > r[best]) best = c;
        float top = r[best];
        float sum = 0.0f;
        for (int c = 0; c < k; ++c) sum += expf(r[c] - top);
        // A label outside the classes (the caller checks them elsewhere) reads as wrong, at
        // the loss's floor, and pulls no class up.
        unsigned int y = labels[b];
        float ce = y < (unsigned int)k ? logf(sum) - (r[y] - top) : 69.07755279f;
        l += (double)fminf(ce, 69.07755279f);  // -ln(1e-30)
        if ((unsigned int)best != y) w += 1.0;
        float is = 1.0f / sum;
        for (int c = 0; c < k; ++c) {
            float p = expf(r[c] - top) * is;
            r[c] = (p - (c == (int)y ? 1.0f : 0.0f)) * inv;
        }
    }
    wrong[threadIdx.x] = w;
    loss[threadIdx.x] = l;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            wrong[threadIdx.x] += wrong[threadIdx.x + s];
            loss[threadIdx.x] += loss[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[0] = (float)wrong[0];
        out[1] = (float)(loss[0] / (double)n);
    }
}

// One thread per parameter (row j, class c): the gradient z[:, j]^T g[:, c] (+ l2 theta on the
// weights; the bias row's z is 1) and Adam's update of m, v and theta in place.
extern "C" __global__ void online_adam(const float* x, int n, int d, const float* mean,
                                       const float* var, const unsigned int* top, const float* g,
                                       int k, float* theta, float* m, float* v, float b1,
                                       float b2, float step, float eps, float l2) {
    size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)(d + 1) * k;
    if (e >= total) return;
    int j = (int)(e / k), c = (int)(e % k);
    float grad = 0.0f;
    if (j < d) {
        float mu = mean[j], sc = scale_of(var[j], floor_of(top));
        for (int b = 0; b < n; ++b) grad += (x[(size_t)b * d + j] - mu) * sc * g[(size_t)b * k + c];
        grad += l2 * theta[e];
    } else {
        for (int b = 0; b < n; ++b) grad += g[(size_t)b * k + c];
    }
    float mm = b1 * m[e] + (1.0f - b1) * grad;
    float vv = b2 * v[e] + (1.0f - b2) * grad * grad;
    m[e] = mm;
    v[e] = vv;
    theta[e] -= step * mm / (sqrtf(vv) + eps);
}
