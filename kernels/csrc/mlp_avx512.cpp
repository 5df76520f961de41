// MLP bias + ReLU backward (mlp.h) with AVX-512: 16 columns per step, masked loads and stores
// for the last partial step; bf16 words widened to fp32 by a shift (exact).
#include <immintrin.h>

#include <cstdint>

#include "mlp.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")

namespace recsys_kernels {
namespace {

inline __mmask16 lanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

inline __m512 widen(__m256i words) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(words), 16));
}

// Lanes whose ReLU output lets the gradient through: !(out <= 0), NaN included.
inline __mmask16 passing(__m512 out, __mmask16 m) {
  return _mm512_mask_cmp_ps_mask(m, out, _mm512_setzero_ps(), _CMP_NLE_UQ);
}

}  // namespace

void relu_grad_rows_f32_avx512(const ReluGrad& a, int64_t r0, int64_t r1, float* bias) {
  const int64_t n = a.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const float* g = static_cast<const float*>(a.grad) + r * n;
    const float* o = a.out != nullptr ? static_cast<const float*>(a.out) + r * n : nullptr;
    float* dst = a.out != nullptr ? static_cast<float*>(a.masked) + r * n : nullptr;
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = lanes(n - c);
      __m512 gv = _mm512_maskz_loadu_ps(m, g + c);
      if (o != nullptr) {
        gv = _mm512_maskz_mov_ps(passing(_mm512_maskz_loadu_ps(m, o + c), m), gv);
        _mm512_mask_storeu_ps(dst + c, m, gv);
      }
      _mm512_mask_storeu_ps(bias + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, bias + c), gv));
    }
  }
}

void relu_grad_rows_bf16_avx512(const ReluGrad& a, int64_t r0, int64_t r1, float* bias) {
  const int64_t n = a.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* g = static_cast<const uint16_t*>(a.grad) + r * n;
    const uint16_t* o = a.out != nullptr ? static_cast<const uint16_t*>(a.out) + r * n : nullptr;
    uint16_t* dst = a.out != nullptr ? static_cast<uint16_t*>(a.masked) + r * n : nullptr;
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = lanes(n - c);
      __m256i gw = _mm256_maskz_loadu_epi16(m, g + c);
      if (o != nullptr) {
        gw = _mm256_maskz_mov_epi16(passing(widen(_mm256_maskz_loadu_epi16(m, o + c)), m), gw);
        _mm256_mask_storeu_epi16(dst + c, m, gw);
      }
      _mm512_mask_storeu_ps(bias + c, m,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, bias + c), widen(gw)));
    }
  }
}

}  // namespace recsys_kernels

#pragma GCC pop_options
