// PyTorch operators of recsys's CPU embedding-bag kernels: the schema block, input checks, and
// the pooled lookup over bags and tables threaded with at::parallel_for.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/EmptyTensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/SmallVector.h>

#include "dispatch.h"
#include "embedding_bag.h"
#include "ops.h"
#include "prefetch.h"

namespace recsys_kernels {

at::Tensor hugepage_clone(const at::Tensor& t);  // memory.cpp

namespace {

constexpr const char* kFormatNames[] = {"int8", "int8 (fp16 scale/bias)", "int4"};

struct Table {
  const uint8_t* data;
  int64_t rows;
  int64_t row_bytes;
  int64_t dim;
  std::string_view name;  // the caller's string, alive for the whole call
};

Format to_format(int64_t f) {
  TORCH_CHECK(f >= 0 && f <= 2, "recsys_kernels: format must be 0 (int8), 1 (int8 with fp16 "
              "scale/bias) or 2 (int4), got ", f);
  return static_cast<Format>(f);
}

Table check_table(const at::Tensor& w, Format f, int64_t dim, const std::string& name) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kByte && w.device().is_cpu(),
              "recsys_kernels: table '", name, "': weight must be a 2-D uint8 CPU tensor of "
              "packed rows, got ", w.scalar_type(), " with ", w.dim(), " dims");
  TORCH_CHECK(w.is_contiguous(), "recsys_kernels: table '", name, "': weight must be contiguous");
  const int64_t trailer = trailer_bytes(f);
  if (dim < 0) dim = (w.size(1) - trailer) * (f == Format::kInt4 ? 2 : 1);
  TORCH_CHECK(dim > 0 && w.size(1) == row_bytes(f, dim), "recsys_kernels: table '", name, "': ",
              w.size(1), " bytes per row do not fit a ", kFormatNames[static_cast<int>(f)],
              " row of dim ", dim);
  return {w.data_ptr<uint8_t>(), w.size(0), w.size(1), dim, name};
}

// Offsets must be non-negative, non-decreasing and within the indices. One pass without
// branches (non-decreasing from a first offset >= 0 to a last one <= n_idx says it all); the
// offending bag and the table name are looked for only when it fails.
template <typename Index>
void check_offsets(const Index* off, int64_t n_off, int64_t n_idx, int64_t batch,
                   c10::ArrayRef<Table> tables) {
  if (n_off == 0) return;
  bool bad = off[0] < 0 || off[n_off - 1] > n_idx;
  for (int64_t k = 1; k < n_off; ++k) bad |= off[k] < off[k - 1];
  if (!bad) return;
  int64_t k = 0;
  for (Index prev = 0; k < n_off; ++k) {
    if (off[k] < prev || off[k] > n_idx) break;
    prev = off[k];
  }
  const std::string_view name = tables[std::min<int64_t>(k / batch, tables.size() - 1)].name;
  TORCH_CHECK(off[k] >= 0 && off[k] <= n_idx, "recsys_kernels: table '", name, "': offset ",
              off[k], " at bag ", k, " is outside the ", n_idx, " indices (offsets run past "
              "the indices or are negative)");
  TORCH_CHECK(false, "recsys_kernels: table '", name, "': offsets decrease at bag ", k, " (",
              off[k - 1], " then ", off[k], ")");
}

// First bad id seen by any thread (lowest position wins, so the error is deterministic).
struct BadIndex {
  std::mutex mu;
  int64_t pos = std::numeric_limits<int64_t>::max();
  int64_t bag = -1;
  void record(int64_t p, int64_t k) {
    std::lock_guard<std::mutex> lock(mu);
    if (p < pos) pos = p, bag = k;
  }
};

