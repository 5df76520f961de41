// fbgemm's CPU table-batched embedding layout (SplitTableBatchedEmbeddingBagsCodegen), as our
// backward operators (tbe_backward.cpp) read it: one flat weight buffer, each feature's table at
// weights_offsets[t], its D at D_offsets[t + 1] - D_offsets[t], its rows hash_size_cumsum[t + 1]
// - hash_size_cumsum[t]; bags as offsets [T * B + 1] into indices, feature-major.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace recsys_kernels {

struct TbeTable {
  int64_t feature;    // fbgemm's feature index t (one feature per table: shared tables excluded)
  int64_t hash_size;  // rows of the table
  int64_t dim;        // D
  int64_t column;     // first column of this feature in the pooled [B, total_D] output (and
                      // so in its gradient)
  float* weights;     // the table's first row
};

struct TbeInputs {
  std::vector<TbeTable> tables;
  int64_t batch = 0;
  int64_t total_dim = 0;  // D_offsets[T]
  int64_t pooling_mode = 0;  // 0 sum, 1 mean
  at::Tensor indices, offsets;  // contiguous; offsets as int64
  at::Tensor weights_of_ids;    // contiguous per-sample weights (kept alive for the pointer)
  const float* per_sample_weights = nullptr;  // into weights_of_ids, or nullptr
};

// The inputs as tables, or nullopt for what our kernels do not handle (the caller then runs
// fbgemm's kernel): tables shared by several features, weights other than float32, pooling
// other than sum/mean, weighted mean. Malformed input (offsets past the indices, a table outside
// the buffer) is an error naming `op`.
std::optional<TbeInputs> tbe_inputs(const char* op, const at::Tensor& weights,
                                    const at::Tensor& weights_offsets,
                                    const at::Tensor& D_offsets,
                                    const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                                    const at::Tensor& offsets, int64_t pooling_mode,
                                    const at::Tensor& indice_weights);

// Offsets that never decrease and ids inside their tables, for every feature (in parallel),
// before a kernel writes any row: bad input stops with an error naming the feature, bag
// and position, and changes nothing.
void check_ids(const char* op, const TbeInputs& in);
// The same for one table (its feature's offsets and ids).
void check_table_ids(const char* op, const TbeInputs& in, const TbeTable& table);

// fn(table) for every table, on torch's intra-op threads: each thread takes the next table from
// a shared counter, largest tables first (a 10M-row table misses the cache on every row, a
// 100-row one never, so a fixed split of the list would leave a thread idle).
void for_each_table(const std::vector<TbeTable>& tables,
                    const std::function<void(const TbeTable&)>& fn);

// The pooled rows [B, total_D] (float32) of unweighted inputs: fbgemm's CPU forward, bit for bit
// (tbe_forward.cpp). Each table's ids are checked (check_table_ids, errors naming `op`) before
// any of its rows is read.
at::Tensor tbe_checked_forward(const char* op, const TbeInputs& in);

enum class TbeUpdate { kSgd, kRowwiseAdagrad };

// The backward + fused update of both operators (tbe_backward.cpp; momentum_* only for row-wise
// Adagrad). Returns false, touching nothing, for what it does not handle (see tbe_inputs, plus
// non-float32 gradients or Adagrad state). `ids_checked`: the caller already ran check_ids on
// these very indices and offsets (the lookup node's forward), so the pass is not repeated.
bool tbe_fused_backward(TbeUpdate update, const at::Tensor& grad_output,
                        const at::Tensor& host_weights, const at::Tensor& weights_offsets,
                        const at::Tensor& D_offsets, const at::Tensor& hash_size_cumsum,
                        const at::Tensor& indices, const at::Tensor& offsets,
                        int64_t pooling_mode, const at::Tensor& indice_weights,
                        const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
                        const at::Tensor& learning_rate, double eps, bool ids_checked);

}  // namespace recsys_kernels
