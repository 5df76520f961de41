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

// A run of consecutive bags of one table, pooled by one kernel call: the format, weights and
// width are resolved once per run, not once per bag (a bag of one id costs a few ns, not tens).
// Bag k holds ids [offsets[k], end_k), end_k = offsets[k + 1], or last_end for the last bag;
// out[k * out_stride : + dim] = out_scale_k * sum_i w_i * dequant(row(indices[i])), w_i = 1
// without weights, out_scale_k = 1 (sum) or 1 / length (mean); an empty bag gives 0. Positions
// (offsets, last_end, prefetch_end) index the call's whole `indices` and `weights` arrays.
template <typename Index>
struct Bags {
  const uint8_t* table;   // first byte of row 0
  int64_t row_bytes;      // bytes per packed row
  int64_t rows;           // rows in the table: ids outside [0, rows) are never read
  int64_t dim;            // embedding dimension D
  Format format;
  const Index* indices;   // every id of the call
  const Index* offsets;   // start of each bag of the run (count entries)
  int64_t count;          // bags in the run
  int64_t last_end;       // end of the run's last bag
  int64_t prefetch_end;   // end of this table's ids: prefetching runs on into later bags up to
                          // here, never into another table's ids
  int prefetch_distance;  // rows ahead whose cache lines are prefetched (0: none)
  int prefetch_lead;      // rows by which a row's first line is prefetched before its others
                          // (rows of 3 or more lines; 0: all lines at once)
  bool prefetch_l2;       // into L2 (the call's tables are far larger than the caches), else L1
  int prefetch_near;      // with prefetch_l2: rows ahead whose lines are also prefetched into L1
                          // (the mid plan; 0: none)
  bool prefetch_near_wide_only;  // ... only on rows of 3 or more lines, or in runs of small
                                 // bags (calls beyond the far size; rows_of decides per run)
  int prefetch_near_bag_ids;     // ... small bags: at most this many ids per bag on average
  int64_t prefetch_lines; // the most cache lines a row of the table spans (prefetch.h
                          // row_lines): one prefetch each; known per table, set once per call
  bool prefetch_ids;      // the next run's ids into L2 while this run pools (embedding_bag_simd.inc,
                          // prefetch_ids)
  bool split_wide;        // rows come from DRAM (the call is beyond the far size): rows wider than
                          // the ISA's kFarVectors go in column blocks (embedding_bag_simd.inc, run)
  const float* weights;   // every per-sample weight of the call, or nullptr
  bool mean;              // mean pooling (else sum)
  float* out;             // output of the run's first bag
  int64_t out_stride;     // floats from one bag's output to the next
};

// Each kernel returns -1, or the position (in `indices`) of the first id of the run outside the
// table: the ids are checked before any row is read, so then nothing is read or written, and
// the caller raises an error naming table and position.
template <typename Index> int64_t bags_scalar(const Bags<Index>& g);
template <typename Index> int64_t bags_avx2(const Bags<Index>& g);
template <typename Index> int64_t bags_avx512(const Bags<Index>& g);

// Same as above without the id range check: only for measuring what the check costs.
template <typename Index> int64_t bags_unchecked_avx2(const Bags<Index>& g);
template <typename Index> int64_t bags_unchecked_avx512(const Bags<Index>& g);

float half_to_float(uint16_t h);

}  // namespace recsys_kernels
