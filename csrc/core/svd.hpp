// SVD-grade right singular vectors of a tall n x d matrix: Householder QR, then one-sided
// (Hestenes) Jacobi on the d x d triangular factor. Used for the samples whose Gram matrix is too
// ill-conditioned for the eigen route: it works on J itself, so the condition number is not squared.
#pragma once

#include "common.hpp"

namespace fastdto {

// Copies J (element strides sr between rows, sc between columns) into X, column-major float64,
// scaled by a power of two so that its largest magnitude lies in [1/2, 1) (so no square below
// under- or overflows). Returns the exponent e with J = 2^e X, or kNotFinite for NaN or Inf in J.
constexpr int kNotFinite = 1 << 30;
template <typename T>
FASTDTO_HD int load_columns(const T* J, long long sr, long long sc, int n, int d, double* X) {
  double top = 0.0;
  bool finite = true;
  for (int k = 0; k < d; ++k)
    for (int r = 0; r < n; ++r) {
      const double x = (double)J[r * sr + k * sc];
      X[(long long)k * n + r] = x;
      finite = finite && is_finite(x);
      top = dmax(top, dabs(x));
    }
  if (!finite) return kNotFinite;
  if (top == 0.0) return 0;
  int e;
  frexp(top, &e);
  for (long long i = 0; i < (long long)n * d; ++i) X[i] = ldexp(X[i], -e);
  return e;
}

// Householder QR of X (n x d, column-major, destroyed). Writes the d x d upper-triangular
// factor R (row-major; rows >= min(n, d) are zero).
FASTDTO_HD void householder_r(double* X, int n, int d, double* R) {
  for (int i = 0; i < d * d; ++i) R[i] = 0.0;
  const int m = n < d ? n : d;
  for (int k = 0; k < m; ++k) {
    double* xk = X + (long long)k * n;
    double scale = 0.0;  // scaling keeps the norm free of overflow and underflow
    for (int r = k; r < n; ++r) scale = dmax(scale, dabs(xk[r]));
    if (scale == 0.0) {
      for (int j = k + 1; j < d; ++j) R[k * d + j] = X[(long long)j * n + k];
      continue;
    }
    double ss = 0.0;
    for (int r = k; r < n; ++r) { const double t = xk[r] / scale; ss += t * t; }
    const double norm = scale * sqrt(ss);
    const double alpha = xk[k] >= 0.0 ? -norm : norm;
    xk[k] -= alpha;  // v = x - alpha e_k, stored in place
    const double vtv = 2.0 * norm * (norm + dabs(xk[k] + alpha));  // ||v||^2 without cancellation
    for (int j = k + 1; j < d; ++j) {
      double* xj = X + (long long)j * n;
      double s = 0.0;
      for (int r = k; r < n; ++r) s += xk[r] * xj[r];
      const double f = 2.0 * s / vtv;
      for (int r = k; r < n; ++r) xj[r] -= f * xk[r];
      R[k * d + j] = xj[k];
    }
    R[k * d + k] = alpha;
  }
}

// One-sided Jacobi on A (d x d row-major, destroyed): rotates column pairs until all are
// mutually orthogonal to working precision. sigma (descending) are the column norms, and column k
// of V (row-major) the matching right singular vector. Returns the sweeps used.
FASTDTO_HD int one_sided_jacobi(double* A, int d, double* sigma, double* V, int max_sweeps = 60) {
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) V[i * d + j] = (i == j) ? 1.0 : 0.0;
  int sweep = 0;
  for (; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < d - 1; ++p) {
      for (int q = p + 1; q < d; ++q) {
        double a = 0.0, b = 0.0, g = 0.0;
        for (int k = 0; k < d; ++k) {
          const double x = A[k * d + p], y = A[k * d + q];
          a += x * x; b += y * y; g += x * y;
        }
        if (g == 0.0 || dabs(g) <= kEps64 * sqrt(a) * sqrt(b)) continue;  // a * b may underflow
        rotated = true;
        const double zeta = (b - a) / (2.0 * g);
        const double t = (zeta >= 0.0 ? 1.0 : -1.0) / (dabs(zeta) + sqrt(1.0 + zeta * zeta));
        const double c = 1.0 / sqrt(1.0 + t * t);
        const double s = c * t;
        for (int k = 0; k < d; ++k) {
          const double x = A[k * d + p], y = A[k * d + q];
          A[k * d + p] = c * x - s * y;
          A[k * d + q] = s * x + c * y;
          const double vx = V[k * d + p], vy = V[k * d + q];
          V[k * d + p] = c * vx - s * vy;
          V[k * d + q] = s * vx + c * vy;
        }
      }
    }
    if (!rotated) break;
  }
  for (int j = 0; j < d; ++j) {
    double ss = 0.0;
    for (int k = 0; k < d; ++k) ss += A[k * d + j] * A[k * d + j];
    sigma[j] = sqrt(ss);
  }
  sort_descending_with_columns(sigma, V, d);
  return sweep;
}

// Right singular vectors of J (n x d, strided) through QR then Jacobi. X needs n * d doubles,
// R and V d * d each. Returns false (outputs unspecified) when J holds NaN or Inf.
template <typename T>
FASTDTO_HD bool svd_right(const T* J, long long sr, long long sc, int n, int d, double* X, double* R,
                          double* sigma, double* V) {
  const int e = load_columns(J, sr, sc, n, d, X);
  if (e == kNotFinite) return false;
  householder_r(X, n, d, R);
  one_sided_jacobi(R, d, sigma, V);
  for (int k = 0; k < d; ++k) sigma[k] = ldexp(sigma[k], e);
  return true;
}

}  // namespace fastdto
