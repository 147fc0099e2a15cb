// Symmetric eigen-decomposition by the cyclic Jacobi method in float64.
//
// Jacobi is chosen over tridiagonal QR because it is short, branch-light, needs no workspace
// beyond the d x d matrices, runs unchanged on one GPU thread, and with the relative stopping
// rule |a_pq| <= eps * sqrt(|a_pp a_qq|) it computes the eigenvalues of a positive semi-definite
// Gram matrix to high relative accuracy (Demmel and Veselic, 1992).
#pragma once

#include "common.hpp"

namespace fastdto {

// Diagonalises the symmetric d x d matrix A (row-major, only read, destroyed) in place.
// On return w[k] are the eigenvalues in descending order and column k of Q (row-major d x d)
// is the eigenvector of w[k]. Returns the number of sweeps used (max_sweeps if not converged).
FASTDTO_HD int jacobi_eigh(double* A, int d, double* w, double* Q, int max_sweeps = 60) {
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) Q[i * d + j] = (i == j) ? 1.0 : 0.0;

  int sweep = 0;
  for (; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < d - 1; ++p) {
      for (int q = p + 1; q < d; ++q) {
        const double apq = A[p * d + q];
        const double app = A[p * d + p];
        const double aqq = A[q * d + q];
        // Relative criterion (squared, no root): an off-diagonal entry below
        // eps * sqrt(|app aqq|) no longer changes any eigenvalue beyond rounding.
        if (apq * apq <= kEps64 * kEps64 * dabs(app * aqq)) {
          A[p * d + q] = A[q * d + p] = 0.0;
          continue;
        }
        rotated = true;
        // Rotation that annihilates A[p][q] (smaller of the two angles, for stability).
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = dabs(theta) > 1e150 ? 0.5 / theta
                         : (theta >= 0.0 ? 1.0 : -1.0) / (dabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0);
        const double s = t * c;
        const double tau = s / (1.0 + c);  // rotations written as x - s (y + tau x): less rounding
        // Rows p and q are contiguous: rotate them as whole vectors (the 2 x 2 block is set above
        // and restored after), then mirror them into columns p and q.
        double* rp = A + p * d;
        double* rq = A + q * d;
        for (int k = 0; k < d; ++k) {
          const double g = rp[k], h = rq[k];
          rp[k] = g - s * (h + g * tau);
          rq[k] = h + s * (g - h * tau);
        }
        rp[p] = app - t * apq;
        rq[q] = aqq + t * apq;
        rp[q] = rq[p] = 0.0;
        for (int k = 0; k < d; ++k) {
          A[k * d + p] = rp[k];
          A[k * d + q] = rq[k];
        }
        double* qp = Q + p * d;  // Q is kept transposed here (row k = eigenvector k): contiguous
        double* qq = Q + q * d;
        for (int k = 0; k < d; ++k) {
          const double g = qp[k], h = qq[k];
          qp[k] = g - s * (h + g * tau);
          qq[k] = h + s * (g - h * tau);
        }
      }
    }
    if (!rotated) break;
  }
  for (int k = 0; k < d; ++k) w[k] = A[k * d + k];
  for (int i = 0; i < d; ++i)  // back to eigenvectors as columns
    for (int j = i + 1; j < d; ++j) {
      const double tq = Q[i * d + j]; Q[i * d + j] = Q[j * d + i]; Q[j * d + i] = tq;
    }

  sort_descending_with_columns(w, Q, d);
  return sweep;
}

}  // namespace fastdto
