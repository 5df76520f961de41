// A whole MLP stack's forward and backward as two operators (recsys.models.mlp's fused path):
// the layer loop of one autograd node, in C++ so a step pays no Python and no per-op
// dispatch from Python for its ~60 layer operations (a few us each).
//
// Forward: the weights and biases cast to the working dtype (bf16 under autocast, else fp32);
// per layer oneDNN's GEMM with bias and ReLU in its epilogue (bf16) or MKL's GEMM then one
// in-place bias + ReLU pass (fp32); a width-1 last layer on the head kernel. Backward: per
// layer the ReLU mask and bias sum in one pass (in place on the gradients made here), then the
// weight and input gradient GEMMs; a width-1 last layer in one pass over its input (mlp.h).
// With an SGD step in the backward (`mlp`'s sgd_lr), each parameter is updated in place as
// soon as its gradient is known instead: an fp32 weight inside its gradient GEMM
// (W <- (1 - lr wd) W - lr g^T x, MKL's beta and alpha), so no weight gradient is written,
// accumulated into .grad or read again by an optimizer.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd_ops.h"
#include "mkl_bf16.h"
#include "mlp_ops.h"

namespace recsys_kernels {
namespace {

// oneDNN's linear with bias and (optionally) ReLU fused: mkldnn::_linear_pointwise, called
// boxed (its C++ signature is not in the installed headers).
at::Tensor linear_pointwise(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            bool relu) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(x);
  stack.emplace_back(w);
  stack.emplace_back(b);
  stack.emplace_back(std::string(relu ? "relu" : "none"));
  stack.emplace_back(c10::List<std::optional<at::Scalar>>());
  stack.emplace_back(c10::IValue());
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

// Weight gradient g^T x, [out, in]. MKL's fp32 GEMM runs g^T x for a narrow input (the bottom
// MLP's 13 dense features: a [512, 2048] x [2048, 13] product) at ~27 GFLOPS, 3-4x slower than
// the transposed product x^T g; bf16 (oneDNN) runs both at the same speed.
bool narrow_input(const at::Tensor& x, const at::Tensor& g) {
  constexpr int64_t kNarrow = 32;
  return x.scalar_type() == at::kFloat && x.size(1) < kNarrow && x.size(1) < g.size(1);
}

at::Tensor weight_grad(const at::Tensor& g, const at::Tensor& x) {
  if (narrow_input(x, g)) return at::mm(x.t(), g).t().contiguous();
  return at::mm(g.t(), x);
}

// The stack's input gradient g W, [B, in]. An input width that is not a multiple of 16 (DLRM's
// interaction output: 367) makes MKL's and oneDNN's GEMMs write rows that are not 64-byte
// aligned, ~1.2x (fp32) and ~1.4x (bf16) slower at Criteo's shape and batch 2048: the product
// runs on W padded with zero columns and the result is the [B, in] view of its [B, padded] rows
// (no copy; the consumer, e.g. the dot interaction's backward, reads rows with a stride).
// Padding writes a fresh copy of W (~0.25 ms in the step for [512, 367] fp32: the buffer is cold),
// so it pays only for large batches: at batch 128 the product itself takes ~0.25 ms.
at::Tensor input_grad(const at::Tensor& g, const at::Tensor& w) {
  constexpr int64_t kAlign = 16, kMinPadded = 64, kMinRows = 1024;
  const int64_t in = w.size(1);
  if (in % kAlign == 0 || in < kMinPadded || g.size(0) < kMinRows) return at::mm(g, w);
  const at::Tensor padded = at::constant_pad_nd(w, {0, (in + kAlign - 1) / kAlign * kAlign - in});
  return at::mm(g, padded).narrow(1, 0, in);
}

// An SGD step taken by the backward itself: p <- (1 - lr * weight_decay) p - lr * grad for each
// parameter whose gradient is needed (torch.optim.SGD's arithmetic without momentum).
struct SgdInBackward {
  double lr;
  double weight_decay;
  std::vector<at::Tensor> weights;  // the parameters themselves, in their own dtype
  std::vector<at::Tensor> biases;

  double keep() const { return 1.0 - lr * weight_decay; }

  // in-place ops through a const handle: they change the tensor, not the handle
  void apply(const at::Tensor& param, const at::Tensor& grad) const {
    if (weight_decay != 0.0) param.mul_(keep());
    param.add_(grad.to(param.scalar_type()), -lr);
  }

