// CPU batch drivers (OpenMP) over the per-matrix core.
#pragma once

#include <cstdint>

#include "../core/sample.hpp"

namespace fastdto {

// A strided batch of N matrices of shape rows x cols; strides are in elements.
struct StridedBatch {
  const void* data;
  bool is_f64;
  long long count, rows, cols;
  long long s_batch, s_row, s_col;
};

namespace cpu {

// Most OpenMP threads a call uses (the bindings refuse more).
constexpr int kMaxThreads = 1024;

// J: count x n x d. Fills outputs; samples with non-finite input get kFlagNonFinite and no other
// outputs. threads <= 0 means OpenMP's default; teams never exceed the samples or kMaxThreads.
void dto_from_jacobians(const StridedBatch& J, const SampleOptions& opt, const DtoOutputs& out,
                        int threads);

// Instruction set of the per-sample code the next call will run: "x86-64-v3" (AVX2, FMA) or
// "baseline".
const char* code_path();

// V: count x d x d. Fills perm, signs, distance, flags (V and sigma of out are unused).
void signed_permutations(const StridedBatch& V, Solver solver, const DtoOutputs& out, int threads);

}  // namespace cpu
}  // namespace fastdto
