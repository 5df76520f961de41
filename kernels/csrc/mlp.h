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
  void* masked;  // may be grad itself (masked in place)
  int64_t cols;
};

// The kernel of one path for rows [r0, r1), per element type.
struct ReluGradKernels {
  void (*f32)(const ReluGrad& a, int64_t r0, int64_t r1, float* bias);
  void (*bf16)(const ReluGrad& a, int64_t r0, int64_t r1, float* bias);
};
ReluGradKernels relu_grad_kernels_scalar();
ReluGradKernels relu_grad_kernels_avx512();

// A last layer of width 1 (DLRM's logit: "the head"). As a GEMM its N is 1, which GEMM
// libraries run as a slow special case (three ops of ~0.2 ms each at 2048 x 256 on 2 cores for
// what is one pass over x); here the forward is a dot product per row and the backward one pass
// over x that also does the ReLU backward of the layer below (x is that layer's output).
struct Head {
  const void* x;      // [rows, cols] row-major: the head's input, fp32 or bf16 words
  const float* w;     // [cols] the head's weight row, in fp32
  const float* grad;  // backward: [rows] gradient of the head's output, in fp32
  void* grad_x;       // backward: [rows, cols] gradient of x, written in x's type
  bool relu;          // backward: x is a ReLU output: grad_x = 0 where x <= 0 (NaN x: kept)
  int64_t cols;
};

struct HeadKernels {
  // y[r] = sum_c x[r][c] * w[c] in fp32, rows [r0, r1).
  void (*forward_f32)(const Head& h, int64_t r0, int64_t r1, float* y);
  void (*forward_bf16)(const Head& h, int64_t r0, int64_t r1, float* y);
  // grad_x[r][c] = grad[r] * w[c] rounded to x's type (0 where relu and x[r][c] <= 0);
  // x_bias[c] += grad_x[r][c] as stored; w_grad[c] += grad[r] * x[r][c]; rows [r0, r1) in order.
  void (*backward_f32)(const Head& h, int64_t r0, int64_t r1, float* w_grad, float* x_bias);
  void (*backward_bf16)(const Head& h, int64_t r0, int64_t r1, float* w_grad, float* x_bias);
};
HeadKernels head_kernels_scalar();
HeadKernels head_kernels_avx512();

// A layer's bias (and ReLU) after its fp32 GEMM, in place: out[r][c] = out[r][c] + bias[c], then
// max(., 0) when relu (a NaN stays NaN, as torch.relu), rows [r0, r1). One pass instead of
// addmm's copy of the broadcast bias into the output before the GEMM plus a ReLU pass.
using BiasActKernel = void (*)(float* out, const float* bias, int64_t cols, bool relu, int64_t r0,
                               int64_t r1);
BiasActKernel bias_act_kernel_scalar();
BiasActKernel bias_act_kernel_avx512();

}  // namespace recsys_kernels
