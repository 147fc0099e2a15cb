// CUDA backend: pybind11 entry points that take raw device pointers (Python ints), shapes, element
// strides, a dtype name and the caller's CUDA stream, validate everything they can, and enqueue the
// kernels of kernels.cuh on that stream. Nothing here waits for the GPU: no device or stream
// synchronisation; scratch memory comes from the caller (a torch tensor, so PyTorch's caching
// allocator sees it, can free its cache for it and orders its reuse on the stream), and the
// caller reads the flags (e.g. for non-finite input) whenever it next synchronises.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../engine_info.hpp"
#include "kernels.cuh"

namespace py = pybind11;

namespace fastdto {
namespace cuda {
namespace {

// Scratch budgets. G (and V when the caller does not want it) take d * d doubles per sample; the
// batch is processed in chunks that keep them under kChunkScratchBytes. The SVD path's pool gets
// kSvdPoolBytes (at least one slot), which bounds how many flagged samples run in parallel.
constexpr size_t kChunkScratchBytes = size_t(512) << 20;
constexpr size_t kSvdPoolBytes = size_t(256) << 20;

[[noreturn]] void raise_cuda(cudaError_t err, const std::string& what) {
  (void)cudaGetLastError();  // clear a non-sticky error so that later calls start clean
  throw std::runtime_error("fastdto CUDA backend: " + what + " failed: " + cudaGetErrorName(err) +
                           " (" + cudaGetErrorString(err) + ")");
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) raise_cuda(err, what);
}

size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

// Scratch of one dto_from_jacobians call, carved into aligned parts: G (and V when the caller does not
// want it) per sample of a chunk, the SVD-path list and its counter, and the SVD pool's slots.
struct DtoLayout {
  long long chunk;
  int slots;
  size_t g_bytes, v_bytes, list_bytes, count_bytes, x_bytes, r_bytes;
  size_t total() const { return g_bytes + v_bytes + list_bytes + count_bytes + x_bytes + r_bytes; }
};

DtoLayout dto_layout(long long N, long long n, long long d, bool with_V) {
  const size_t dd = (size_t)d * d;
  const size_t per_sample = dd * sizeof(double) * (with_V ? 1 : 2) + sizeof(int);
  DtoLayout L{};
  L.chunk = std::max<long long>(1, std::min<long long>(
      {N, (long long)(kChunkScratchBytes / per_sample), (long long)(INT_MAX / 2)}));
  const size_t per_slot = ((size_t)n * d + dd) * sizeof(double);
  L.slots = (int)std::max<long long>(1, std::min<long long>(L.chunk, (long long)(kSvdPoolBytes / per_slot)));
  L.g_bytes = align_up(L.chunk * dd * sizeof(double));
  L.v_bytes = with_V ? 0 : align_up(L.chunk * dd * sizeof(double));
  L.list_bytes = align_up(L.chunk * sizeof(int));
  L.count_bytes = align_up(sizeof(int));
  L.x_bytes = align_up((size_t)L.slots * n * d * sizeof(double));
  L.r_bytes = align_up((size_t)L.slots * dd * sizeof(double));
  return L;
}

// signed_permutations: a working copy of V and the assignment costs per sample of a chunk.
long long perm_chunk(long long N, long long d) {
  return std::max<long long>(1, std::min<long long>(
      {N, (long long)(kChunkScratchBytes / (2 * (size_t)d * d * sizeof(double))), (long long)(INT_MAX / 2)}));
}

size_t perm_scratch_bytes(long long N, long long d) {
  return 2 * align_up(perm_chunk(N, d) * (size_t)d * d * sizeof(double));
}

// The caller's scratch must be large enough; where it lives is checked once a device is current.
void check_scratch_size(size_t bytes, size_t needed) {
  if (bytes < needed)
    throw py::value_error("scratch: " + std::to_string(bytes) + " bytes given, " + std::to_string(needed) +
                          " needed (see cuda_dto_scratch_bytes / cuda_signed_permutations_scratch_bytes)");
}

int element_size(const std::string& dtype, const char* name) {
  if (dtype == "float32") return 4;
  if (dtype == "float64") return 8;
  throw py::type_error(std::string(name) + " must be float32 or float64, got dtype '" + dtype + "'");
}

Solver parse_solver(const std::string& s) {
  if (s == "exact") return Solver::Exact;
  if (s == "greedy") return Solver::Greedy;
  throw py::value_error("solver must be 'exact' or 'greedy' in the compiled engine, got '" + s + "'");
}

// Whether this build has code for compute capability major.minor: a real architecture of the same
// major version and no higher minor (sm_80 code runs on 8.6 and 8.9), or PTX of a virtual
// architecture at or below it (JIT-compiled by the driver). FASTDTO_CUDA_ARCHS is CMake's list,
// e.g. "80-real,90-real,90-virtual".
bool arch_supported(int major, int minor) {
  const std::string archs = FASTDTO_CUDA_ARCHS;
  const int cc = major * 10 + minor;
  size_t pos = 0;
  while (pos < archs.size()) {
    size_t end = archs.find(',', pos);
    if (end == std::string::npos) end = archs.size();
    const std::string item = archs.substr(pos, end - pos);
    pos = end + 1;
    const int arch = std::atoi(item.c_str());
    const bool real_only = item.find("-real") != std::string::npos;
    const bool virtual_only = item.find("-virtual") != std::string::npos;
    if (!virtual_only && arch / 10 == major && arch % 10 <= minor) return true;  // SASS
    if (!real_only && arch <= cc) return true;                                    // PTX
  }
  return false;
}

void compute_capability(int device, int* major, int* minor) {
  check(cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
}

// Makes `device` current for one call (-1 keeps the current one) and restores the caller's device
// on the way out, errors included: the raw bindings must not leave the process on another GPU.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device >= count)
      throw py::value_error("device " + std::to_string(device) + " does not exist (" +
                            std::to_string(count) + " CUDA device(s) visible)");
    const int target = device >= 0 ? device : previous_;
    int major = 0, minor = 0;
    compute_capability(target, &major, &minor);  // before switching: a throw here leaves nothing to undo
    if (!arch_supported(major, minor))
      throw py::value_error("CUDA device " + std::to_string(target) + " has compute capability " +
                            std::to_string(major) + "." + std::to_string(minor) +
                            ", which this build of fastdto has no code for (architectures " +
                            FASTDTO_CUDA_ARCHS + "); rebuild with CMAKE_CUDA_ARCHITECTURES including it");
    if (target != previous_) check(cudaSetDevice(target), "cudaSetDevice");  // last: nothing throws after
    current_ = target;
  }
  ~DeviceScope() {
    if (current_ != previous_) (void)cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  int device() const { return current_; }

 private:
  int previous_ = 0, current_ = 0;
};

// The memory [ptr, ptr + bytes) must be device (or managed) memory of `device`, aligned to `align`.
// Both ends are checked; that the range lies within one allocation is the caller's promise.
void check_device_range(uintptr_t ptr, size_t bytes, size_t align, int device, const char* name) {
  if (ptr == 0) throw py::value_error(std::string(name) + " is a null pointer");
  if (ptr % align != 0)
    throw py::value_error(std::string(name) + " is not aligned to " +
                          std::to_string(align) + " bytes");
  const uintptr_t span = bytes > 0 ? bytes - 1 : 0;
  if (span > UINTPTR_MAX - ptr) throw py::value_error(std::string(name) + " extends past the address space");
  const uintptr_t ends[2] = {ptr, ptr + span};
  for (uintptr_t p : ends) {
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(p));
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw py::value_error(std::string(name) + " is not a CUDA pointer (" + cudaGetErrorString(err) + ")");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      throw py::value_error(std::string(name) + " is not device memory (a host or unknown pointer)");
    if (attr.device != device)
      throw py::value_error(std::string(name) + " lives on CUDA device " + std::to_string(attr.device) +
                            " but the current device is " + std::to_string(device));
  }
}


// Element offset of the last element of a strided (count, rows, cols) batch; strides must be >= 0.
long long last_offset(long long count, long long rows, long long cols, long long s0, long long s1,
                      long long s2, const char* name) {
  if (s0 < 0 || s1 < 0 || s2 < 0)
    throw py::value_error(std::string(name) + " has a negative stride");
  const long long limit = LLONG_MAX / 32;  // three terms, times 8 bytes, stay far below overflow
  if ((count > 1 && s0 > limit / (count - 1)) || (rows > 1 && s1 > limit / (rows - 1)) ||
      (cols > 1 && s2 > limit / (cols - 1)))
    throw py::value_error(std::string(name) + " has strides too large to address");
  return (count - 1) * s0 + (rows - 1) * s1 + (cols - 1) * s2;
}

int bucket(int d) { return d <= 16 ? 16 : d <= 32 ? 32 : 64; }

unsigned blocks_for(long long threads, int per_block) {
  return (unsigned)((threads + per_block - 1) / per_block);
}

// ---- Gram dispatch ----

template <typename T, int D>
void launch_small(const T* J, int count, long long sN, long long sn, long long sd, int n, bool kfast,
                  double* G, cudaStream_t stream) {
  gram_small_kernel<T, D><<<(unsigned)count, kGramThreads, 0, stream>>>(J, sN, sn, sd, n, kfast, G);
}

template <typename T>
void launch_gram(const T* J, int count, long long sN, long long sn, long long sd, int n, int d,
                 bool tiled, double* G, cudaStream_t stream) {
  // k-fast when rows are contiguous (sd == 1) unless columns are (sn == 1), then r-fast.
  const bool kfast = sd == 1 && sn != 1;
  if (tiled || d > kSmallGramDim) {
    gram_tiled_kernel<T><<<(unsigned)count, kTiledThreads, 0, stream>>>(J, sN, sn, sd, n, d, kfast, G);
  } else {
    switch (d) {
#define FASTDTO_SMALL(D) \
  case D: launch_small<T, D>(J, count, sN, sn, sd, n, kfast, G, stream); break;
      FASTDTO_SMALL(1) FASTDTO_SMALL(2) FASTDTO_SMALL(3) FASTDTO_SMALL(4)
      FASTDTO_SMALL(5) FASTDTO_SMALL(6) FASTDTO_SMALL(7) FASTDTO_SMALL(8)
      FASTDTO_SMALL(9) FASTDTO_SMALL(10) FASTDTO_SMALL(11) FASTDTO_SMALL(12)
      FASTDTO_SMALL(13) FASTDTO_SMALL(14) FASTDTO_SMALL(15) FASTDTO_SMALL(16)
#undef FASTDTO_SMALL
      default: throw std::logic_error("unreachable Gram size");
    }
  }
  check(cudaGetLastError(), "Gram kernel launch");
}

// ---- dto_from_jacobians ----

struct DtoArgs {
  const void* J;
  long long N, sN, sn, sd;
  int n, d;
  SampleOptions opt;
  DtoOutputs out;  // out.V: N x d x d, or null (then V lives in scratch)
  bool tiled;
  char* scratch;  // dto_layout(N, n, d, out.V != nullptr).total() bytes, 256-byte aligned
  cudaStream_t stream;
};

template <typename T, int MaxD>
void run_dto(const DtoArgs& a) {
  const T* J = static_cast<const T*>(a.J);
  const int n = a.n, d = a.d;
  const size_t dd = (size_t)d * d;
  const DtoLayout L = dto_layout(a.N, n, d, a.out.V != nullptr);
  const long long chunk = L.chunk;
  char* p = a.scratch;
  double* G = reinterpret_cast<double*>(p);
  p += L.g_bytes;
  double* Vscratch = reinterpret_cast<double*>(p);
  p += L.v_bytes;
  int* list = reinterpret_cast<int*>(p);
  p += L.list_bytes;
  int* counter = reinterpret_cast<int*>(p);
  p += L.count_bytes;
  double* X = reinterpret_cast<double*>(p);
  p += L.x_bytes;
  double* R = reinterpret_cast<double*>(p);

  for (long long c0 = 0; c0 < a.N; c0 += chunk) {
    const int m = (int)std::min<long long>(chunk, a.N - c0);
    const T* Jc = J + c0 * a.sN;
    DtoOutputs out{a.out.sigma + c0 * d, a.out.perm + c0 * d, a.out.signs + c0 * d,
                      a.out.distance + c0, a.out.flags + c0};
    double* Vw = a.out.V ? a.out.V + c0 * (long long)dd : Vscratch;
    launch_gram(Jc, m, a.sN, a.sn, a.sd, n, d, a.tiled, G, a.stream);
    check(cudaMemsetAsync(counter, 0, sizeof(int), a.stream), "cudaMemsetAsync (SVD-path counter)");
    finish_kernel<MaxD><<<blocks_for(m, kSampleThreads), kSampleThreads, 0, a.stream>>>(
        m, d, G, Vw, a.opt, out, list, counter);
    check(cudaGetLastError(), "per-sample kernel launch");
    const int s = std::min(L.slots, m);
    svd_kernel<T, MaxD><<<blocks_for(s, kSvdThreads), kSvdThreads, 0, a.stream>>>(
        Jc, a.sN, a.sn, a.sd, n, d, list, counter, s, X, R, Vw, a.opt, out);
    check(cudaGetLastError(), "SVD-path kernel launch");
  }
}

template <typename T>
void dispatch_dto(const DtoArgs& a) {
  switch (bucket(a.d)) {
    case 16: run_dto<T, 16>(a); break;
    case 32: run_dto<T, 32>(a); break;
    default: run_dto<T, 64>(a); break;
  }
}

void cuda_dto_from_jacobians(uintptr_t J_ptr, long long N, long long n, long long d, long long sN,
                             long long sn, long long sd, const std::string& dtype,
                             const std::string& solver, double gram_rcond, double ambiguity_tol,
                             uintptr_t sigma_ptr, uintptr_t perm_ptr, uintptr_t signs_ptr,
                             uintptr_t dist_ptr, uintptr_t flags_ptr, uintptr_t V_ptr,
                             uintptr_t scratch_ptr, size_t scratch_bytes, uintptr_t stream,
                             int device, const std::string& gram_kernel) {
  const int item = element_size(dtype, "J");
  check_batch_sizes(N, n, d, "J", "(N, n, d)");
  if (!(gram_rcond >= 0.0 && gram_rcond <= 1.0)) throw py::value_error("gram_rcond must lie in [0, 1]");
  if (!(ambiguity_tol >= 0.0 && ambiguity_tol < 1.0))
    throw py::value_error("ambiguity_tol must lie in [0, 1)");
  const SampleOptions opt{parse_solver(solver), gram_rcond, ambiguity_tol, item == 4};
  if (gram_kernel != "auto" && gram_kernel != "register" && gram_kernel != "tiled")
    throw py::value_error("gram_kernel must be 'auto', 'register' or 'tiled', got '" + gram_kernel + "'");
  if (gram_kernel == "register" && d > kSmallGramDim)
    throw py::value_error("the register-tiled Gram kernel needs d <= " + std::to_string(kSmallGramDim));
  const long long last = last_offset(N, n, d, sN, sn, sd, "J");
  const size_t scratch_needed = dto_layout(N, n, d, V_ptr != 0).total();
  check_scratch_size(scratch_bytes, scratch_needed);

  const DeviceScope scope(device);
  const int dev = scope.device();
  check_device_range(J_ptr, (size_t)(last + 1) * item, item, dev, "J");
  const size_t Nd = (size_t)N * d;
  check_device_range(sigma_ptr, Nd * 8, 8, dev, "sigma");
  check_device_range(perm_ptr, Nd * 8, 8, dev, "perm");
  check_device_range(signs_ptr, Nd, 1, dev, "signs");
  check_device_range(dist_ptr, (size_t)N * 8, 8, dev, "distance");
  check_device_range(flags_ptr, (size_t)N, 1, dev, "flags");
  if (V_ptr) check_device_range(V_ptr, Nd * d * 8, 8, dev, "V");
  check_device_range(scratch_ptr, scratch_needed, 256, dev, "scratch");

  DtoArgs a{};
  a.J = reinterpret_cast<const void*>(J_ptr);
  a.N = N;
  a.sN = sN;
  a.sn = sn;
  a.sd = sd;
  a.n = (int)n;
  a.d = (int)d;
  a.opt = opt;
  a.out = DtoOutputs{reinterpret_cast<double*>(sigma_ptr), reinterpret_cast<int64_t*>(perm_ptr),
                        reinterpret_cast<int8_t*>(signs_ptr), reinterpret_cast<double*>(dist_ptr),
                        reinterpret_cast<uint8_t*>(flags_ptr)};
  a.out.V = reinterpret_cast<double*>(V_ptr);
  a.tiled = gram_kernel == "tiled";
  a.scratch = reinterpret_cast<char*>(scratch_ptr);
  a.stream = reinterpret_cast<cudaStream_t>(stream);
  py::gil_scoped_release release;
  (void)cudaGetLastError();  // an error left pending by someone else must not be reported as ours
  if (item == 4) dispatch_dto<float>(a);
  else dispatch_dto<double>(a);
}

// ---- signed_permutations ----

template <typename T, int MaxD>
void run_perm(const T* V, long long N, long long sN, long long si, long long sj, int d, Solver solver,
              const DtoOutputs& o, char* scratch, cudaStream_t stream) {
  const long long chunk = perm_chunk(N, d);
  double* W = reinterpret_cast<double*>(scratch);
  double* C = reinterpret_cast<double*>(scratch + perm_scratch_bytes(N, d) / 2);
  for (long long c0 = 0; c0 < N; c0 += chunk) {
    const int m = (int)std::min<long long>(chunk, N - c0);
    DtoOutputs out{nullptr, o.perm + c0 * d, o.signs + c0 * d, o.distance + c0, o.flags + c0};
    perm_kernel<T, MaxD><<<blocks_for(m, kSampleThreads), kSampleThreads, 0, stream>>>(
        V + c0 * sN, sN, si, sj, m, d, solver, W, C, out);
    check(cudaGetLastError(), "signed-permutation kernel launch");
  }
}

template <typename T>
void dispatch_perm(const T* V, long long N, long long sN, long long si, long long sj, int d,
                   Solver solver, const DtoOutputs& o, char* scratch, cudaStream_t stream) {
  switch (bucket(d)) {
    case 16: run_perm<T, 16>(V, N, sN, si, sj, d, solver, o, scratch, stream); break;
    case 32: run_perm<T, 32>(V, N, sN, si, sj, d, solver, o, scratch, stream); break;
    default: run_perm<T, 64>(V, N, sN, si, sj, d, solver, o, scratch, stream); break;
  }
}

void cuda_signed_permutations(uintptr_t V_ptr, long long N, long long d, long long sN, long long si,
                              long long sj, const std::string& dtype, const std::string& solver,
                              uintptr_t perm_ptr, uintptr_t signs_ptr, uintptr_t dist_ptr,
                              uintptr_t flags_ptr, uintptr_t scratch_ptr, size_t scratch_bytes,
                              uintptr_t stream, int device) {
  const int item = element_size(dtype, "V");
  check_batch_sizes(N, d, d, "V", "(N, d, d)");
  const Solver s = parse_solver(solver);
  const long long last = last_offset(N, d, d, sN, si, sj, "V");
  check_scratch_size(scratch_bytes, perm_scratch_bytes(N, d));

  const DeviceScope scope(device);
  const int dev = scope.device();
  check_device_range(V_ptr, (size_t)(last + 1) * item, item, dev, "V");
  const size_t Nd = (size_t)N * d;
  check_device_range(perm_ptr, Nd * 8, 8, dev, "perm");
  check_device_range(signs_ptr, Nd, 1, dev, "signs");
  check_device_range(dist_ptr, (size_t)N * 8, 8, dev, "distance");
  check_device_range(flags_ptr, (size_t)N, 1, dev, "flags");
  check_device_range(scratch_ptr, perm_scratch_bytes(N, d), 256, dev, "scratch");

  const DtoOutputs o{nullptr, reinterpret_cast<int64_t*>(perm_ptr), reinterpret_cast<int8_t*>(signs_ptr),
                        reinterpret_cast<double*>(dist_ptr), reinterpret_cast<uint8_t*>(flags_ptr)};
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  char* scratch = reinterpret_cast<char*>(scratch_ptr);
  py::gil_scoped_release release;
  (void)cudaGetLastError();
  if (item == 4)
    dispatch_perm(reinterpret_cast<const float*>(V_ptr), N, sN, si, sj, (int)d, s, o, scratch, st);
  else
    dispatch_perm(reinterpret_cast<const double*>(V_ptr), N, sN, si, sj, (int)d, s, o, scratch, st);
}

}  // namespace
}  // namespace cuda