  // The weight's step folded into its gradient GEMM (weight_grad's two operand orders).
  void apply_gemm(const at::Tensor& w, const at::Tensor& g, const at::Tensor& x) const {
    if (narrow_input(x, g)) {
      const at::Tensor wt = w.t();  // [in, out] view: MKL writes it column-major, no copy
      wt.addmm_(x.t(), g, keep(), -lr);
    } else {
      w.addmm_(g.t(), x, keep(), -lr);
    }
  }
};

// Whether oneDNN has bf16 kernels for this CPU (AVX-512 BW/VL/DQ or newer): on an AVX2-only
// host (seen: AMD EPYC Zen 3) it has none, and its linear fails with "could not create a
// primitive descriptor". Asked once, through torch's own check.
bool onednn_bf16() {
  static const bool ok = [] {
    const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_is_mkldnn_bf16_supported", "");
    torch::jit::Stack stack;
    op.callBoxed(&stack);
    return stack[0].toBool();
  }();
  return ok;
}

// bf16 products of fewer rows than mkl_bf16_max_rows() run on MKL's bf16 GEMM (fp32 out, then
// the fp32 bias + ReLU pass and a cast; mkl_bf16.cpp says why) instead of oneDNN; so do all of
// them where oneDNN has no bf16 kernels for this CPU.
bool small_bf16(const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 && mkl_bf16_available() &&
         (x.size(0) < mkl_bf16_max_rows() || !onednn_bf16());
}

std::vector<at::Tensor> cast_all(at::TensorList ts, at::ScalarType dtype) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.to(dtype));
  return out;
}

}  // namespace

bool bf16_mlp_available() { return onednn_bf16() || mkl_bf16_available(); }

// -> (output, [input, each layer's output], weights in the working dtype).
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> mlp_forward(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases, bool relu_last,
    bool bf16, bool head) {
  // named for profilers also when called directly (by the C++ autograd node), not dispatched
  RECORD_FUNCTION("recsys_kernels::mlp_forward", std::vector<c10::IValue>());
  const int64_t n = static_cast<int64_t>(weights.size());
  TORCH_CHECK(n > 0 && static_cast<int64_t>(biases.size()) == n,
              "recsys_kernels.mlp_forward: one bias per weight, got ", n, " weights and ",
              biases.size(), " biases");
  TORCH_CHECK(!bf16 || bf16_mlp_available(),
              "recsys_kernels.mlp: bf16 needs oneDNN's bf16 kernels (a CPU with AVX-512) "
              "or MKL's bf16 GEMM, and this CPU and torch have neither: run it in fp32");
  const at::ScalarType work = bf16 ? at::kBFloat16 : at::kFloat;
  at::Tensor h = x.to(work);
  // A small bf16 batch runs every layer on MKL with the fp32 biases: no bf16 copies of them.
  const bool mkl = small_bf16(h);
  std::vector<at::Tensor> w = cast_all(weights, work);
  std::vector<at::Tensor> b = mkl ? biases.vec() : cast_all(biases, work);
  std::vector<at::Tensor> acts;  // each layer's input, then the last layer's output
  acts.reserve(n + 1);
  acts.push_back(h);
  for (int64_t i = 0; i < n; ++i) {
    const bool relu = i < n - 1 || relu_last;
    if (head && i == n - 1) {
      h = mlp_head_forward(h, w[i], b[i]);
      if (relu) h.relu_();
    } else if (mkl) {  // fp32 product, fp32 bias + ReLU, then bf16
      at::Tensor y = mm_bf16_f32(h, w[i].t());
      h = bias_act_(y, b[i], relu).to(at::kBFloat16);
    } else if (bf16) {
      h = linear_pointwise(h, w[i], b[i], relu);
    } else {
      h = at::mm(h, w[i].t());
      bias_act_(h, b[i], relu);
    }
    acts.push_back(h);
  }
  return {h, acts, w};
}

