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

// 16 values of each element type: raw load, masking, store, and the fp32 value of the lanes.
struct F32 {
  using Word = float;
  static __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
  static __m512 keep(__mmask16 k, __m512 v) { return _mm512_maskz_mov_ps(k, v); }
  static void store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
  static __m512 value(__m512 v) { return v; }
};
struct BF16 {
  using Word = uint16_t;
  static __m256i load(const uint16_t* p, __mmask16 m) { return _mm256_maskz_loadu_epi16(m, p); }
  static __m256i keep(__mmask16 k, __m256i v) { return _mm256_maskz_mov_epi16(k, v); }
  static void store(uint16_t* p, __mmask16 m, __m256i v) { _mm256_mask_storeu_epi16(p, m, v); }
  static __m512 value(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
};

template <typename T>
void rows(const ReluGrad& a, int64_t r0, int64_t r1, float* bias) {
  using W = typename T::Word;
  const int64_t n = a.cols;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = r0; r < r1; ++r) {
    const W* g = static_cast<const W*>(a.grad) + r * n;
    const W* o = a.out != nullptr ? static_cast<const W*>(a.out) + r * n : nullptr;
    W* dst = a.out != nullptr ? static_cast<W*>(a.masked) + r * n : nullptr;
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = lanes(n - c);
      auto gv = T::load(g + c, m);
      if (o != nullptr) {
        // Lanes whose ReLU output lets the gradient through: !(out <= 0), NaN included.
        const __mmask16 pass = _mm512_mask_cmp_ps_mask(m, T::value(T::load(o + c, m)), zero,
                                                       _CMP_NLE_UQ);
        gv = T::keep(pass, gv);
        T::store(dst + c, m, gv);
      }
      _mm512_mask_storeu_ps(bias + c, m,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, bias + c), T::value(gv)));
    }
  }
}

}  // namespace

ReluGradKernels relu_grad_kernels_avx512() { return {rows<F32>, rows<BF16>}; }

}  // namespace recsys_kernels

#pragma GCC pop_options
