// Nearest signed permutation of a square matrix V in the L1 sense.
//
// Choosing entry (i, j) with sign sign(V_ij) changes ||V - P||_1 by |V_ij| - ||V_ij| - 1|, which is
// affine in w_ij = min(|V_ij|, 1). So the L1-nearest signed permutation is a maximum-weight
// assignment on w (for orthogonal V, w = |V|, and it is also the Frobenius-nearest one).
#pragma once

#include "common.hpp"

namespace fastdto {

FASTDTO_HD double assignment_weight(double v) { return dmin(dabs(v), 1.0); }

// The first column where the row c reaches the value m (branch-free; m must occur in c).
FASTDTO_HD int first_column_of(const double* c, int d, double m) {
  int arg = 0;
  for (int j = d - 1; j >= 0; --j) arg = c[j] == m ? j : arg;
  return arg;
}

// Costs c_ij = 1 - w_ij >= 0 of the assignment (a minimum-cost problem), each row's smallest cost
// (1 - its largest weight) and the first column where it occurs. One pass serves both the
// certificate and the exact solver's warm start; within a row the work is independent per column
// (vectorised min, branch-free first-index scan), so rows do not wait on one another.
FASTDTO_HD void assignment_costs(const double* V, int d, double* cost, double* row_min, int* row_arg) {
  for (int i = 0; i < d; ++i) {
    double* c = cost + i * d;
    double m = 2.0;
    FASTDTO_HOST_PRAGMA(omp simd reduction(min : m))
    for (int j = 0; j < d; ++j) {
      c[j] = 1.0 - assignment_weight(V[i * d + j]);
      m = c[j] < m ? c[j] : m;
    }
    row_min[i] = m;
    row_arg[i] = first_column_of(c, d, m);
  }
}

// Certified fast path: if every row's largest weight sits in a different column, taking each
// row's maximum reaches the upper bound sum_i max_j w_ij, so it is optimal. Returns false
// (perm unspecified) when the row maxima collide.
FASTDTO_HD bool row_maxima_assignment(const int* row_arg, int d, int* perm) {
  uint64_t taken = 0;
  for (int i = 0; i < d; ++i) {
    const uint64_t bit = (uint64_t)1 << row_arg[i];
    if (taken & bit) return false;
    taken |= bit;
    perm[i] = row_arg[i];
  }
  return true;
}

// Approximate: repeatedly takes the largest remaining weight (not optimal in general). Works in
// place on the output of assignment_costs: each remaining row keeps its cheapest free column
// (row_min, row_arg), a taken column's costs and a finished row's minimum become 2 (costs lie in
// [0, 1]), and a row is rescanned only when its column is taken. So a solve is O(d^2) unless many
// rows share a column, and the scans are branch-free. Ties go to the lowest row, then column.
FASTDTO_HD void greedy_assignment(double* cost, double* row_min, int* row_arg, int d, int* perm) {
  for (int step = 0; step < d; ++step) {
    int bi = 0;
    double best = row_min[0];
    for (int i = 1; i < d; ++i) {
      const bool lower = row_min[i] < best;
      best = lower ? row_min[i] : best;
      bi = lower ? i : bi;
    }
    const int bj = row_arg[bi];
    perm[bi] = bj;
    row_min[bi] = 2.0;
    for (int i = 0; i < d; ++i) cost[i * d + bj] = 2.0;
    for (int i = 0; i < d; ++i) {
      if (row_min[i] == 2.0 || row_arg[i] != bj) continue;
      const double* c = cost + i * d;
      double m = 2.0;
      for (int j = 0; j < d; ++j) m = c[j] < m ? c[j] : m;
      row_min[i] = m;
      row_arg[i] = first_column_of(c, d, m);
    }
  }
}

// Exact minimum-cost assignment by the Hungarian method with potentials (shortest augmenting
// paths, O(d^3)) on the costs of assignment_costs. Warm start: row potentials u_i = min_j c_ij make
// every reduced cost non-negative and each row's minimum tight, so rows whose minimum column is
// still free are matched at once; only the remaining rows need an augmenting-path search. Column 0
// is a virtual column, as in the textbook form; rows and columns are 1-based inside.
// MaxD (>= d) sizes the local work arrays.
template <int MaxD = kMaxDim>
FASTDTO_HD void exact_assignment(const double* cost, const double* row_min, const int* row_arg, int d,
                                 int* perm) {
  double u[MaxD + 1], v[MaxD + 1], dist[MaxD + 1];
  int row_of[MaxD + 1], way[MaxD + 1];  // row_of[j]: row matched to column j (0: none)
  bool matched[MaxD + 1];
  for (int j = 0; j <= d; ++j) { v[j] = 1e300; row_of[j] = 0; way[j] = 0; }
  v[0] = 0.0;
  u[0] = 0.0;
  for (int i = 1; i <= d; ++i) {
    const int jmin = row_arg[i - 1];
    u[i] = row_min[i - 1];
    matched[i] = row_of[jmin + 1] == 0;
    if (matched[i]) row_of[jmin + 1] = i;
    // Column reduction as well: v_j = min_i (c_ij - u_i) keeps every reduced cost >= 0 and makes
    // one more edge per column tight, which the second matching pass below can use.
    const double* c = cost + (i - 1) * d;  // column j (1-based) at c[j - 1]
    FASTDTO_HOST_PRAGMA(omp simd)
    for (int j = 1; j <= d; ++j) v[j] = dmin(v[j], c[j - 1] - u[i]);
  }
  for (int i = 1; i <= d; ++i) {  // rows whose minimum column was taken: any free tight column
    if (matched[i]) continue;
    const double* c = cost + (i - 1) * d;
    for (int j = 1; j <= d; ++j)
      if (row_of[j] == 0 && c[j - 1] - u[i] == v[j]) {
        row_of[j] = i;
        matched[i] = true;
        break;
      }
  }
  for (int i = 1; i <= d; ++i) {
    if (matched[i]) continue;
    // Dijkstra from row i over reduced costs; dist[j] is the length of the shortest alternating
    // path to column j. Columns still to settle sit in todo[0, n_todo): scans shrink as the search
    // grows. Potentials are updated once at the end (not after every step).
    int todo[MaxD];
    int n_todo = d;
    for (int j = 1; j <= d; ++j) { todo[j - 1] = j; dist[j] = 1e300; }
    row_of[0] = i;
    dist[0] = 0.0;
    int j0 = 0;
    do {
      const int i0 = row_of[j0];
      const double* c = cost + (i0 - 1) * d;
      const double base = dist[j0] - u[i0];
      double best = 1e300;
      int slot = 0;
      for (int t = 0; t < n_todo; ++t) {  // branch-free scan (selects instead of jumps)
        const int j = todo[t];
        const double nd = base + c[j - 1] - v[j];
        const bool lower = nd < dist[j];
        dist[j] = lower ? nd : dist[j];
        way[j] = lower ? j0 : way[j];
        const bool better = dist[j] < best;
        best = better ? dist[j] : best;
        slot = better ? t : slot;
      }
      j0 = todo[slot];
      todo[slot] = todo[--n_todo];  // settled
      todo[n_todo] = j0;
    } while (row_of[j0] != 0);
    const double total = dist[j0];
    u[i] += total;  // virtual column 0: shift total - dist[0]
    for (int t = n_todo + 1; t < d; ++t) {  // settled columns except the free one just reached
      const int j = todo[t];
      const double shift = total - dist[j];
      u[row_of[j]] += shift;
      v[j] -= shift;
    }
    do {  // flip the augmenting path
      const int j1 = way[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  for (int j = 1; j <= d; ++j) perm[row_of[j] - 1] = j - 1;
}

// Entry (i, j) of |V - P| up to sign, P the signed permutation with columns perm.
FASTDTO_HD double permutation_residual(const double* V, int d, const int* perm, int i, int j) {
  const double x = V[i * d + j];
  return j == perm[i] ? dabs(x) - 1.0 : x;
}

// ||V - P||_F from squares scaled by the largest residual: for a V far from orthogonal (entries
// beyond 1e154), whose plain sum of squares overflows.
FASTDTO_HD_COLD double scaled_permutation_distance(const double* V, int d, const int* perm) {
  double m = 0.0;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) m = dmax(m, dabs(permutation_residual(V, d, perm, i, j)));
  double ss = 0.0;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      const double t = permutation_residual(V, d, perm, i, j) / m;
      ss += t * t;
    }
  return m * sqrt(ss);
}

// Signs of the chosen entries (+1 for zero) and the Frobenius distance ||V - P||_F, summed entry
// by entry so that distances near zero keep full relative accuracy.
FASTDTO_HD double signed_permutation_distance(const double* V, int d, const int* perm, int8_t* signs) {
  double ss = 0.0;
  for (int i = 0; i < d; ++i) {
    const double* row = V + i * d;
    const int p = perm[i];
    double r = 0.0;
    FASTDTO_HOST_PRAGMA(omp simd reduction(+ : r))
    // x - copysign(1, x) at the chosen entry (the square of |x| - 1), x elsewhere: no branch, so
    // the loop vectorises
    for (int j = 0; j < d; ++j) {
      const double e = row[j] - copysign((double)(j == p), row[j]);
      r += e * e;
    }
    ss += r;
    signs[i] = (int8_t)(1 - 2 * (row[p] < 0.0));
  }
  return is_finite(ss) ? sqrt(ss) : scaled_permutation_distance(V, d, perm);
}

// Full solve: certified greedy when the certificate holds, else the exact assignment (or the
// uncertified greedy when asked for). Returns the distance; *certified tells which path ran.
// MaxD (>= d) sizes the local arrays. The GPU engine instantiates MaxD = 16, 32, 64 and
// LocalCost = false, passing d * d doubles of dead global scratch as cost_work: the driver reserves
// local memory for every thread the device can hold, so a local 64 x 64 table would cost gigabytes.
template <int MaxD = kMaxDim, bool LocalCost = true>
FASTDTO_HD double nearest_signed_permutation(const double* V, int d, Solver solver, int* perm,
                                             int8_t* signs, bool* certified,
                                             double* cost_work = nullptr) {
  double cost_local[LocalCost ? MaxD * MaxD : 1];
  double* const cost = LocalCost ? cost_local : cost_work;
  double row_min[MaxD];
  int row_arg[MaxD];
  assignment_costs(V, d, cost, row_min, row_arg);
  *certified = row_maxima_assignment(row_arg, d, perm);
  if (!*certified) {
    if (solver == Solver::Greedy) greedy_assignment(cost, row_min, row_arg, d, perm);
    else exact_assignment<MaxD>(cost, row_min, row_arg, d, perm);
  }
  return signed_permutation_distance(V, d, perm, signs);
}

}  // namespace fastdto
