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
        // Relative criterion: an off-diagonal entry below eps * sqrt(|app aqq|) no longer
        // changes any eigenvalue beyond rounding, so it is treated as zero.
        if (dabs(apq) <= kEps64 * sqrt(dabs(app * aqq)) || apq == 0.0) {
          A[p * d + q] = A[q * d + p] = 0.0;
          continue;
        }
        rotated = true;
        // Rotation that annihilates A[p][q] (smaller of the two angles, for stability).
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = (theta >= 0.0 ? 1.0 : -1.0) / (dabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0);
        const double s = t * c;
        for (int k = 0; k < d; ++k) {  // A <- A G (columns p, q)
          const double akp = A[k * d + p], akq = A[k * d + q];
          A[k * d + p] = c * akp - s * akq;
          A[k * d + q] = s * akp + c * akq;
        }
        for (int k = 0; k < d; ++k) {  // A <- G^T A (rows p, q)
          const double apk = A[p * d + k], aqk = A[q * d + k];
          A[p * d + k] = c * apk - s * aqk;
          A[q * d + k] = s * apk + c * aqk;
        }
        A[p * d + q] = A[q * d + p] = 0.0;
        for (int k = 0; k < d; ++k) {  // Q <- Q G
          const double qkp = Q[k * d + p], qkq = Q[k * d + q];
          Q[k * d + p] = c * qkp - s * qkq;
          Q[k * d + q] = s * qkp + c * qkq;
        }
      }
    }
    if (!rotated) break;
  }
  for (int k = 0; k < d; ++k) w[k] = A[k * d + k];

  // Selection sort into descending order, moving eigenvector columns along (d <= 64).
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
  return sweep;
}

}  // namespace fastdto
