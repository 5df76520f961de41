// bf16 x bf16 -> fp32 matrix products on MKL's gemm_bf16bf16f32 (AMX where the CPU has it), found
// at run time in the MKL that libtorch_cpu carries (mkl_bf16.cpp).
#pragma once

#include <ATen/ATen.h>

namespace recsys_kernels {

// True when this process's torch exports MKL's bf16 GEMM (x86 builds linked with MKL).
bool mkl_bf16_available();

// bf16 MLP products with fewer rows than this go to MKL (mlp_stack.cpp); 0 keeps them all on
// oneDNN. Default 1024. Returns the previous value (tests and A/B measurements switch it).
int64_t mkl_bf16_max_rows();
int64_t set_mkl_bf16_max_rows(int64_t rows);

// a [M, K] @ b [K, N] -> a new contiguous fp32 [M, N]; a and b bf16 CPU matrices, each with a
// unit stride along one dimension (plain or transposed views). Requires mkl_bf16_available().
at::Tensor mm_bf16_f32(const at::Tensor& a, const at::Tensor& b);

}  // namespace recsys_kernels
