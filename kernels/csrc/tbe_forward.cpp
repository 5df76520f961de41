// Forward lookup of the training tables in fbgemm's CPU table-batched layout (tbe.h): the pooled
// rows [B, total_D] that fbgemm's `split_embedding_codegen_forward_cpu` computes, bit for bit
// (each column summed in bag order from zero, a mean as that sum times 1 / length, an empty bag
// zero), for fp32 tables and unweighted sum or mean pooling.
//
// Why our own: a training batch reads its rows at random from tables of up to ~10M rows (2.2 GB
// at the Criteo-Kaggle shape), so the lookup waits on memory. Here each table's rows are
// prefetched kAhead ids ahead, every cache line of the row, so that many row reads are in flight
// at once; fbgemm's CPU kernel took 133 us per step at batch 128 on that shape where a flat
// gather of the same rows takes 44-50 us (docs/benchmarks.md).
//
// Portable C++ for the baseline ISA, like the backward (tbe_backward.cpp): the work is a random
// row read per id, and scalar SSE code never pays an AVX/SSE switch.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "prefetch.h"
#include "tbe.h"

namespace recsys_kernels {
namespace {

// Rows are prefetched this many ids ahead within their table.
constexpr int64_t kAhead = 16;
// Rows up to this many floats are pooled in a local buffer (no aliasing with the output).
constexpr int64_t kMaxLocalDim = 512;

// Bag b of the table into out[b * out_stride + column ...]: its rows summed column by column
// in bag order from zero (an empty bag gives zeros), times 1 / length for a mean. kDim > 0: the
// width known at compile time (the accumulator lives in registers); 0: any width, in blocks of
// kMaxLocalDim columns.
template <int kDim, typename index_t>
void forward_table(const TbeTable& table, const TbeInputs& in, float* out, int64_t out_stride) {
  const index_t* indices = in.indices.data_ptr<index_t>();
  const int64_t* bags = in.offsets.data_ptr<int64_t>() + table.feature * in.batch;
  const int64_t dim = kDim > 0 ? kDim : table.dim;
  const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(float));
  const int64_t last = bags[in.batch];
  const bool mean = in.pooling_mode == 1;
  const float* weights = table.weights;
  const int64_t lines = row_lines(weights, row_bytes);
  constexpr int64_t kBlock = kDim > 0 ? kDim : kMaxLocalDim;
  float acc[kBlock];
  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t begin = bags[b], end = bags[b + 1];
    float* o = out + b * out_stride + table.column;
    for (int64_t c0 = 0; c0 < dim; c0 += kBlock) {
      const int64_t cols = kDim > 0 ? kDim : std::min(kBlock, dim - c0);
      for (int64_t d = 0; d < cols; ++d) acc[d] = 0.0f;
      for (int64_t p = begin; p < end; ++p) {
        if (c0 == 0 && p + kAhead < last) {
          prefetch_row(weights + static_cast<int64_t>(indices[p + kAhead]) * dim, row_bytes,
                       lines);
        }
        const float* w = weights + static_cast<int64_t>(indices[p]) * dim + c0;
        for (int64_t d = 0; d < cols; ++d) acc[d] += w[d];
      }
      if (mean && end > begin) {
        const float scale = 1.0f / static_cast<float>(end - begin);
        for (int64_t d = 0; d < cols; ++d) acc[d] *= scale;
      }
      for (int64_t d = 0; d < cols; ++d) o[c0 + d] = acc[d];
    }
  }
}

template <typename index_t>
void forward_any(const TbeTable& table, const TbeInputs& in, float* out, int64_t out_stride) {
  switch (table.dim) {  // the common widths with the accumulator in registers
    case 4: return forward_table<4, index_t>(table, in, out, out_stride);
    case 8: return forward_table<8, index_t>(table, in, out, out_stride);
    case 16: return forward_table<16, index_t>(table, in, out, out_stride);
    case 32: return forward_table<32, index_t>(table, in, out, out_stride);
    case 64: return forward_table<64, index_t>(table, in, out, out_stride);
    case 128: return forward_table<128, index_t>(table, in, out, out_stride);
    default: return forward_table<0, index_t>(table, in, out, out_stride);
  }
}

}  // namespace

at::Tensor tbe_checked_forward(const char* op, const TbeInputs& in) {
  TORCH_CHECK(in.per_sample_weights == nullptr, op, ": the forward takes no per-sample weights");
  at::Tensor out = at::empty({in.batch, in.total_dim}, at::TensorOptions().dtype(at::kFloat));
  float* o = out.data_ptr<float>();
  AT_DISPATCH_INDEX_TYPES(in.indices.scalar_type(), "recsys_kernels.tbe_forward", [&] {
    for_each_table(in.tables, [&](const TbeTable& table) {
      check_table_ids(op, in, table);  // one pass, in the same parallel region as the lookup
      forward_any<index_t>(table, in, o, in.total_dim);
    });
  });
  return out;
}

}  // namespace recsys_kernels
