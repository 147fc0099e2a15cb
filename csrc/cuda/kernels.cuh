// CUDA kernels of the engine. The per-sample math (eigen route, QR + one-sided Jacobi, sign
// convention, assignment) is the header-only core in csrc/core, run by one GPU thread per sample,
// so the CPU and GPU engines share one source of truth. Only the Gram matrix has its own kernels,
// because it is the one step that touches all of J and has to run at memory bandwidth.
#pragma once

#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../core/sample.hpp"

namespace fastdto {
namespace cuda {

constexpr int kGramThreads = 128;   // register-tiled Gram, d <= kSmallGramDim
constexpr int kTiledThreads = 256;  // shared-memory tiled Gram, any d <= kMaxDim
constexpr int kSmallGramDim = 16;
constexpr int kSampleThreads = 64;  // one thread per sample (finish, permutation kernels)
constexpr int kSvdThreads = 32;     // one thread per slot of the SVD-path pool

// ------------------------------------------------------------------------------------------------
// Gram G = J^T J, float64 accumulation, one block per sample.
//
// J is streamed through shared memory in tiles of rows, double-buffered with cp.async so the next
// tile is in flight while the current one is multiplied; every element of J is read exactly once.
// Two load orders keep the global reads coalesced for the common layouts:
//   k-fast (sd == 1): consecutive threads walk along rows; a contiguous (N, n, d) tensor is read as
//                     one flat stream;
//   r-fast (other):   consecutive threads walk down a column; coalesced when sn == 1, i.e. the
//                     (B, n, k) views of (k, B, n) buffers that fastdto.jacobian produces.
// Shared-memory rows have an odd pitch, so the transposing stores and the row reads are free of
// bank conflicts.
// ------------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void load_rows_async(T* dst, int pitch, const T* __restrict__ Jb, int r0,
                                                int m, int d, long long sn, long long sd, bool kfast) {
  const int total = m * d;
  if (kfast) {
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
      const int r = e / d, k = e - r * d;
      __pipeline_memcpy_async(dst + r * pitch + k, Jb + (long long)(r0 + r) * sn + k, sizeof(T));
    }
  } else {
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
      const int k = e / m, r = e - k * m;
      __pipeline_memcpy_async(dst + r * pitch + k, Jb + (long long)(r0 + r) * sn + (long long)k * sd,
                              sizeof(T));
    }
  }
}

// Register tiling for small d: every thread keeps partial sums of the upper-triangle entries
// (i <= j) it owns in registers and multiplies whole rows out of shared memory (d loads per
// d(d+1)/2 fused multiply-adds). For d > 12 the pairs are split into two slices owned by different
// warps, so that no thread holds more than 78 (d = 12) accumulators, 96 with the padding.
template <int D>
struct SmallGram {
  static constexpr int P = D * (D + 1) / 2;     // upper-triangle entries
  static constexpr int S = D <= 12 ? 1 : 2;     // pair slices (warp-uniform)
  static constexpr int PS = (P + S - 1) / S;    // pairs per slice
  static constexpr int PP = (PS + 31) / 32 * 32;  // padded to a multiple of the warp size
  static constexpr int DP = D | 1;              // odd shared-memory row pitch
};

// acc[p - LO] += x_i x_j for the pairs p = index(i, j) in [LO, LO + PS); all indices are
// compile-time constants after unrolling, so acc and x stay in registers.
template <int D, int LO, int PS, int PP>
__device__ __forceinline__ void accumulate_pairs(double (&acc)[PP], const double (&x)[D]) {
#pragma unroll
  for (int i = 0; i < D; ++i) {
#pragma unroll
    for (int j = i; j < D; ++j) {
      const int p = i * D - i * (i - 1) / 2 + (j - i);
      if (p >= LO && p < LO + PS) acc[p - LO] = fma(x[i], x[j], acc[p - LO]);
    }
  }
}

