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
    // Column by column: contiguous writes, reads strided within an L1-resident block. (Row by row,
    // GCC's AVX2 code turned the transposition into gathers, 6x slower.)
    for (int k = 0; k < d; ++k) {
      const T* col = block + k * sc;
      double* dst = buf + k * kBlockRows;
      if (sr == 1)
        for (int r = 0; r < m; ++r) dst[r] = (double)col[r];
      else
        for (int r = 0; r < m; ++r) dst[r] = (double)col[r * sr];
    }
    for (int k = 0; k < d; ++k)
      for (int r = m; r < kBlockRows; ++r) buf[k * kBlockRows + r] = 0.0;
    for (int k = 0; k < d; ++k) {
      const double* a = buf + k * kBlockRows;
      int l = k;
      for (; l + 3 < d; l += 4) {  // four pairs per pass: column k is loaded once for all four
        const double *b0 = buf + l * kBlockRows, *b1 = b0 + kBlockRows, *b2 = b1 + kBlockRows,
                     *b3 = b2 + kBlockRows;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int r = 0; r < kBlockRows; ++r) {
          s0 += a[r] * b0[r];
          s1 += a[r] * b1[r];
          s2 += a[r] * b2[r];
          s3 += a[r] * b3[r];
        }
        G[k * d + l] += s0;
        G[k * d + l + 1] += s1;
        G[k * d + l + 2] += s2;
        G[k * d + l + 3] += s3;
      }
      for (; l < d; ++l) {
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

// Everything done for one sample, compiled once per dtype. Baseline x86-64 (SSE2) has no blends
// for double selects, so the assignment's branch-free scans and the Gram's dot products run far
// slower there: each per-sample function is also built for x86-64-v3 (AVX2, FMA) and picked at
// load time. The clones only help because every callee is forcibly inlined (see FASTDTO_HD).
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
  if (!gram_is_finite(G, d)) {
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
  store_sample(out, b, sigma, perm, d);
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
  if (!load_square(src, Vb.s_row, Vb.s_col, d, V)) {
    out.flags[b] = kFlagNonFinite;
    return;
  }
  bool certified = false;
  out.distance[b] = nearest_signed_permutation(V, d, solver, perm, out.signs + b * d, &certified);
  out.flags[b] = certified ? kFlagCertified : 0;
  store_sample(out, b, nullptr, perm, d);
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
