// The per-sample pipeline after the Gram matrix: eigen route, the decision to redo a sample on
// J, sign convention, degeneracy flag and the nearest signed permutation. Host and device share it.
#pragma once

#include "assignment.hpp"
#include "jacobi_eigen.hpp"
#include "svd.hpp"

namespace fastdto {

struct SampleOptions {
  Solver solver;
  // Samples are recomputed on J (QR + one-sided Jacobi) when the Gram cannot give them to about
  // eps64 / gram_rcond^2; see sigma_from_eigenvalues for the two error bounds and the rule.
  double gram_rcond;
  // V counts as not unique when two consecutive singular values differ by at most
  // ambiguity_tol * sigma_max (or when J is zero).
  double ambiguity_tol;
  // J is float32: its squares cannot underflow in float64, so a zero diagonal entry of G means an
  // exactly zero column of J, whose row and column of G are exactly zero too. Such a column is a
  // singular direction (sigma = 0) that Jacobi on the Gram finds exactly.
  bool zero_columns_exact;
};

// Per-sample outputs, caller-allocated, contiguous (host or device memory). V may be null.
struct DtoOutputs {
  double* sigma;     // count x d (null when only permutations are computed)
  int64_t* perm;     // count x d
  int8_t* signs;     // count x d
  double* distance;  // count
  uint8_t* flags;    // count, SampleFlags bits
  double* V;         // count x d x d, row-major, columns are right singular vectors
};

// Jacobi's tests multiply entries of G (a_pq^2, a_pp a_qq), which underflow or overflow when J is
// far from unit scale, and then every rotation is skipped. So G is scaled by 4^-k (exact) until its
// largest diagonal entry lies in [1/4, 1), and sigma by 2^k afterwards. Returns false when G cannot
// be used as computed: a diagonal entry (a sum of squares, so NaN or Inf in J shows there) is not
// finite, or the largest is 0 or below 2^-900 (J near 1e-135 or smaller: underflow may have taken
// digits, or all of G), or above 2^1000 (the sums may have overflowed). Such samples go to the SVD
// path, which scales J itself and tells a non-finite J from one that is merely tiny or huge.
FASTDTO_HD bool gram_scale_exponent(const double* G, int d, int* k) {
  double top = 0.0;
  bool finite = true;
  for (int i = 0; i < d; ++i) {
    finite = finite && is_finite(G[i * d + i]);
    top = dmax(top, G[i * d + i]);
  }
  if (!finite || !(top >= 0x1p-900 && top <= 0x1p1000)) return false;
  int e;
  frexp(top, &e);  // top in [2^(e-1), 2^e)
  *k = e >= 0 ? (e + 1) / 2 : -(-e / 2);  // ceil(e / 2)
  return true;
}

// 4^-k as a factor: within the range above it is a normal double, so G * 4^-k is exact.
FASTDTO_HD double gram_scale(int k) { return ldexp(1.0, -2 * k); }

FASTDTO_HD bool all_finite(const double* x, int count) {
  double z = 0.0;  // x - x is 0 for finite x, NaN otherwise: a sum vectorises where a bool AND did not
  FASTDTO_HOST_PRAGMA(omp simd reduction(+ : z))
  for (int i = 0; i < count; ++i) z += x[i] - x[i];
  return z == 0.0;
}

// Copies a strided d x d matrix into V (row-major float64); false if any entry is NaN or Inf.
template <typename T>
FASTDTO_HD bool load_square(const T* src, long long si, long long sj, int d, double* V) {
  bool finite = true;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      const double x = (double)src[i * si + j * sj];
      V[i * d + j] = x;
      finite = finite && is_finite(x);
    }
  return finite;
}

// Writes sample b's singular values (when out.sigma is set) and permutation.
FASTDTO_HD void store_sample(const DtoOutputs& out, long long b, const double* sigma, const int* perm, int d) {
  for (int k = 0; k < d; ++k) {
    if (out.sigma) out.sigma[b * d + k] = sigma[k];
    out.perm[b * d + k] = perm[k];
  }
}

// A lower bound on the smallest eigenvalue of the column-scaled Gram C = D^-1 G D^-1 (D^2 = diag G,
// so C is J's with unit columns), or 0 where none is certified: 1 / ||L^-1||_F^2 for the Cholesky
// factor L of C (||C^-1|| <= ||L^-1||_F^2 <= d ||C^-1||), less a margin for rounding in L. A tiny
// column (diag G below 2^-900, where products may have underflowed) or a failed Cholesky gives 0.
// With zero_columns_exact, exactly zero columns are left out: they enter C as unit columns
// orthogonal to all others, which leaves the other columns' bound as it is (it is at most 1).
// work: d x d, overwritten (its lower triangle holds L, then L^-1).
FASTDTO_HD double scaled_gram_floor(const double* G, int d, double* work, bool zero_columns_exact) {
  for (int j = 0; j < d; ++j)
    if (!(G[j * d + j] >= 0x1p-900) && !(zero_columns_exact && G[j * d + j] == 0.0)) return 0.0;
  for (int j = 0; j < d; ++j) {  // Cholesky, column by column, of C_ij = G_ij / sqrt(G_ii G_jj)
    for (int i = j; i < d; ++i) {
      const bool zero_column = G[i * d + i] == 0.0 || G[j * d + j] == 0.0;  // only with zero_columns_exact
      // two square roots: the product G_ii G_jj may leave float64's range, each root may not
      double c = i == j ? 1.0 : zero_column ? 0.0 : G[i * d + j] / (sqrt(G[i * d + i]) * sqrt(G[j * d + j]));
      for (int m = 0; m < j; ++m) c -= work[i * d + m] * work[j * d + m];
      if (i == j) {
        if (!(c > 0.0)) return 0.0;
        work[j * d + j] = sqrt(c);
      } else {
        work[i * d + j] = c / work[j * d + j];
      }
    }
  }
  // L^-1 in place, last column first; each column's rows bottom-up read only entries not yet replaced.
  for (int j = d - 1; j >= 0; --j) {
    const double inv = 1.0 / work[j * d + j];
    for (int i = d - 1; i > j; --i) {
      double s = 0.0;
      for (int m = j + 1; m <= i; ++m) s += work[i * d + m] * work[m * d + j];
      work[i * d + j] = -s * inv;
    }
    work[j * d + j] = inv;
  }
  double fro = 0.0;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j <= i; ++j) fro += work[i * d + j] * work[i * d + j];
  return dmax(1.0 / fro - 4.0 * d * d * kEps64, 0.0);
}