// Warp reduce-scatter of PP values (PP a multiple of 32) in PP * 31/32 shuffles instead of
// 5 * PP: at each halving step a lane keeps one half and receives its partner's copy of it. On
// return lane L holds the warp sums of entries [L * PP/32, (L + 1) * PP/32) in v[0, PP/32).
template <int PP, int STEP>
__device__ __forceinline__ void reduce_scatter_step(double (&v)[PP], int lane) {
  if constexpr (STEP < 5) {
    constexpr int mask = 16 >> STEP;
    constexpr int half = PP >> (STEP + 1);
    const bool upper = (lane & mask) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const double send = upper ? v[i] : v[i + half];
      const double keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
    }
    reduce_scatter_step<PP, STEP + 1>(v, lane);
  }
}

template <int PP>
__device__ __forceinline__ void warp_reduce_scatter(double (&v)[PP], int lane) {
  static_assert(PP % 32 == 0, "pad to a multiple of the warp size");
  reduce_scatter_step<PP, 0>(v, lane);
}

// Writes the upper-triangle entry with pair index p, and its mirror, to the row-major G.
__device__ __forceinline__ void store_pair(double* G, int d, int p, double value) {
  int i = 0;
  while (p >= d - i) {
    p -= d - i;
    ++i;
  }
  const int j = i + p;
  G[i * d + j] = value;
  G[j * d + i] = value;
}

template <typename T, int D>
__global__ void __launch_bounds__(kGramThreads)
    gram_small_kernel(const T* __restrict__ J, long long sN, long long sn, long long sd, int n,
                      bool kfast, double* __restrict__ G) {
  using Sh = SmallGram<D>;
  constexpr int TR = 1024 / (int)sizeof(T);  // rows per tile: 256 (float) or 128 (double)
  constexpr int W = kGramThreads / 32;
  constexpr int RP = kGramThreads / Sh::S;  // rows in flight per slice
  constexpr int PL = Sh::PP / 32;
  __shared__ __align__(16) T tile[2][TR * Sh::DP];
  __shared__ double red[W][Sh::PP];

  const long long b = blockIdx.x;
  const T* Jb = J + b * sN;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int slice = warp % Sh::S;
  const int row0 = (warp / Sh::S) * 32 + lane;

  double acc[Sh::PP];
#pragma unroll
  for (int p = 0; p < Sh::PP; ++p) acc[p] = 0.0;

  const int ntiles = (n + TR - 1) / TR;
  load_rows_async(tile[0], Sh::DP, Jb, 0, min(TR, n), D, sn, sd, kfast);
  __pipeline_commit();
  for (int t = 0; t < ntiles; ++t) {
    if (t + 1 < ntiles) {
      const int r1 = (t + 1) * TR;
      load_rows_async(tile[(t + 1) & 1], Sh::DP, Jb, r1, min(TR, n - r1), D, sn, sd, kfast);
    }
    __pipeline_commit();  // possibly empty: keeps "all but the newest group" meaning tile t
    __pipeline_wait_prior(1);
    __syncthreads();
    const T* s = tile[t & 1];
    const int m = min(TR, n - t * TR);
    for (int r = row0; r < m; r += RP) {
      double x[D];
#pragma unroll
      for (int k = 0; k < D; ++k) x[k] = (double)s[r * Sh::DP + k];
      if (Sh::S == 1 || slice == 0) accumulate_pairs<D, 0, Sh::PS>(acc, x);
      else accumulate_pairs<D, Sh::PS, Sh::PS>(acc, x);
    }
    __syncthreads();  // the buffer just read is refilled in the next iteration
  }

  warp_reduce_scatter(acc, lane);
#pragma unroll
  for (int i = 0; i < PL; ++i) red[warp][lane * PL + i] = acc[i];
  __syncthreads();
  double* Gb = G + b * (D * D);
  for (int p = threadIdx.x; p < Sh::P; p += kGramThreads) {
    const int s = p / Sh::PS, q = p - s * Sh::PS;
    double sum = 0.0;
    for (int w = s; w < W; w += Sh::S) sum += red[w][q];
    store_pair(Gb, D, p, sum);
  }
}

