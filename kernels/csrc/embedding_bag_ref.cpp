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
int64_t bag_scalar(const Bag<Index>& b) {
  const int64_t cb = code_bytes(b.format, b.dim);
  for (int64_t j = 0; j < b.dim; ++j) b.out[j] = 0.f;
  float bias_sum = 0.f;
  for (int64_t i = 0; i < b.length; ++i) {
    const int64_t id = static_cast<int64_t>(b.indices[i]);
    if (id < 0 || id >= b.rows) return i;
    const uint8_t* row = b.table + id * b.row_bytes;
    float scale, bias;
    scale_bias(b.format, row, cb, scale, bias);
    const float w = b.weights ? b.weights[i] : 1.f;
    scale *= w;
    bias_sum += w * bias;
    for (int64_t j = 0; j < b.dim; ++j) b.out[j] += scale * code_at(b.format, row, j);
  }
  for (int64_t j = 0; j < b.dim; ++j) b.out[j] = (b.out[j] + bias_sum) * b.out_scale;
  return -1;
}

template int64_t bag_scalar<int32_t>(const Bag<int32_t>&);
template int64_t bag_scalar<int64_t>(const Bag<int64_t>&);

}  // namespace recsys_kernels