template <typename Index>
at::Tensor pooled(c10::ArrayRef<Table> tables, Format fmt, const at::Tensor& indices,
                  const at::Tensor& offsets, int64_t batch, bool include_last, int64_t mode,
                  const c10::optional<at::Tensor>& weights, at::ScalarType out_type) {
  TORCH_CHECK(mode == 0 || mode == 1, "recsys_kernels: mode must be 0 (sum) or 1 (mean)");
  const auto n_tables = static_cast<int64_t>(tables.size());
  const int64_t n_bags = n_tables * batch, n_idx = indices.numel();
  TORCH_CHECK(offsets.numel() == n_bags + (include_last ? 1 : 0), "recsys_kernels: table '",
              tables[0].name, "': expected ", n_bags + (include_last ? 1 : 0), " offsets for ",
              n_tables, " table(s) x ", batch, " bags, got ", offsets.numel());
  const Index* idx = indices.data_ptr<Index>();
  const Index* off = offsets.data_ptr<Index>();
  check_offsets(off, offsets.numel(), n_idx, batch, tables);
  const float* w = nullptr;
  if (weights.has_value() && weights->defined()) {
    TORCH_CHECK(weights->scalar_type() == at::kFloat && weights->is_contiguous() &&
                    weights->dim() == 1 && weights->numel() == n_idx,
                "recsys_kernels: table '", tables[0].name, "': per_sample_weights must be a "
                "contiguous 1-D float32 tensor with one weight per index (", n_idx, "), got ",
                weights->numel(), " of ", weights->scalar_type());
    w = weights->data_ptr<float>();
  }
  const auto end_of = [&](int64_t k) -> int64_t {  // end of bag k
    return (k + 1 < offsets.numel()) ? static_cast<int64_t>(off[k + 1]) : n_idx;
  };
  // Small buffers on the stack: a one-table call makes no heap allocation but its output.
  c10::SmallVector<int64_t, 16> col(n_tables + 1, 0), table_end(n_tables), lines(n_tables);
  for (int64_t t = 0; t < n_tables; ++t) {
    col[t + 1] = col[t] + tables[t].dim;
    table_end[t] = batch > 0 ? end_of((t + 1) * batch - 1) : 0;
    lines[t] = row_lines(tables[t].data, tables[t].row_bytes);
  }
  const int64_t total_dim = col[n_tables];
  // The CPU allocation itself, not at::empty through the dispatcher (~0.1 us per call; the
  // operator's output is a plain tensor either way).
  at::Tensor out(at::detail::empty_cpu({batch, total_dim}, out_type));
  if (n_bags == 0) return out;
  const bool direct = out_type == at::kFloat;
  auto* out_f = direct ? out.data_ptr<float>() : nullptr;
  auto* out_raw = static_cast<char*>(out.data_ptr());
  const int64_t elem = out.element_size();
  const Kernel<Index> kernel = pick_kernel<Index>();
  // One prefetch plan for the call, by the bytes of all its tables: they compete for the same
  // caches (8 tables of 72 MB, each below the far size: far / near 1.18-1.25, docs/kernels.md).
  int64_t table_bytes = 0;
  for (const Table& tab : tables) table_bytes += tab.rows * tab.row_bytes;
  const PrefetchPlan prefetch = prefetch_plan(table_bytes);
  // Tasks: runs of up to `grain` consecutive bags of one table; each is one kernel call.
  const auto bytes = [&] {  // the output, then the rows read
    int64_t sum = batch * total_dim * elem;
    for (int64_t t = 0; t < n_tables; ++t) {
      const int64_t first = t == 0 ? static_cast<int64_t>(off[0]) : table_end[t - 1];
      sum += (table_end[t] - first) * tables[t].row_bytes;
    }
    return sum;
  };
  const int64_t grain =
      bag_grain(n_idx, n_bags, batch, n_tables, at::get_num_threads(), prefetch.into_l2, bytes);
  const int64_t runs_per_table = (batch + grain - 1) / grain;
  BadIndex bad;
  at::parallel_for(0, n_tables * runs_per_table, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / runs_per_table, b0 = (task % runs_per_table) * grain;
      const int64_t count = std::min(grain, batch - b0), k0 = t * batch + b0;
      const Table& tab = tables[t];
      if (!direct) buf.resize(count * tab.dim);
      const Bags<Index> run{tab.data, tab.row_bytes, tab.rows, tab.dim, fmt, idx, off + k0, count,
                            end_of(k0 + count - 1), table_end[t], prefetch.distance,
                            prefetch.lead, prefetch.into_l2, prefetch.near,
                            prefetch.near_wide_only, prefetch.near_bag_ids, lines[t],
                            prefetch.ids, prefetch.split_wide, w, mode == 1,
                            direct ? out_f + b0 * total_dim + col[t] : buf.data(),
                            direct ? total_dim : tab.dim};
      const int64_t r = kernel(run);
      if (r >= 0) {  // the bag that holds position r: the last of the run starting at or before
        const Index* first = off + k0;
        const int64_t k = std::upper_bound(first, first + count, static_cast<Index>(r)) - first;
        bad.record(r, k0 + std::max<int64_t>(k - 1, 0));
        return;
      }
      if (!direct) {
        for (int64_t k = 0; k < count; ++k) {
          char* o = out_raw + ((b0 + k) * total_dim + col[t]) * elem;
          const float* src = buf.data() + k * tab.dim;
          if (out_type == at::kHalf) {
            for (int64_t j = 0; j < tab.dim; ++j) reinterpret_cast<at::Half*>(o)[j] = src[j];
          } else {
            for (int64_t j = 0; j < tab.dim; ++j) reinterpret_cast<at::BFloat16*>(o)[j] = src[j];
          }
        }
      }
    }
  });
  if (bad.bag >= 0) {
    const Table& tab = tables[bad.bag / batch];
    TORCH_CHECK_INDEX(false, "recsys_kernels: table '", tab.name, "': index ",
                      static_cast<int64_t>(idx[bad.pos]), " at position ", bad.pos, " (bag ",
                      bad.bag % batch, ") is outside the table's ", tab.rows, " rows");
  }
  return out;
}