// Shared-memory tiled fallback for any d <= 64: G is cut into 4 x 4 tiles (upper triangle only);
// each thread owns one tile for one group of rows, reading 8 values per row for 16 multiply-adds.
// Columns past d are zero in shared memory, so ragged edge tiles need no branches.
template <typename T>
__global__ void __launch_bounds__(kTiledThreads)
    gram_tiled_kernel(const T* __restrict__ J, long long sN, long long sn, long long sd, int n, int d,
                      bool kfast, double* __restrict__ G) {
  constexpr int TR = 256 / (int)sizeof(T);  // rows per tile: 64 (float) or 32 (double)
  constexpr int PITCH = kMaxDim + 1;
  constexpr int kTileElems = 2 * TR * PITCH;
  constexpr int kSmemBytes = kTileElems * (int)sizeof(T);
  static_assert(kSmemBytes >= kTiledThreads * 16 * (int)sizeof(double),
                "the reduction reuses the tile buffers");
  __shared__ __align__(16) unsigned char smem[kSmemBytes];
  T* tiles = reinterpret_cast<T*>(smem);

  const long long b = blockIdx.x;
  const T* Jb = J + b * sN;
  const int tid = threadIdx.x;
  const int nt = (d + 3) / 4, ntile = nt * (nt + 1) / 2;
  const int groups = max(1, kTiledThreads / ntile);
  const int tile_id = tid % ntile, group = tid / ntile;
  const bool active = group < groups;
  int bi = 0, rem = tile_id;
  while (rem >= nt - bi) {
    rem -= nt - bi;
    ++bi;
  }
  const int bj = bi + rem;

  for (int e = tid; e < kTileElems; e += kTiledThreads) tiles[e] = T(0);
  __syncthreads();

  double acc[4][4];
#pragma unroll
  for (int u = 0; u < 4; ++u)
#pragma unroll
    for (int v = 0; v < 4; ++v) acc[u][v] = 0.0;

  const int ntiles = (n + TR - 1) / TR;
  load_rows_async(tiles, PITCH, Jb, 0, min(TR, n), d, sn, sd, kfast);
  __pipeline_commit();
  for (int t = 0; t < ntiles; ++t) {
    if (t + 1 < ntiles) {
      const int r1 = (t + 1) * TR;
      load_rows_async(tiles + ((t + 1) & 1) * TR * PITCH, PITCH, Jb, r1, min(TR, n - r1), d, sn, sd,
                      kfast);
    }
    __pipeline_commit();
    __pipeline_wait_prior(1);
    __syncthreads();
    const T* s = tiles + (t & 1) * TR * PITCH;
    const int m = min(TR, n - t * TR);
    if (active) {
      for (int r = group; r < m; r += groups) {
        double a[4], c[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          a[u] = (double)s[r * PITCH + bi * 4 + u];
          c[u] = (double)s[r * PITCH + bj * 4 + u];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int v = 0; v < 4; ++v) acc[u][v] = fma(a[u], c[v], acc[u][v]);
      }
    }
    __syncthreads();
  }
  __pipeline_wait_prior(0);
  __syncthreads();

  double* red = reinterpret_cast<double*>(smem);  // [groups][ntile][16]
  if (active) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int v = 0; v < 4; ++v) red[(group * ntile + tile_id) * 16 + u * 4 + v] = acc[u][v];
  }
  __syncthreads();
  double* Gb = G + b * d * d;
  for (int e = tid; e < ntile * 16; e += kTiledThreads) {
    const int t2 = e >> 4, uv = e & 15;
    double sum = 0.0;
    for (int g = 0; g < groups; ++g) sum += red[(g * ntile + t2) * 16 + uv];
    int ti = 0, r2 = t2;
    while (r2 >= nt - ti) {
      r2 -= nt - ti;
      ++ti;
    }
    const int i = ti * 4 + (uv >> 2), j = (ti + r2) * 4 + (uv & 3);
    if (i < d && j < d && i <= j) {
      Gb[i * d + j] = sum;
      Gb[j * d + i] = sum;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Per-sample kernels: one thread per sample runs the shared core code, exactly as the CPU driver
// does. G and V live in global scratch (row-major per sample, as on the CPU), not in local memory:
// the driver reserves local memory for every thread the GPU can hold, so large per-thread arrays
// would cost gigabytes. MaxD (16, 32 or 64) sizes the few small local arrays, and the assignment's
// d x d cost table goes to scratch that is dead by then (G after the eigen route, R after the SVD).
// That leaves local frames (ptxas, sm_90) of 0.7-1.1 KB (d <= 16), 1.4-2.1 KB (d <= 32) and 2.7-4.0 KB
// (d <= 64). The driver raises the stack limit to the largest frame launched and keeps it: after a
// d > 32 call, about 4 KB for every thread the GPU can hold (about 1.1 GB on an H100).
// ------------------------------------------------------------------------------------------------

template <int MaxD>
__device__ __forceinline__ void write_sample(long long b, double* V, const double* sigma, int d,
                                             const SampleOptions& opt, const DtoOutputs& out,
                                             uint8_t flags, double* cost_work) {
  int perm[MaxD];
  flags |= finish_sample<MaxD, false>(V, sigma, d, opt, perm, out.signs + b * d, out.distance + b,
                                      cost_work);
  out.flags[b] = flags;
  store_sample(out, b, sigma, perm, d);
}

// Eigen route for every sample. Samples whose Gram is out of range or too ill-conditioned are
// appended to svd_list (through an atomic counter) and finished by svd_kernel; all others are
// finished here.
template <int MaxD>
__global__ void __launch_bounds__(kSampleThreads)
    finish_kernel(int count, int d, double* __restrict__ G, double* __restrict__ Vw, SampleOptions opt,
                  DtoOutputs out, int* __restrict__ svd_list, int* __restrict__ svd_count) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= count) return;
  const long long dd = (long long)d * d;
  double* Gb = G + b * dd;
  double* Vb = Vw + b * dd;
  double sigma[MaxD];
  if (eigen_from_gram(Gb, d, opt, sigma, Vb)) {  // also G out of range, NaN included
    svd_list[atomicAdd(svd_count, 1)] = b;
    return;
  }
  write_sample<MaxD>(b, Vb, sigma, d, opt, out, 0, Gb);  // G is dead after the eigen route
}

