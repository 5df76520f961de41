// PyTorch operators of recsys's CPU embedding-bag kernels: schemas, input checks, CPU dispatch
// (AVX-512 / AVX2 / scalar by CPUID, overridable), threading over bags and tables.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "embedding_bag.h"

namespace recsys_kernels {
namespace {

Isa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kScalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

Isa parse_isa(const std::string& name) {
  if (name == "avx512") return Isa::kAvx512;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "scalar") return Isa::kScalar;
  TORCH_CHECK(false, "recsys_kernels: unknown ISA '", name, "' (avx512, avx2, scalar or auto)");
}

// The best path this CPU has, lowered by RECSYS_KERNELS_ISA or set_isa (never raised above
// what CPUID reports, so a forced path cannot execute unsupported instructions).
Isa clamp(Isa wanted) {
  const Isa best = detect_isa();
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

std::atomic<int>& active_isa() {
  static std::atomic<int> isa([] {
    const char* env = std::getenv("RECSYS_KERNELS_ISA");
    Isa isa = detect_isa();
    if (env != nullptr && std::strcmp(env, "auto") != 0 && env[0] != '\0') {
      isa = clamp(parse_isa(env));
    }
    return static_cast<int>(isa);
  }());
  return isa;
}

template <typename Index>
using Kernel = void (*)(const Bag<Index>&);

template <typename Index>
Kernel<Index> pick(int bits) {
  const auto isa = static_cast<Isa>(active_isa().load());
  if (bits == 8) {
    if (isa == Isa::kAvx512) return bag_int8_avx512<Index>;
    if (isa == Isa::kAvx2) return bag_int8_avx2<Index>;
    return bag_int8_scalar<Index>;
  }
  if (isa == Isa::kAvx512) return bag_int4_avx512<Index>;
  if (isa == Isa::kAvx2) return bag_int4_avx2<Index>;
  return bag_int4_scalar<Index>;
}

int64_t row_bytes_for(int bits, int64_t dim) {
  return bits == 8 ? dim + 8 : (dim + 1) / 2 + 4;
}

struct Table {
  const at::Tensor* weight;
  int64_t dim;
  std::string name;
};

int64_t check_table(const at::Tensor& weight, int bits, int64_t dim, const std::string& name) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kByte,
              "recsys_kernels: table '", name, "': weight must be a 2-D uint8 tensor of packed "
              "rows, got ", weight.scalar_type(), " with ", weight.dim(), " dims");
  TORCH_CHECK(weight.is_contiguous(), "recsys_kernels: table '", name, "': weight must be contiguous");
  if (dim < 0) dim = bits == 8 ? weight.size(1) - 8 : 2 * (weight.size(1) - 4);
  TORCH_CHECK(dim > 0 && weight.size(1) == row_bytes_for(bits, dim), "recsys_kernels: table '",
              name, "': ", weight.size(1), " bytes per row do not fit a ", bits,
              "-bit row of dim ", dim);
  return dim;
}

// Offsets must not decrease and must stay within the indices; every index must address a row.
template <typename Index>
void check_bags(const Index* idx, int64_t n_idx, const Index* off, int64_t n_bags, int64_t rows,
                int64_t first_bag, const std::string& name) {
  for (int64_t b = 0; b <= n_bags; ++b) {
    TORCH_CHECK(off[b] <= n_idx, "recsys_kernels: table '", name, "': offsets run past the ",
                n_idx, " indices (offset ", off[b], " at bag ", first_bag + b, ")");
  }
  for (int64_t b = 0; b < n_bags; ++b) {
    TORCH_CHECK(off[b] >= 0 && off[b] <= off[b + 1],
                "recsys_kernels: table '", name, "': offsets decrease or are negative at bag ",
                first_bag + b, " (", off[b], " then ", off[b + 1], ")");
  }
  Index lo = 0, hi = 0;
  for (int64_t i = off[0]; i < off[n_bags]; ++i) {  // branch-free min/max, vectorised
    lo = idx[i] < lo ? idx[i] : lo;
    hi = idx[i] > hi ? idx[i] : hi;
  }
  if (lo < 0 || hi >= rows) {
    for (int64_t i = off[0]; i < off[n_bags]; ++i) {
      TORCH_CHECK(idx[i] >= 0 && idx[i] < rows, "recsys_kernels: table '", name, "': index ",
                  idx[i], " at position ", i, " is outside the table's ", rows, " rows");
    }
  }
}