// Indices and offsets may be int32 or int64, of different types and strided: offsets are brought
// to the indices' type and both made contiguous here (free when they already are), so callers
// need no conversions of their own.
at::Tensor dispatch_index(c10::ArrayRef<Table> tables, Format fmt,
                          const at::Tensor& indices_in, const at::Tensor& offsets_in,
                          int64_t batch, bool include_last, int64_t mode,
                          const c10::optional<at::Tensor>& weights,
                          c10::optional<at::ScalarType> out_dtype) {
  const auto is_index = [](at::ScalarType t) { return t == at::kInt || t == at::kLong; };
  TORCH_CHECK(indices_in.dim() == 1 && offsets_in.dim() == 1 &&
                  is_index(indices_in.scalar_type()) && is_index(offsets_in.scalar_type()),
              "recsys_kernels: table '", tables[0].name, "': indices and offsets must be 1-D "
              "int32 or int64 tensors, got ", indices_in.scalar_type(), " of ", indices_in.dim(),
              " dims and ", offsets_in.scalar_type(), " of ", offsets_in.dim(), " dims");
  const at::Tensor indices = indices_in.contiguous();
  // Offsets of the indices' type pass through without a dispatcher call.
  const at::Tensor offsets =
      (offsets_in.scalar_type() == indices.scalar_type() ? offsets_in
                                                          : offsets_in.to(indices.scalar_type()))
          .contiguous();
  const at::ScalarType out_type = out_dtype.value_or(at::kFloat);
  TORCH_CHECK(out_type == at::kFloat || out_type == at::kHalf || out_type == at::kBFloat16,
              "recsys_kernels: out_dtype must be float32, float16 or bfloat16");
  if (indices.scalar_type() == at::kInt) {
    return pooled<int32_t>(tables, fmt, indices, offsets, batch, include_last, mode, weights,
                           out_type);
  }
  return pooled<int64_t>(tables, fmt, indices, offsets, batch, include_last, mode, weights,
                         out_type);
}

}  // namespace

// One table: bags given by offsets [B] or [B + 1] (include_last_offset).
at::Tensor embedding_bag(const at::Tensor& weight, const at::Tensor& indices,
                         const at::Tensor& offsets, int64_t format, int64_t dim, int64_t mode,
                         const c10::optional<at::Tensor>& per_sample_weights,
                         bool include_last_offset, const std::string& table,
                         c10::optional<at::ScalarType> out_dtype) {
  const Format f = to_format(format);
  const int64_t batch = offsets.numel() - (include_last_offset ? 1 : 0);
  TORCH_CHECK(batch >= 0, "recsys_kernels: table '", table, "': empty offsets");
  const Table one = check_table(weight, f, dim, table);
  return dispatch_index(one, f, indices, offsets, batch,
                        include_last_offset, mode, per_sample_weights, out_dtype);
}

