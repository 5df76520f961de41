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
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <cstdint>
#include <vector>

namespace recsys_kernels {
namespace {

enum class Update { kSgd, kRowwiseAdagrad };

// Everything a table's update needs: fbgemm's flat buffers and this table's place in them.
struct TableJob {
  int64_t feature;      // fbgemm's feature index t (one feature per table here)
  int64_t hash_size;    // rows of the table
  int64_t dim;          // D
  int64_t grad_column;  // first column of this feature in grad_output
  float* weights;       // the table's first row in host_weights
  float* momentum;      // its first row-wise Adagrad accumulator (nullptr for SGD)
};

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

// Offsets that never decrease and ids inside the table, for one feature; run over every
// feature before any row is updated, so bad input changes nothing.
template <typename index_t>
void check_feature(const TableJob& job, const index_t* indices, const index_t* offsets,
                   int64_t batch) {
  const index_t* bag_offsets = offsets + job.feature * batch;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t begin = bag_offsets[b], end = bag_offsets[b + 1];
    TORCH_CHECK(begin <= end, "embedding backward: offsets of feature ", job.feature,
                " decrease at bag ", b, " (", begin, " then ", end, ")");
    for (int64_t p = begin; p < end; ++p) {
      const int64_t row = indices[p];
      TORCH_CHECK(row >= 0 && row < job.hash_size, "embedding backward: feature ", job.feature,
                  ", bag ", b, ", position ", p, ": id ", row, " is outside its table of ",
                  job.hash_size, " rows");
    }
  }
}

// Sum each distinct row's gradient over its occurrences (bag order), then update the row once.
template <typename index_t>
void update_table(const TableJob& job, Update update, const float* grad_output,
                  int64_t grad_stride, const index_t* indices, const index_t* offsets,
                  int64_t batch, int64_t pooling_mode, const float* indice_weights, float lr,
                  float eps, Scratch& s) {
  const index_t* bag_offsets = offsets + job.feature * batch;
  const int64_t first = bag_offsets[0];
  const int64_t n = bag_offsets[batch] - first;
  if (n <= 0) return;
  const int64_t dim = job.dim;
  uint64_t capacity = 16;
  while (capacity < static_cast<uint64_t>(2 * n)) capacity <<= 1;
  const uint64_t mask = capacity - 1;
  s.slot_row.assign(capacity, -1);
  s.slot_of.resize(capacity);
  s.rows.clear();
  s.grads.resize(static_cast<size_t>(n * dim));

  for (int64_t b = 0; b < batch; ++b) {
    const int64_t begin = bag_offsets[b], end = bag_offsets[b + 1];
    const float mean_scale =
        (pooling_mode == 1 && end > begin) ? 1.0f / static_cast<float>(end - begin) : 1.0f;
    const float* g = grad_output + b * grad_stride + job.grad_column;
    // This feature's columns of grad_output are one short run per sample, a row (often several
    // KB) apart: too far apart for the hardware prefetcher to follow reliably.
    if (b + 8 < batch) __builtin_prefetch(g + 8 * grad_stride);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t row = indices[p];
      const float scale = indice_weights ? indice_weights[p] : mean_scale;
      uint64_t h = mix(static_cast<uint64_t>(row)) & mask;
      while (s.slot_row[h] != -1 && s.slot_row[h] != row) h = (h + 1) & mask;
      if (s.slot_row[h] == -1) {
        s.slot_row[h] = row;
        s.slot_of[h] = static_cast<int32_t>(s.rows.size());
        float* acc = s.grads.data() + s.rows.size() * dim;
        s.rows.push_back(row);
        if (scale == 1.0f) {
          for (int64_t d = 0; d < dim; ++d) acc[d] = g[d];
        } else {
          for (int64_t d = 0; d < dim; ++d) acc[d] = scale * g[d];
        }
      } else {
        float* acc = s.grads.data() + static_cast<int64_t>(s.slot_of[h]) * dim;
        if (scale == 1.0f) {
          for (int64_t d = 0; d < dim; ++d) acc[d] += g[d];
        } else {
          for (int64_t d = 0; d < dim; ++d) acc[d] += scale * g[d];
        }
      }
    }
  }

