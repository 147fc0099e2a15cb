// Linked instead of the CUDA backend in a CPU-only build.
#include "engine_info.hpp"

namespace fastdto {
void register_cuda_bindings(pybind11::module_&) {}
int cuda_device_count_now() { return 0; }
}  // namespace fastdto