// Devices this build can run on (an unsupported GPU counts as none, so its tensors go to the CPU
// engine). Reads attributes only: no context is created on any device.
int cuda_device_count_now() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  int usable = 0;
  for (int dev = 0; dev < count; ++dev) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    usable += cuda::arch_supported(major, minor) ? 1 : 0;
  }
  return usable;
}

void register_cuda_bindings(py::module_& m) {
  m.def("cuda_device_count", &cuda_device_count_now,
        "CUDA devices usable now: visible, and of a compute capability this build has code for (0 "
        "without a driver or GPU; never raises).");
  m.def("cuda_arch_supported", &cuda::arch_supported, py::arg("major"), py::arg("minor"),
        "Whether this build has code (SASS or PTX) for a GPU of compute capability major.minor.");
  m.def("cuda_dto_from_jacobians", &cuda::cuda_dto_from_jacobians, py::arg("J_ptr"), py::arg("N"),
        py::arg("n"), py::arg("d"), py::arg("sN"), py::arg("sn"), py::arg("sd"), py::arg("dtype"),
        py::arg("solver"), py::arg("gram_rcond"), py::arg("ambiguity_tol"), py::arg("sigma_ptr"),
        py::arg("perm_ptr"), py::arg("signs_ptr"), py::arg("dist_ptr"), py::arg("flags_ptr"),
        py::arg("V_ptr"), py::arg("scratch_ptr"), py::arg("scratch_bytes"), py::arg("stream"),
        py::arg("device") = -1, py::arg("gram_kernel") = "auto",
        "Enqueues DtO of a strided (N, n, d) float32/float64 device batch on `stream`.\n\n"
        "Pointers are device addresses (Python ints): J with element strides (sN, sn, sd); outputs "
        "are caller-allocated contiguous device buffers: sigma (N, d) float64, perm (N, d) int64, "
        "signs (N, d) int8, distance (N,) float64, flags (N,) uint8, V (N, d, d) float64 or 0; "
        "scratch: cuda_dto_scratch_bytes(N, n, d, V_ptr != 0) bytes, 256-byte aligned. "
        "`device` >= 0 is made current first. Returns before the GPU finishes; samples with "
        "non-finite input get FLAG_NONFINITE and no other outputs, as in the CPU engine. "
        "gram_kernel ('auto', 'register', 'tiled') is for tests.");
  m.def("cuda_signed_permutations", &cuda::cuda_signed_permutations, py::arg("V_ptr"), py::arg("N"),
        py::arg("d"), py::arg("sN"), py::arg("si"), py::arg("sj"), py::arg("dtype"), py::arg("solver"),
        py::arg("perm_ptr"), py::arg("signs_ptr"), py::arg("dist_ptr"), py::arg("flags_ptr"),
        py::arg("scratch_ptr"), py::arg("scratch_bytes"), py::arg("stream"), py::arg("device") = -1,
        "Enqueues nearest signed permutations of a strided (N, d, d) device batch on `stream`; scratch: "
        "cuda_signed_permutations_scratch_bytes(N, d) bytes, 256-byte aligned.");
  m.def("cuda_dto_scratch_bytes", [](long long N, long long n, long long d, bool with_V) {
          check_batch_sizes(N, n, d, "J", "(N, n, d)");
          return cuda::dto_layout(N, n, d, with_V).total();
        }, py::arg("N"), py::arg("n"), py::arg("d"), py::arg("with_V"),
        "Device scratch bytes cuda_dto_from_jacobians needs: it works in chunks, so at most about 770 MB "
        "(more only where one n x d float64 copy of J exceeds the 256 MB SVD pool).");
  m.def("cuda_signed_permutations_scratch_bytes", [](long long N, long long d) {
          check_batch_sizes(N, d, d, "V", "(N, d, d)");
          return cuda::perm_scratch_bytes(N, d);
        }, py::arg("N"), py::arg("d"),
        "Device scratch bytes cuda_signed_permutations needs (at most about 512 MB: it works in chunks).");
}

}  // namespace fastdto
