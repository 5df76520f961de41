// Row-wise quantized embedding-bag kernels: shared declarations.
//
// Row layouts (byte-compatible with FBGEMM's prepack ops):
//   int8 ("byte"): D uint8 codes, then fp32 scale, fp32 bias        (D + 8 bytes per row)
//   int4         : ceil(D/2) bytes (element 2k in the low nibble of byte k, 2k+1 in the high
//                  nibble), then fp16 scale, fp16 bias               (ceil(D/2) + 4 bytes)
// value = scale * code + bias.
#pragma once

#include <cstdint>

namespace recsys_kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// One pooled bag: out[0:dim] = sum_i w_i * dequant(row(indices[i])) (w_i = 1 without weights),
// scaled by `out_scale` (1, or 1/len for mean pooling). `out` is overwritten.
template <typename Index>
struct Bag {
  const uint8_t* table;      // first byte of row 0
  int64_t row_bytes;         // bytes per packed row
  int64_t dim;               // embedding dimension D
  const Index* indices;      // ids of this bag
  int64_t length;            // number of ids
  const float* weights;      // per-sample weights of this bag, or nullptr
  float out_scale;           // 1 (sum) or 1/length (mean)
  float* out;                // dim floats
};

template <typename Index> void bag_int8_scalar(const Bag<Index>& b);
template <typename Index> void bag_int4_scalar(const Bag<Index>& b);
template <typename Index> void bag_int8_avx2(const Bag<Index>& b);
template <typename Index> void bag_int4_avx2(const Bag<Index>& b);
template <typename Index> void bag_int8_avx512(const Bag<Index>& b);
template <typename Index> void bag_int4_avx512(const Bag<Index>& b);

float half_to_float(uint16_t h);

// Rows ahead of the current one whose cache lines are prefetched.
constexpr int kPrefetchDistance = 8;

}  // namespace recsys_kernels
