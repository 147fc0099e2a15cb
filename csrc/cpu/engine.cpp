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
FASTDTO_HD void gram_upper(const T* J, long long sr, long long sc, int n, int d, double* G) {
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

// Everything done for one sample, compiled once per dtype (all callees forcibly inlined, see FASTDTO_HD). Baseline x86-64 (SSE2) has no blends
// for double selects, so the assignment's branch-free scans and the Gram's dot products run far
// slower there: each per-sample function is also built for x86-64-v3 (AVX2, FMA) and picked at
// load time.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FASTDTO_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTDTO_MULTIVERSION
#endif

struct Scratch {
  std::vector<double> G, V, R, work;  // work: n x d copy of J, only for samples redone on J
  explicit Scratch(int d) : G((size_t)d * d), V((size_t)d * d), R((size_t)d * d) {}
};

template <typename T>
FASTDTO_HD void dto_one(const T* J, const StridedBatch& Jb, const SampleOptions& opt, Scratch& s,
                    const DtoOutputs& out, long long b) {
  const int n = (int)Jb.rows, d = (int)Jb.cols;
  double* G = s.G.data();
  double* V = s.V.data();
  double sigma[kMaxDim];
  int perm[kMaxDim];
  gram_upper(J, Jb.s_row, Jb.s_col, n, d, G);
  bool finite = true;
  for (int k = 0; k < d; ++k) finite = finite && is_finite(G[k * d + k]);
  if (!finite) {
    out.flags[b] = kFlagNonFinite;
    return;
  }
  uint8_t flags = 0;
  if (eigen_from_gram(G, d, opt.gram_rcond, sigma, V)) {
    s.work.resize((size_t)n * d);
    svd_right(J, Jb.s_row, Jb.s_col, n, d, s.work.data(), s.R.data(), sigma, V);
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

FASTDTO_MULTIVERSION void dto_one_f32(const float* J, const StridedBatch& Jb, const SampleOptions& opt,
                                      Scratch& s, const DtoOutputs& out, long long b) {
  dto_one(J, Jb, opt, s, out, b);
}
FASTDTO_MULTIVERSION void dto_one_f64(const double* J, const StridedBatch& Jb, const SampleOptions& opt,
                                      Scratch& s, const DtoOutputs& out, long long b) {
  dto_one(J, Jb, opt, s, out, b);
}

template <typename T>
FASTDTO_HD void perm_one(const T* src, const StridedBatch& Vb, Solver solver, const DtoOutputs& out, long long b) {
  const int d = (int)Vb.cols;
  double V[kMaxDim * kMaxDim];
  int perm[kMaxDim];
  bool finite = true;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      V[i * d + j] = (double)src[i * Vb.s_row + j * Vb.s_col];
      finite = finite && is_finite(V[i * d + j]);
    }
  if (!finite) {
    out.flags[b] = kFlagNonFinite;
    return;
  }
  bool certified = false;
  out.distance[b] = nearest_signed_permutation(V, d, solver, perm, out.signs + b * d, &certified);
  out.flags[b] = certified ? kFlagCertified : 0;
  for (int k = 0; k < d; ++k) out.perm[b * d + k] = perm[k];
}

FASTDTO_MULTIVERSION void perm_one_f32(const float* V, const StridedBatch& Vb, Solver solver,
                                       const DtoOutputs& out, long long b) {
  perm_one(V, Vb, solver, out, b);
}
FASTDTO_MULTIVERSION void perm_one_f64(const double* V, const StridedBatch& Vb, Solver solver,
                                       const DtoOutputs& out, long long b) {
  perm_one(V, Vb, solver, out, b);
}

template <typename T>
void dto_batch(const StridedBatch& Jb, const SampleOptions& opt, const DtoOutputs& out, int threads) {
  const T* base = static_cast<const T*>(Jb.data);
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    Scratch scratch((int)Jb.cols);
#pragma omp for schedule(dynamic, 16)
    for (long long b = 0; b < Jb.count; ++b) {
      if constexpr (sizeof(T) == 4) dto_one_f32(base + b * Jb.s_batch, Jb, opt, scratch, out, b);
      else dto_one_f64(base + b * Jb.s_batch, Jb, opt, scratch, out, b);
    }
  }
}

template <typename T>
void perm_batch(const StridedBatch& Vb, Solver solver, const DtoOutputs& out, int threads) {
  const T* base = static_cast<const T*>(Vb.data);
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long long b = 0; b < Vb.count; ++b) {
    if constexpr (sizeof(T) == 4) perm_one_f32(base + b * Vb.s_batch, Vb, solver, out, b);
    else perm_one_f64(base + b * Vb.s_batch, Vb, solver, out, b);
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
