// Dot interaction kernels (interaction.h) for AVX2 + FMA: the row sums of interaction_simd.inc
// with intrinsics (each 16-float block as two 8-float halves); transposes and stores take the
// portable loops.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "interaction.h"

// Everything below is compiled for this instruction set only (the headers are included above).
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define RK_NAME(base) base##_avx2

namespace recsys_kernels {
namespace {
#define RK_SIMD_ROW_SUMS 1

constexpr int64_t kW = 16;
constexpr int64_t kRows = 4;

// acc[r] = init (row 0 only, when given) + sum_{q < m} coef(r, q) * block(q)[0:16] for the four
// rows r: 8 independent FMA chains (4 rows x 2 halves) share each pair of loads.
template <typename Block, typename Coef>
[[gnu::always_inline]] inline void four_row_sums(int64_t m, Block block, Coef coef,
                                                 const float* init, float (&acc)[kRows][kW]) {
  __m256 lo[kRows], hi[kRows];
  for (int r = 0; r < kRows; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  if (init != nullptr) {
    lo[0] = _mm256_loadu_ps(init);
    hi[0] = _mm256_loadu_ps(init + 8);
  }
  for (int64_t q = 0; q < m; ++q) {
    const float* v = block(q);
    const __m256 x0 = _mm256_loadu_ps(v), x1 = _mm256_loadu_ps(v + 8);
    for (int r = 0; r < kRows; ++r) {
      const __m256 s = _mm256_set1_ps(coef(r, q));
      lo[r] = _mm256_fmadd_ps(s, x0, lo[r]);
      hi[r] = _mm256_fmadd_ps(s, x1, hi[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    _mm256_storeu_ps(acc[r], lo[r]);
    _mm256_storeu_ps(acc[r] + 8, hi[r]);
  }
}

// acc[r][l] = sum_k t[ib + r][k] * c[k * npad + l]: entries jb .. jb + 15 of Gram rows ib + r
// (c = the transposed vectors from partner jb on; npad is a multiple of 16).
inline void gram_rows(const float* const* t, int64_t ib, const float* c, int64_t npad, int64_t d,
                      float (&acc)[kRows][kW]) {
  const float* ti[kRows] = {t[ib], t[ib + 1], t[ib + 2], t[ib + 3]};
  four_row_sums(
      d, [&](int64_t k) { return c + k * npad; }, [&](int r, int64_t k) { return ti[r][k]; },
      nullptr, acc);
}

// acc[r][0:w] = init0 (row 0 only, when given) + sum_j c[src[(ib + r) * n + j]] * t[j][kb:kb + w].
// A partial block (w < 16) goes through a zero-padded copy: never a read past a vector.
template <bool kFull>
inline void combine_rows(const float* c, const int32_t* src, int64_t n, int64_t ib,
                         const float* const* t, int64_t kb, int64_t w, const float* init0,
                         float (&acc)[kRows][kW]) {
  const int32_t* si[kRows] = {src + ib * n, src + (ib + 1) * n, src + (ib + 2) * n,
                              src + (ib + 3) * n};
  const auto coef = [&](int r, int64_t j) { return c[si[r][j]]; };
  if constexpr (kFull) {
    four_row_sums(n, [&](int64_t j) { return t[j] + kb; }, coef, init0, acc);
  } else {
    float pad[kW] = {}, init[kW] = {};
    if (init0 != nullptr) std::memcpy(init, init0, static_cast<size_t>(w) * sizeof(float));
    const auto block = [&](int64_t j) {
      std::memcpy(pad, t[j] + kb, static_cast<size_t>(w) * sizeof(float));
      return static_cast<const float*>(pad);
    };
    four_row_sums(n, block, coef, init0 != nullptr ? init : nullptr, acc);
  }
}
}  // namespace
}  // namespace recsys_kernels

#include "interaction_simd.inc"

#pragma GCC pop_options
