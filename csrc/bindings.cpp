// pybind11 module: validates every buffer itself (dtype, ndim, sizes, strides, finiteness), then
// releases the GIL and dispatches to the engines. The Python layer validates too, but nothing that
// reaches this module can make it read out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "cpu/engine.hpp"
#include "engine_info.hpp"

namespace py = pybind11;
using namespace fastdto;

namespace {

StridedBatch as_batch(const py::array& a, const char* name, const char* shape_doc) {
  const bool f64 = a.dtype().equal(py::dtype::of<double>());
  const bool f32 = a.dtype().equal(py::dtype::of<float>());
  if (!f64 && !f32)
    throw py::type_error(std::string(name) + " must be float32 or float64, got dtype " +
                         std::string(py::str(a.dtype())));
  if (a.ndim() != 3)
    throw py::value_error(std::string(name) + " must have shape " + shape_doc + ", got ndim " +
                          std::to_string(a.ndim()));
  StridedBatch b{};
  b.data = a.data();
  b.is_f64 = f64;
  b.count = a.shape(0);
  b.rows = a.shape(1);
  b.cols = a.shape(2);
  const long long item = a.itemsize();
  long long* strides[3] = {&b.s_batch, &b.s_row, &b.s_col};
  for (int i = 0; i < 3; ++i) {
    if (a.strides(i) % item != 0)
      throw py::value_error(std::string(name) + " has a stride that is not a multiple of its item size");
    *strides[i] = a.strides(i) / item;
  }
  check_batch_sizes(b.count, b.rows, b.cols, name, shape_doc);
  return b;
}

Solver parse_solver(const std::string& s) {
  if (s == "exact") return Solver::Exact;
  if (s == "greedy") return Solver::Greedy;
  throw py::value_error("solver must be 'exact' or 'greedy' in the compiled engine, got '" + s + "'");
}

// first_index numbers the samples as the caller does when it passes a batch in chunks.
void raise_on_nonfinite(const py::array_t<uint8_t>& flags, const char* name, long long first_index) {
  auto f = flags.unchecked<1>();
  for (py::ssize_t i = 0; i < f.shape(0); ++i)
    if (f(i) & kFlagNonFinite)
      throw py::value_error(std::string(name) + "[" + std::to_string(first_index + i) +
                            "] contains NaN or Inf");
}

void check_threads(int threads) {
  if (threads < 0 || threads > cpu::kMaxThreads)
    throw py::value_error("threads must lie in [0, " + std::to_string(cpu::kMaxThreads) +
                          "] (0: OpenMP's default), got " + std::to_string(threads));
}

py::tuple dto_from_jacobians(const py::array& J, const std::string& solver, double gram_rcond,
                             double ambiguity_tol, bool return_v, int threads, long long first_index) {
  const StridedBatch b = as_batch(J, "J", "(N, n, d)");
  check_threads(threads);
  if (first_index < 0 || first_index > LLONG_MAX - b.count)
    throw py::value_error("first_index must be >= 0 and leave room for the batch's indices");
  if (!(gram_rcond >= 0.0 && gram_rcond <= 1.0))
    throw py::value_error("gram_rcond must lie in [0, 1]");
  if (!(ambiguity_tol >= 0.0 && ambiguity_tol < 1.0))
    throw py::value_error("ambiguity_tol must lie in [0, 1)");
  const SampleOptions opt{parse_solver(solver), gram_rcond, ambiguity_tol, !b.is_f64};
  const py::ssize_t N = b.count, d = b.cols;
  py::array_t<double> sigma({N, d});
  py::array_t<int64_t> perm({N, d});
  py::array_t<int8_t> signs({N, d});
  py::array_t<double> distance(N);
  py::array_t<uint8_t> flags(N);
  py::object V = py::none();
  DtoOutputs out{sigma.mutable_data(), perm.mutable_data(), signs.mutable_data(),
                 distance.mutable_data(), flags.mutable_data(), nullptr};
  if (return_v) {
    py::array_t<double> v({N, d, d});
    out.V = v.mutable_data();
    V = v;
  }
  {
    py::gil_scoped_release release;
    cpu::dto_from_jacobians(b, opt, out, threads);
  }
  raise_on_nonfinite(flags, "J", first_index);
  return py::make_tuple(sigma, perm, signs, distance, flags, V);
}

py::tuple signed_permutations(const py::array& V, const std::string& solver, int threads) {
  check_threads(threads);
  const StridedBatch b = as_batch(V, "V", "(N, d, d)");
  if (b.rows != b.cols)
    throw py::value_error("V must hold square matrices, got " + std::to_string(b.rows) + " x " +
                          std::to_string(b.cols));
  const Solver s = parse_solver(solver);
  const py::ssize_t N = b.count, d = b.cols;
  py::array_t<int64_t> perm({N, d});
  py::array_t<int8_t> signs({N, d});
  py::array_t<double> distance(N);
  py::array_t<uint8_t> flags(N);
  DtoOutputs out{nullptr, perm.mutable_data(), signs.mutable_data(), distance.mutable_data(),
                 flags.mutable_data(), nullptr};
  {
    py::gil_scoped_release release;
    cpu::signed_permutations(b, s, out, threads);
  }
  raise_on_nonfinite(flags, "V", 0);
  return py::make_tuple(perm, signs, distance, flags);
}

}  // namespace

PYBIND11_MODULE(_fastdto_engine, m) {
  m.doc() = "fastdto's compiled engine (use the fastdto package, not this module directly)";
  m.attr("MAX_DIM") = kMaxDim;
  m.attr("MAX_THREADS") = cpu::kMaxThreads;
  m.attr("FLAG_AMBIGUOUS") = (int)kFlagAmbiguous;
  m.attr("FLAG_SVD_PATH") = (int)kFlagSvdPath;
  m.attr("FLAG_NONFINITE") = (int)kFlagNonFinite;
  m.attr("FLAG_CERTIFIED") = (int)kFlagCertified;
  m.attr("EPS64") = kEps64;
  m.attr("EPS32") = kEps32;
  m.def("dto_from_jacobians", &dto_from_jacobians, py::arg("J"), py::arg("solver"),
        py::arg("gram_rcond"), py::arg("ambiguity_tol"), py::arg("return_v"), py::arg("threads") = 0, py::arg("first_index") = 0,
        "Per-sample sigma, nearest signed permutation and distance from a (N, n, d) float array.");
  m.def("signed_permutations", &signed_permutations, py::arg("V"), py::arg("solver"),
        py::arg("threads") = 0, "Nearest signed permutations of a (N, d, d) float array.");
  m.def("build_info", &engine_build_info, "How the engine was compiled.");
  register_cuda_bindings(m);
}
