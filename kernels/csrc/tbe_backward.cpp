// Backward pass with the optimizer fused in, for fbgemm's CPU table-batched embedding bags
// (SplitTableBatchedEmbeddingBagsCodegen on CPU): row-wise Adagrad and SGD.
//
// Same inputs, state layout and arithmetic as fbgemm's `split_embedding_backward_codegen_
// {rowwise_adagrad,sgd}_cpu`: the gradient of each distinct row is summed over its occurrences
// in the batch (in bag order), then the row is updated once. Why our own: on the machines we run
// on, fbgemm 1.8's JIT row-wise Adagrad kernel alternates 256-bit AVX and legacy SSE
// instructions on every row, and each switch costs ~200 ns there (docs/benchmarks.md): 30 ms per
// step at the Criteo-Kaggle shape, batch 2048, against ~3 ms here. Its SGD path sorts the ids of
// each table and updates them on one thread; here the tables run in parallel and distinct rows
// are found with a small hash table instead of a sort.
//
// Portable C++ compiled for the baseline ISA on purpose: the work is a hash probe and a random
// row read per id, not arithmetic, and scalar SSE code never pays the AVX/SSE switch.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tbe.h"

namespace recsys_kernels {
namespace {

constexpr const char* kOp = "embedding backward";

using Update = TbeUpdate;

struct Scratch {
  std::vector<int64_t> slot_row;  // open-addressing table: row id or -1
  std::vector<int32_t> slot_of;   // distinct-row number stored in each slot
  std::vector<int64_t> rows;      // distinct rows in order of first occurrence
  std::vector<float> grads;       // their summed gradients, [distinct, D]
};

inline uint64_t mix(uint64_t x) {  // splitmix64's finalizer: ids are often small and dense
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ULL;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dULL;
  return x ^ (x >> 33);
}

// Sum each distinct row's gradient over its occurrences (bag order), then update the row once.
template <typename index_t>
void update_table(const TbeTable& table, float* momentum, Update update, const TbeInputs& in,
                  const float* grad_output, int64_t grad_stride, float lr, float eps,
                  Scratch& s) {
  const index_t* indices = in.indices.data_ptr<index_t>();
  const int64_t* bag_offsets = in.offsets.data_ptr<int64_t>() + table.feature * in.batch;
  const int64_t n = bag_offsets[in.batch] - bag_offsets[0];
  if (n <= 0) return;
  const int64_t dim = table.dim;
  uint64_t capacity = 16;
  while (capacity < static_cast<uint64_t>(2 * n)) capacity <<= 1;
  const uint64_t mask = capacity - 1;
  s.slot_row.assign(capacity, -1);
  s.slot_of.resize(capacity);
  s.rows.clear();
  s.grads.resize(static_cast<size_t>(n * dim));

  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t begin = bag_offsets[b], end = bag_offsets[b + 1];
    const float mean_scale =
        (in.pooling_mode == 1 && end > begin) ? 1.0f / static_cast<float>(end - begin) : 1.0f;
    const float* g = grad_output + b * grad_stride + table.column;
    // This feature's columns of grad_output are one short run per sample, a row (often several
    // KB) apart: too far apart for the hardware prefetcher to follow reliably.
    if (b + 8 < in.batch) __builtin_prefetch(g + 8 * grad_stride);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t row = indices[p];
      const float scale = in.per_sample_weights ? in.per_sample_weights[p] : mean_scale;
      uint64_t h = mix(static_cast<uint64_t>(row)) & mask;
      while (s.slot_row[h] != -1 && s.slot_row[h] != row) h = (h + 1) & mask;
      if (s.slot_row[h] == -1) {
        s.slot_row[h] = row;
        s.slot_of[h] = static_cast<int32_t>(s.rows.size());
        float* acc = s.grads.data() + s.rows.size() * dim;
        s.rows.push_back(row);
        for (int64_t d = 0; d < dim; ++d) acc[d] = scale * g[d];  // exact when scale is 1
      } else {
        float* acc = s.grads.data() + static_cast<int64_t>(s.slot_of[h]) * dim;
        for (int64_t d = 0; d < dim; ++d) acc[d] += scale * g[d];
      }
    }
  }

  // The updates read rows at random in tables of up to ~10M rows: prefetch a few ahead.
  constexpr size_t kAhead = 8;
  const size_t distinct = s.rows.size();
  for (size_t u = 0; u < distinct; ++u) {
    if (u + kAhead < distinct) {
      const int64_t next = s.rows[u + kAhead];
      __builtin_prefetch(table.weights + next * dim, 1);
      if (momentum) __builtin_prefetch(momentum + next, 1);
    }
    float* w = table.weights + s.rows[u] * dim;
    const float* g = s.grads.data() + u * dim;
    if (update == Update::kSgd) {
      for (int64_t d = 0; d < dim; ++d) w[d] -= lr * g[d];
    } else {
      float squares = 0.0f;
      for (int64_t d = 0; d < dim; ++d) squares += g[d] * g[d];
      float& m = momentum[s.rows[u]];
      m += squares / static_cast<float>(dim);
      const float step = -lr / (std::sqrt(m) + eps);
      for (int64_t d = 0; d < dim; ++d) w[d] += step * g[d];
    }
  }
}

}  // namespace