template <typename Index>
at::Tensor pooled(const std::vector<Table>& tables, int bits, const at::Tensor& indices,
                  const at::Tensor& offsets, int64_t batch, bool include_last, int64_t mode,
                  const c10::optional<at::Tensor>& weights) {
  int64_t total_dim = 0;
  std::vector<int64_t> col(tables.size());
  for (size_t t = 0; t < tables.size(); ++t) {
    col[t] = total_dim;
    total_dim += tables[t].dim;
  }
  TORCH_CHECK(mode == 0 || mode == 1, "recsys_kernels: mode must be 0 (sum) or 1 (mean), got ", mode);
  const int64_t n_idx = indices.numel();
  const Index* idx = indices.data_ptr<Index>();
  // Offsets as [T * B + 1] with the end: copy when the caller left the last one out.
  at::Tensor off_t = offsets;
  if (!include_last) off_t = at::cat({offsets, at::full({1}, n_idx, offsets.options())});
  TORCH_CHECK(off_t.numel() == static_cast<int64_t>(tables.size()) * batch + 1,
              "recsys_kernels: expected ", tables.size() * batch + (include_last ? 1 : 0),
              " offsets for ", tables.size(), " table(s) x ", batch, " bags, got ", offsets.numel());
  const Index* off = off_t.data_ptr<Index>();
  const float* w = nullptr;
  if (weights.has_value() && weights->defined()) {
    TORCH_CHECK(weights->scalar_type() == at::kFloat && weights->is_contiguous() &&
                    weights->numel() == n_idx,
                "recsys_kernels: table '", tables[0].name, "': per_sample_weights must be a "
                "contiguous float32 tensor with one weight per index (", n_idx, "), got ",
                weights->numel(), " of ", weights->scalar_type());
    w = weights->data_ptr<float>();
  }
  for (size_t t = 0; t < tables.size(); ++t) {
    check_bags(idx, n_idx, off + t * batch, batch, tables[t].weight->size(0),
               static_cast<int64_t>(t) * batch, tables[t].name);
  }
  auto out = at::empty({batch, total_dim}, indices.options().dtype(at::kFloat));
  float* out_p = out.data_ptr<float>();
  const Kernel<Index> kernel = pick<Index>(bits);
  const int64_t n_bags = static_cast<int64_t>(tables.size()) * batch;
  const int64_t avg = std::max<int64_t>(1, n_idx / std::max<int64_t>(1, n_bags));
  at::parallel_for(0, n_bags, std::max<int64_t>(1, 2048 / avg), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t t = k / batch, b = k % batch;
      const int64_t len = off[k + 1] - off[k];
      Bag<Index> bag{tables[t].weight->data_ptr<uint8_t>(), tables[t].weight->size(1),
                     tables[t].dim, idx + off[k], len, w ? w + off[k] : nullptr,
                     (mode == 1 && len > 0) ? 1.f / static_cast<float>(len) : 1.f,
                     out_p + b * total_dim + col[t]};
      kernel(bag);
    }
  });
  return out;
}

at::Tensor dispatch_index(const std::vector<Table>& tables, int bits, const at::Tensor& indices,
                          const at::Tensor& offsets, int64_t batch, bool include_last,
                          int64_t mode, const c10::optional<at::Tensor>& weights) {
  TORCH_CHECK(indices.dim() == 1 && offsets.dim() == 1 && indices.is_contiguous() &&
                  offsets.is_contiguous(),
              "recsys_kernels: indices and offsets must be contiguous 1-D tensors");
  TORCH_CHECK(indices.scalar_type() == offsets.scalar_type(),
              "recsys_kernels: indices (", indices.scalar_type(), ") and offsets (",
              offsets.scalar_type(), ") must have the same dtype");
  if (indices.scalar_type() == at::kInt) {
    return pooled<int32_t>(tables, bits, indices, offsets, batch, include_last, mode, weights);
  }
  TORCH_CHECK(indices.scalar_type() == at::kLong,
              "recsys_kernels: indices must be int32 or int64, got ", indices.scalar_type());
  return pooled<int64_t>(tables, bits, indices, offsets, batch, include_last, mode, weights);
}

at::Tensor embedding_bag(const at::Tensor& weight, const at::Tensor& indices,
                         const at::Tensor& offsets, int64_t mode,
                         const c10::optional<at::Tensor>& weights, bool include_last,
                         int64_t dim, const std::string& table, int64_t bits) {
  const int64_t d = check_table(weight, static_cast<int>(bits), dim, table);
  const int64_t batch = offsets.numel() - (include_last ? 1 : 0);
  TORCH_CHECK(batch >= 0, "recsys_kernels: table '", table, "': empty offsets");
  return dispatch_index({{&weight, d, table}}, static_cast<int>(bits), indices, offsets, batch,
                        include_last, mode, weights);
}

