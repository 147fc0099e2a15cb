// Glue between the always-built CPU module and the optional CUDA backend.
#pragma once

#include <pybind11/pybind11.h>

#include "cpu/engine.hpp"

namespace fastdto {

// Adds the CUDA entry points to the module (no-op in a CPU-only build).
void register_cuda_bindings(pybind11::module_& m);

// Number of CUDA devices usable right now (0 in a CPU-only build or without a driver/GPU).
int cuda_device_count_now();

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
