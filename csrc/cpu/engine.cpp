#include "engine.hpp"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace fastdto {
namespace cpu {
namespace {

constexpr int kBlockRows = 64;

// Upper triangle of G = J^T J with float64 accumulation. Rows are gathered block by block into a
// transposed float64 buffer, so every column pair becomes a short contiguous dot product that the
// compiler vectorises whatever the input strides are.
template <typename T>
inline void gram_upper(const T* J, long long sr, long long sc, int n, int d, double* G) {
  alignas(64) double buf[kMaxDim * kBlockRows];
  for (int i = 0; i < d * d; ++i) G[i] = 0.0;
  for (int r0 = 0; r0 < n; r0 += kBlockRows) {
    const int m = std::min(kBlockRows, n - r0);
    const T* block = J + r0 * sr;
    if (sr == 1) {
      for (int k = 0; k < d; ++k)
        for (int r = 0; r < m; ++r) buf[k * kBlockRows + r] = (double)block[r + k * sc];
    } else {
      for (int r = 0; r < m; ++r)
        for (int k = 0; k < d; ++k) buf[k * kBlockRows + r] = (double)block[r * sr + k * sc];
    }
    for (int k = 0; k < d; ++k)
      for (int r = m; r < kBlockRows; ++r) buf[k * kBlockRows + r] = 0.0;
    for (int k = 0; k < d; ++k) {
      const double* a = buf + k * kBlockRows;
      for (int l = k; l < d; ++l) {
        const double* b = buf + l * kBlockRows;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int r = 0; r < kBlockRows; ++r) s += a[r] * b[r];
        G[k * d + l] += s;
      }
    }
  }
  for (int k = 0; k < d; ++k)
    for (int l = 0; l < k; ++l) G[k * d + l] = G[l * d + k];
}

// The Gram is the one memory-bound step: build it for AVX2/FMA too and pick at load time.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FASTDTO_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTDTO_MULTIVERSION
#endif

FASTDTO_MULTIVERSION void gram_f32(const float* J, long long sr, long long sc, int n, int d, double* G) {
  gram_upper(J, sr, sc, n, d, G);
}
FASTDTO_MULTIVERSION void gram_f64(const double* J, long long sr, long long sc, int n, int d, double* G) {
  gram_upper(J, sr, sc, n, d, G);
}

template <typename T>
void dto_batch(const StridedBatch& Jb, const SampleOptions& opt, const DtoOutputs& out, int threads) {
  const T* base = static_cast<const T*>(Jb.data);
  const int n = (int)Jb.rows, d = (int)Jb.cols;
  const long long count = Jb.count;
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    // Per-thread scratch on the heap: 3 x 32 KiB at d = 64 would strain small thread stacks.
    std::vector<double> scratch(3 * (size_t)d * d);
    double* G = scratch.data();
    double* V = G + d * d;
    double* R = V + d * d;
    double sigma[kMaxDim];
    int perm[kMaxDim];
    std::vector<double> work;  // n x d copy of J, only for samples redone on J
#pragma omp for schedule(dynamic, 16)
    for (long long b = 0; b < count; ++b) {
      const T* J = base + b * Jb.s_batch;
      if constexpr (sizeof(T) == 4) gram_f32(J, Jb.s_row, Jb.s_col, n, d, G);
      else gram_f64(J, Jb.s_row, Jb.s_col, n, d, G);
      bool finite = true;
      for (int k = 0; k < d; ++k) finite = finite && is_finite(G[k * d + k]);
      if (!finite) {
        out.flags[b] = kFlagNonFinite;
        continue;
      }
      uint8_t flags = 0;
      if (eigen_from_gram(G, d, opt.gram_rcond, sigma, V)) {
        work.resize((size_t)n * d);
        svd_right(J, Jb.s_row, Jb.s_col, n, d, work.data(), R, sigma, V);
        flags |= kFlagSvdPath;
      }
      flags |= finish_sample(V, sigma, d, opt, perm, out.signs + b * d, out.distance + b);
      out.flags[b] = flags;
      for (int k = 0; k < d; ++k) {
        out.sigma[b * d + k] = sigma[k];
        out.perm[b * d + k] = perm[k];
      }
      if (out.V)
        for (int i = 0; i < d * d; ++i) out.V[b * d * d + i] = V[i];
    }
  }
}

template <typename T>
void perm_batch(const StridedBatch& Vb, Solver solver, const DtoOutputs& out, int threads) {
  const T* base = static_cast<const T*>(Vb.data);
  const int d = (int)Vb.cols;
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    double V[kMaxDim * kMaxDim];
    int perm[kMaxDim];
#pragma omp for schedule(static)
    for (long long b = 0; b < Vb.count; ++b) {
      const T* src = base + b * Vb.s_batch;
      bool finite = true;
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) {
          V[i * d + j] = (double)src[i * Vb.s_row + j * Vb.s_col];
          finite = finite && is_finite(V[i * d + j]);
        }
      if (!finite) {
        out.flags[b] = kFlagNonFinite;
        continue;
      }
      bool certified = false;
      out.distance[b] = nearest_signed_permutation(V, d, solver, perm, out.signs + b * d, &certified);
      out.flags[b] = certified ? kFlagCertified : 0;
      for (int k = 0; k < d; ++k) out.perm[b * d + k] = perm[k];
    }
  }
}

}  // namespace

void dto_from_jacobians(const StridedBatch& J, const SampleOptions& opt, const DtoOutputs& out,
                        int threads) {
  if (J.is_f64) dto_batch<double>(J, opt, out, threads);
  else dto_batch<float>(J, opt, out, threads);
}

void signed_permutations(const StridedBatch& V, Solver solver, const DtoOutputs& out, int threads) {
  if (V.is_f64) perm_batch<double>(V, solver, out, threads);
  else perm_batch<float>(V, solver, out, threads);
}

}  // namespace cpu
}  // namespace fastdto
