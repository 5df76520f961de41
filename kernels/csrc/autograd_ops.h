// The operators that build their autograd node in C++ (torch::autograd::Function), for the
// direct bindings: the step's autograd engine runs their backward without Python.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace recsys_kernels {

// A whole MLP stack (mlp_stack.cpp): mlp_forward's output; backward mlp_backward, which with
// sgd_lr takes an SGD step on the weights and biases in place instead of returning gradients.
at::Tensor mlp(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
               bool relu_last, bool bf16, bool head, std::optional<double> sgd_lr,
               double sgd_weight_decay);

// The fused dot interaction (interaction_ops.cpp): dot_interaction's output; backward
// dot_interaction_backward.
at::Tensor dot_pairs(const at::Tensor& dense, const at::Tensor& sparse, bool self_terms,
                     std::optional<at::ScalarType> out_dtype);

}  // namespace recsys_kernels
