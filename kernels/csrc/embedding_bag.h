// Row-wise quantized embedding-bag kernels: shared declarations.
//
// Row layouts (the first and the last are byte-compatible with FBGEMM's prepack ops):
//   kInt8     : D uint8 codes, then fp32 scale, fp32 bias                 (D + 8 bytes per row)
//   kInt8Half : D uint8 codes, then fp16 scale, fp16 bias (compact)       (D + 4 bytes)
//   kInt4     : ceil(D/2) bytes (element 2k in the low nibble of byte k, 2k+1 in the high
//               nibble), then fp16 scale, fp16 bias                       (ceil(D/2) + 4 bytes)
// value = scale * code + bias. Every layout has at least 4 bytes after the codes, which the
// SIMD tails rely on (they read whole dwords, never past the row).
#pragma once

#include <cstdint>

namespace recsys_kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
enum class Format : int { kInt8 = 0, kInt8Half = 1, kInt4 = 2 };

inline int64_t code_bytes(Format f, int64_t dim) { return f == Format::kInt4 ? (dim + 1) / 2 : dim; }
inline int64_t trailer_bytes(Format f) { return f == Format::kInt8 ? 8 : 4; }
inline int64_t row_bytes(Format f, int64_t dim) { return code_bytes(f, dim) + trailer_bytes(f); }

// One pooled bag: out[0:dim] = out_scale * sum_i w_i * dequant(row(indices[i])), w_i = 1 without
// weights, out_scale = 1 (sum) or 1/length (mean). `out` is overwritten; an empty bag gives 0.
template <typename Index>
struct Bag {
  const uint8_t* table;   // first byte of row 0
  int64_t row_bytes;      // bytes per packed row
  int64_t rows;           // rows in the table: ids outside [0, rows) are never read
  int64_t dim;            // embedding dimension D
  Format format;
  const Index* indices;   // ids of this bag
  int64_t length;         // number of ids in this bag
  int64_t prefetch_len;   // ids from `indices` on that belong to this table (prefetch window,
                          // so prefetching runs on into the next bags of the same table)
  int prefetch_distance;  // rows ahead whose cache lines are prefetched (0: none)
  const float* weights;   // per-sample weights of this bag, or nullptr
  float out_scale;        // 1 (sum) or 1/length (mean)
  float* out;             // dim floats
};

// Each kernel returns -1, or the position in the bag of the first id outside the table (that
// row is not read; the caller raises an error naming table and position).
template <typename Index> int64_t bag_scalar(const Bag<Index>& b);
template <typename Index> int64_t bag_avx2(const Bag<Index>& b);
template <typename Index> int64_t bag_avx512(const Bag<Index>& b);

// Same as above without the id range check: only for measuring what the check costs.
template <typename Index> int64_t bag_unchecked_avx2(const Bag<Index>& b);
template <typename Index> int64_t bag_unchecked_avx512(const Bag<Index>& b);

float half_to_float(uint16_t h);

}  // namespace recsys_kernels
