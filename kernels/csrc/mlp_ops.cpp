// PyTorch operators of the MLP layer backward (mlp.h): input checks, and the rows split into
// fixed blocks whose column sums are added in block order, so the bias gradient is the same
// whatever the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "dispatch.h"
#include "mlp.h"

namespace recsys_kernels {
namespace {

constexpr int64_t kBlockRows = 64;

void check_grad(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.device().is_cpu() &&
                  (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16),
              "recsys_kernels.", op, ": ", name, " must be a 2-D float32 or bfloat16 CPU tensor, "
              "got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// Column sums of `grad` (masked by `out` > 0 when given) into a new fp32 [cols] tensor; the
// masked gradient into `masked` when `out` is given.
at::Tensor column_sums(const at::Tensor& grad, const at::Tensor* out, at::Tensor* masked) {
  const int64_t rows = grad.size(0), cols = grad.size(1);
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  std::vector<float> partial(static_cast<size_t>(blocks * cols), 0.0f);
  const ReluGrad a{grad.data_ptr(), out != nullptr ? out->data_ptr() : nullptr,
                   masked != nullptr ? masked->data_ptr() : nullptr, cols};
  const auto kernels = pick_relu_grad_kernels();
  const auto kernel = grad.scalar_type() == at::kFloat ? kernels.f32 : kernels.bf16;
  // ~32k elements per task: below that, waking the second thread costs more than it saves.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, kBlockRows * cols));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      kernel(a, b * kBlockRows, std::min(rows, (b + 1) * kBlockRows), partial.data() + b * cols);
    }
  });
  auto bias = at::zeros({cols}, grad.options().dtype(at::kFloat));
  float* s = bias.data_ptr<float>();
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = partial.data() + b * cols;
    for (int64_t c = 0; c < cols; ++c) s[c] += p[c];
  }
  return bias;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> relu_bias_grad(const at::Tensor& grad_in,
                                                  const at::Tensor& out_in) {
  check_grad(grad_in, "relu_bias_grad", "grad");
  check_grad(out_in, "relu_bias_grad", "out");
  TORCH_CHECK(grad_in.sizes() == out_in.sizes() && grad_in.scalar_type() == out_in.scalar_type(),
              "recsys_kernels.relu_bias_grad: grad and out must match, got ",
              grad_in.scalar_type(), " ", grad_in.sizes(), " and ", out_in.scalar_type(), " ",
              out_in.sizes());
  const at::Tensor grad = grad_in.contiguous(), out = out_in.contiguous();
  at::Tensor masked = at::empty_like(grad, at::MemoryFormat::Contiguous);
  at::Tensor bias = column_sums(grad, &out, &masked);
  return {masked, bias};
}

at::Tensor bias_grad(const at::Tensor& grad_in) {
  check_grad(grad_in, "bias_grad", "grad");
  return column_sums(grad_in.contiguous(), nullptr, nullptr);
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("relu_bias_grad(Tensor grad, Tensor out) -> (Tensor, Tensor)");
  m.def("bias_grad(Tensor grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("relu_bias_grad", recsys_kernels::relu_bias_grad);
  m.impl("bias_grad", recsys_kernels::bias_grad);
}
