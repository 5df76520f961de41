// PyTorch operators of the MLP kernels (mlp.h): the layer backward and the width-1 last layer.
// Input checks, and the rows split into fixed blocks whose column sums are added in block
// order, so the gradient sums are the same whatever the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "bf16.h"
#include "dispatch.h"
#include "mlp.h"
#include "mlp_ops.h"

namespace recsys_kernels {
namespace {

constexpr int64_t kBlockRows = 64;

// Items (rows or row blocks) per at::parallel_for task for items of `elements` values each:
// ~32k values per task; below that, waking the second thread costs more than it saves.
int64_t task_grain(int64_t elements) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elements));
}

void check_grad(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.device().is_cpu() &&
                  (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16),
              "recsys_kernels.", op, ": ", name, " must be a 2-D float32 or bfloat16 CPU tensor, "
              "got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// Runs kernel(r0, r1, partial) over the `rows` in fixed blocks of kBlockRows, in parallel, each
// block adding into its own `width` zeroed floats; then adds the blocks' partials into `out`
// (width floats) in block order, so the sums do not depend on the thread count.
template <typename Kernel>
void blocked_sums(int64_t rows, int64_t width, int64_t work_per_row, float* out,
                  const Kernel& kernel) {
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  std::vector<float> partial(static_cast<size_t>(blocks * width), 0.0f);
  at::parallel_for(0, blocks, task_grain(kBlockRows * work_per_row), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      kernel(b * kBlockRows, std::min(rows, (b + 1) * kBlockRows), partial.data() + b * width);
    }
  });
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = partial.data() + b * width;
    for (int64_t c = 0; c < width; ++c) out[c] += p[c];
  }
}

// Column sums of `grad` (masked by `out` > 0 when given) into a new fp32 [cols] tensor; the
// masked gradient into `masked` when `out` is given.
at::Tensor column_sums(const at::Tensor& grad, const at::Tensor* out, at::Tensor* masked) {
  const int64_t cols = grad.size(1);
  const ReluGrad a{grad.data_ptr(), out != nullptr ? out->data_ptr() : nullptr,
                   masked != nullptr ? masked->data_ptr() : nullptr, cols};
  const auto kernels = pick_relu_grad_kernels();
  const auto kernel = grad.scalar_type() == at::kFloat ? kernels.f32 : kernels.bf16;
  auto bias = at::zeros({cols}, grad.options().dtype(at::kFloat));
  blocked_sums(grad.size(0), cols, cols, bias.data_ptr<float>(),
               [&](int64_t r0, int64_t r1, float* sums) { kernel(a, r0, r1, sums); });
  return bias;
}

// The head's weight [1, cols] (any float type) as a contiguous fp32 row, checked against x.
at::Tensor head_weight(const at::Tensor& weight, const at::Tensor& x, const char* op) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == 1 && weight.size(1) == x.size(1) &&
                  weight.device().is_cpu() && at::isFloatingType(weight.scalar_type()),
              "recsys_kernels.", op, ": weight must be a [1, ", x.size(1),
              "] float CPU tensor (the input has ", x.size(1), " features), got ",
              weight.scalar_type(), " ", weight.sizes());
  return weight.to(at::kFloat).contiguous();
}

