// Shared definitions for the per-matrix kernels. Everything under csrc/core is header-only and
// compiles both as host C++17 and as CUDA device code, so the CPU and GPU engines cannot drift.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FASTDTO_HD __host__ __device__ __forceinline__
#else
// Forced inlining lets the CPU engine's multi-versioned per-sample functions compile all of the core
// for their own instruction set.
#define FASTDTO_HD inline __attribute__((always_inline))
#endif

// Rarely taken paths: kept out of line so that they cost the common path no registers.
#if defined(__CUDACC__)
#define FASTDTO_HD_COLD inline __host__ __device__ __noinline__  // inline: one definition per program
#else
#define FASTDTO_HD_COLD inline __attribute__((noinline, cold))
#endif

// Host-only pragmas (OpenMP SIMD hints for the CPU build; nvcc compiles these loops per thread).
#if defined(__CUDACC__)
#define FASTDTO_HOST_PRAGMA(x)
#else
#define FASTDTO_HOST_PRAGMA(x) _Pragma(#x)
#endif

namespace fastdto {

// Largest latent dimension the engine accepts. Per-matrix scratch lives on the stack (or in
// registers/local memory on the GPU), so the bound is compile-time.
constexpr int kMaxDim = 64;

// Machine epsilons used by the documented numerical rules.
constexpr double kEps64 = 2.220446049250313e-16;
constexpr double kEps32 = 1.1920928955078125e-07;

enum class Solver : int { Exact = 0, Greedy = 1 };

// Per-sample status bits reported back to Python.
enum SampleFlags : uint8_t {
  kFlagAmbiguous = 1,   // V is not unique to working precision (near-repeated singular values)
  kFlagSvdPath = 2,     // recomputed by QR + one-sided Jacobi on J (Gram was ill-conditioned)
  kFlagNonFinite = 4,   // input contained NaN or Inf
  kFlagCertified = 8,   // nearest signed permutation certified by the greedy row-maximum test
};

FASTDTO_HD double dabs(double x) { return fabs(x); }  // a mask, not a branch on the sign
FASTDTO_HD double dmin(double a, double b) { return a < b ? a : b; }
FASTDTO_HD double dmax(double a, double b) { return a > b ? a : b; }
FASTDTO_HD bool is_finite(double x) { return x - x == 0.0; }  // false for NaN and +-Inf

// Sorts w[0, d) into descending order and moves the columns of the row-major d x d matrix Q
// along (selection sort: d <= 64, and no recursion or workspace on the GPU).
FASTDTO_HD void sort_descending_with_columns(double* w, double* Q, int d) {
  for (int k = 0; k < d - 1; ++k) {
    int best = k;
    for (int j = k + 1; j < d; ++j)
      if (w[j] > w[best]) best = j;
    if (best != k) {
      const double tw = w[k]; w[k] = w[best]; w[best] = tw;
      for (int i = 0; i < d; ++i) {
        const double tq = Q[i * d + k]; Q[i * d + k] = Q[i * d + best]; Q[i * d + best] = tq;
      }
    }
  }
}

}  // namespace fastdto
