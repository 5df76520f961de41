// The operators that build their autograd node in C++ (torch::autograd::Function), for the
// direct bindings: the step's autograd engine runs their backward without Python.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <optional>
#include <tuple>

namespace recsys_kernels {

// Inside these operators products run in their own working dtype, never autocast's.
inline c10::impl::ExcludeDispatchKeyGuard autocast_off() {
  return c10::impl::ExcludeDispatchKeyGuard(c10::DispatchKeySet(c10::DispatchKey::AutocastCPU));
}

// A whole MLP stack (mlp_stack.cpp): mlp_forward's output; backward mlp_backward, which with
// sgd_lr takes an SGD step on the weights and biases in place instead of returning gradients.
at::Tensor mlp(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
               bool relu_last, bool bf16, bool head, std::optional<double> sgd_lr,
               double sgd_weight_decay);

// The fused dot interaction (interaction_ops.cpp): dot_interaction's output (rows padded with
// zeros to out_width columns when out_width > D + P); backward dot_interaction_backward (the
// padding's gradient dropped).
at::Tensor dot_pairs(const at::Tensor& dense, const at::Tensor& sparse, bool self_terms,
                     std::optional<at::ScalarType> out_dtype, int64_t out_width);

// A CPU table-batched embedding lookup (tbe_lookup.cpp): our forward (fbgemm's result, bit for
// bit) on checked ids; backward our fused SGD / row-wise Adagrad update of the tables, no
// gradients returned.
at::Tensor tbe_lookup(const at::Tensor& placeholder, const at::Tensor& weights,
                      const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                      int64_t total_D, const at::Tensor& hash_size_cumsum,
                      const at::Tensor& indices, const at::Tensor& offsets, int64_t pooling_mode,
                      const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
                      const at::Tensor& learning_rate, double eps);

// The mean binary cross-entropy of float32 logits [B] against labels [B] (loss.cpp), ATen's
// formula; backward d loss / d logits, saved by the forward.
at::Tensor bce_with_logits(const at::Tensor& logits, const at::Tensor& labels);

// A DLRM training forward and its loss (dlrm_forward.cpp): mlp, tbe_lookup, dot_pairs, mlp and
// bce_with_logits chained as the model's modules chain them -> (logits, loss).
std::tuple<at::Tensor, at::Tensor> dlrm_forward_loss(
    const at::Tensor& dense, const at::Tensor& labels, at::TensorList bottom_weights,
    at::TensorList bottom_biases, bool bottom_relu_last, bool bottom_head,
    at::TensorList top_weights, at::TensorList top_biases, bool top_relu_last, bool top_head,
    std::optional<double> sgd_lr, double sgd_weight_decay, int64_t num_features,
    bool self_terms, const at::Tensor& placeholder, const at::Tensor& weights,
    const at::Tensor& weights_offsets, const at::Tensor& D_offsets, int64_t total_D,
    const at::Tensor& hash_size_cumsum, const at::Tensor& indices, const at::Tensor& offsets,
    int64_t pooling_mode, const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
    const at::Tensor& learning_rate, double eps);

}  // namespace recsys_kernels