void check_relu_pair(const at::Tensor& grad, const at::Tensor& out, const char* op) {
  check_grad(grad, op, "grad");
  check_grad(out, op, "out");
  TORCH_CHECK(grad.sizes() == out.sizes() && grad.scalar_type() == out.scalar_type(),
              "recsys_kernels.", op, ": grad and out must match, got ", grad.scalar_type(), " ",
              grad.sizes(), " and ", out.scalar_type(), " ", out.sizes());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> relu_bias_grad(const at::Tensor& grad_in,
                                                  const at::Tensor& out_in) {
  check_relu_pair(grad_in, out_in, "relu_bias_grad");
  const at::Tensor grad = grad_in.contiguous(), out = out_in.contiguous();
  at::Tensor masked = at::empty_like(grad, at::MemoryFormat::Contiguous);
  at::Tensor bias = column_sums(grad, &out, &masked);
  return {masked, bias};
}

at::Tensor relu_bias_grad_(at::Tensor& grad, const at::Tensor& out_in) {
  check_relu_pair(grad, out_in, "relu_bias_grad_");
  TORCH_CHECK(grad.is_contiguous(), "recsys_kernels.relu_bias_grad_: grad must be contiguous");
  const at::Tensor out = out_in.contiguous();
  return column_sums(grad, &out, &grad);
}

at::Tensor bias_grad(const at::Tensor& grad_in) {
  check_grad(grad_in, "bias_grad", "grad");
  return column_sums(grad_in.contiguous(), nullptr, nullptr);
}

at::Tensor& bias_act_(at::Tensor& out, const at::Tensor& bias_in, bool relu) {
  TORCH_CHECK(out.dim() == 2 && out.is_contiguous() && out.scalar_type() == at::kFloat &&
                  out.device().is_cpu(),
              "recsys_kernels.bias_act_: out must be a contiguous 2-D float32 CPU tensor, got ",
              out.scalar_type(), " ", out.sizes());
  TORCH_CHECK(bias_in.dim() == 1 && bias_in.size(0) == out.size(1) && bias_in.device().is_cpu(),
              "recsys_kernels.bias_act_: bias must be [", out.size(1), "], got ", bias_in.sizes());
  const at::Tensor bias = bias_in.to(at::kFloat).contiguous();
  const int64_t cols = out.size(1);
  const auto kernel = pick_bias_act_kernel();
  float* o = out.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  at::parallel_for(0, out.size(0), task_grain(cols),
                   [&](int64_t r0, int64_t r1) { kernel(o, b, cols, relu, r0, r1); });
  return out;
}

at::Tensor mlp_head_forward(const at::Tensor& x_in, const at::Tensor& weight,
                            const at::Tensor& bias) {
  check_grad(x_in, "mlp_head_forward", "x");
  const at::Tensor x = x_in.contiguous(), w = head_weight(weight, x, "mlp_head_forward");
  TORCH_CHECK(bias.numel() == 1 && bias.device().is_cpu(),
              "recsys_kernels.mlp_head_forward: bias must hold one value, got ", bias.sizes());
  const float b = bias.item<float>();
  const int64_t rows = x.size(0), cols = x.size(1);
  std::vector<float> y(static_cast<size_t>(rows));
  const Head h{x.data_ptr(), w.data_ptr<float>(), nullptr, nullptr, false, cols};
  const auto kernels = pick_head_kernels();
  const auto kernel = x.scalar_type() == at::kFloat ? kernels.forward_f32 : kernels.forward_bf16;
  at::parallel_for(0, rows, task_grain(cols),
                   [&](int64_t r0, int64_t r1) { kernel(h, r0, r1, y.data()); });
  auto out = at::empty({rows, 1}, x.options());
  if (x.scalar_type() == at::kFloat) {
    float* o = out.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) o[r] = y[r] + b;
  } else {
    auto* o = static_cast<uint16_t*>(out.data_ptr());
    for (int64_t r = 0; r < rows; ++r) o[r] = float_to_bf16(y[r] + b);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mlp_head_backward(const at::Tensor& grad_in,
                                                                 const at::Tensor& x_in,
                                                                 const at::Tensor& weight,
                                                                 bool relu) {
  check_grad(x_in, "mlp_head_backward", "x");
  check_grad(grad_in, "mlp_head_backward", "grad");
  TORCH_CHECK(grad_in.size(0) == x_in.size(0) && grad_in.size(1) == 1 &&
                  grad_in.scalar_type() == x_in.scalar_type(),
              "recsys_kernels.mlp_head_backward: grad must be [", x_in.size(0), ", 1] ",
              x_in.scalar_type(), " like the output, got ", grad_in.scalar_type(), " ",
              grad_in.sizes());
  const at::Tensor x = x_in.contiguous(), w = head_weight(weight, x, "mlp_head_backward");
  const at::Tensor g = grad_in.to(at::kFloat).contiguous();
  const int64_t cols = x.size(1);
  at::Tensor grad_x = at::empty_like(x, at::MemoryFormat::Contiguous);
  // [w_grad | x_bias]: one block of 2 * cols sums per row block.
  auto sums = at::zeros({2 * cols}, x.options().dtype(at::kFloat));
  const Head h{x.data_ptr(), w.data_ptr<float>(), g.data_ptr<float>(), grad_x.data_ptr(), relu,
               cols};
  const auto kernels = pick_head_kernels();
  const auto kernel = x.scalar_type() == at::kFloat ? kernels.backward_f32 : kernels.backward_bf16;
  blocked_sums(x.size(0), 2 * cols, cols, sums.data_ptr<float>(),
               [&](int64_t r0, int64_t r1, float* s) { kernel(h, r0, r1, s, s + cols); });
  return {grad_x, sums.slice(0, cols, 2 * cols).clone(), sums.slice(0, 0, cols).view({1, cols})};
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("relu_bias_grad(Tensor grad, Tensor out) -> (Tensor, Tensor)");
  m.def("relu_bias_grad_(Tensor(a!) grad, Tensor out) -> Tensor");
  m.def("bias_grad(Tensor grad) -> Tensor");
  m.def("bias_act_(Tensor(a!) out, Tensor bias, bool relu) -> Tensor(a!)");
  m.def("mlp_head_forward(Tensor x, Tensor weight, Tensor bias) -> Tensor");
  m.def(
      "mlp_head_backward(Tensor grad, Tensor x, Tensor weight, bool relu) -> "
      "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("relu_bias_grad", recsys_kernels::relu_bias_grad);
  m.impl("relu_bias_grad_", recsys_kernels::relu_bias_grad_);
  m.impl("bias_grad", recsys_kernels::bias_grad);
  m.impl("bias_act_", recsys_kernels::bias_act_);
  m.impl("mlp_head_forward", recsys_kernels::mlp_head_forward);
  m.impl("mlp_head_backward", recsys_kernels::mlp_head_backward);
}
