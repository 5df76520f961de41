// Direct Python bindings of the lookup entry points and of the operators that build autograd
// nodes (the MLP stack, the dot interaction). Calling a registered operator through
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
  m.def("tbe_lookup", &recsys_kernels::tbe_lookup, py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.tbe_lookup, called directly (all arguments given)");
  m.def("current_isa", &recsys_kernels::current_isa,
        "torch.ops.recsys_kernels.current_isa, called directly (the fused layers ask per call)");
  m.def("gather_probe", &recsys_kernels::gather_probe, py::call_guard<py::gil_scoped_release>(),
        "torch.ops.recsys_kernels.gather_probe, called directly (benchmark only)");
}
