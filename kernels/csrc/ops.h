// The lookup entry points (and the benchmark's gather probe), shared by the operator
// registration (ops.cpp) and the direct Python bindings (bindings.cpp).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace recsys_kernels {

// One table: bags given by offsets [B] or [B + 1] (include_last_offset).
at::Tensor embedding_bag(const at::Tensor& weight, const at::Tensor& indices,
                         const at::Tensor& offsets, int64_t format, int64_t dim, int64_t mode,
                         const c10::optional<at::Tensor>& per_sample_weights,
                         bool include_last_offset, const std::string& table,
                         c10::optional<at::ScalarType> out_dtype);

// All tables of a model in one call, TBE-style: offsets [T * B + 1] over the indices
// concatenated table after table; output [B, sum of dims].
at::Tensor embedding_bags_batched(at::TensorList weights, at::IntArrayRef dims, int64_t format,
                                  const at::Tensor& indices, const at::Tensor& offsets,
                                  int64_t mode, const c10::optional<at::Tensor>& psw,
                                  const std::vector<std::string>& names,
                                  c10::optional<at::ScalarType> out_dtype);

// Benchmark only (memory.cpp): the random-gather limit of lookups of `indices` into `table`,
// optionally with the output rows a lookup writes (`out_row_bytes` per `ids_per_row` ids);
// with `reads` false, the lines only prefetched (the benchmark's "fetch only").
at::Tensor gather_probe(const at::Tensor& table, const at::Tensor& indices,
                        int64_t prefetch_distance, int64_t hint, int64_t out_row_bytes,
                        int64_t ids_per_row, bool reads);

}  // namespace recsys_kernels
