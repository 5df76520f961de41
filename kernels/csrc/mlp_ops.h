// The MLP operators of mlp_ops.cpp, for the whole-stack operators of mlp_stack.cpp.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace recsys_kernels {

std::tuple<at::Tensor, at::Tensor> relu_bias_grad(const at::Tensor& grad, const at::Tensor& out);
at::Tensor relu_bias_grad_(at::Tensor& grad, const at::Tensor& out);
at::Tensor bias_grad(const at::Tensor& grad);
at::Tensor& bias_act_(at::Tensor& out, const at::Tensor& bias, bool relu);
at::Tensor mlp_head_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> mlp_head_backward(const at::Tensor& grad,
                                                                 const at::Tensor& x,
                                                                 const at::Tensor& weight,
                                                                 bool relu);

}  // namespace recsys_kernels
