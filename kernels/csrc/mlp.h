// Backward of an MLP layer's bias + ReLU on CPU, fused: one pass over the output gradient that
// masks it with the layer's ReLU output and sums its columns (the bias gradient) on the way.
//
// Why our own: in PyTorch this is threshold_backward (one pass writing a new tensor) plus
// grad.sum(0) (a second pass; in bf16 with an fp32 sum, a third one that first casts the whole
// gradient to fp32). At DLRM's shapes (2048 x 512 bf16) each pass takes ~0.2-1 ms on 2 cores,
// more than the masked gradient's bytes need.
#pragma once

#include <cstdint>

namespace recsys_kernels {

// grad, out: [rows, cols] row-major (row stride = cols), fp32 or bf16 (raw 16-bit words).
// masked = grad where !(out <= 0) else 0 (PyTorch's threshold_backward at 0: a NaN output lets
// the gradient through); out == nullptr: no ReLU (masked is not written). bias[c] += the sum of
// the column c of masked (or of grad) over rows [r0, r1), in row order, in fp32.
struct ReluGrad {
  const void* grad;
  const void* out;
  void* masked;
  int64_t cols;
};

// The kernel of one path for rows [r0, r1), per element type.
struct ReluGradKernels {
  void (*f32)(const ReluGrad& a, int64_t r0, int64_t r1, float* bias);
  void (*bf16)(const ReluGrad& a, int64_t r0, int64_t r1, float* bias);
};
ReluGradKernels relu_grad_kernels_scalar();
ReluGradKernels relu_grad_kernels_avx512();

}  // namespace recsys_kernels
