// AVX-512 (F/BW/VL) kernels: 16 floats per vector, byte-masked loads and stores for row tails,
// up to 16 accumulator vectors (256 columns) per pass, wider rows in blocks of 8 (128 columns).
// Compiled for any x86-64 with a GCC target pragma; only called after a CPUID check
// (dispatch.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "embedding_bag.h"
#include "prefetch.h"

// Everything below is compiled for this instruction set only (the headers are included above,
// so no library code is built with it).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c,bmi2")

#define RK_NAME(base) base##_avx512

namespace recsys_kernels {
namespace {

constexpr int kLanes = 16;
constexpr int kMaxVectors = 16;
constexpr int kWideVectors = 8;
// Beyond the far size rows keep one pass up to kMaxVectors: 128-wide rows are 8 vectors here,
// like the AVX2 path's 64-wide ones (its two-pass split is for rows of 16 vectors; 256-wide rows
// of 16 vectors here have not been measured split).
constexpr int kFarVectors = kMaxVectors;
// Whole last vectors get their own copies of the lookup: a masked load is a separate load and
// widen (two fused uops for one), and GCC re-materializes its mask register in some loops.
constexpr bool kFullTails = true;
using VF = __m512;

inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vset1(float x) { return _mm512_set1_ps(x); }
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
inline VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }

struct Tail {
  __mmask16 lanes;  // valid columns of the last vector
  __mmask16 bytes8;  // their int8 code bytes
  __mmask16 bytes4;  // their int4 code bytes
  __mmask16 pair4;   // int4 code bytes of the last two vectors (a full one, then `lanes`)
  bool whole8;       // a one-vector int4 row may read 8 bytes from its codes (>= 4 code bytes,
                     // then the 4-byte trailer: still inside the row)
};

inline Tail make_tail(int last) {
  const auto m = [](int n) { return static_cast<__mmask16>((1u << n) - 1u); };
  return {m(last), m(last), m((last + 1) / 2), m(8 + (last + 1) / 2), last >= 7};
}

inline VF u8_to_ps(__m128i bytes) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)); }

inline VF u4_to_ps(__m128i bytes) {  // 16 codes in the low 8 bytes
  const __m128i nib = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(bytes, nib);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
  return u8_to_ps(_mm_unpacklo_epi8(lo, hi));
}

template <int kFmt>
inline VF load_codes(const uint8_t* p) {
  if constexpr (kFmt == static_cast<int>(Format::kInt4)) {
    return u4_to_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else {
    return u8_to_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
}

template <int kFmt>
inline VF load_codes_tail(const uint8_t* p, const Tail& t) {
  if constexpr (kFmt == static_cast<int>(Format::kInt4)) {
    return u4_to_ps(_mm_maskz_loadu_epi8(t.bytes4, p));
  } else {
    return u8_to_ps(_mm_maskz_loadu_epi8(t.bytes8, p));
  }
}

// A nibble as a float by table lookup: vpermps reads only the low 4 bits of each index, so one
// permute of 0.0-15.0 does what a mask and an int -> float conversion do, on the shuffle port
// instead of the one the shift, conversions and half the FMAs share (exact: the same floats).
inline VF nibbles_to_ps(__m512i index) {
  return _mm512_permutexvar_ps(
      index, _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

// int4, two vectors at a time: 16 bytes -> the 16 even columns (low nibbles) and the 16 odd
// ones (high nibbles), with no byte shuffle per row; `interleave` restores column order once per
// bag. Per pair: widen, shift, two lookups, two FMAs (was widen, mask, shift, two conversions,
// two FMAs: ours / FBGEMM 4-bit on 128-wide rows at 1 thread 0.91-1.15 -> 1.10-1.31,
// docs/kernels.md).
inline void u4_pair(__m128i bytes, VF& even, VF& odd) {
  const __m512i b = _mm512_cvtepu8_epi32(bytes);
  even = nibbles_to_ps(b);
  odd = nibbles_to_ps(_mm512_srli_epi32(b, 4));
}
inline void load_int4_pair(const uint8_t* p, VF& even, VF& odd) {
  u4_pair(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), even, odd);
}
inline void load_int4_pair_tail(const uint8_t* p, const Tail& t, VF& even, VF& odd) {
  u4_pair(_mm_maskz_loadu_epi8(t.pair4, p), even, odd);
}
inline void interleave(VF even, VF odd, VF& lo, VF& hi) {
  const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                        15, 31);
  lo = _mm512_permutex2var_ps(even, ilo, odd);
  hi = _mm512_permutex2var_ps(even, ihi, odd);
}

// int4 rows of one vector (dim <= 16): the <= 8 code bytes read into both halves of a 16-byte
// vector (a broadcast load), widened to 32 bits, lanes 8-15 shifted right by 4: the even columns
// in lanes 0-7, the odd ones in lanes 8-15, with no byte shuffle per row; `interleave_halves`
// restores column order once per bag. (The nibble lookup of `u4_pair` in place of the mask and
// conversion here measured slower: 1.56-1.59 -> 1.18-1.22x FBGEMM 4-bit on an L2-resident 16-wide
// table.)
inline VF load_int4_halves(const uint8_t* p, const Tail& t) {
  const __m128i twice =
      t.whole8 ? _mm_castpd_si128(_mm_loaddup_pd(reinterpret_cast<const double*>(p)))
               : _mm_broadcastq_epi64(_mm_maskz_loadu_epi8(t.bytes4, p));
  const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
  const __m512i codes = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(twice), shift);
  return _mm512_cvtepi32_ps(_mm512_and_si512(codes, _mm512_set1_epi32(0x0f)));
}
// (The zero-masked form with every lane selected is the same permute; the plain intrinsic's
// `_mm512_undefined_ps` draws a false -Wuninitialized from GCC 12 once inlined into pool_block.)
inline VF interleave_halves(VF v) {
  return _mm512_maskz_permutexvar_ps(
      0xffff, _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), v);
}

inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline void vstore_tail(float* p, VF v, const Tail& t) { _mm512_mask_storeu_ps(p, t.lanes, v); }

}  // namespace
}  // namespace recsys_kernels

#include "embedding_bag_simd.inc"

#pragma GCC pop_options