// Eigenvalues of 4^-k G (descending, in sigma) -> singular values of J, in place. Returns true
// when the sample must be recomputed on J because the Gram cannot resolve it to about
// eps64 / gram_rcond^2 (t = gram_rcond^2, lambda the eigenvalues, c = scaled_gram_floor of G).
// Through G, an eigenvalue's error is at most about eps64 lambda_max (absolute bound) and also at
// most about eps64 lambda / c (relative bound: Jacobi with its stopping rule is as accurate as the
// column-scaled problem allows, Demmel and Veselic 1992); a singular vector's error is about
// eps64 lambda_max / (lambda_k - lambda_k+1) and also about eps64 / (c relgap), relgap =
// (lambda_k - lambda_k+1) / sqrt(lambda_k lambda_k+1). So a sample stays on the Gram when
// lambda_min > t lambda_max or c > t, and, for every pair of singular values that count as distinct
// (an ambiguous pair has no unique V to recover), when lambda_k - lambda_k+1 > t lambda_max or
// c relgap > t. The relative bounds keep graded Jacobians (a passive latent: one tiny column) on
// the Gram, where an SVD of J would give the same numbers at many times the cost.
FASTDTO_HD bool sigma_from_eigenvalues(double* sigma, int d, int k, double c, const SampleOptions& opt) {
  const double top = sigma[0], t = opt.gram_rcond * opt.gram_rcond, floor = t * top;
  bool needs_svd = d > 1 && opt.gram_rcond > 0.0 && !(sigma[d - 1] > floor) && !(c > t);
  for (int i = 0; i + 1 < d && !needs_svd && opt.gram_rcond > 0.0; ++i) {
    const double gap = sigma[i] - sigma[i + 1];
    needs_svd = gap <= floor && !(c * gap > t * sqrt(dmax(sigma[i], 0.0)) * sqrt(dmax(sigma[i + 1], 0.0))) &&
                sqrt(sigma[i]) - sqrt(sigma[i + 1]) > opt.ambiguity_tol * sqrt(top);
  }
  const double unscale = ldexp(1.0, k);
  for (int i = 0; i < d; ++i) sigma[i] = sqrt(dmax(sigma[i], 0.0)) * unscale;
  return needs_svd;
}

// Eigen route for one matrix: G (d x d, destroyed) -> sigma descending, V. Returns true when the
// sample needs the SVD path (G out of range, see gram_scale_exponent, or ill-conditioned).
FASTDTO_HD bool eigen_from_gram(double* G, int d, const SampleOptions& opt, double* sigma, double* V) {
  int k;
  if (!gram_scale_exponent(G, d, &k)) return true;
  const double c = scaled_gram_floor(G, d, V, opt.zero_columns_exact);  // V as work space: Jacobi sets it afresh
  const double scale = gram_scale(k);
  for (int i = 0; i < d * d; ++i) G[i] *= scale;
  jacobi_eigh(G, d, sigma, V);
  return sigma_from_eigenvalues(sigma, d, k, c, opt);
}

// Singular vectors have arbitrary signs: fix each column's largest-magnitude entry positive, so
// results are reproducible across engines (DtO itself does not depend on it).
FASTDTO_HD void normalize_column_signs(double* V, int d) {
  for (int k = 0; k < d; ++k) {
    int best = 0;
    for (int i = 1; i < d; ++i)
      if (dabs(V[i * d + k]) > dabs(V[best * d + k])) best = i;
    if (V[best * d + k] < 0.0)
      for (int i = 0; i < d; ++i) V[i * d + k] = -V[i * d + k];
  }
}

FASTDTO_HD bool is_ambiguous(const double* sigma, int d, double tol) {
  if (d == 1) return false;
  if (!(sigma[0] > 0.0)) return true;
  for (int k = 0; k + 1 < d; ++k)
    if (sigma[k] - sigma[k + 1] <= tol * sigma[0]) return true;
  return false;
}

// Everything after sigma and V are known. Returns the flag bits and writes the distance.
template <int MaxD = kMaxDim, bool LocalCost = true>  // see exact_assignment
FASTDTO_HD uint8_t finish_sample(double* V, const double* sigma, int d, const SampleOptions& opt,
                                 int* perm, int8_t* signs, double* distance,
                                 double* cost_work = nullptr) {
  normalize_column_signs(V, d);
  uint8_t flags = is_ambiguous(sigma, d, opt.ambiguity_tol) ? kFlagAmbiguous : 0;
  bool certified = false;
  *distance = nearest_signed_permutation<MaxD, LocalCost>(V, d, opt.solver, perm, signs, &certified,
                                                         cost_work);
  if (certified) flags |= kFlagCertified;
  return flags;
}

}  // namespace fastdto
