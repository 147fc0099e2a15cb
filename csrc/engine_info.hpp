// Glue between the always-built CPU module and the optional CUDA backend.
#pragma once

#include <pybind11/pybind11.h>

#include <climits>
#include <string>

#include "cpu/engine.hpp"

namespace fastdto {

// Adds the CUDA entry points to the module (no-op in a CPU-only build).
void register_cuda_bindings(pybind11::module_& m);

// Number of CUDA devices usable right now (0 in a CPU-only build or without a driver/GPU).
int cuda_device_count_now();

// Size checks shared by the CPU and CUDA entry points, so both raise the same errors: a batch of
// N matrices with `rows` rows and d columns (d is the latent dimension).
inline void check_batch_sizes(long long N, long long rows, long long d, const char* name, const char* shape_doc) {
  if (N < 1 || rows < 1 || d < 1)
    throw pybind11::value_error(std::string(name) + " is empty: shape " + shape_doc + " needs every size >= 1");
  if (d > kMaxDim)
    throw pybind11::value_error(std::string(name) + ": latent dimension " + std::to_string(d) +
                                " exceeds the supported maximum of " + std::to_string(kMaxDim));
  if (rows > INT_MAX / kMaxDim)  // keeps 32-bit row and element indices in range
    throw pybind11::value_error(std::string(name) + ": " + std::to_string(rows) +
                                " rows per matrix (outputs per sample) exceed the supported maximum of " +
                                std::to_string(INT_MAX / kMaxDim));
}

// Compilation facts for fastdto.build_info().
inline pybind11::dict engine_build_info() {
  pybind11::dict info;
#ifdef FASTDTO_WITH_CUDA
  info["cuda"] = true;
  info["cuda_architectures"] = FASTDTO_CUDA_ARCHS;
  info["cuda_runtime"] = FASTDTO_CUDA_VERSION;
#else
  info["cuda"] = false;
  info["cuda_architectures"] = "";
  info["cuda_runtime"] = "";
#endif
  info["cuda_devices"] = cuda_device_count_now();
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
#endif
  info["cpu_code_path"] = cpu::code_path();
  info["max_dim"] = 64;
  info["compiler"] = __VERSION__;
  return info;
}

}  // namespace fastdto