// All tables of a model in one call, TBE-style: offsets [T * B + 1] over the indices
// concatenated table after table; output [B, sum of dims], the interaction layer's input.
at::Tensor embedding_bags_batched(at::TensorList weights, at::IntArrayRef dims, int64_t format,
                                  const at::Tensor& indices, const at::Tensor& offsets,
                                  int64_t mode, const c10::optional<at::Tensor>& psw,
                                  const std::vector<std::string>& names,
                                  c10::optional<at::ScalarType> out_dtype) {
  const Format f = to_format(format);
  const auto n = static_cast<int64_t>(weights.size());
  TORCH_CHECK(n > 0 && static_cast<int64_t>(dims.size()) == n &&
                  static_cast<int64_t>(names.size()) == n,
              "recsys_kernels: need one dim and one name per table (", n, " tables, ",
              dims.size(), " dims, ", names.size(), " names)");
  TORCH_CHECK(offsets.numel() >= 1 && (offsets.numel() - 1) % n == 0, "recsys_kernels: ",
              offsets.numel(), " offsets do not split into ", n, " tables x B bags + 1");
  std::vector<Table> tables;
  tables.reserve(n);
  for (int64_t t = 0; t < n; ++t) tables.push_back(check_table(weights[t], f, dims[t], names[t]));
  return dispatch_index(tables, f, indices, offsets, (offsets.numel() - 1) / n, true, mode, psw,
                        out_dtype);
}

}  // namespace recsys_kernels

TORCH_LIBRARY(recsys_kernels, m) {
  m.def("embedding_bag(Tensor weight, Tensor indices, Tensor offsets, int format=0, int dim=-1, "
        "int mode=0, Tensor? per_sample_weights=None, bool include_last_offset=False, "
        "str table='', ScalarType? out_dtype=None) -> Tensor");
  m.def("embedding_bags_batched(Tensor[] weights, int[] dims, int format, Tensor indices, "
        "Tensor offsets, int mode, Tensor? per_sample_weights, str[] names, "
        "ScalarType? out_dtype=None) -> Tensor");
  m.def("hugepage_clone(Tensor t) -> Tensor");
  m.def("gather_probe(Tensor table, Tensor indices, int prefetch_distance, int hint, "
        "int out_row_bytes=0, int ids_per_row=1, bool reads=True) -> Tensor");
  m.def("set_isa(str isa) -> str", recsys_kernels::set_isa);
  m.def("current_isa() -> str", recsys_kernels::current_isa);
  m.def("best_isa() -> str", recsys_kernels::best_isa);
  m.def("set_index_checks(bool enabled) -> bool", recsys_kernels::set_index_checks);
  m.def("set_prefetch_distance(int rows) -> int", recsys_kernels::set_prefetch_distance);
  m.def("set_prefetch_lead(int near, int far) -> int[]", recsys_kernels::set_prefetch_lead);
  m.def("set_far_prefetch(int distance, int min_table_bytes) -> int[]",
        recsys_kernels::set_far_prefetch);
  m.def("set_mid_prefetch(int min_table_bytes, int near) -> int[]",
        recsys_kernels::set_mid_prefetch);
  m.def("set_prefetch_ids(bool enabled) -> bool", recsys_kernels::set_prefetch_ids);
  m.def("set_far_split(bool enabled) -> bool", recsys_kernels::set_far_split);
  m.def("set_far_near_bags(int ids) -> int", recsys_kernels::set_far_near_bags);
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("embedding_bag", recsys_kernels::embedding_bag);
  m.impl("embedding_bags_batched", recsys_kernels::embedding_bags_batched);
  m.impl("hugepage_clone", recsys_kernels::hugepage_clone);
  m.impl("gather_probe", recsys_kernels::gather_probe);
}
