// Forward pass (pooled lookup) of fbgemm's CPU table-batched embedding bags, in place of
// fbgemm's `split_embedding_codegen_forward_cpu`: out[b, column(t) : column(t) + D] = the sum
// (or mean, or per-sample-weighted sum) of feature t's rows in bag b, for float32 tables.
//
// Why our own: fbgemm_gpu's CPU operators are built without OpenMP, so their at::parallel_for
// runs on one thread; this lookup is bound by random row reads (memory latency), which a second
// thread overlaps. Tables run in parallel, largest first (tbe.h), with the next bags' rows
// prefetched. Same arithmetic order as fbgemm (rows added in bag order, the mean applied last).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>

#include "tbe.h"

namespace recsys_kernels {
namespace {

constexpr const char* kOp = "embedding forward";

template <typename index_t>
void pool_table(const TbeTable& table, const TbeInputs& in, float* out, int64_t out_stride) {
  const index_t* indices = in.indices.data_ptr<index_t>();
  const int64_t* bags = in.offsets.data_ptr<int64_t>() + table.feature * in.batch;
  const int64_t dim = table.dim;
  const float* w = table.weights;
  // Rows are prefetched this many ids ahead (across bag boundaries): with one id per bag,
  // prefetching only inside a bag would never prefetch at all.
  constexpr int64_t kAhead = 8;
  const int64_t last = bags[in.batch];
  for (int64_t b = 0; b < in.batch; ++b) {
    float* o = out + b * out_stride + table.column;
    for (int64_t d = 0; d < dim; ++d) o[d] = 0.0f;
    const int64_t begin = bags[b], end = bags[b + 1];
    for (int64_t p = begin; p < end; ++p) {
      if (p + kAhead < last) __builtin_prefetch(w + static_cast<int64_t>(indices[p + kAhead]) * dim);
      const float* row = w + static_cast<int64_t>(indices[p]) * dim;
      if (in.per_sample_weights) {
        const float s = in.per_sample_weights[p];
        for (int64_t d = 0; d < dim; ++d) o[d] += s * row[d];
      } else {
        for (int64_t d = 0; d < dim; ++d) o[d] += row[d];
      }
    }
    if (in.pooling_mode == 1 && end > begin) {
      const float scale = 1.0f / static_cast<float>(end - begin);
      for (int64_t d = 0; d < dim; ++d) o[d] *= scale;
    }
  }
}

}  // namespace

// The pooled [B, total_D] float32 output, or None for what this kernel does not handle (tbe.h;
// outputs other than float32): the caller then runs fbgemm's kernel.
std::optional<at::Tensor> tbe_forward(const at::Tensor& weights, const at::Tensor& weights_offsets,
                       const at::Tensor& D_offsets, int64_t total_D,
                       const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                       const at::Tensor& offsets, int64_t pooling_mode,
                       const at::Tensor& indice_weights, int64_t output_dtype) {
  if (output_dtype != 0) return std::nullopt;  // 0: fbgemm's SparseType.FP32
  const auto in = tbe_inputs(kOp, weights, weights_offsets, D_offsets, hash_size_cumsum, indices,
                             offsets, pooling_mode, indice_weights);
  if (!in) return std::nullopt;
  TORCH_CHECK(in->total_dim == total_D, kOp, ": total_D ", total_D, " but the tables have ",
              in->total_dim, " columns");
  check_ids(kOp, *in);
  at::Tensor out = at::empty({in->batch, total_D}, weights.options());
  float* o = out.data_ptr<float>();
  AT_DISPATCH_INDEX_TYPES(in->indices.scalar_type(), "recsys_kernels.tbe_forward", [&] {
    for_each_table(in->tables,
                   [&](const TbeTable& table) { pool_table<index_t>(table, *in, o, total_D); });
  });
  return out;
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("tbe_forward(Tensor weights, Tensor weights_offsets, Tensor D_offsets, int total_D, "
        "Tensor hash_size_cumsum, Tensor indices, Tensor offsets, int pooling_mode, "
        "Tensor indice_weights, int output_dtype) -> Tensor?");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("tbe_forward", recsys_kernels::tbe_forward);
}
