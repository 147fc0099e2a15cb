#include "engine.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <vector>

namespace fastdto {
namespace cpu {
namespace {

// GCC/Clang vector extensions rather than intrinsics: the same source compiles for both instruction
// sets below (4 doubles are one AVX2 register, or two SSE2 registers in the baseline build).
typedef double v4d __attribute__((vector_size(32)));

constexpr int kBlockRows = 64;  // rows of J per Gram block (multiple of 4; 64 x d doubles stay in L1)

// Instruction sets the per-sample code is compiled for, picked once per call (see dto_batch).
enum class Isa { Baseline, Avx2 };

// Keeps a loaded vector in a register. Without it GCC folds every use of a reused operand into its
// own memory-operand FMA, and the Gram tiles run load-bound (13 us instead of 10 per sample).
template <Isa isa>
FASTDTO_HD void keep_in_register(v4d& v) {
  if constexpr (isa == Isa::Avx2) asm("" : "+x"(v));
  (void)v;
}

FASTDTO_HD v4d load4(const double* p) { v4d v; __builtin_memcpy(&v, p, sizeof v); return v; }
// Element-wise, not __builtin_convertvector: GCC 12 turns this form into one vcvtps2pd from memory
// and the other into split halves through the stack.
FASTDTO_HD v4d load4(const float* p) { return v4d{(double)p[0], (double)p[1], (double)p[2], (double)p[3]}; }
FASTDTO_HD void store4(double* p, v4d v) { __builtin_memcpy(p, &v, sizeof v); }

// Rows [r0, r0 + m) of J into buf as float64 columns (column k at buf + k * kBlockRows), rows m..
// zero-filled. Unit column stride (the usual row-major J): 4 x 4 tiles transposed in registers,
// the last tile overlapping the previous one when 4 does not divide d. Other strides: element by
// element, column by column (contiguous writes; GCC turned row-by-row copies into slow gathers).
template <typename T>
FASTDTO_HD void transpose_block(const T* J, long long sr, long long sc, int m, int d, double* buf) {
  int r = 0;
  if (sc == 1 && d >= 4) {
    for (; r + 4 <= m; r += 4) {
      const T* row = J + r * sr;
      for (int c0 = 0; c0 < d; c0 += 4) {
        const int c = c0 + 4 <= d ? c0 : d - 4;
        const v4d x0 = load4(row + c), x1 = load4(row + sr + c), x2 = load4(row + 2 * sr + c),
                  x3 = load4(row + 3 * sr + c);
        const v4d t0 = __builtin_shufflevector(x0, x1, 0, 4, 2, 6), t1 = __builtin_shufflevector(x0, x1, 1, 5, 3, 7);
        const v4d t2 = __builtin_shufflevector(x2, x3, 0, 4, 2, 6), t3 = __builtin_shufflevector(x2, x3, 1, 5, 3, 7);
        const v4d col[4] = {__builtin_shufflevector(t0, t2, 0, 1, 4, 5), __builtin_shufflevector(t1, t3, 0, 1, 4, 5),
                            __builtin_shufflevector(t0, t2, 2, 3, 6, 7), __builtin_shufflevector(t1, t3, 2, 3, 6, 7)};
        for (int k = 0; k < 4; ++k) store4(buf + (c + k) * kBlockRows + r, col[k]);  // overlap: same values
      }
    }
  }
  for (int k = 0; k < d; ++k) {
    const T* col = J + k * sc;
    double* dst = buf + k * kBlockRows;
    for (int i = r; i < m; ++i) dst[i] = (double)col[i * sr];
    for (int i = m; i < kBlockRows; ++i) dst[i] = 0.0;
  }
}

// Accumulates the TA x TB tile of column products starting at columns (a0, b0) over kBlockRows rows
// of float64 or float32 columns (column k at cols + k * cs; float32 is converted on load):
// acc[(a0 + i) * d + b0 + j] += 4 partial sums each. All TA + TB columns are loaded once per 4
// rows and every load feeds TA or TB FMAs; small tiles take 8 rows per step so that at least 8
// independent accumulations hide the FMA latency.
template <Isa isa, int TA, int TB, typename S>
FASTDTO_HD void gram_tile(const S* cols, long long cs, int a0, int b0, int d, double* acc) {
  constexpr int U = TA * TB >= 6 ? 1 : 2;
  v4d s[U][TA][TB];
  for (int u = 0; u < U; ++u)
    for (int i = 0; i < TA; ++i)
      for (int j = 0; j < TB; ++j) s[u][i][j] = u == 0 ? load4(acc + 4 * ((a0 + i) * d + b0 + j)) : v4d{0, 0, 0, 0};
  // Two steps per iteration, not all 16: the d-specialised copies stay small.
#pragma GCC unroll 2
  for (int r = 0; r < kBlockRows; r += 4 * U)
    for (int u = 0; u < U; ++u) {
      v4d a[TA], b[TB];
      for (int i = 0; i < TA; ++i) a[i] = load4(cols + (a0 + i) * cs + r + 4 * u);
      for (int j = 0; j < TB; ++j) {
        b[j] = load4(cols + (b0 + j) * cs + r + 4 * u);
        keep_in_register<isa>(b[j]);
      }
      for (int i = 0; i < TA; ++i)
        for (int j = 0; j < TB; ++j) s[u][i][j] += a[i] * b[j];
    }
  for (int i = 0; i < TA; ++i)
    for (int j = 0; j < TB; ++j) {
      v4d t = s[0][i][j];
      for (int u = 1; u < U; ++u) t += s[u][i][j];
      store4(acc + 4 * ((a0 + i) * d + b0 + j), t);
    }
}

template <Isa isa, int TA, typename S>
FASTDTO_HD void gram_tile_row(const S* cols, long long cs, int a0, int d, double* acc) {
  int b0 = a0;
  for (; b0 + 4 <= d; b0 += 4) gram_tile<isa, TA, 4>(cols, cs, a0, b0, d, acc);
  switch (d - b0) {
    case 3: gram_tile<isa, TA, 3>(cols, cs, a0, b0, d, acc); break;
    case 2: gram_tile<isa, TA, 2>(cols, cs, a0, b0, d, acc); break;
    case 1: gram_tile<isa, TA, 1>(cols, cs, a0, b0, d, acc); break;
    default: break;
  }
}

template <Isa isa, typename S>
FASTDTO_HD void gram_tiles(const S* cols, long long cs, int d, double* acc) {
  int a0 = 0;
  for (; a0 + 2 <= d; a0 += 2) gram_tile_row<isa, 2>(cols, cs, a0, d, acc);
  if (a0 < d) gram_tile_row<isa, 1>(cols, cs, a0, d, acc);
}

// G = J^T J (d x d, row-major) with float64 accumulation, the upper triangle covered by 2 x 4
// register tiles of column pairs over blocks of rows. J with contiguous columns is read in place;
// otherwise each block is first transposed into float64 columns. Same sums, same order either way.
// acc holds d * d groups of 4 partial sums (the tiles' lower-left corners are computed and unused).
// D > 0 fixes d at compile time, and full blocks are separate from the last one, for the same
// reason: with every loop bound known the loops unroll (the engine is 15% faster at d = 10).
template <Isa isa, int D, typename T>
FASTDTO_HD void gram_matrix_of(const T* J, long long sr, long long sc, int n, int d_runtime, double* buf,
                               double* acc, double* G) {
  const int d = D > 0 ? D : d_runtime;
  for (int i = 0; i < 4 * d * d; ++i) acc[i] = 0.0;
  int r0 = 0;
  for (; r0 + kBlockRows <= n; r0 += kBlockRows) {
    if (sr == 1) {  // contiguous columns (forward-mode Jacobians): the tiles read J itself
      gram_tiles<isa>(J + r0, sc, d, acc);
    } else {
      transpose_block(J + r0 * sr, sr, sc, kBlockRows, d, buf);
      gram_tiles<isa>(buf, (long long)kBlockRows, d, acc);
    }
  }
  if (r0 < n) {
    transpose_block(J + r0 * sr, sr, sc, n - r0, d, buf);
    gram_tiles<isa>(buf, (long long)kBlockRows, d, acc);
  }
  for (int a = 0; a < d; ++a)
    for (int b = a; b < d; ++b) {
      const v4d t = load4(acc + 4 * (a * d + b));
      G[a * d + b] = G[b * d + a] = (t[0] + t[1]) + (t[2] + t[3]);
    }
}

// Latent sizes up to 16 get code of their own; larger ones share the generic loops.
template <Isa isa, typename T>
FASTDTO_HD void gram_matrix(const T* J, long long sr, long long sc, int n, int d, double* buf, double* acc,
                            double* G) {
  switch (d) {
#define FASTDTO_GRAM_CASE(D) \
  case D: gram_matrix_of<isa, D>(J, sr, sc, n, d, buf, acc, G); break;
    FASTDTO_GRAM_CASE(1) FASTDTO_GRAM_CASE(2) FASTDTO_GRAM_CASE(3) FASTDTO_GRAM_CASE(4)
    FASTDTO_GRAM_CASE(5) FASTDTO_GRAM_CASE(6) FASTDTO_GRAM_CASE(7) FASTDTO_GRAM_CASE(8)
    FASTDTO_GRAM_CASE(9) FASTDTO_GRAM_CASE(10) FASTDTO_GRAM_CASE(11) FASTDTO_GRAM_CASE(12)
    FASTDTO_GRAM_CASE(13) FASTDTO_GRAM_CASE(14) FASTDTO_GRAM_CASE(15) FASTDTO_GRAM_CASE(16)
#undef FASTDTO_GRAM_CASE
    default: gram_matrix_of<isa, 0>(J, sr, sc, n, d, buf, acc, G);
  }
}

// Four samples' Gram matrices per Jacobi run, one per lane of a v4d: the rotations' divisions and
// square roots then serve four samples for the latency of one.
struct SimdLanes {
  typedef double V __attribute__((vector_size(32), aligned(8)));  // scratch is only 8-byte aligned
  typedef decltype(V{} < V{}) Mask;
  static constexpr int width = 4;
  static FASTDTO_HD V splat(double x) { return V{x, x, x, x}; }
  static FASTDTO_HD V select(Mask m, V a, V b) { return m ? a : b; }
  static FASTDTO_HD V abs(V x) { return x < splat(0.0) ? -x : x; }
  static FASTDTO_HD V root(V x) {
    return V{__builtin_sqrt(x[0]), __builtin_sqrt(x[1]), __builtin_sqrt(x[2]), __builtin_sqrt(x[3])};
  }
  static FASTDTO_HD bool all(Mask m) { return (m[0] & m[1] & m[2] & m[3]) != 0; }
};
constexpr int kLanes = SimdLanes::width;

struct Scratch {
  std::vector<double> A, Qt;          // kLanes interleaved Gram and eigenvector matrices
  std::vector<double> G, V, R, work;  // work: n x d copy of J, only for samples redone on J
  std::vector<double> block;          // transposed rows of J
  std::vector<double> acc;            // Gram partial sums, 4 per entry
  explicit Scratch(int d)
      : A((size_t)kLanes * d * d), Qt((size_t)kLanes * d * d), G((size_t)d * d), V((size_t)d * d),
        R((size_t)d * d), block((size_t)d * kBlockRows), acc((size_t)4 * d * d) {}
};

// Samples [b0, b0 + count), count <= kLanes: Gram matrices into the lanes, scaled (identity for
// lanes whose sample goes straight to the SVD path; they converge at once), the lane-parallel
// Jacobi sweeps, then each sample's own finish.
template <Isa isa, typename T>
FASTDTO_HD void dto_group(const T* base, const StridedBatch& Jb, const SampleOptions& opt, Scratch& s,
                          const DtoOutputs& out, long long b0, int count) {
  const int n = (int)Jb.rows, d = (int)Jb.cols;
  double* G = s.G.data();
  double* V = s.V.data();
  bool on_gram[kLanes];
  int scale_exp[kLanes];
  double scaled_floor[kLanes];
  set_identity<kLanes>(s.A.data(), d);
  set_identity<kLanes>(s.Qt.data(), d);
  for (int l = 0; l < count; ++l) {
    gram_matrix<isa>(base + (b0 + l) * Jb.s_batch, Jb.s_row, Jb.s_col, n, d, s.block.data(), s.acc.data(), G);
    on_gram[l] = gram_scale_exponent(G, d, &scale_exp[l]);
    if (!on_gram[l]) continue;
    scaled_floor[l] = scaled_gram_floor(G, d, V, opt.zero_columns_exact);  // V is free until the lanes are extracted
    const double scale = gram_scale(scale_exp[l]);
    for (int e = 0; e < d * d; ++e) s.A[(size_t)e * kLanes + l] = G[e] * scale;
  }
  jacobi_sweeps<SimdLanes>(reinterpret_cast<SimdLanes::V*>(s.A.data()), reinterpret_cast<SimdLanes::V*>(s.Qt.data()), d);
  for (int l = 0; l < count; ++l) {
    const long long b = b0 + l;
    double sigma[kMaxDim];
    int perm[kMaxDim];
    uint8_t flags = 0;
    bool needs_svd = true;
    if (on_gram[l]) {
      extract_eigenpairs<kLanes>(s.A.data(), s.Qt.data(), d, l, sigma, V);
      needs_svd = sigma_from_eigenvalues(sigma, d, scale_exp[l], scaled_floor[l], opt);
    }
    if (needs_svd) {
      s.work.resize((size_t)n * d);
      if (!svd_right(base + b * Jb.s_batch, Jb.s_row, Jb.s_col, n, d, s.work.data(), s.R.data(), sigma, V)) {
        out.flags[b] = kFlagNonFinite;
        continue;
      }
      flags |= kFlagSvdPath;
    }
    flags |= finish_sample(V, sigma, d, opt, perm, out.signs + b * d, out.distance + b);
    out.flags[b] = flags;
    store_sample(out, b, sigma, perm, d);
    if (out.V)
      for (int i = 0; i < d * d; ++i) out.V[b * d * d + i] = V[i];
  }
}

template <typename T>
FASTDTO_HD void perm_one(const T* src, const StridedBatch& Vb, Solver solver, const DtoOutputs& out, long long b) {
  const int d = (int)Vb.cols;
  double copy[kMaxDim * kMaxDim];
  int perm[kMaxDim];
  // Row-major float64 is read in place; anything else is converted into `copy`.
  const bool in_place = sizeof(T) == sizeof(double) && Vb.s_row == d && Vb.s_col == 1;
  const double* V = in_place ? reinterpret_cast<const double*>(src) : copy;
  const bool finite = in_place ? all_finite(V, d * d) : load_square(src, Vb.s_row, Vb.s_col, d, copy);
  if (!finite) {
    out.flags[b] = kFlagNonFinite;
    return;
  }
  bool certified = false;
  out.distance[b] = nearest_signed_permutation(V, d, solver, perm, out.signs + b * d, &certified);
  out.flags[b] = certified ? kFlagCertified : 0;
  store_sample(out, b, nullptr, perm, d);
}

// Each per-sample entry point exists twice: for the x86-64 baseline (SSE2, which has no blends for
// the assignment's branch-free scans and half-width vectors for the Gram) and for x86-64-v3 (AVX2,
// FMA), chosen at run time. Both compile the same code: every callee is forcibly inlined (see
// FASTDTO_HD), so it takes the caller's instruction set.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FASTDTO_HAVE_AVX2_BUILD 1
#define FASTDTO_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#else
#define FASTDTO_HAVE_AVX2_BUILD 0
#define FASTDTO_TARGET_AVX2
#endif

template <typename T>
void dto_group_baseline(const T* base, const StridedBatch& Jb, const SampleOptions& opt, Scratch& s,
                        const DtoOutputs& out, long long b0, int count) {
  dto_group<Isa::Baseline>(base, Jb, opt, s, out, b0, count);
}
template <typename T>
void perm_one_baseline(const T* src, const StridedBatch& Vb, Solver solver, const DtoOutputs& out, long long b) {
  perm_one(src, Vb, solver, out, b);
}
#if FASTDTO_HAVE_AVX2_BUILD
template <typename T>
FASTDTO_TARGET_AVX2 void dto_group_avx2(const T* base, const StridedBatch& Jb, const SampleOptions& opt,
                                        Scratch& s, const DtoOutputs& out, long long b0, int count) {
  dto_group<Isa::Avx2>(base, Jb, opt, s, out, b0, count);
}
template <typename T>
FASTDTO_TARGET_AVX2 void perm_one_avx2(const T* src, const StridedBatch& Vb, Solver solver,
                                       const DtoOutputs& out, long long b) {
  perm_one(src, Vb, solver, out, b);
}
#endif

// The AVX2 code when this CPU runs it and FASTDTO_CPU_BASELINE=1 does not forbid it (tests compare
// both paths on one machine).
bool use_avx2() {
#if FASTDTO_HAVE_AVX2_BUILD
  const char* force = std::getenv("FASTDTO_CPU_BASELINE");
  if (force && *force && std::strcmp(force, "0") != 0) return false;
  return __builtin_cpu_supports("x86-64-v3");
#else
  return false;
#endif
}

// The per-sample entry point for this call: `fn`_avx2 where use_avx2() allows it, else `fn`_baseline.
#if FASTDTO_HAVE_AVX2_BUILD
#define FASTDTO_PICK(fn, T) (use_avx2() ? fn##_avx2<T> : fn##_baseline<T>)
#else
#define FASTDTO_PICK(fn, T) (fn##_baseline<T>)
#endif

// OpenMP team size: the default for threads <= 0, never more than the work items or kMaxThreads
// (each thread costs a stack; tens of thousands fail to start, or crash inside libgomp).
int team_size(int threads, long long work) {
  if (threads <= 0) threads = omp_get_max_threads();
  return (int)std::max<long long>(1, std::min<long long>({(long long)threads, work, (long long)kMaxThreads}));
}

// An exception must not leave an OpenMP region (that is std::terminate): the first one thrown in
// the team is kept, the remaining work is skipped, and it is rethrown after the join (pybind11 turns
// std::bad_alloc from the SVD path's n x d scratch into MemoryError).
class FirstError {
 public:
  template <typename F>
  void run(F&& f) {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
#pragma omp critical(fastdto_first_error)
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

template <typename T>
void dto_batch(const StridedBatch& Jb, const SampleOptions& opt, const DtoOutputs& out, int threads) {
  const T* base = static_cast<const T*>(Jb.data);
  const auto group = FASTDTO_PICK(dto_group, T);
  const long long groups = (Jb.count + kLanes - 1) / kLanes;
  threads = team_size(threads, groups);
  FirstError error;
#pragma omp parallel num_threads(threads)
  {
    std::unique_ptr<Scratch> scratch;
    error.run([&] { scratch = std::make_unique<Scratch>((int)Jb.cols); });
#pragma omp for schedule(dynamic, 2)
    for (long long g = 0; g < groups; ++g) {
      if (!scratch) continue;
      const long long b0 = g * kLanes;
      error.run([&] { group(base, Jb, opt, *scratch, out, b0, (int)std::min<long long>(kLanes, Jb.count - b0)); });
    }
  }
  error.rethrow();
}

template <typename T>
void perm_batch(const StridedBatch& Vb, Solver solver, const DtoOutputs& out, int threads) {
  const T* base = static_cast<const T*>(Vb.data);
  const auto one = FASTDTO_PICK(perm_one, T);
  threads = team_size(threads, Vb.count);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long long b = 0; b < Vb.count; ++b) one(base + b * Vb.s_batch, Vb, solver, out, b);
}

}  // namespace

void dto_from_jacobians(const StridedBatch& J, const SampleOptions& opt, const DtoOutputs& out,
                        int threads) {
  if (J.is_f64) dto_batch<double>(J, opt, out, threads);
  else dto_batch<float>(J, opt, out, threads);
}

const char* code_path() { return use_avx2() ? "x86-64-v3" : "baseline"; }

void signed_permutations(const StridedBatch& V, Solver solver, const DtoOutputs& out, int threads) {
  if (V.is_f64) perm_batch<double>(V, solver, out, threads);
  else perm_batch<float>(V, solver, out, threads);
}

}  // namespace cpu
}  // namespace fastdto
