// AVX-512 (F/BW/VL) kernels: 16 floats per step, masked loads for the tail of a row.
// Compiled for any x86-64 (GCC target pragma below); only called after a CPUID check.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "embedding_bag.h"

// Everything below is compiled for this instruction set only (headers are included above,
// so no inline library code is built with it).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

#define RK_TARGET
#define RK_LANES 16
#define RK_NAME(base) base##_avx512
#define RK_SET1(x) _mm512_set1_ps(x)
#define RK_LOADF(p) _mm512_loadu_ps(p)
#define RK_STORE(p, v) _mm512_storeu_ps(p, v)
#define RK_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define RK_HALF(h) _cvtsh_ss(h)

namespace recsys_kernels {
namespace {

RK_TARGET inline __m512 load_u8(const uint8_t* p) {  // 16 codes
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

RK_TARGET inline __m512 load_u4(const uint8_t* p) {  // 16 codes from 8 bytes
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i nib = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(bytes, nib);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
}

RK_TARGET inline void tail_u8(const uint8_t* row, int64_t j, int64_t dim, float s, float* out) {
  if (j >= dim) return;
  const __mmask16 m = static_cast<__mmask16>((1u << (dim - j)) - 1u);
  const __m512 codes = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, row + j)));
  const __m512 acc = _mm512_maskz_loadu_ps(m, out + j);
  _mm512_mask_storeu_ps(out + j, m, _mm512_fmadd_ps(codes, _mm512_set1_ps(s), acc));
}

}  // namespace
}  // namespace recsys_kernels

#define RK_LOAD_U8(p) load_u8(p)
#define RK_LOAD_U4(p) load_u4(p)
#define RK_TAIL_U8(row, j, dim, s, out) tail_u8(row, j, dim, s, out)

#include "embedding_bag_simd.inc"

#pragma GCC pop_options
