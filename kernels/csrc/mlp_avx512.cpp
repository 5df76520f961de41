// MLP kernels (mlp.h) with AVX-512: the bias + ReLU backward and the width-1 last layer. 16
// columns per step, masked loads and stores for the last partial step; bf16 words widened to
// fp32 by a shift (exact) and rounded back to nearest even.
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
  static __m512 from_float(__m512 v) { return v; }
};
struct BF16 {
  using Word = uint16_t;
  static __m256i load(const uint16_t* p, __mmask16 m) { return _mm256_maskz_loadu_epi16(m, p); }
  static __m256i keep(__mmask16 k, __m256i v) { return _mm256_maskz_mov_epi16(k, v); }
  static void store(uint16_t* p, __mmask16 m, __m256i v) { _mm256_mask_storeu_epi16(p, m, v); }
  static __m512 value(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  // Rounded to nearest even, NaN -> 0xffff: float_to_bf16 (bf16.h), 16 lanes at a time.
  static __m256i from_float(__m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                              _mm512_set1_epi32(0xffff));
    return _mm512_cvtepi32_epi16(r);
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

template <typename T>
void head_forward(const Head& h, int64_t r0, int64_t r1, float* y) {
  using W = typename T::Word;
  const int64_t n = h.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const W* x = static_cast<const W*>(h.x) + r * n;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = lanes(n - c);
      acc = _mm512_fmadd_ps(T::value(T::load(x + c, m)), _mm512_maskz_loadu_ps(m, h.w + c), acc);
    }
    y[r] = _mm512_reduce_add_ps(acc);
  }
}

template <typename T>
void head_backward(const Head& h, int64_t r0, int64_t r1, float* w_grad, float* x_bias) {
  using W = typename T::Word;
  const int64_t n = h.cols;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = r0; r < r1; ++r) {
    const W* x = static_cast<const W*>(h.x) + r * n;
    W* gx = static_cast<W*>(h.grad_x) + r * n;
    const __m512 g = _mm512_set1_ps(h.grad[r]);
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = lanes(n - c);
      const __m512 xv = T::value(T::load(x + c, m));
      _mm512_mask_storeu_ps(w_grad + c, m,
                            _mm512_fmadd_ps(g, xv, _mm512_maskz_loadu_ps(m, w_grad + c)));
      // !(x <= 0): a NaN x lets the gradient through, as threshold_backward does.
      const __mmask16 keep = h.relu ? _mm512_mask_cmp_ps_mask(m, xv, zero, _CMP_NLE_UQ) : m;
      const __m512 product = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, h.w + c));
      const auto word = T::keep(keep, T::from_float(product));
      T::store(gx + c, m, word);
      _mm512_mask_storeu_ps(x_bias + c, m,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, x_bias + c), T::value(word)));
    }
  }
}

void bias_act(float* out, const float* bias, int64_t cols, bool relu, int64_t r0, int64_t r1) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + r * cols;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 m = lanes(cols - c);
      __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o + c), _mm512_maskz_loadu_ps(m, bias + c));
      if (relu) v = _mm512_max_ps(zero, v);  // the second operand when either is NaN: NaN kept
      _mm512_mask_storeu_ps(o + c, m, v);
    }
  }
}

}  // namespace

BiasActKernel bias_act_kernel_avx512() { return bias_act; }

ReluGradKernels relu_grad_kernels_avx512() { return {rows<F32>, rows<BF16>}; }

HeadKernels head_kernels_avx512() {
  return {head_forward<F32>, head_forward<BF16>, head_backward<F32>, head_backward<BF16>};
}

}  // namespace recsys_kernels

#pragma GCC pop_options