  // The updates read rows at random in tables of up to ~10M rows: prefetch a few ahead.
  constexpr size_t kAhead = 8;
  const size_t distinct = s.rows.size();
  for (size_t u = 0; u < distinct; ++u) {
    if (u + kAhead < distinct) {
      const int64_t next = s.rows[u + kAhead];
      __builtin_prefetch(job.weights + next * dim, 1);
      if (job.momentum) __builtin_prefetch(job.momentum + next, 1);
    }
    float* w = job.weights + s.rows[u] * dim;
    const float* g = s.grads.data() + u * dim;
    if (update == Update::kSgd) {
      for (int64_t d = 0; d < dim; ++d) w[d] -= lr * g[d];
    } else {
      float squares = 0.0f;
      for (int64_t d = 0; d < dim; ++d) squares += g[d] * g[d];
      float& m = job.momentum[s.rows[u]];
      m += squares / static_cast<float>(dim);
      const float step = -lr / (std::sqrt(m) + eps);
      for (int64_t d = 0; d < dim; ++d) w[d] += step * g[d];
    }
  }
}

// The common part of both operators. Returns false, touching nothing, for what it does not
// handle (the caller then runs fbgemm's own kernel): tables shared by several features,
// non-float32 weights or gradients, pooling other than sum/mean.
bool fused_backward(Update update, const at::Tensor& grad_output_in,
                    const at::Tensor& host_weights, const at::Tensor& weights_offsets,
                    const at::Tensor& D_offsets, const at::Tensor& hash_size_cumsum,
                    const at::Tensor& indices, const at::Tensor& offsets, int64_t pooling_mode,
                    const at::Tensor& indice_weights, const at::Tensor& momentum_host,
                    const at::Tensor& momentum_offsets, const at::Tensor& learning_rate,
                    double eps) {
  const int64_t features = D_offsets.numel() - 1;
  if (features <= 0 || grad_output_in.scalar_type() != at::kFloat ||
      host_weights.scalar_type() != at::kFloat || !host_weights.is_contiguous() ||
      host_weights.dim() != 1 || (pooling_mode != 0 && pooling_mode != 1) ||
      grad_output_in.dim() != 2 || indices.scalar_type() != offsets.scalar_type() ||
      (indices.scalar_type() != at::kLong && indices.scalar_type() != at::kInt) ||
      weights_offsets.scalar_type() != at::kLong || D_offsets.scalar_type() != at::kInt ||
      hash_size_cumsum.scalar_type() != at::kLong || hash_size_cumsum.numel() < features + 1 ||
      weights_offsets.numel() < features) {
    return false;
  }
  const bool weighted = indice_weights.defined() && indice_weights.numel() > 0;
  if (weighted && (indice_weights.scalar_type() != at::kFloat ||
                   indice_weights.numel() != indices.numel() || pooling_mode != 0)) {
    return false;
  }
  if (update == Update::kRowwiseAdagrad &&
      (momentum_host.scalar_type() != at::kFloat || !momentum_host.is_contiguous() ||
       momentum_offsets.scalar_type() != at::kLong || momentum_offsets.numel() < features)) {
    return false;
  }
  const auto* cumsum = hash_size_cumsum.data_ptr<int64_t>();
  for (int64_t t = 0; t < features; ++t) {
    if (cumsum[t + 1] == cumsum[t]) return false;  // a table shared by several features
  }
  TORCH_CHECK(offsets.numel() >= 1 && (offsets.numel() - 1) % features == 0,
              "embedding backward: ", offsets.numel(), " offsets do not split into ", features,
              " features");
  const int64_t batch = (offsets.numel() - 1) / features;
  const at::Tensor idx = indices.contiguous();
  const at::Tensor offs = offsets.contiguous();
  const int64_t offsets_begin = offs[0].item<int64_t>();
  const int64_t offsets_end = offs[-1].item<int64_t>();
  TORCH_CHECK(offsets_begin >= 0 && offsets_begin <= offsets_end && offsets_end <= idx.numel(),
              "embedding backward: offsets run from ", offsets_begin, " to ", offsets_end,
              " over ", idx.numel(), " indices");
  const at::Tensor grad_output = grad_output_in.contiguous();
  const auto* d_offsets = D_offsets.data_ptr<int32_t>();
  const auto* w_offsets = weights_offsets.data_ptr<int64_t>();
  TORCH_CHECK(grad_output.size(0) == batch && grad_output.size(1) >= d_offsets[features],
              "embedding backward: grad_output ", grad_output.sizes(), " does not match batch ",
              batch, " and ", d_offsets[features], " pooled columns");
  std::vector<TableJob> jobs(static_cast<size_t>(features));
  float* weights = host_weights.data_ptr<float>();
  float* momentum =
      update == Update::kRowwiseAdagrad ? momentum_host.data_ptr<float>() : nullptr;
  for (int64_t t = 0; t < features; ++t) {
    const int64_t dim = d_offsets[t + 1] - d_offsets[t];
    const int64_t rows = cumsum[t + 1] - cumsum[t];
    TORCH_CHECK(dim > 0 && w_offsets[t] >= 0 && w_offsets[t] + rows * dim <= host_weights.numel(),
                "embedding backward: feature ", t, " lies outside host_weights");
    float* m = nullptr;
    if (momentum) {
      const int64_t m_offset = momentum_offsets.data_ptr<int64_t>()[t];
      TORCH_CHECK(m_offset >= 0 && m_offset + rows <= momentum_host.numel(),
                  "embedding backward: feature ", t, " lies outside the Adagrad state");
      m = momentum + m_offset;
    }
    jobs[t] = {t, rows, dim, d_offsets[t], weights + w_offsets[t], m};
  }
  const float lr = learning_rate.item<float>();
  const float* iw = weighted ? indice_weights.contiguous().data_ptr<float>() : nullptr;
  AT_DISPATCH_INDEX_TYPES(idx.scalar_type(), "recsys_kernels.tbe_backward", [&] {
    const index_t* ip = idx.data_ptr<index_t>();
    const index_t* op = offs.data_ptr<index_t>();
    // Tables are independent (no shared rows): one thread per table at a time. at::parallel_for's
    // threads are torch's own, so torch.set_num_threads holds.
    at::parallel_for(0, features, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) check_feature<index_t>(jobs[t], ip, op, batch);
    });
    // Tables differ in cost (a 10M-row table misses the cache on every row, a 100-row one
    // never): threads take the next table from a shared counter, largest tables first, instead
    // of a fixed half of the list each.
    std::vector<int64_t> order(static_cast<size_t>(features));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return jobs[a].hash_size * jobs[a].dim > jobs[b].hash_size * jobs[b].dim;
    });
    std::atomic<int64_t> next{0};
    const int64_t workers = std::min<int64_t>(at::get_num_threads(), features);
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      thread_local Scratch scratch;
      for (int64_t i = next.fetch_add(1); i < features; i = next.fetch_add(1)) {
        update_table<index_t>(jobs[order[i]], update, grad_output.data_ptr<float>(),
                              grad_output.stride(0), ip, op, batch, pooling_mode, iw, lr,
                              static_cast<float>(eps), scratch);
      }
    });
  });
  return true;
}

}  // namespace

bool tbe_backward_rowwise_adagrad(const at::Tensor& grad_output, const at::Tensor& host_weights,
                                  const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                                  const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                                  const at::Tensor& offsets, int64_t pooling_mode,
                                  const at::Tensor& indice_weights,
                                  const at::Tensor& momentum_host,
                                  const at::Tensor& momentum_offsets,
                                  const at::Tensor& learning_rate, double eps) {
  return fused_backward(Update::kRowwiseAdagrad, grad_output, host_weights, weights_offsets,
                        D_offsets, hash_size_cumsum, indices, offsets, pooling_mode,
                        indice_weights, momentum_host, momentum_offsets, learning_rate, eps);
}

bool tbe_backward_sgd(const at::Tensor& grad_output, const at::Tensor& host_weights,
                      const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                      const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                      const at::Tensor& offsets, int64_t pooling_mode,
                      const at::Tensor& indice_weights, const at::Tensor& learning_rate) {
  return fused_backward(Update::kSgd, grad_output, host_weights, weights_offsets, D_offsets,
                        hash_size_cumsum, indices, offsets, pooling_mode, indice_weights,
                        at::Tensor(), at::Tensor(), learning_rate, 0.0);
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