bool tbe_fused_backward(TbeUpdate update, const at::Tensor& grad_output_in,
                        const at::Tensor& host_weights, const at::Tensor& weights_offsets,
                        const at::Tensor& D_offsets, const at::Tensor& hash_size_cumsum,
                        const at::Tensor& indices, const at::Tensor& offsets,
                        int64_t pooling_mode, const at::Tensor& indice_weights,
                        const at::Tensor& momentum_host, const at::Tensor& momentum_offsets,
                        const at::Tensor& learning_rate, double eps, bool ids_checked) {
  if (grad_output_in.scalar_type() != at::kFloat || grad_output_in.dim() != 2) return false;
  const bool adagrad = update == Update::kRowwiseAdagrad;
  if (adagrad &&
      (momentum_host.scalar_type() != at::kFloat || !momentum_host.is_contiguous() ||
       momentum_offsets.scalar_type() != at::kLong || !momentum_offsets.is_contiguous() ||
       momentum_offsets.numel() < D_offsets.numel() - 1)) {
    return false;
  }
  const auto in = tbe_inputs(kOp, host_weights, weights_offsets, D_offsets, hash_size_cumsum,
                             indices, offsets, pooling_mode, indice_weights);
  if (!in) return false;
  const at::Tensor grad_output = grad_output_in.contiguous();
  TORCH_CHECK(grad_output.size(0) == in->batch && grad_output.size(1) >= in->total_dim, kOp,
              ": grad_output ", grad_output.sizes(), " does not match batch ", in->batch,
              " and ", in->total_dim, " pooled columns");
  std::vector<float*> momentum(in->tables.size(), nullptr);
  if (adagrad) {
    const auto* m_offsets = momentum_offsets.data_ptr<int64_t>();
    for (const TbeTable& t : in->tables) {
      const int64_t at = m_offsets[t.feature];
      TORCH_CHECK(at >= 0 && at + t.hash_size <= momentum_host.numel(), kOp, ": feature ",
                  t.feature, " lies outside the Adagrad state");
      momentum[t.feature] = momentum_host.data_ptr<float>() + at;
    }
  }
  const float lr = learning_rate.item<float>();
  if (!ids_checked) check_ids(kOp, *in);
  AT_DISPATCH_INDEX_TYPES(in->indices.scalar_type(), "recsys_kernels.tbe_backward", [&] {
    for_each_table(in->tables, [&](const TbeTable& table) {
      thread_local Scratch scratch;
      update_table<index_t>(table, momentum[table.feature], update, *in,
                            grad_output.data_ptr<float>(), grad_output.stride(0), lr,
                            static_cast<float>(eps), scratch);
    });
  });
  return true;
}

// The operators (fbgemm's backward signatures): the caller runs fbgemm's kernel when false.
bool tbe_backward_rowwise_adagrad(const at::Tensor& grad_output, const at::Tensor& host_weights,
                                  const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                                  const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                                  const at::Tensor& offsets, int64_t pooling_mode,
                                  const at::Tensor& indice_weights,
                                  const at::Tensor& momentum_host,
                                  const at::Tensor& momentum_offsets,
                                  const at::Tensor& learning_rate, double eps) {
  return tbe_fused_backward(TbeUpdate::kRowwiseAdagrad, grad_output, host_weights,
                            weights_offsets, D_offsets, hash_size_cumsum, indices, offsets,
                            pooling_mode, indice_weights, momentum_host, momentum_offsets,
                            learning_rate, eps, false);
}

bool tbe_backward_sgd(const at::Tensor& grad_output, const at::Tensor& host_weights,
                      const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                      const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                      const at::Tensor& offsets, int64_t pooling_mode,
                      const at::Tensor& indice_weights, const at::Tensor& learning_rate) {
  return tbe_fused_backward(TbeUpdate::kSgd, grad_output, host_weights, weights_offsets,
                            D_offsets, hash_size_cumsum, indices, offsets, pooling_mode,
                            indice_weights, at::Tensor(), at::Tensor(), learning_rate, 0.0,
                            false);
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("tbe_backward_rowwise_adagrad(Tensor grad_output, Tensor(a!) host_weights, "
        "Tensor weights_offsets, Tensor D_offsets, Tensor hash_size_cumsum, Tensor indices, "
        "Tensor offsets, int pooling_mode, Tensor indice_weights, Tensor(b!) momentum1_host, "
        "Tensor momentum1_offsets, Tensor learning_rate, float eps) -> bool");
  m.def("tbe_backward_sgd(Tensor grad_output, Tensor(a!) host_weights, Tensor weights_offsets, "
        "Tensor D_offsets, Tensor hash_size_cumsum, Tensor indices, Tensor offsets, "
        "int pooling_mode, Tensor indice_weights, Tensor learning_rate) -> bool");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("tbe_backward_rowwise_adagrad", recsys_kernels::tbe_backward_rowwise_adagrad);
  m.impl("tbe_backward_sgd", recsys_kernels::tbe_backward_sgd);
}
