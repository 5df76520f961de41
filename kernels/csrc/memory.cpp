// Table memory: copies on transparent huge pages, and the random-gather probe that measures
// this machine's limit for the lookups (benchmark only).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "dispatch.h"

namespace recsys_kernels {

// A copy of `t` in 2 MiB-aligned memory advised for transparent huge pages: random row reads of
// a large table then miss the TLB far less often (one 2 MiB entry instead of 512 4 KiB ones).
at::Tensor hugepage_clone(const at::Tensor& t) {
  const auto src = t.contiguous();
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = std::max<size_t>(src.nbytes(), 1);
  const size_t padded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* mem = nullptr;
  TORCH_CHECK(posix_memalign(&mem, kHuge, padded) == 0, "recsys_kernels: cannot allocate ",
              padded, " bytes for a huge-page table");
  madvise(mem, padded, MADV_HUGEPAGE);  // advisory: without THP the copy still works
  std::memcpy(mem, src.data_ptr(), src.nbytes());
  return at::from_blob(mem, src.sizes(), [](void* p) { std::free(p); }, src.options());
}

namespace {

// Reads every cache line of each looked-up row (one 8-byte load per line, as a lookup touches
// them), with the kernels' prefetch distance, threads and work split; no arithmetic.
template <typename Index>
int64_t probe(const uint8_t* table, int64_t rows, int64_t rb, const Index* idx,
              const Index* off, int64_t n_bags) {
  const int64_t n_idx = off[n_bags] - off[0];
  const int64_t pd = prefetch_distance();
  std::atomic<int64_t> total{0};
  at::parallel_for(0, n_bags, bag_grain(n_idx, n_bags), [&](int64_t begin, int64_t end) {
    int64_t sum = 0;
    const int64_t last = off[end];
    for (int64_t i = off[begin]; i < last; ++i) {
      if (pd > 0 && i + pd < last) {
        const int64_t ahead = static_cast<int64_t>(idx[i + pd]);
        if (ahead >= 0 && ahead < rows) {
          const char* p = reinterpret_cast<const char*>(table + ahead * rb);
          for (int64_t o = 0; o < rb; o += 64) __builtin_prefetch(p + o, 0, 3);
          __builtin_prefetch(p + rb - 1, 0, 3);
        }
      }
      const int64_t id = static_cast<int64_t>(idx[i]);
      if (static_cast<uint64_t>(id) >= static_cast<uint64_t>(rows)) continue;
      const uint8_t* row = table + id * rb;
      int64_t v;
      for (int64_t o = 0; o + 8 <= rb; o += 64) {
        std::memcpy(&v, row + o, 8);
        sum += v;
      }
      std::memcpy(&v, row + rb - 8, 8);
      sum += v;
    }
    total += sum;
  });
  return total.load();
}

}  // namespace

// Benchmark only: the random-gather limit for lookups of `indices` into `table` (bags given by
// offsets [B + 1]). Returns a checksum so the reads cannot be optimised away.
at::Tensor gather_probe(const at::Tensor& table, const at::Tensor& indices,
                        const at::Tensor& offsets) {
  TORCH_CHECK(table.dim() == 2 && table.is_contiguous() && table.size(1) >= 8 &&
                  indices.scalar_type() == offsets.scalar_type() && offsets.numel() >= 1,
              "recsys_kernels: gather_probe takes a contiguous [rows, >= 8 bytes] table and "
              "offsets [B + 1] of the indices' dtype");
  const auto* data = static_cast<const uint8_t*>(table.data_ptr());
  const int64_t rb = table.size(1) * table.element_size(), n_bags = offsets.numel() - 1;
  int64_t sum;
  if (indices.scalar_type() == at::kInt) {
    sum = probe(data, table.size(0), rb, indices.data_ptr<int32_t>(), offsets.data_ptr<int32_t>(),
                n_bags);
  } else {
    sum = probe(data, table.size(0), rb, indices.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
                n_bags);
  }
  return at::scalar_tensor(sum, at::kLong);
}

}  // namespace recsys_kernels
