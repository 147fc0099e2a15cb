// Symmetric eigen-decomposition by the cyclic Jacobi method in float64.
//
// Jacobi is chosen over tridiagonal QR because it is short, branch-light, needs no workspace
// beyond the d x d matrices, runs unchanged on one GPU thread, and with the relative stopping
// rule |a_pq| <= eps * sqrt(|a_pp a_qq|) it computes the eigenvalues of a positive semi-definite
// Gram matrix to high relative accuracy (Demmel and Veselic, 1992).
//
// Each rotation is a serial chain of divisions and square roots, so one matrix at a time leaves
// the floating-point units mostly idle. The sweeps are therefore written over a lane type: several
// matrices stored interleaved follow the same rotation order, one per SIMD lane (the CPU runs 4
// samples per AVX2 register; the GPU runs one matrix per thread with plain doubles). A matrix
// whose entry (p, q) is already negligible gets the identity rotation (c = 1, s = 0), which leaves
// it exactly unchanged, so every lane computes what it would compute alone.
#pragma once

#include "common.hpp"

namespace fastdto {

// Lane type for one matrix at a time (the GPU's thread per matrix, and the SVD fallback's host
// code). The CPU engine supplies a SIMD counterpart with the same members.
struct ScalarLanes {
  typedef double V;
  static constexpr int width = 1;
  static FASTDTO_HD V splat(double x) { return x; }
  static FASTDTO_HD V select(bool m, V a, V b) { return m ? a : b; }
  static FASTDTO_HD V abs(V x) { return dabs(x); }
  static FASTDTO_HD V root(V x) { return sqrt(x); }
  static FASTDTO_HD bool all(bool m) { return m; }
};

// Diagonalises Lanes::width interleaved symmetric d x d matrices A (row-major, element e of
// matrix l at [e * width + l], destroyed) in place. Qt must hold identity matrices on entry and
// holds the transposed eigenvector matrices on return (row k = eigenvector of A's diagonal entry
// k). Returns the sweeps used (max_sweeps if not converged).
template <typename Lanes>
FASTDTO_HD int jacobi_sweeps(typename Lanes::V* A, typename Lanes::V* Qt, int d, int max_sweeps = 60) {
  typedef typename Lanes::V V;
  const V zero = Lanes::splat(0.0), one = Lanes::splat(1.0);
  int sweep = 0;
  for (; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < d - 1; ++p) {
      for (int q = p + 1; q < d; ++q) {
        const V apq = A[p * d + q], app = A[p * d + p], aqq = A[q * d + q];
        // Relative criterion (squared, no root): an off-diagonal entry below
        // eps * sqrt(|app aqq|) no longer changes any eigenvalue beyond rounding.
        const auto skip = apq * apq <= Lanes::splat(kEps64 * kEps64) * Lanes::abs(app * aqq);
        if (Lanes::all(skip)) {
          A[p * d + q] = A[q * d + p] = zero;
          continue;
        }
        rotated = true;
        // Rotation that annihilates A[p][q] (smaller of the two angles, for stability). Both
        // candidates are computed and then selected, so lanes never branch.
        const V theta = (aqq - app) / (Lanes::splat(2.0) * apq);
        const V t_huge = Lanes::splat(0.5) / theta;  // theta^2 would overflow
        const V t_usual = Lanes::select(theta >= zero, one, -one) /
                          (Lanes::abs(theta) + Lanes::root(theta * theta + one));
        const V t = Lanes::select(skip, zero, Lanes::select(Lanes::abs(theta) > Lanes::splat(1e150), t_huge, t_usual));
        const V c = one / Lanes::root(t * t + one);
        const V s = t * c;
        const V tau = s / (one + c);  // rotations written as x - s (y + tau x): less rounding
        // Rows p and q are contiguous: rotate them as whole vectors, set the 2 x 2 block, then
        // mirror the rows into columns p and q.
        V* rp = A + p * d;
        V* rq = A + q * d;
        for (int k = 0; k < d; ++k) {
          const V g = rp[k], h = rq[k];
          rp[k] = g - s * (h + g * tau);
          rq[k] = h + s * (g - h * tau);
        }
        rp[p] = app - t * apq;
        rq[q] = aqq + t * apq;
        rp[q] = rq[p] = zero;
        for (int k = 0; k < d; ++k) {
          A[k * d + p] = rp[k];
          A[k * d + q] = rq[k];
        }
        V* qp = Qt + p * d;  // eigenvectors as rows: contiguous
        V* qq = Qt + q * d;
        for (int k = 0; k < d; ++k) {
          const V g = qp[k], h = qq[k];
          qp[k] = g - s * (h + g * tau);
          qq[k] = h + s * (g - h * tau);
        }
      }
    }
    if (!rotated) break;
  }
  return sweep;
}

// Sets L interleaved d x d identity matrices.
template <int L>
FASTDTO_HD void set_identity(double* Q, int d) {
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j)
      for (int l = 0; l < L; ++l) Q[(i * d + j) * L + l] = (i == j) ? 1.0 : 0.0;
}

// Matrix `lane` of the interleaved result: w[k] the eigenvalues in descending order and column k
// of Q (row-major d x d) the eigenvector of w[k].
template <int L>
FASTDTO_HD void extract_eigenpairs(const double* A, const double* Qt, int d, int lane, double* w, double* Q) {
  for (int k = 0; k < d; ++k) w[k] = A[(k * d + k) * L + lane];
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) Q[i * d + j] = Qt[(j * d + i) * L + lane];
  sort_descending_with_columns(w, Q, d);
}

// One matrix: diagonalises the symmetric d x d matrix A (row-major, destroyed); w and Q as in
// extract_eigenpairs. Returns the sweeps used.
FASTDTO_HD int jacobi_eigh(double* A, int d, double* w, double* Q) {
  set_identity<1>(Q, d);
  const int sweeps = jacobi_sweeps<ScalarLanes>(A, Q, d);
  for (int k = 0; k < d; ++k) w[k] = A[k * d + k];
  for (int i = 0; i < d; ++i)  // eigenvectors from rows to columns, in place
    for (int j = i + 1; j < d; ++j) {
      const double tq = Q[i * d + j]; Q[i * d + j] = Q[j * d + i]; Q[j * d + i] = tq;
    }
  sort_descending_with_columns(w, Q, d);
  return sweeps;
}

}  // namespace fastdto
