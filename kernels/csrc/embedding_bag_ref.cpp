// Portable scalar reference of the row-wise quantized embedding bags (also the fallback path).
#include <cstring>

#include "embedding_bag.h"

namespace recsys_kernels {

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Reads one code of a row.
inline float code_at(Format f, const uint8_t* row, int64_t j) {
  if (f != Format::kInt4) return static_cast<float>(row[j]);
  const uint8_t byte = row[j / 2];
  return static_cast<float>((j & 1) ? (byte >> 4) : (byte & 0xf));
}

inline void scale_bias(Format f, const uint8_t* row, int64_t cb, float& s, float& b) {
  if (f == Format::kInt8) {
    std::memcpy(&s, row + cb, 4);
    std::memcpy(&b, row + cb + 4, 4);
    return;
  }
  uint16_t h[2];
  std::memcpy(h, row + cb, 4);
  s = half_to_float(h[0]);
  b = half_to_float(h[1]);
}

template <typename Index>
int64_t bags_scalar(const Bags<Index>& g) {
  const int64_t cb = code_bytes(g.format, g.dim);
  for (int64_t k = 0; k < g.count; ++k) {
    const int64_t s = static_cast<int64_t>(g.offsets[k]);
    const int64_t e = k + 1 < g.count ? static_cast<int64_t>(g.offsets[k + 1]) : g.last_end;
    float* out = g.out + k * g.out_stride;
    for (int64_t j = 0; j < g.dim; ++j) out[j] = 0.f;
    float bias_sum = 0.f;
    for (int64_t i = s; i < e; ++i) {
      const int64_t id = static_cast<int64_t>(g.indices[i]);
      if (id < 0 || id >= g.rows) return i;
      const uint8_t* row = g.table + id * g.row_bytes;
      float scale, bias;
      scale_bias(g.format, row, cb, scale, bias);
      const float w = g.weights ? g.weights[i] : 1.f;
      scale *= w;
      bias_sum += w * bias;
      for (int64_t j = 0; j < g.dim; ++j) out[j] += scale * code_at(g.format, row, j);
    }
    const float out_scale = g.mean && e > s ? 1.f / static_cast<float>(e - s) : 1.f;
    for (int64_t j = 0; j < g.dim; ++j) out[j] = (out[j] + bias_sum) * out_scale;
  }
  return -1;
}

template int64_t bags_scalar<int32_t>(const Bags<int32_t>&);
template int64_t bags_scalar<int64_t>(const Bags<int64_t>&);

}  // namespace recsys_kernels
