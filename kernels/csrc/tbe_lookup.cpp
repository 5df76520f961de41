// A CPU table-batched embedding lookup of fbgemm's training module as one autograd node built in
// C++: our forward (tbe_forward.cpp), and in the backward our fused update (tbe_backward.cpp).
//
// fbgemm's Python forward around its CPU kernel (input preparation, ~30 packed arguments, the
// lookup invoker, its C++ autograd function) and torchrec's around that cost ~250-300 us per
// step at batch 128 on the 2-core box, for a ~50-90 us lookup; the backward then came back
// through the same function into our kernel via a Python override. Here one node takes the
// module's buffers (weights, offsets, Adagrad state, the learning-rate tensor the optimizer
// fills) and runs: per table, its ids checked (every id inside its table, offsets that never
// decrease: fbgemm's CPU forward reads rows unchecked) and then its rows pooled, with the
// result of fbgemm's `split_embedding_codegen_forward_cpu` bit for bit but the rows prefetched
// (1.3x faster); and in the backward the same update as `tbe_backward_sgd` /
// `tbe_backward_rowwise_adagrad` (`tbe_fused_backward`) on the saved ids, without checking them
// a second time. recsys.training.tbe_kernels decides which modules may take it (plain SGD or
// row-wise Adagrad, fp32 tables, no shared tables, unweighted...); everything else keeps
// fbgemm's path.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "autograd_ops.h"
#include "tbe.h"

namespace recsys_kernels {
namespace {

constexpr const char* kOp = "recsys_kernels.tbe_lookup";

// The ids and offsets as the kernels take them (one index dtype), checked before any row is
// read, and the pooled rows: our forward (tbe_forward.cpp) on them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> checked_forward(
    const at::Tensor& weights, const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
    int64_t total_D, const at::Tensor& hash_size_cumsum, const at::Tensor& indices_in,
    const at::Tensor& offsets_in, int64_t pooling_mode) {
  TORCH_CHECK(indices_in.dim() == 1 && offsets_in.dim() == 1, kOp,
              ": indices and offsets must be 1-D, got ", indices_in.sizes(), " and ",
              offsets_in.sizes());
  TORCH_CHECK(indices_in.scalar_type() == at::kLong || indices_in.scalar_type() == at::kInt,
              kOp, ": indices must be int64 or int32, got ", indices_in.scalar_type());
  const at::Tensor indices = indices_in.contiguous();
  const at::Tensor offsets = offsets_in.to(indices.scalar_type()).contiguous();
  const auto in = tbe_inputs(kOp, weights, weights_offsets, D_offsets, hash_size_cumsum, indices,
                             offsets, pooling_mode, at::Tensor());
  TORCH_CHECK(in.has_value(), kOp, ": these tables are not supported here (fp32 weights, sum or ",
              "mean pooling, one table per feature): use fbgemm's module forward");
  TORCH_CHECK(in->total_dim == total_D, kOp, ": total_D ", total_D, " but the tables' columns ",
              "end at ", in->total_dim);
  return {indices, offsets, tbe_checked_forward(kOp, *in)};
}

struct TbeLookupFunction : public torch::autograd::Function<TbeLookupFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& placeholder,
                            const at::Tensor& weights, const at::Tensor& weights_offsets,
                            const at::Tensor& D_offsets, int64_t total_D,
                            const at::Tensor& hash_size_cumsum, const at::Tensor& indices_in,
                            const at::Tensor& offsets_in, int64_t pooling_mode,
                            const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
                            const at::Tensor& learning_rate, double eps) {
    (void)placeholder;  // requires grad, so that autograd records this node (fbgemm's device)
    auto [indices, offsets, out] = checked_forward(weights, weights_offsets, D_offsets, total_D,
                                                   hash_size_cumsum, indices_in, offsets_in,
                                                   pooling_mode);
    ctx->save_for_backward({weights, weights_offsets, D_offsets, hash_size_cumsum, indices,
                            offsets, momentum_host, momentum_offsets, learning_rate});
    ctx->saved_data["pooling_mode"] = pooling_mode;
    ctx->saved_data["eps"] = eps;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    RECORD_FUNCTION("recsys_kernels::tbe_lookup_backward", std::vector<c10::IValue>());
    const auto s = ctx->get_saved_variables();
    const int64_t pooling_mode = ctx->saved_data["pooling_mode"].toInt();
    const bool adagrad = s[6].defined() && s[6].numel() > 0;
    // the saved ids are the forward's checked ones (autograd refuses them if changed since)
    const bool done = tbe_fused_backward(
        adagrad ? TbeUpdate::kRowwiseAdagrad : TbeUpdate::kSgd, grad_outputs[0], s[0], s[1],
        s[2], s[3], s[4], s[5], pooling_mode, at::Tensor(), s[6], s[7], s[8],
        ctx->saved_data["eps"].toDouble(), /*ids_checked=*/true);
    TORCH_CHECK(done, kOp, ": the fused update does not handle this gradient (",
                grad_outputs[0].scalar_type(), " ", grad_outputs[0].sizes(), ")");
    return torch::autograd::variable_list(13);  // the update is done: no gradients
  }
};

}  // namespace

at::Tensor tbe_lookup(const at::Tensor& placeholder, const at::Tensor& weights,
                      const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                      int64_t total_D, const at::Tensor& hash_size_cumsum,
                      const at::Tensor& indices, const at::Tensor& offsets, int64_t pooling_mode,
                      const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
                      const at::Tensor& learning_rate, double eps) {
  RECORD_FUNCTION("recsys_kernels::tbe_lookup", std::vector<c10::IValue>());
  return TbeLookupFunction::apply(placeholder, weights, weights_offsets, D_offsets, total_D,
                                  hash_size_cumsum, indices, offsets, pooling_mode,
                                  momentum_host, momentum_offsets, learning_rate, eps);
}

// Without autograd (inference mode): the checked forward alone.
at::Tensor tbe_lookup_inference(const at::Tensor& /*placeholder*/, const at::Tensor& weights,
                                const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                                int64_t total_D, const at::Tensor& hash_size_cumsum,
                                const at::Tensor& indices_in, const at::Tensor& offsets_in,
                                int64_t pooling_mode, const at::Tensor& /*momentum_host*/,
                                const at::Tensor& /*momentum_offsets*/,
                                const at::Tensor& /*learning_rate*/, double /*eps*/) {
  return std::get<2>(checked_forward(weights, weights_offsets, D_offsets, total_D,
                                    hash_size_cumsum, indices_in, offsets_in, pooling_mode));
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  // the forward mutates nothing; the node's backward updates weights and momentum1_host
  m.def("tbe_lookup(Tensor placeholder, Tensor weights, Tensor weights_offsets, "
        "Tensor D_offsets, int total_D, Tensor hash_size_cumsum, Tensor indices, Tensor offsets, "
        "int pooling_mode, Tensor momentum1_host, Tensor momentum1_offsets, "
        "Tensor learning_rate, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("tbe_lookup", recsys_kernels::tbe_lookup_inference);
}

TORCH_LIBRARY_IMPL(recsys_kernels, Autograd, m) {
  m.impl("tbe_lookup", recsys_kernels::tbe_lookup);
}
