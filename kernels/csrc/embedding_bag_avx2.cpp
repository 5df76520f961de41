// AVX2 + FMA kernels: 8 floats per vector, plain (unmasked) loads and stores for row tails, up to
// 16 accumulator vectors (128 columns) per pass, wider rows in blocks of 8 (64 columns). Compiled
// for any x86-64 with a GCC target pragma; only called after a CPUID check (dispatch.cpp).
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
#pragma GCC target("avx2,fma,f16c")

#define RK_NAME(base) base##_avx2

namespace recsys_kernels {
namespace {

constexpr int kLanes = 8;
// 16 accumulators are all 16 ymm registers, so some spill to the stack; still, one pass over a
// 128-wide row beat two of 64 columns: one-id bags of 3M x 128 int8 rows 1.61x faster, 0.58x ->
// 0.95x FBGEMM's AVX2 kernel (docs/kernels.md, "Wide rows and AVX2-only hosts").
constexpr int kMaxVectors = 16;
constexpr int kWideVectors = 8;
// Beyond the far size (rows from DRAM) int8 rows of 97-128 columns go in blocks of kWideVectors
// (run): bags of 10M x 128 rows at pooling 20 and 100 ran 1.03-1.43x as fast, ours / FBGEMM's
// AVX2 kernel 0.92-1.39 -> 1.09-1.55 (AMD Zen 3, three runs; docs/kernels.md, "Two passes
// under the far plan").
constexpr int kFarVectors = 8;
// No separate copies for whole last vectors: int8 tails already take a plain load here.
constexpr bool kFullTails = false;
using VF = __m256;

inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vset1(float x) { return _mm256_set1_ps(x); }
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
inline VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }

struct Tail {
  int count;  // valid columns of the last vector (1..8)
};

inline Tail make_tail(int last) { return {last}; }

// The 4 bytes at p in the low dword (a plain `vmovd` load; p need not be aligned).
inline __m128i load_dword(const uint8_t* p) {
  int32_t word;
  std::memcpy(&word, p, 4);
  return _mm_cvtsi32_si128(word);
}

inline VF u8_to_ps(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }

inline VF u4_to_ps(__m128i bytes) {  // 8 codes in the low 4 bytes
  const __m128i nib = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(bytes, nib);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
  return u8_to_ps(_mm_unpacklo_epi8(lo, hi));
}

template <int kFmt>
inline VF load_codes(const uint8_t* p) {
  if constexpr (kFmt == static_cast<int>(Format::kInt4)) {
    return u4_to_ps(load_dword(p));
  } else {
    return u8_to_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
}

template <int kFmt>
inline VF load_codes_tail(const uint8_t* p, const Tail& t) {
  if constexpr (kFmt == static_cast<int>(Format::kInt4)) {
    return load_codes<kFmt>(p);  // 4 bytes from a code byte: inside the row (4-byte trailer)
  } else if constexpr (kFmt == static_cast<int>(Format::kInt8)) {
    // The plain 8-byte load: it ends at most 7 bytes past the codes, inside the row's 8-byte
    // trailer; its lanes past the codes are never stored. A masked dword load is two uops.
    return load_codes<kFmt>(p);
  } else {
    // int8_half: a 4-byte trailer. Plain loads, not a masked one (`vpmaskmovd`, a mask vector
    // and more uops on every row; a small gain on cached rows, docs/kernels.md "Tail loads of
    // int8_half rows on AVX2"): 8 bytes when the last vector holds 4 or more codes (then at most
    // 4 bytes past them, inside the trailer), else 4 bytes (at most 3 past them). The branch
    // goes the same way for every row of a run.
    return t.count >= 4 ? load_codes<kFmt>(p) : u8_to_ps(load_dword(p));
  }
}

// int4, two vectors at a time: 8 bytes -> the 8 even columns (low nibbles) and the 8 odd ones
// (high nibbles); `interleave` restores column order once per bag. The last pair may read up
// to 3 bytes past the codes: still inside the row (4-byte trailer); those lanes are not stored.
inline void load_int4_pair(const uint8_t* p, VF& even, VF& odd) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  even = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(0x0f)));
  odd = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
}
inline void load_int4_pair_tail(const uint8_t* p, const Tail&, VF& even, VF& odd) {
  load_int4_pair(p, even, odd);
}
inline void interleave(VF even, VF odd, VF& lo, VF& hi) {
  const VF a = _mm256_unpacklo_ps(even, odd), b = _mm256_unpackhi_ps(even, odd);
  lo = _mm256_permute2f128_ps(a, b, 0x20);
  hi = _mm256_permute2f128_ps(a, b, 0x31);
}

// int4 rows of one vector (dim <= 8): the <= 4 code bytes read into both halves of an 8-byte
// vector (a broadcast load; 4 bytes from the codes stay inside the row), widened, lanes 4-7
// shifted right by 4: even columns in lanes 0-3, odd ones in 4-7; `interleave_halves` restores
// column order once per bag.
inline VF load_int4_halves(const uint8_t* p, const Tail&) {
  int32_t word;
  std::memcpy(&word, p, 4);
  const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  const __m256i codes = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_set1_epi32(word)), shift);
  return _mm256_cvtepi32_ps(_mm256_and_si256(codes, _mm256_set1_epi32(0x0f)));
}
inline VF interleave_halves(VF v) {
  return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
// The last vector's t.count columns by plain stores: the whole vector, or pieces of 4, 2 and 1
// floats, by branches that go the same way for every bag of a run. Not a masked store
// (`vmaskmovps`): many uops on AMD cores; on Zen 3 one per bag made one-id bags of cached rows
// cost ~12 ns against FBGEMM's ~7 (docs/kernels.md, "Tail stores on AVX2").
inline void vstore_tail(float* p, VF v, const Tail& t) {
  if (t.count == kLanes) {
    _mm256_storeu_ps(p, v);
    return;
  }
  __m128 part = _mm256_castps256_ps128(v);
  if (t.count & 4) {
    _mm_storeu_ps(p, part);
    part = _mm256_extractf128_ps(v, 1);
    p += 4;
  }
  if (t.count & 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
    part = _mm_movehl_ps(part, part);
    p += 2;
  }
  if (t.count & 1) _mm_store_ss(p, part);
}

}  // namespace
}  // namespace recsys_kernels

#include "embedding_bag_simd.inc"

#pragma GCC pop_options
