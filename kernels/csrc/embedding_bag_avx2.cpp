// AVX2 + FMA kernels: 8 floats per step. Compiled for any x86-64 (GCC target pragma below);
// only called after a CPUID check.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "embedding_bag.h"

// Everything below is compiled for this instruction set only (headers are included above,
// so no inline library code is built with it).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#define RK_TARGET
#define RK_LANES 8
#define RK_NAME(base) base##_avx2
#define RK_SET1(x) _mm256_set1_ps(x)
#define RK_LOADF(p) _mm256_loadu_ps(p)
#define RK_STORE(p, v) _mm256_storeu_ps(p, v)
#define RK_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define RK_HALF(h) _cvtsh_ss(h)

namespace recsys_kernels {
namespace {

RK_TARGET inline __m256 load_u8(const uint8_t* p) {  // 8 codes
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

RK_TARGET inline __m256 load_u4(const uint8_t* p) {  // 8 codes from 4 bytes
  int32_t word;
  std::memcpy(&word, p, 4);
  const __m128i bytes = _mm_cvtsi32_si128(word);
  const __m128i nib = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(bytes, nib);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
}

RK_TARGET inline void tail_u8(const uint8_t* row, int64_t j, int64_t dim, float s, float* out) {
  for (; j < dim; ++j) out[j] += s * static_cast<float>(row[j]);
}

}  // namespace
}  // namespace recsys_kernels

#define RK_LOAD_U8(p) load_u8(p)
#define RK_LOAD_U4(p) load_u4(p)
#define RK_TAIL_U8(row, j, dim, s, out) tail_u8(row, j, dim, s, out)

#include "embedding_bag_simd.inc"

#pragma GCC pop_options
