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

// 2^p as two factors, each a normal double for any p a double's exponent range can need, so that
// x * f.a * f.b scales without a library call per entry: exact, as ldexp, unless the result is
// subnormal (then it may round twice where ldexp rounds once).
struct Pow2Pair {
  double a, b;
};
FASTDTO_HD Pow2Pair pow2_pair(int p) { return {ldexp(1.0, p / 2), ldexp(1.0, p - p / 2)}; }

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
  const Pow2Pair f = pow2_pair(-e);
  for (long long i = 0; i < (long long)n * d; ++i) X[i] = X[i] * f.a * f.b;
  return e;
}

// Largest magnitude among x[0], x[stride], ..., x[(count - 1) * stride].
FASTDTO_HD double max_abs(const double* x, int stride, int count) {
  double m = 0.0;
  for (int i = 0; i < count; ++i) m = dmax(m, dabs(x[i * stride]));
  return m;
}

// Euclidean norm of the same entries, given their largest magnitude m: the squares are taken of
// x / 2^e with m in [2^(e-1), 2^e) (exact scaling), so none underflows or overflows. Four partial
// sums: one running sum is a chain of dependent additions, 4 cycles per entry.
FASTDTO_HD double scaled_norm(const double* x, int stride, int count, double m) {
  if (m == 0.0) return 0.0;
  int e;
  frexp(m, &e);
  const Pow2Pair f = pow2_pair(-e);
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int i = 0;
  for (; i + 4 <= count; i += 4) {
    const double t0 = x[i * stride] * f.a * f.b, t1 = x[(i + 1) * stride] * f.a * f.b;
    const double t2 = x[(i + 2) * stride] * f.a * f.b, t3 = x[(i + 3) * stride] * f.a * f.b;
    s0 += t0 * t0;
    s1 += t1 * t1;
    s2 += t2 * t2;
    s3 += t3 * t3;
  }
  for (; i < count; ++i) {
    const double t = x[i * stride] * f.a * f.b;
    s0 += t * t;
  }
  return ldexp(sqrt((s0 + s1) + (s2 + s3)), e);
}

// x . y over count contiguous entries, in four partial sums (see scaled_norm).
FASTDTO_HD double dot4(const double* x, const double* y, int count) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int i = 0;
  for (; i + 4 <= count; i += 4) {
    s0 += x[i] * y[i];
    s1 += x[i + 1] * y[i + 1];
    s2 += x[i + 2] * y[i + 2];
    s3 += x[i + 3] * y[i + 3];
  }
  for (; i < count; ++i) s0 += x[i] * y[i];
  return (s0 + s1) + (s2 + s3);
}

// Householder QR of X (n x d, column-major, destroyed). Writes the d x d upper-triangular
// factor R (row-major; rows >= min(n, d) are zero). Nothing here squares an entry of X: a column
// far below the largest (X is scaled to max |x| < 1) would underflow, and the reflection turn NaN.
// Each column is scaled by a power of two to max |x| in [1/2, 1) before its reflector is formed
// (exact, and the reflector does not depend on the scale): a column of subnormal numbers would
// otherwise give a norm and a reflector with a few bits of precision, and the reflection, no longer
// orthogonal, would corrupt every other column.
FASTDTO_HD void householder_r(double* X, int n, int d, double* R) {
  for (int i = 0; i < d * d; ++i) R[i] = 0.0;
  const int m = n < d ? n : d;
  for (int k = 0; k < m; ++k) {
    double* xk = X + (long long)k * n;
    const double scale = max_abs(xk + k, 1, n - k);
    if (scale == 0.0) {
      for (int j = k + 1; j < d; ++j) R[k * d + j] = X[(long long)j * n + k];
      continue;
    }
    int e;
    frexp(scale, &e);  // scale in [2^(e-1), 2^e)
    const Pow2Pair f = pow2_pair(-e);
    for (int r = k; r < n; ++r) xk[r] = xk[r] * f.a * f.b;
    const double norm = scaled_norm(xk + k, 1, n - k, scale * f.a * f.b);  // in [1/2, sqrt(n))
    const double alpha = xk[k] >= 0.0 ? -norm : norm;
    // The reflector u = (x - alpha e_k) / norm, stored in place: its entries are at most 2 in
    // magnitude, and u.u = 2 (1 + |x_k| / norm), in [2, 4].
    const double uu = 2.0 * (1.0 + dabs(xk[k]) / norm);
    xk[k] -= alpha;
    const double inv = 1.0 / norm;
    for (int r = k; r < n; ++r) xk[r] *= inv;
    for (int j = k + 1; j < d; ++j) {
      double* xj = X + (long long)j * n;
      const double g = 2.0 * dot4(xk + k, xj + k, n - k) / uu;
      for (int r = k; r < n; ++r) xj[r] -= g * xk[r];
      R[k * d + j] = xj[k];
    }
    R[k * d + k] = ldexp(alpha, e);
  }
}

// One-sided Jacobi on A (d x d row-major, destroyed): rotates column pairs until all are
// mutually orthogonal to working precision. sigma (descending) are the column norms, and column k
// of V (row-major) the matching right singular vector. Returns the sweeps used. Each pair's sums
// are taken over the columns divided by their largest magnitudes: columns whose scales differ by
// more than 1e154 then neither underflow nor spin the sweeps on a test that can never pass.
FASTDTO_HD int one_sided_jacobi(double* A, int d, double* sigma, double* V, int max_sweeps = 60) {
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) V[i * d + j] = (i == j) ? 1.0 : 0.0;
  int sweep = 0;
  for (; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < d - 1; ++p) {
      for (int q = p + 1; q < d; ++q) {
        const double mp = max_abs(A + p, d, d), mq = max_abs(A + q, d, d);  // columns p and q
        if (mp == 0.0 || mq == 0.0) continue;
        double a = 0.0, b = 0.0, g = 0.0;  // of the scaled columns A_p / mp and A_q / mq
        for (int k = 0; k < d; ++k) {
          const double x = A[k * d + p] / mp, y = A[k * d + q] / mq;
          a += x * x; b += y * y; g += x * y;
        }
        if (g == 0.0 || dabs(g) <= kEps64 * sqrt(a) * sqrt(b)) continue;  // scale-free test
        // zeta = (|A_q|^2 - |A_p|^2) / (2 A_p.A_q) in unscaled terms, and t = tan of the angle,
        // about 1 / (2 zeta) when |zeta| is large (zeta^2 would overflow there). Only scales more
        // than 1e308 apart make zeta infinite and t zero: then the pair is left as it is.
        const double zeta = ((mq / mp) * b - (mp / mq) * a) / (2.0 * g);
        const double az = dabs(zeta);
        const double t = (zeta >= 0.0 ? 1.0 : -1.0) /
                         (az <= 1.0 ? az + sqrt(1.0 + az * az) : az * (1.0 + sqrt(1.0 + (1.0 / az) / az)));
        if (t == 0.0) continue;
        rotated = true;
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
  for (int j = 0; j < d; ++j) sigma[j] = scaled_norm(A + j, d, d, max_abs(A + j, d, d));
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