namespace {

// mlp_backward, optionally taking an SGD step on each parameter instead of returning its
// gradient (`sgd`; those gradients are then undefined).
std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_backward_impl(
    const at::Tensor& grad, at::TensorList acts, at::TensorList weights, bool relu_last,
    bool head, at::IntArrayRef needs, bool need_x, at::ScalarType param_dtype,
    at::ScalarType x_dtype, const SgdInBackward* sgd) {
  RECORD_FUNCTION("recsys_kernels::mlp_backward", std::vector<c10::IValue>());
  const int64_t n = static_cast<int64_t>(weights.size());
  TORCH_CHECK(static_cast<int64_t>(acts.size()) == n + 1 &&
                  static_cast<int64_t>(needs.size()) == 2 * n,
              "recsys_kernels.mlp_backward: expected ", n + 1, " activations and ", 2 * n,
              " flags for ", n, " layers, got ", acts.size(), " and ", needs.size());
  std::vector<at::Tensor> grads(static_cast<size_t>(2 * n));
  // a parameter's gradient: returned, or spent on its SGD step here
  const auto take = [&](int64_t k, const at::Tensor& param_grad) {
    if (sgd == nullptr) {
      grads[k] = param_grad.to(param_dtype);
    } else {
      sgd->apply(k % 2 == 0 ? sgd->weights[k / 2] : sgd->biases[k / 2], param_grad);
    }
  };
  at::Tensor g = grad.to(acts[n].scalar_type());
  const bool mkl = small_bf16(g);  // the batch, and so the choice, is the same for every layer
  bool owned = false;  // g is a gradient made here (masked in place), not autograd's
  at::Tensor below_bias;  // the head's pass already masked g: the bias gradient it summed
  for (int64_t i = n - 1; i >= 0; --i) {
    at::Tensor bias;
    if (below_bias.defined()) {
      bias = std::exchange(below_bias, at::Tensor());
    } else if (i < n - 1 || relu_last) {
      if (owned) {
        bias = relu_bias_grad_(g, acts[i + 1]);
      } else {
        std::tie(g, bias) = relu_bias_grad(g, acts[i + 1]);
      }
    } else {
      bias = bias_grad(g);
    }
    if (needs[2 * i + 1]) take(2 * i + 1, bias);
    if (head && i == n - 1) {
      auto [g_x, x_bias, w_grad] = mlp_head_backward(g, acts[i], weights[i], i > 0);
      if (needs[2 * i]) take(2 * i, w_grad);
      g = g_x;
      if (i > 0) below_bias = x_bias;
      continue;
    }
    // the input gradient first: an SGD step below may change weights[i] in place
    at::Tensor g_in;
    if (i > 0) {
      g_in = mkl ? mm_bf16_f32(g, weights[i]).to(at::kBFloat16) : at::mm(g, weights[i]);
    } else if (need_x) {
      // leaves the stack: fp32 from MKL (cast below), else may be a row-strided view
      g_in = mkl ? mm_bf16_f32(g, weights[i]) : input_grad(g, weights[i]);
    }
    if (needs[2 * i]) {
      if (sgd != nullptr && !mkl && acts[i].scalar_type() == at::kFloat &&
          sgd->weights[i].scalar_type() == at::kFloat) {
        sgd->apply_gemm(sgd->weights[i], g, acts[i]);
      } else {
        take(2 * i, mkl ? mm_bf16_f32(g.t(), acts[i]) : weight_grad(g, acts[i]));
      }
    }
    if (g_in.defined()) {
      g = g_in;
      owned = true;
    }
  }
  return {need_x ? g.to(x_dtype) : at::Tensor(), grads};
}

}  // namespace

