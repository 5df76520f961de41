// Direct Python bindings of the lookup entry points, of the operators that build autograd
// nodes (the MLP stack, the dot interaction, the training lookup) and of the DLRM training
// forward that chains them (dlrm_forward.cpp: a binding only, no registered operator).
// Calling a registered operator through
// torch.ops from Python costs about 5 us of argument parsing against its schema, as much as a
// whole lookup of a few hundred one-id bags; these bindings reach the same C++ functions in
// about 1 us. kernels.ops calls the lookups' eager entries below (the routing in C++) and the
// others directly for plain tensors in eager mode; scripting, tracing, torch.compile,
// torch.export and dispatch modes keep using the registered operators (ops.cpp).
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/extension.h>

#include <array>
#include <optional>

#include "autograd_ops.h"
#include "dispatch.h"
#include "ops.h"

namespace {

namespace py = pybind11;

// Whether a lookup may skip the dispatcher: every tensor a plain torch.Tensor or an
// nn.Parameter (no other subclass: fake and functional tensors need their own dispatch), no
// torch.jit.trace recording and no dispatch mode active (fake tensors, make_fx, FLOP counters:
// they see only dispatcher calls). The Python wrapper checks the last case, dynamo, itself
// (is_dynamo_compiling, which dynamo folds).
bool eager_plain(std::initializer_list<py::handle> tensors) {
  for (py::handle t : tensors) {
    if (!t.is_none() && !THPVariable_CheckExact(t.ptr())) return false;
  }
  return !torch::jit::tracer::isTracing() && c10::impl::TorchDispatchModeTLS::stack_len() == 0;
}

// The format and mode names of kernels.ops, in the operator's code order: the only list of
// them (kernels.ops builds its name -> code maps from these).
constexpr std::array<const char*, 3> kFormatKeys = {"int8", "int8_half", "int4"};
constexpr std::array<const char*, 2> kModeKeys = {"sum", "mean"};

template <size_t kN>
int64_t code_of(const std::string& name, const char* what,
                const std::array<const char*, kN>& names) {
  for (size_t code = 0; code < kN; ++code) {
    if (name == names[code]) return static_cast<int64_t>(code);
  }
  std::string known;
  for (const char* n : names) known += std::string(known.empty() ? "" : ", ") + n;
  throw py::value_error("recsys_kernels: unknown " + std::string(what) + " '" + name +
                        "' (one of " + known + ")");
}

template <size_t kN>
py::tuple names_tuple(const std::array<const char*, kN>& names) {
  py::list out;
  for (const char* n : names) out.append(n);
  return py::tuple(out);
}

int64_t format_code(const std::string& f) { return code_of(f, "format", kFormatKeys); }
int64_t mode_code(const std::string& m) { return code_of(m, "mode", kModeKeys); }

const at::Tensor& unpack(py::handle t) { return THPVariable_Unpack(t.ptr()); }

// An optional tensor argument (per-sample weights): None, or the tensor.
std::optional<at::Tensor> unpack_optional(py::handle t) {
  return t.is_none() ? std::nullopt : std::optional<at::Tensor>(unpack(t));
}

// kernels.ops.embedding_bag in eager mode (bags as offsets), in one call from Python: the
// plain-tensor test and
// the format and mode names in C++, where a call whose code and data were evicted by other work
// (a model's other tables and layers) pays far fewer cache misses than in Python (a cold
// one-id call: 9.0-9.6 us against 14-20 us with the tests in Python; docs/kernels.md, "Call
// cost"). None when the lookup must go through the registered operator instead (eager_plain).
py::object embedding_bag_eager(py::handle weight, py::handle indices, py::handle offsets,
                               const std::string& format, std::optional<int64_t> dim,
                               const std::string& mode, py::handle per_sample_weights,
                               bool include_last_offset, const std::string& table,
                               std::optional<at::ScalarType> out_dtype) {
  const int64_t f = format_code(format), m = mode_code(mode);
  if (!eager_plain({weight, indices, offsets, per_sample_weights})) return py::none();
  const std::optional<at::Tensor> psw = unpack_optional(per_sample_weights);
  at::Tensor out;
  {
    py::gil_scoped_release no_gil;
    out = recsys_kernels::embedding_bag(unpack(weight), unpack(indices), unpack(offsets), f,
                                        dim.value_or(-1), m, psw, include_last_offset, table,
                                        out_dtype);
  }
  return py::cast(std::move(out));
}

// kernels.ops.embedding_bags in eager mode, the same way (tables: a list or tuple of tensors).
py::object embedding_bags_eager(py::handle tables, const std::vector<int64_t>& dims,
                                py::handle indices, py::handle offsets, const std::string& format,
                                const std::string& mode, py::handle per_sample_weights,
                                const std::vector<std::string>& names,
                                std::optional<at::ScalarType> out_dtype) {
  const int64_t f = format_code(format), m = mode_code(mode);
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(tables);
  std::vector<at::Tensor> weights;
  weights.reserve(seq.size());
  for (py::handle t : seq) {
    if (!THPVariable_CheckExact(t.ptr())) return py::none();
    weights.push_back(unpack(t));
  }
  if (!eager_plain({indices, offsets, per_sample_weights})) return py::none();
  const std::optional<at::Tensor> psw = unpack_optional(per_sample_weights);
  at::Tensor out;
  {
    py::gil_scoped_release no_gil;
    out = recsys_kernels::embedding_bags_batched(weights, dims, f, unpack(indices),
                                                 unpack(offsets), m, psw, names, out_dtype);
  }
  return py::cast(std::move(out));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("embedding_bag_eager", &embedding_bag_eager,
        "kernels.ops.embedding_bag's eager call (None: go through the operator)");
  m.def("embedding_bags_eager", &embedding_bags_eager,
        "kernels.ops.embedding_bags's eager call (None: go through the operator)");
  m.def("format_code", &format_code, "the operator's code of a format name (ValueError if none)");
  m.def("mode_code", &mode_code, "the operator's code of a mode name (ValueError if none)");
  m.attr("format_names") = names_tuple(kFormatKeys);
  m.attr("mode_names") = names_tuple(kModeKeys);
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
  m.def(
      "bag_grain",
      [](int64_t n_idx, int64_t n_bags, int64_t batch, int64_t n_tables, int threads, bool far,
         int64_t bytes) {
        return recsys_kernels::bag_grain(n_idx, n_bags, batch, n_tables, threads, far,
                                         [bytes] { return bytes; });
      },
      "bags per task of a lookup call (dispatch.h bag_grain; tests only)");
}
