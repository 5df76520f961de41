// Direct Python bindings of the lookup entry points, of the operators that build autograd
// nodes (the MLP stack, the dot interaction, the training lookup) and of the DLRM training
// forward that chains them (dlrm_forward.cpp: a binding only, no registered operator).
// Calling a registered operator through
// torch.ops from Python costs about 5 us of argument parsing against its schema, as much as a
// whole lookup of a few hundred one-id bags; these bindings reach the same C++ functions in
// about 1 us. kernels.ops uses them for plain tensors in eager mode; scripting, tracing,
// torch.compile and torch.export keep using the registered operators (ops.cpp).
#include <torch/extension.h>

#include "autograd_ops.h"
#include "dispatch.h"
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("embedding_bag", &recsys_kernels::embedding_bag,
        py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.embedding_bag, called directly (same arguments, all given)");
  m.def(
      "embedding_bags_batched",
      [](const std::vector<at::Tensor>& weights, const std::vector<int64_t>& dims, int64_t format,
         const at::Tensor& indices, const at::Tensor& offsets, int64_t mode,
         const c10::optional<at::Tensor>& psw, const std::vector<std::string>& names,
         c10::optional<at::ScalarType> out_dtype) {
        return recsys_kernels::embedding_bags_batched(weights, dims, format, indices, offsets,
                                                      mode, psw, names, out_dtype);
      },
        py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.embedding_bags_batched, called directly (all arguments given)");
  m.def(
      "mlp",
      [](const at::Tensor& x, const std::vector<at::Tensor>& weights,
         const std::vector<at::Tensor>& biases, bool relu_last, bool bf16, bool head,
         std::optional<double> sgd_lr, double sgd_weight_decay) {
        return recsys_kernels::mlp(x, weights, biases, relu_last, bf16, head, sgd_lr,
                                   sgd_weight_decay);
      },
      py::call_guard<py::gil_scoped_release>(),
      "torch.ops.recsys_kernels.mlp, called directly (all arguments given)");
  m.def("dot_pairs", &recsys_kernels::dot_pairs, py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.dot_pairs, called directly (all arguments given)");
  m.def("bce_with_logits", &recsys_kernels::bce_with_logits,
        py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.bce_with_logits, called directly (all arguments given)");
  m.def("tbe_lookup", &recsys_kernels::tbe_lookup, py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.tbe_lookup, called directly (all arguments given)");
  m.def(
      "dlrm_forward_loss",
      [](const at::Tensor& dense, const at::Tensor& labels,
         const std::vector<at::Tensor>& bottom_weights,
         const std::vector<at::Tensor>& bottom_biases, bool bottom_relu_last, bool bottom_head,
         const std::vector<at::Tensor>& top_weights, const std::vector<at::Tensor>& top_biases,
         bool top_relu_last, bool top_head, std::optional<double> sgd_lr,
         double sgd_weight_decay, int64_t num_features, bool self_terms,
         const at::Tensor& placeholder, const at::Tensor& weights,
         const at::Tensor& weights_offsets, const at::Tensor& D_offsets, int64_t total_D,
         const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
         const at::Tensor& offsets, int64_t pooling_mode, const at::Tensor& momentum_host,
         const at::Tensor& momentum_offsets, const at::Tensor& learning_rate, double eps) {
        return recsys_kernels::dlrm_forward_loss(
            dense, labels, bottom_weights, bottom_biases, bottom_relu_last, bottom_head,
            top_weights, top_biases, top_relu_last, top_head, sgd_lr, sgd_weight_decay,
            num_features, self_terms, placeholder, weights, weights_offsets, D_offsets, total_D,
            hash_size_cumsum, indices, offsets, pooling_mode, momentum_host, momentum_offsets,
            learning_rate, eps);
      },
      py::call_guard<py::gil_scoped_release>(),
      "a DLRM training forward and its loss in one call (no registered operator: eager only)");
  m.def("current_isa", &recsys_kernels::current_isa,
        "torch.ops.recsys_kernels.current_isa, called directly (the fused layers ask per call)");
  m.def("gather_probe", &recsys_kernels::gather_probe, py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.gather_probe, called directly (benchmark only)");
}
