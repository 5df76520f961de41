// Table memory: copies on transparent huge pages, and the random-gather probe that measures
// this machine's limit for the lookups (benchmark only).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "ops.h"
#include "prefetch.h"

namespace recsys_kernels {

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1+; older headers lack the name
#endif

// A copy of `t` in 2 MiB-aligned memory advised for transparent huge pages: random row reads of
// a large table then miss the TLB far less often (one 2 MiB entry instead of 512 4 KiB ones).
// The pages the copy faulted in without a huge page (the kernel found no free 2 MiB block then)
// are collapsed into huge pages once written (`MADV_COLLAPSE`): in one of the sixteenth
// session's full benchmark runs a 10M-row table had most likely stayed on 4 KiB pages, its
// lookups 1.2-2.9x slower than on the table beside it (docs/kernels.md, "Memory").
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
  madvise(mem, padded, MADV_COLLAPSE);  // advisory too: EINVAL before Linux 6.1, or no memory
  return at::from_blob(mem, src.sizes(), [](void* p) { std::free(p); }, src.options());
}

namespace {

// A flat random gather: for each id (bags play no part), one byte of every cache line of its row
// and its last byte, summed; the row `pd` ids ahead prefetched into L1 (`hint` 0) or L2 (1), one
// prefetch per line the table's rows can span, as the lookups prefetch (prefetch.h).
// No arithmetic beyond the checksum, no per-bag work, no checks: ids are clamped into the
// table (a branch-free min), so a bad id reads the last row instead of out of bounds. With
// `out_row_bytes` > 0, also writes that many bytes to `out` after every `ids_per_row`-th id: the
// output rows a lookup with bags of that many ids writes.
// With kReads false, nothing is read: each id's lines are only prefetched, none ahead (`pd`
// unused); the count of prefetched lines is returned. Prefetches depend on nothing, so the core
// keeps as many line fetches in flight as its miss queues hold: how fast a lookup's lines arrive
// with nothing else to do (the benchmark's "fetch only", output rows written as above). Not a
// bound: its loop costs more per id than a lookup's on narrow rows.
template <typename Index, int Hint, bool kReads>
int64_t flat_gather(const uint8_t* table, int64_t rows, int64_t rb, const Index* idx, int64_t n,
                    int64_t pd, uint8_t* out, int64_t out_row_bytes, int64_t ids_per_row) {
  std::atomic<int64_t> total{0};
  const auto last_row = static_cast<uint64_t>(rows - 1);
  const int64_t lines = row_lines(table, rb);  // prefetched as the lookups prefetch them
  const auto row_of = [&](int64_t i) {
    return table + std::min(static_cast<uint64_t>(idx[i]), last_row) * rb;
  };
  const int64_t threads = at::get_num_threads();
  const int64_t grain = std::max<int64_t>(1, (n + threads - 1) / threads);  // one task a thread
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    int64_t sum = 0;
    int64_t row_end = (begin / ids_per_row + 1) * ids_per_row;  // id after the next output row
    for (int64_t i = begin; i < end; ++i) {
      if constexpr (kReads) {
        if (pd > 0 && i + pd < end) prefetch_row<Hint == 0 ? 3 : 2>(row_of(i + pd), rb, lines);
        const uint8_t* row = row_of(i);
        for (int64_t o = 0; o < rb; o += 64) sum += row[o];
        sum += row[rb - 1];
      } else {
        prefetch_row<Hint == 0 ? 3 : 2>(row_of(i), rb, lines);
        sum += lines;
      }
      if (out_row_bytes > 0 && i + 1 == row_end) {
        std::memset(out + (row_end / ids_per_row - 1) * out_row_bytes, static_cast<int>(sum),
                    out_row_bytes);
        row_end += ids_per_row;
      }
    }
    total += sum;
  });
  return total.load();
}

template <typename Index>
int64_t flat_gather(const uint8_t* table, int64_t rows, int64_t rb, const Index* idx, int64_t n,
                    int64_t pd, int64_t hint, bool reads, uint8_t* out, int64_t out_row_bytes,
                    int64_t ids_per_row) {
  const auto run = [&](auto hint_c, auto reads_c) {
    return flat_gather<Index, decltype(hint_c)::value, decltype(reads_c)::value>(
        table, rows, rb, idx, n, pd, out, out_row_bytes, ids_per_row);
  };
  using L1 = std::integral_constant<int, 0>;
  using L2 = std::integral_constant<int, 1>;
  if (reads) return hint == 0 ? run(L1{}, std::true_type{}) : run(L2{}, std::true_type{});
  return hint == 0 ? run(L1{}, std::false_type{}) : run(L2{}, std::false_type{});
}

}  // namespace

// Benchmark only: this machine's random-gather limit for lookups of `indices` into `table`.
// Reads the cache lines each id's row spans (as a lookup does) with `prefetch_distance` ids of
// look-ahead into L1 (`hint` 0) or L2 (1), spread evenly over torch's threads. Returns a
// checksum so the reads cannot be optimised away. With `reads` false, only prefetches every
// line (flat_gather's fetch-only mode) and returns the number of lines prefetched.
at::Tensor gather_probe(const at::Tensor& table, const at::Tensor& indices,
                        int64_t prefetch_distance, int64_t hint, int64_t out_row_bytes,
                        int64_t ids_per_row, bool reads) {
  TORCH_CHECK(table.dim() == 2 && table.is_contiguous() && table.size(0) >= 1 &&
                  table.size(1) >= 1 && indices.dim() == 1 && indices.is_contiguous() &&
                  (indices.scalar_type() == at::kInt || indices.scalar_type() == at::kLong),
              "recsys_kernels: gather_probe takes a contiguous [rows >= 1, bytes >= 1] table and "
              "contiguous 1-D int32 or int64 indices");
  TORCH_CHECK(prefetch_distance >= 0 && (hint == 0 || hint == 1),
              "recsys_kernels: gather_probe takes prefetch_distance >= 0 and hint 0 (L1) or 1 "
              "(L2)");
  TORCH_CHECK(out_row_bytes >= 0 && ids_per_row >= 1,
              "recsys_kernels: gather_probe takes out_row_bytes >= 0 and ids_per_row >= 1, got ",
              out_row_bytes, " and ", ids_per_row);
  const auto* data = static_cast<const uint8_t*>(table.data_ptr());
  const int64_t rows = table.size(0), rb = table.size(1) * table.element_size();
  const int64_t n = indices.numel();
  // A fresh output per call, as a lookup allocates one.
  at::Tensor out = at::empty({out_row_bytes > 0 ? n / ids_per_row * out_row_bytes : 0}, at::kByte);
  uint8_t* o = out.data_ptr<uint8_t>();
  const int64_t sum =
      indices.scalar_type() == at::kInt
          ? flat_gather(data, rows, rb, indices.data_ptr<int32_t>(), n, prefetch_distance, hint,
                        reads, o, out_row_bytes, ids_per_row)
          : flat_gather(data, rows, rb, indices.data_ptr<int64_t>(), n, prefetch_distance, hint,
                        reads, o, out_row_bytes, ids_per_row);
  return at::scalar_tensor(sum, at::kLong);
}

}  // namespace recsys_kernels