at::Tensor embedding_bag_byte(const at::Tensor& weight, const at::Tensor& indices,
                              const at::Tensor& offsets, int64_t mode,
                              const c10::optional<at::Tensor>& weights, bool include_last,
                              const std::string& table) {
  return embedding_bag(weight, indices, offsets, mode, weights, include_last, -1, table, 8);
}

at::Tensor embedding_bag_4bit(const at::Tensor& weight, const at::Tensor& indices,
                              const at::Tensor& offsets, int64_t mode,
                              const c10::optional<at::Tensor>& weights, bool include_last,
                              int64_t dim, const std::string& table) {
  return embedding_bag(weight, indices, offsets, mode, weights, include_last, dim, table, 4);
}

// All tables of a model in one call, TBE-style: offsets [T * B + 1] over indices concatenated
// table after table; output [B, sum of dims], the layout the interaction layer consumes.
at::Tensor embedding_bags_batched(at::TensorList weights, at::IntArrayRef dims, int64_t bits,
                                  const at::Tensor& indices, const at::Tensor& offsets,
                                  int64_t mode, const c10::optional<at::Tensor>& psw,
                                  const std::vector<std::string>& names) {
  const auto n = static_cast<int64_t>(weights.size());
  TORCH_CHECK(n > 0 && static_cast<int64_t>(dims.size()) == n &&
                  static_cast<int64_t>(names.size()) == n,
              "recsys_kernels: need one dim and one name per table (", n, " tables, ",
              dims.size(), " dims, ", names.size(), " names)");
  TORCH_CHECK((offsets.numel() - 1) % n == 0, "recsys_kernels: ", offsets.numel(),
              " offsets do not split into ", n, " tables x B bags + 1");
  std::vector<Table> tables;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t d = check_table(weights[t], static_cast<int>(bits), dims[t], names[t]);
    tables.push_back({&weights[t], d, names[t]});
  }
  return dispatch_index(tables, static_cast<int>(bits), indices, offsets,
                        (offsets.numel() - 1) / n, true, mode, psw);
}

std::string set_isa(const std::string& name) {
  const Isa isa = name == "auto" ? detect_isa() : clamp(parse_isa(name));
  active_isa().store(static_cast<int>(isa));
  return isa_name(isa);
}

std::string current_isa() { return isa_name(static_cast<Isa>(active_isa().load())); }

std::string best_isa() { return isa_name(detect_isa()); }

// A copy of `t` in 2 MiB-aligned memory advised to use transparent huge pages: random row
// reads of a large table then miss the TLB far less often.
at::Tensor hugepage_clone(const at::Tensor& t) {
  const auto src = t.contiguous();
  constexpr size_t kHuge = 2u << 20;
  const size_t bytes = std::max<size_t>(src.nbytes(), 1);
  const size_t padded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* mem = nullptr;
  TORCH_CHECK(posix_memalign(&mem, kHuge, padded) == 0,
              "recsys_kernels: cannot allocate ", padded, " bytes for a huge-page table");
  madvise(mem, padded, MADV_HUGEPAGE);  // advisory: without THP the copy still works
  std::memcpy(mem, src.data_ptr(), src.nbytes());
  return at::from_blob(mem, src.sizes(), [](void* p) { std::free(p); }, src.options());
}

}  // namespace
}  // namespace recsys_kernels

TORCH_LIBRARY(recsys_kernels, m) {
  m.def("embedding_bag_byte(Tensor weight, Tensor indices, Tensor offsets, int mode=0, "
        "Tensor? per_sample_weights=None, bool include_last_offset=False, str table='') -> Tensor");
  m.def("embedding_bag_4bit(Tensor weight, Tensor indices, Tensor offsets, int mode=0, "
        "Tensor? per_sample_weights=None, bool include_last_offset=False, int dim=-1, "
        "str table='') -> Tensor");
  m.def("embedding_bags_batched(Tensor[] weights, int[] dims, int bits, Tensor indices, "
        "Tensor offsets, int mode, Tensor? per_sample_weights, str[] names) -> Tensor");
  m.def("hugepage_clone(Tensor t) -> Tensor");
  m.def("set_isa(str isa) -> str", recsys_kernels::set_isa);
  m.def("current_isa() -> str", recsys_kernels::current_isa);
  m.def("best_isa() -> str", recsys_kernels::best_isa);
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) {
  m.impl("embedding_bag_byte", recsys_kernels::embedding_bag_byte);
  m.impl("embedding_bag_4bit", recsys_kernels::embedding_bag_4bit);
  m.impl("embedding_bags_batched", recsys_kernels::embedding_bags_batched);
  m.impl("hugepage_clone", recsys_kernels::hugepage_clone);
}
