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

template <typename Index>
void bag_int8_scalar(const Bag<Index>& b) {
  for (int64_t j = 0; j < b.dim; ++j) b.out[j] = 0.f;
  float bias_sum = 0.f;
  for (int64_t i = 0; i < b.length; ++i) {
    const uint8_t* row = b.table + static_cast<int64_t>(b.indices[i]) * b.row_bytes;
    float scale, bias;
    std::memcpy(&scale, row + b.dim, 4);
    std::memcpy(&bias, row + b.dim + 4, 4);
    const float w = b.weights ? b.weights[i] : 1.f;
    scale *= w;
    bias_sum += w * bias;
    for (int64_t j = 0; j < b.dim; ++j) b.out[j] += scale * static_cast<float>(row[j]);
  }
  for (int64_t j = 0; j < b.dim; ++j) b.out[j] = (b.out[j] + bias_sum) * b.out_scale;
}

template <typename Index>
void bag_int4_scalar(const Bag<Index>& b) {
  const int64_t code_bytes = (b.dim + 1) / 2;
  for (int64_t j = 0; j < b.dim; ++j) b.out[j] = 0.f;
  float bias_sum = 0.f;
  for (int64_t i = 0; i < b.length; ++i) {
    const uint8_t* row = b.table + static_cast<int64_t>(b.indices[i]) * b.row_bytes;
    uint16_t hs, hb;
    std::memcpy(&hs, row + code_bytes, 2);
    std::memcpy(&hb, row + code_bytes + 2, 2);
    const float w = b.weights ? b.weights[i] : 1.f;
    const float scale = w * half_to_float(hs);
    bias_sum += w * half_to_float(hb);
    for (int64_t j = 0; j < b.dim; ++j) {
      const uint8_t byte = row[j / 2];
      const float code = static_cast<float>((j & 1) ? (byte >> 4) : (byte & 0xf));
      b.out[j] += scale * code;
    }
  }
  for (int64_t j = 0; j < b.dim; ++j) b.out[j] = (b.out[j] + bias_sum) * b.out_scale;
}

template void bag_int8_scalar<int32_t>(const Bag<int32_t>&);
template void bag_int8_scalar<int64_t>(const Bag<int64_t>&);
template void bag_int4_scalar<int32_t>(const Bag<int32_t>&);
template void bag_int4_scalar<int64_t>(const Bag<int64_t>&);

}  // namespace recsys_kernels