// -> (input gradient (undefined unless need_x), [weight 0, bias 0, weight 1, ...] gradients in
// param_dtype, undefined where needs[k] is 0).
std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_backward(
    const at::Tensor& grad, at::TensorList acts, at::TensorList weights, bool relu_last,
    bool head, at::IntArrayRef needs, bool need_x, at::ScalarType param_dtype,
    at::ScalarType x_dtype) {
  return mlp_backward_impl(grad, acts, weights, relu_last, head, needs, need_x, param_dtype,
                           x_dtype, nullptr);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The stack as one autograd node built in C++: the step's engine calls its backward without
// Python (the Python autograd.Function it replaces cost ~40-80 us per forward + backward).
struct MlpFunction : public torch::autograd::Function<MlpFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights,
                            at::TensorList biases, bool relu_last, bool bf16, bool head,
                            std::optional<double> sgd_lr, double sgd_weight_decay) {
    auto [out, acts, work_weights] = mlp_forward(x, weights, biases, relu_last, bf16, head);
    const int64_t n = static_cast<int64_t>(weights.size());
    variable_list saved = std::move(acts);
    saved.insert(saved.end(), work_weights.begin(), work_weights.end());
    if (sgd_lr) {  // the parameters the backward updates
      saved.insert(saved.end(), weights.begin(), weights.end());
      saved.insert(saved.end(), biases.begin(), biases.end());
      ctx->saved_data["sgd_lr"] = *sgd_lr;
      ctx->saved_data["sgd_weight_decay"] = sgd_weight_decay;
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = n;
    ctx->saved_data["relu_last"] = relu_last;
    ctx->saved_data["head"] = head;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["param_dtype"] = static_cast<int64_t>(weights[0].scalar_type());
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto guard = autocast_off();
    const variable_list saved = ctx->get_saved_variables();
    const int64_t n = ctx->saved_data["layers"].toInt();
    const auto part = [&](int64_t from, int64_t count) {
      return std::vector<at::Tensor>(saved.begin() + from, saved.begin() + from + count);
    };
    const std::vector<at::Tensor> acts = part(0, n + 1), weights = part(n + 1, n);
    std::optional<SgdInBackward> sgd;
    if (ctx->saved_data.count("sgd_lr") != 0) {
      sgd = SgdInBackward{ctx->saved_data["sgd_lr"].toDouble(),
                          ctx->saved_data["sgd_weight_decay"].toDouble(), part(2 * n + 1, n),
                          part(3 * n + 1, n)};
    }
    // inputs in order: x, the n weights, the n biases (then the five non-tensor arguments)
    std::vector<int64_t> needs(static_cast<size_t>(2 * n));
    for (int64_t i = 0; i < n; ++i) {
      needs[2 * i] = ctx->needs_input_grad(1 + i);
      needs[2 * i + 1] = ctx->needs_input_grad(1 + n + i);
    }
    const auto dtype = [&](const char* key) {
      return static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
    };
    auto [grad_x, grads] = mlp_backward_impl(
        grad_outputs[0], acts, weights, ctx->saved_data["relu_last"].toBool(),
        ctx->saved_data["head"].toBool(), needs, ctx->needs_input_grad(0), dtype("param_dtype"),
        dtype("x_dtype"), sgd ? &*sgd : nullptr);
    variable_list out;
    out.reserve(static_cast<size_t>(2 * n + 6));
    out.push_back(grad_x);
    for (int64_t i = 0; i < n; ++i) out.push_back(grads[2 * i]);
    for (int64_t i = 0; i < n; ++i) out.push_back(grads[2 * i + 1]);
    out.resize(out.size() + 5);  // relu_last, bf16, head, sgd_lr, sgd_weight_decay
    return out;
  }
};

}  // namespace

at::Tensor mlp(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
               bool relu_last, bool bf16, bool head, std::optional<double> sgd_lr,
               double sgd_weight_decay) {
  TORCH_CHECK(!weights.empty(), "recsys_kernels.mlp: no layers");
  TORCH_CHECK(!sgd_lr || (*sgd_lr >= 0.0 && sgd_weight_decay >= 0.0),
              "recsys_kernels.mlp: the SGD step needs lr >= 0 and weight_decay >= 0, got lr ",
              *sgd_lr, " and weight_decay ", sgd_weight_decay);
  const auto guard = autocast_off();
  return MlpFunction::apply(x, weights, biases, relu_last, bf16, head, sgd_lr,
                            sgd_weight_decay);
}

// Without autograd (inference mode): the forward alone, nothing saved, nothing updated.
at::Tensor mlp_inference(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                         bool relu_last, bool bf16, bool head, std::optional<double> /*sgd_lr*/,
                         double /*sgd_weight_decay*/) {
  const auto guard = autocast_off();
  return std::get<0>(mlp_forward(x, weights, biases, relu_last, bf16, head));
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("bf16_mlp_available() -> bool", recsys_kernels::bf16_mlp_available);
  m.def(
      "mlp(Tensor x, Tensor[] weights, Tensor[] biases, bool relu_last, bool bf16, bool head, "
      "float? sgd_lr=None, float sgd_weight_decay=0.) -> Tensor");
  m.def(
      "mlp_forward(Tensor x, Tensor[] weights, Tensor[] biases, bool relu_last, bool bf16, "
      "bool head) -> (Tensor, Tensor[], Tensor[])");
  m.def(
      "mlp_backward(Tensor grad, Tensor[] acts, Tensor[] weights, bool relu_last, bool head, "
      "int[] needs, bool need_x, ScalarType param_dtype, ScalarType x_dtype) -> "
      "(Tensor, Tensor[])");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("mlp_forward", recsys_kernels::mlp_forward);
  m.impl("mlp_backward", recsys_kernels::mlp_backward);
  m.impl("mlp", recsys_kernels::mlp_inference);
}

TORCH_LIBRARY_IMPL(recsys_kernels, Autograd, m) { m.impl("mlp", recsys_kernels::mlp); }
