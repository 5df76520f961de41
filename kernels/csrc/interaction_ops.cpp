// PyTorch operators of the fused dot interaction (interaction.h): input checks, output
// allocation, and the batch split over threads with at::parallel_for.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>

#include "autograd_ops.h"
#include "dispatch.h"
#include "interaction.h"

namespace recsys_kernels {
namespace {

// dense [B, D] and sparse [B, F, D] float32 CPU tensors, each vector's D floats contiguous.
DotPairs check_inputs(const at::Tensor& dense, const at::Tensor& sparse, bool self_terms) {
  TORCH_CHECK(dense.dim() == 2 && sparse.dim() == 3 && dense.size(0) == sparse.size(0) &&
                  dense.size(1) == sparse.size(2),
              "recsys_kernels.dot_interaction: dense must be [B, D] and sparse [B, F, D], got ",
              dense.sizes(), " and ", sparse.sizes());
  TORCH_CHECK(dense.scalar_type() == at::kFloat && sparse.scalar_type() == at::kFloat &&
                  dense.device().is_cpu() && sparse.device().is_cpu(),
              "recsys_kernels.dot_interaction: float32 CPU tensors only, got ",
              dense.scalar_type(), " on ", dense.device(), " and ", sparse.scalar_type(), " on ",
              sparse.device());
  const int64_t d = dense.size(1);
  TORCH_CHECK(d > 0 && (d == 1 || (dense.stride(1) == 1 && sparse.stride(2) == 1)) &&
                  (sparse.size(1) <= 1 || sparse.stride(1) == d),
              "recsys_kernels.dot_interaction: each sample's vectors must be contiguous "
              "(call .contiguous())");
  return {dense.data_ptr<float>(), dense.stride(0), sparse.data_ptr<float>(), sparse.stride(0),
          sparse.size(1) + 1, d, self_terms};
}

// Samples per task: a sample costs ~1-3 k cycles at Criteo's shape, so 32 keep the second
// thread worthwhile from batch 64 on.
constexpr int64_t kGrain = 32;

// The output row: D + P values, then zeros up to out_width columns (out_width < 0: none).
int64_t padded_width(int64_t width, int64_t out_width) {
  TORCH_CHECK(out_width < 0 || out_width >= width, "recsys_kernels.dot_interaction: out_width ",
              out_width, " is narrower than the interaction's ", width, " values");
  return std::max(width, out_width);
}

}  // namespace

at::Tensor dot_interaction(const at::Tensor& dense, const at::Tensor& sparse, bool self_terms,
                           std::optional<at::ScalarType> out_dtype, int64_t out_width) {
  // named for profilers also when called directly (by the C++ autograd node), not dispatched
  RECORD_FUNCTION("recsys_kernels::dot_interaction", std::vector<c10::IValue>());
  const DotPairs a = check_inputs(dense, sparse, self_terms);
  const int64_t width = a.dim + num_pairs(a.n, self_terms);
  const at::ScalarType dtype = out_dtype.value_or(at::kFloat);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "recsys_kernels.dot_interaction: out_dtype must be float32 or bfloat16, got ", dtype);
  const int64_t row = padded_width(width, out_width);
  auto out = at::empty({dense.size(0), row}, dense.options().dtype(dtype));
  const bool bf16 = dtype == at::kBFloat16;
  const DotOut o{bf16 ? nullptr : out.data_ptr<float>(),
                 bf16 ? reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()) : nullptr, row};
  const auto forward = pick_dot_kernels().forward;
  auto* bytes = static_cast<char*>(out.data_ptr());
  const int64_t elem = out.element_size();
  at::parallel_for(0, dense.size(0), kGrain, [&](int64_t b0, int64_t b1) {
    forward(a, o, b0, b1);
    if (row == width) return;
    for (int64_t b = b0; b < b1; ++b) {  // the padding columns: zeros
      std::memset(bytes + (b * row + width) * elem, 0, static_cast<size_t>((row - width) * elem));
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dot_interaction_backward(const at::Tensor& grad_in,
                                                            const at::Tensor& dense,
                                                            const at::Tensor& sparse,
                                                            bool self_terms) {
  RECORD_FUNCTION("recsys_kernels::dot_interaction_backward", std::vector<c10::IValue>());
  const DotPairs a = check_inputs(dense, sparse, self_terms);
  const int64_t width = a.dim + num_pairs(a.n, self_terms);
  const bool bf16 = grad_in.scalar_type() == at::kBFloat16;
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == dense.size(0) &&
                  grad_in.size(1) == width && (grad_in.scalar_type() == at::kFloat || bf16),
              "recsys_kernels.dot_interaction_backward: grad must be float32 or bfloat16 [",
              dense.size(0), ", ", width, "], got ", grad_in.scalar_type(), " ", grad_in.sizes());
  // Rows may lie a stride apart (the MLP's input gradient is a view of 64-byte-aligned rows).
  const at::Tensor grad = grad_in.stride(1) == 1 ? grad_in : grad_in.contiguous();
  auto d_dense = at::empty_like(dense, at::MemoryFormat::Contiguous);
  auto d_sparse = at::empty_like(sparse, at::MemoryFormat::Contiguous);
  const DotPairsGrad g{bf16 ? nullptr : grad.data_ptr<float>(),
                       bf16 ? reinterpret_cast<const uint16_t*>(grad.data_ptr<at::BFloat16>())
                            : nullptr,
                       grad.stride(0), d_dense.data_ptr<float>(), a.dim, d_sparse.data_ptr<float>(),
                       (a.n - 1) * a.dim};
  const auto backward = pick_dot_kernels().backward;
  at::parallel_for(0, dense.size(0), kGrain, [&](int64_t b0, int64_t b1) {
    backward(a, g, b0, b1);
  });
  return {d_dense, d_sparse};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The layer as one autograd node built in C++: the engine runs its backward without Python.
struct DotPairsFunction : public torch::autograd::Function<DotPairsFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& dense,
                            const at::Tensor& sparse, bool self_terms,
                            std::optional<at::ScalarType> out_dtype, int64_t out_width) {
    ctx->save_for_backward({dense, sparse});
    ctx->saved_data["self_terms"] = self_terms;
    return dot_interaction(dense, sparse, self_terms, out_dtype, out_width);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const bool self_terms = ctx->saved_data["self_terms"].toBool();
    // the padding columns are constants: their gradient is dropped (a view, no copy)
    const int64_t width = saved[0].size(1) + num_pairs(saved[1].size(1) + 1, self_terms);
    auto [d_dense, d_sparse] = dot_interaction_backward(grad_outputs[0].narrow(1, 0, width),
                                                        saved[0], saved[1], self_terms);
    return {d_dense, d_sparse, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor dot_pairs(const at::Tensor& dense, const at::Tensor& sparse, bool self_terms,
                     std::optional<at::ScalarType> out_dtype, int64_t out_width) {
  const auto guard = autocast_off();
  return DotPairsFunction::apply(dense, sparse, self_terms, out_dtype, out_width);
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("dot_pairs(Tensor dense, Tensor sparse, bool self_terms=False, "
        "ScalarType? out_dtype=None, int out_width=-1) -> Tensor");
  m.def("dot_interaction(Tensor dense, Tensor sparse, bool self_terms=False, "
        "ScalarType? out_dtype=None, int out_width=-1) -> Tensor");
  m.def("dot_interaction_backward(Tensor grad, Tensor dense, Tensor sparse, "
        "bool self_terms=False) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("dot_interaction", recsys_kernels::dot_interaction);
  m.impl("dot_interaction_backward", recsys_kernels::dot_interaction_backward);
  m.impl("dot_pairs", recsys_kernels::dot_interaction);  // without autograd: the forward alone
}

TORCH_LIBRARY_IMPL(recsys_kernels, Autograd, m) { m.impl("dot_pairs", recsys_kernels::dot_pairs); }
