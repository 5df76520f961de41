// MLP kernels (mlp.h), portable loops: the path for CPUs without AVX-512.
// Values are handled as raw words (fp32 bits, or the upper half of fp32 bits for bf16) and
// masked with integer AND, so the compiler vectorizes the loops (a float select does not).
#include <cstdint>
#include <cstring>

#include "bf16.h"
#include "mlp.h"

namespace recsys_kernels {
namespace {

inline float as_float(uint32_t word) {
  float f;
  std::memcpy(&f, &word, sizeof f);
  return f;
}
inline float as_float(uint16_t word) { return bf16_to_float(word); }

template <typename W>
void rows(const ReluGrad& a, int64_t r0, int64_t r1, float* __restrict bias) {
  const int64_t n = a.cols;
  for (int64_t r = r0; r < r1; ++r) {
    // No __restrict on g and m: relu_bias_grad_ masks in place (m == g).
    const W* g = static_cast<const W*>(a.grad) + r * n;
    if (a.out == nullptr) {
      for (int64_t c = 0; c < n; ++c) bias[c] += as_float(g[c]);
      continue;
    }
    const W* __restrict o = static_cast<const W*>(a.out) + r * n;
    W* m = static_cast<W*>(a.masked) + r * n;
    for (int64_t c = 0; c < n; ++c) {
      const W keep = as_float(o[c]) <= 0.0f ? W{0} : static_cast<W>(~W{0});  // NaN: keep
      const W w = g[c] & keep;
      m[c] = w;
      bias[c] += as_float(w);
    }
  }
}

inline uint32_t to_word(float v, uint32_t) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}
inline uint16_t to_word(float v, uint16_t) { return float_to_bf16(v); }

template <typename W>
void head_forward(const Head& h, int64_t r0, int64_t r1, float* y) {
  const int64_t n = h.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const W* __restrict x = static_cast<const W*>(h.x) + r * n;
    float s = 0.0f;
    for (int64_t c = 0; c < n; ++c) s += as_float(x[c]) * h.w[c];
    y[r] = s;
  }
}

template <typename W>
void head_backward(const Head& h, int64_t r0, int64_t r1, float* __restrict w_grad,
                   float* __restrict x_bias) {
  const int64_t n = h.cols;
  const float* __restrict w = h.w;
  for (int64_t r = r0; r < r1; ++r) {
    const W* __restrict x = static_cast<const W*>(h.x) + r * n;
    W* __restrict gx = static_cast<W*>(h.grad_x) + r * n;
    const float g = h.grad[r];
    for (int64_t c = 0; c < n; ++c) {
      const float xv = as_float(x[c]);
      w_grad[c] += g * xv;
      const W word = h.relu && xv <= 0.0f ? W{0} : to_word(g * w[c], W{});
      gx[c] = word;
      x_bias[c] += as_float(word);
    }
  }
}

void bias_act(float* out, const float* bias, int64_t cols, bool relu, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* __restrict o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = o[c] + bias[c];
      o[c] = relu && v < 0.0f ? 0.0f : v;  // NaN: kept
    }
  }
}

}  // namespace

BiasActKernel bias_act_kernel_scalar() { return bias_act; }

ReluGradKernels relu_grad_kernels_scalar() { return {rows<uint32_t>, rows<uint16_t>}; }

HeadKernels head_kernels_scalar() {
  return {head_forward<uint32_t>, head_forward<uint16_t>, head_backward<uint32_t>,
          head_backward<uint16_t>};
}

}  // namespace recsys_kernels