// SVD path: a bounded pool of `slots` threads, each with its own n x d (X) and d x d (R) scratch,
// walks the list of samples flagged by finish_kernel. The count is read on the device, so the host
// never waits for it.
template <typename T, int MaxD>
__global__ void __launch_bounds__(kSvdThreads)
    svd_kernel(const T* __restrict__ J, long long sN, long long sn, long long sd, int n, int d,
               const int* __restrict__ svd_list, const int* __restrict__ svd_count, int slots,
               double* __restrict__ X, double* __restrict__ R, double* __restrict__ Vw,
               SampleOptions opt, DtoOutputs out) {
  const int slot = blockIdx.x * blockDim.x + threadIdx.x;
  if (slot >= slots) return;
  const int count = *svd_count;
  double* Xs = X + (long long)slot * n * d;
  double* Rs = R + (long long)slot * d * d;
  for (int i = slot; i < count; i += slots) {
    const int b = svd_list[i];
    double* Vb = Vw + (long long)b * d * d;
    double sigma[MaxD];
    if (!svd_right(J + b * sN, sn, sd, n, d, Xs, Rs, sigma, Vb)) {
      out.flags[b] = kFlagNonFinite;
      continue;
    }
    write_sample<MaxD>(b, Vb, sigma, d, opt, out, kFlagSvdPath, Rs);  // R is dead after the SVD
  }
}

// Nearest signed permutations of V (count x d x d, any strides): copied to float64 scratch W, then
// the same core solver as on the CPU (C: d x d cost-table scratch per sample).
template <typename T, int MaxD>
__global__ void __launch_bounds__(kSampleThreads)
    perm_kernel(const T* __restrict__ Vin, long long sN, long long si, long long sj, int count, int d,
                Solver solver, double* __restrict__ W, double* __restrict__ C, DtoOutputs out) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= count) return;
  const T* src = Vin + b * sN;
  double* V = W + (long long)b * d * d;
  if (!load_square(src, si, sj, d, V)) {
    out.flags[b] = kFlagNonFinite;
    return;
  }
  int perm[MaxD];
  bool certified = false;
  out.distance[b] = nearest_signed_permutation<MaxD, false>(V, d, solver, perm, out.signs + b * d,
                                                            &certified, C + (long long)b * d * d);
  out.flags[b] = certified ? kFlagCertified : 0;
  store_sample(out, b, nullptr, perm, d);
}

}  // namespace cuda
}  // namespace fastdto
