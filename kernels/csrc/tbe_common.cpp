// Input reading and checks of the table-batched embedding backward operators (tbe.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <numeric>

#include "tbe.h"

namespace recsys_kernels {

std::optional<TbeInputs> tbe_inputs(const char* op, const at::Tensor& weights,
                                    const at::Tensor& weights_offsets,
                                    const at::Tensor& D_offsets,
                                    const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                                    const at::Tensor& offsets, int64_t pooling_mode,
                                    const at::Tensor& indice_weights) {
  const int64_t features = D_offsets.numel() - 1;
  if (features <= 0 || weights.scalar_type() != at::kFloat || !weights.is_contiguous() ||
      weights.dim() != 1 || (pooling_mode != 0 && pooling_mode != 1) ||
      indices.scalar_type() != offsets.scalar_type() ||
      (indices.scalar_type() != at::kLong && indices.scalar_type() != at::kInt) ||
      weights_offsets.scalar_type() != at::kLong || D_offsets.scalar_type() != at::kInt ||
      hash_size_cumsum.scalar_type() != at::kLong || hash_size_cumsum.numel() < features + 1 ||
      weights_offsets.numel() < features || !weights_offsets.is_contiguous() ||
      !D_offsets.is_contiguous() || !hash_size_cumsum.is_contiguous()) {
    return std::nullopt;
  }
  const bool weighted = indice_weights.defined() && indice_weights.numel() > 0;
  if (weighted && (indice_weights.scalar_type() != at::kFloat ||
                   indice_weights.numel() != indices.numel() || pooling_mode != 0)) {
    return std::nullopt;
  }
  const auto* cumsum = hash_size_cumsum.data_ptr<int64_t>();
  for (int64_t t = 0; t < features; ++t) {
    if (cumsum[t + 1] == cumsum[t]) return std::nullopt;  // a table shared by several features
  }
  TORCH_CHECK(offsets.numel() >= 1 && (offsets.numel() - 1) % features == 0, op, ": ",
              offsets.numel(), " offsets do not split into ", features, " features");
  TbeInputs in;
  in.batch = (offsets.numel() - 1) / features;
  in.pooling_mode = pooling_mode;
  in.indices = indices.contiguous();
  in.offsets = offsets.contiguous().to(at::kLong);
  const auto* offs = in.offsets.data_ptr<int64_t>();
  TORCH_CHECK(offs[0] >= 0 && offs[0] <= offs[features * in.batch] &&
                  offs[features * in.batch] <= in.indices.numel(),
              op, ": offsets run from ", offs[0], " to ", offs[features * in.batch], " over ",
              in.indices.numel(), " indices");
  if (weighted) {
    in.weights_of_ids = indice_weights.contiguous();
    in.per_sample_weights = in.weights_of_ids.data_ptr<float>();
  }
  const auto* d_offsets = D_offsets.data_ptr<int32_t>();
  const auto* w_offsets = weights_offsets.data_ptr<int64_t>();
  in.total_dim = d_offsets[features];
  float* base = weights.data_ptr<float>();
  for (int64_t t = 0; t < features; ++t) {
    const int64_t dim = d_offsets[t + 1] - d_offsets[t];
    const int64_t rows = cumsum[t + 1] - cumsum[t];
    TORCH_CHECK(dim > 0 && d_offsets[t] >= 0 && w_offsets[t] >= 0 &&
                    w_offsets[t] + rows * dim <= weights.numel(),
                op, ": feature ", t, " lies outside the weight buffer");
    in.tables.push_back({t, rows, dim, d_offsets[t], base + w_offsets[t]});
  }
  return in;
}

template <typename index_t>
void check_table_ids_of(const char* op, const TbeInputs& in, const TbeTable& table) {
  const int64_t* bags = in.offsets.data_ptr<int64_t>() + table.feature * in.batch;
  const index_t* indices = in.indices.data_ptr<index_t>();
  for (int64_t b = 0; b < in.batch; ++b) {
    TORCH_CHECK(bags[b] <= bags[b + 1], op, ": offsets of feature ", table.feature,
                " decrease at bag ", b, " (", bags[b], " then ", bags[b + 1], ")");
    for (int64_t p = bags[b]; p < bags[b + 1]; ++p) {
      const int64_t row = indices[p];
      TORCH_CHECK(row >= 0 && row < table.hash_size, op, ": feature ", table.feature, ", bag ",
                  b, ", position ", p, ": id ", row, " is outside its table of ",
                  table.hash_size, " rows");
    }
  }
}

void check_table_ids(const char* op, const TbeInputs& in, const TbeTable& table) {
  if (in.indices.scalar_type() == at::kInt) {
    check_table_ids_of<int32_t>(op, in, table);
  } else {
    check_table_ids_of<int64_t>(op, in, table);
  }
}

void check_ids(const char* op, const TbeInputs& in) {
  at::parallel_for(0, static_cast<int64_t>(in.tables.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) check_table_ids(op, in, in.tables[t]);
  });
}

void for_each_table(const std::vector<TbeTable>& tables,
                    const std::function<void(const TbeTable&)>& fn) {
  const int64_t n = static_cast<int64_t>(tables.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return tables[a].hash_size * tables[a].dim > tables[b].hash_size * tables[b].dim;
  });
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(tables[order[i]]);
  });
}

}  // namespace recsys_kernels
