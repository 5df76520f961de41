// A DLRM training forward and its loss in one call from Python (recsys.training.fused_forward):
// bottom MLP, table-batched lookup, dot interaction, top MLP, then the mean binary cross-entropy
// with logits, each by the operator the model's modules and the trainer would call (mlp,
// tbe_lookup, dot_pairs, bce_with_logits: their autograd nodes are built in C++), chained here
// instead of through six module calls and the loss call.
//
// Why: in a batch-128 step on the 2-core box the Python between those operators (module calls,
// the sharded collection's feature splits and KeyedTensor, the interaction's checks, the loss
// call) costs ~0.3 ms of a ~3.6 ms step, most of it because the interpreter's working set is cold
// after each operator's megabytes of GEMM operands. Nothing here computes anything the modules'
// path does not: same operators, same arguments, bit-identical logits, loss and updates.
#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <optional>
#include <tuple>

#include "autograd_ops.h"

namespace recsys_kernels {

std::tuple<at::Tensor, at::Tensor> dlrm_forward_loss(
    const at::Tensor& dense, const at::Tensor& labels, at::TensorList bottom_weights,
    at::TensorList bottom_biases, bool bottom_relu_last, bool bottom_head,
    at::TensorList top_weights, at::TensorList top_biases, bool top_relu_last, bool top_head,
    std::optional<double> sgd_lr, double sgd_weight_decay, int64_t num_features,
    bool self_terms, const at::Tensor& placeholder, const at::Tensor& weights,
    const at::Tensor& weights_offsets, const at::Tensor& D_offsets, int64_t total_D,
    const at::Tensor& hash_size_cumsum, const at::Tensor& indices, const at::Tensor& offsets,
    int64_t pooling_mode, const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
    const at::Tensor& learning_rate, double eps) {
  RECORD_FUNCTION("recsys_kernels::dlrm_forward_loss", std::vector<c10::IValue>());
  constexpr const char* kOp = "recsys_kernels.dlrm_forward_loss";
  TORCH_CHECK(dense.dim() == 2 && labels.dim() == 1 && labels.size(0) == dense.size(0), kOp,
              ": dense features [B, n] and labels [B] expected, got ", dense.sizes(), " and ",
              labels.sizes());
  TORCH_CHECK(num_features > 0 && total_D % num_features == 0, kOp, ": ", total_D,
              " embedding columns do not split into ", num_features, " features");
  const at::Tensor bottom = mlp(dense, bottom_weights, bottom_biases, bottom_relu_last,
                                /*bf16=*/false, bottom_head, sgd_lr, sgd_weight_decay);
  const at::Tensor pooled =
      tbe_lookup(placeholder, weights, weights_offsets, D_offsets, total_D, hash_size_cumsum,
                 indices, offsets, pooling_mode, momentum_host, momentum_offsets,
                 learning_rate, eps);  // [B, F * D], features in the model's order
  TORCH_CHECK(pooled.size(0) == dense.size(0), kOp, ": the sparse features hold ",
              pooled.size(0), " samples, the dense features ", dense.size(0));
  const at::Tensor sparse = pooled.view({pooled.size(0), num_features, -1});
  TORCH_CHECK(!top_weights.empty() && top_weights[0].dim() == 2, kOp, ": no top MLP weights");
  // the interaction's rows as wide as the top MLP's input (zero padding columns, if any)
  const at::Tensor top_in =
      dot_pairs(bottom, sparse, self_terms, std::nullopt, top_weights[0].size(1));
  const at::Tensor logits = mlp(top_in, top_weights, top_biases, top_relu_last, /*bf16=*/false,
                                top_head, sgd_lr, sgd_weight_decay)
                                .squeeze(-1);
  return {logits, bce_with_logits(logits, labels)};
}

}  // namespace recsys_kernels
