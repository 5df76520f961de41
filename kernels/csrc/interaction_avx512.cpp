// Dot interaction kernels (interaction.h) for AVX-512: the block helpers of interaction_simd.inc
// written with intrinsics.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "interaction.h"

// Everything below is compiled for this instruction set only (the headers are included above).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")

#define RK_NAME(base) base##_avx512

namespace recsys_kernels {
namespace {
// The block helpers of interaction_simd.inc in AVX-512: a 16 x 16 transpose in registers
// (unpack pairs, then 64-bit pairs, then 128-bit lanes twice) instead of 256 scalar moves, and
// masked stores instead of a copy loop.
#define RK_SIMD_ROW_SUMS 1
#define RK_SIMD_MOVES 1

constexpr int64_t kW = 16;

inline __mmask16 lanes_below(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }

// dst[c * stride + r] = rows[r][col + c] for c < nc, r < 16 (0 for r >= nr).
inline void transpose16(const float* const* rows, int64_t nr, int64_t col, int64_t nc,
                        float* dst, int64_t stride) {
  const __mmask16 cols = lanes_below(nc);
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) {
    r[i] = i < nr ? _mm512_maskz_loadu_ps(cols, rows[i] + col) : _mm512_setzero_ps();
  }
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  const auto pd = [](__m512 x) { return _mm512_castps_pd(x); };
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[4 * i]), pd(t[4 * i + 2])));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[4 * i]), pd(t[4 * i + 2])));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[4 * i + 1]), pd(t[4 * i + 3])));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[4 * i + 1]), pd(t[4 * i + 3])));
  }
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
    t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
  }
  for (int c = 0; c < 8; ++c) {  // column c, then column 8 + c
    if (c < nc) _mm512_storeu_ps(dst + c * stride, _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88));
    if (8 + c < nc) {
      _mm512_storeu_ps(dst + (8 + c) * stride, _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd));
    }
  }
}

constexpr int64_t kRows = 4;

// acc[r] = init (row 0 only) + sum_{q < m} coef(r, q) * vec(q) for the four rows r, even and
// odd q in separate accumulators: 8 independent FMA chains share each vector load.
template <typename Vec, typename Coef>
[[gnu::always_inline]] inline void four_row_sums(int64_t m, Vec vec, Coef coef, __m512 init,
                                                 float (&acc)[kRows][kW]) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 a[kRows] = {init, zero, zero, zero}, b[kRows] = {zero, zero, zero, zero};
  int64_t q = 0;
  for (; q + 2 <= m; q += 2) {
    const __m512 x = vec(q), y = vec(q + 1);
    for (int r = 0; r < kRows; ++r) {
      a[r] = _mm512_fmadd_ps(_mm512_set1_ps(coef(r, q)), x, a[r]);
      b[r] = _mm512_fmadd_ps(_mm512_set1_ps(coef(r, q + 1)), y, b[r]);
    }
  }
  if (q < m) {
    const __m512 x = vec(q);
    for (int r = 0; r < kRows; ++r) a[r] = _mm512_fmadd_ps(_mm512_set1_ps(coef(r, q)), x, a[r]);
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(acc[r], _mm512_add_ps(a[r], b[r]));
}

// acc[r][l] = sum_k t[ib + r][k] * c[k * npad + l]: entries jb .. jb + 15 of Gram rows ib + r
// (c = the transposed vectors from partner jb on).
inline void gram_rows(const float* const* t, int64_t ib, const float* c, int64_t npad, int64_t d,
                      float (&acc)[kRows][kW]) {
  const float* ti[kRows] = {t[ib], t[ib + 1], t[ib + 2], t[ib + 3]};
  four_row_sums(
      d, [&](int64_t k) { return _mm512_loadu_ps(c + k * npad); },
      [&](int r, int64_t k) { return ti[r][k]; }, _mm512_setzero_ps(), acc);
}

// acc[r][0:w] = init0 (row 0 only, when given) + sum_j c[src[(ib + r) * n + j]] * t[j][kb:kb + w].
template <bool kFull>
inline void combine_rows(const float* c, const int32_t* src, int64_t n, int64_t ib,
                         const float* const* t, int64_t kb, int64_t w, const float* init0,
                         float (&acc)[kRows][kW]) {
  const __mmask16 m = kFull ? static_cast<__mmask16>(0xffff) : lanes_below(w);
  const int32_t* si[kRows] = {src + ib * n, src + (ib + 1) * n, src + (ib + 2) * n,
                              src + (ib + 3) * n};
  four_row_sums(
      n,
      [&](int64_t j) {
        return kFull ? _mm512_loadu_ps(t[j] + kb) : _mm512_maskz_loadu_ps(m, t[j] + kb);
      },
      [&](int r, int64_t j) { return c[si[r][j]]; },
      init0 != nullptr ? _mm512_maskz_loadu_ps(m, init0) : _mm512_setzero_ps(), acc);
}

// dst[l] = v[l] for l in [lo, hi): one masked store (lanes outside are not touched).
inline void store_lanes(float* dst, const float* v, int64_t lo, int64_t hi) {
  if (lo >= hi) return;
  _mm512_mask_storeu_ps(dst, static_cast<__mmask16>(lanes_below(hi) & ~lanes_below(lo)),
                        _mm512_loadu_ps(v));
}
}  // namespace
}  // namespace recsys_kernels

#include "interaction_simd.inc"

#pragma GCC pop_options
