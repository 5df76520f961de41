// bfloat16 <-> fp32 on raw 16-bit words, for the kernels' portable loops (branch-free, so the
// compiler vectorizes loops that call them).
#pragma once

#include <cstdint>
#include <cstring>

namespace recsys_kernels {

// Exact: a bf16 word is the upper half of the fp32 bits.
inline float bf16_to_float(uint16_t word) {
  const uint32_t bits = static_cast<uint32_t>(word) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Rounded to nearest even; NaN -> 0xffff (what a PyTorch CPU tensor conversion,
// .to(torch.bfloat16), gives).
inline uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? 0xffffu : rounded);
}

}  // namespace recsys_kernels
