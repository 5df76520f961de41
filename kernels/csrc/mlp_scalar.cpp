// MLP bias + ReLU backward (mlp.h), portable loops: the path for CPUs without AVX-512.
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
    const W* __restrict g = static_cast<const W*>(a.grad) + r * n;
    if (a.out == nullptr) {
      for (int64_t c = 0; c < n; ++c) bias[c] += as_float(g[c]);
      continue;
    }
    const W* __restrict o = static_cast<const W*>(a.out) + r * n;
    W* __restrict m = static_cast<W*>(a.masked) + r * n;
    for (int64_t c = 0; c < n; ++c) {
      const W keep = as_float(o[c]) <= 0.0f ? W{0} : static_cast<W>(~W{0});  // NaN: keep
      const W w = g[c] & keep;
      m[c] = w;
      bias[c] += as_float(w);
    }
  }
}

}  // namespace

ReluGradKernels relu_grad_kernels_scalar() { return {rows<uint32_t>, rows<uint16_t>}; }

}  // namespace recsys_kernels
