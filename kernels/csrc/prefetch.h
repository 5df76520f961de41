// Software prefetch of a table row, shared by the lookup kernels (embedding_bag_simd.inc, the
// serving lookups; tbe_forward.cpp, the training forward) and the gather probe (memory.cpp).
#pragma once

#include <cstdint>
#include <numeric>

namespace recsys_kernels {

// The most cache lines any row of a table can span, its rows `bytes` apart from `base`: row r
// starts at (base + r * bytes) mod 64 into its line, a multiple of gcd(bytes, 64) past the base's
// offset, so the latest start is known once per table (FBGEMM's int8 rows of 128 codes, 136
// bytes, from a 64-byte-aligned table: at most 56 bytes in, so 3 lines, never 4).
inline int64_t row_lines(const void* base, int64_t bytes) {
  const int64_t step = std::gcd(bytes, int64_t{64});
  const auto offset = static_cast<int64_t>(reinterpret_cast<uintptr_t>(base) % 64);
  const int64_t latest_start = 64 - step + offset % step;
  return (latest_start + bytes + 63) / 64;
}

// Every cache line of the `bytes`-byte row at `row`, a row of a table whose rows span at most
// `lines` lines (row_lines), into L1 (kLocality 3, prefetcht0) or into L2 (kLocality 2,
// prefetcht1), for a read soon: the row's first byte and the bytes 64, 128, ... after it cover
// its first lines - 1 lines, its last byte the last one. One prefetch per line the row can
// span: until 2026-11-30 (seventh session) every 64th byte and the last byte were prefetched,
// one instruction more than the lines for 136-byte int8 rows (4 for 3) and 72-byte ones (3 for
// 2): a few percent in targeted tests, nothing visible in the full benchmark (docs/kernels.md,
// "Memory").
// Measured: every line beats the first line only (1.1-1.8x at dims 64-128). The builtin, not
// _mm_prefetch: GCC 12 drops _mm_prefetch calls from functions compiled under a target pragma.
// Inlined everywhere, so that the callers' per-ISA copies keep it in their loops.
template <int kLocality = 3>
[[gnu::always_inline]] inline void prefetch_row(const void* row, int64_t bytes, int64_t lines) {
  static_assert(kLocality == 2 || kLocality == 3, "rows are prefetched into L1 or L2");
  const char* p = static_cast<const char*>(row);
  __builtin_prefetch(p, 0, kLocality);
  for (int64_t k = 1; k + 1 < lines; ++k) __builtin_prefetch(p + 64 * k, 0, kLocality);
  if (lines > 1) __builtin_prefetch(p + bytes - 1, 0, kLocality);
}

// The lines of prefetch_row_fixed but the first: the bytes 64, 128, ..., 64 (kLines - 2) after
// the row's first byte and its last byte. Alone, for a row whose first line was prefetched
// earlier (the prefetch lead: its page walk started then).
template <int kLines, int kLocality = 3>
[[gnu::always_inline]] inline void prefetch_row_rest(const void* row, int64_t bytes) {
  static_assert(kLines >= 1 && (kLocality == 2 || kLocality == 3));
  const char* p = static_cast<const char*>(row);
#pragma GCC unroll 8
  for (int k = 1; k + 1 < kLines; ++k) __builtin_prefetch(p + 64 * k, 0, kLocality);
  if constexpr (kLines > 1) __builtin_prefetch(p + bytes - 1, 0, kLocality);
}

// The lines of a row of at most kLines lines, as prefetch_row but straight-line code: the first
// byte, the bytes 64, 128, ..., 64 (kLines - 2) after it and the last byte, for rows that may
// span fewer lines too (a prefetch then repeats a line). The caller guarantees that those middle
// bytes lie inside the row. prefetch_row's loop and tests compile to two or three taken branches
// per row: on a 16-wide int8 row from the caches that doubled the cost of a lookup
// (docs/kernels.md, "Straight-line prefetch").
template <int kLines, int kLocality = 3>
[[gnu::always_inline]] inline void prefetch_row_fixed(const void* row, int64_t bytes) {
  __builtin_prefetch(row, 0, kLocality);
  prefetch_row_rest<kLines, kLocality>(row, bytes);
}

// The lines of a row shorter than a line (so at most two): its first byte, and its last byte
// only when that lies in another line; else `held` (an address in a line in L1 already), chosen
// without a branch (`cmov`), so that the common one-line row does not ask for its line twice
// while it is in flight (docs/kernels.md, "Short rows under the far plan").
template <int kLocality = 3>
[[gnu::always_inline]] inline void prefetch_short_row(const void* row, int64_t bytes,
                                                      const void* held) {
  const char* p = static_cast<const char*>(row);
  const char* last = p + bytes - 1;
  const bool one_line =
      ((reinterpret_cast<uintptr_t>(p) ^ reinterpret_cast<uintptr_t>(last)) >> 6) == 0;
  __builtin_prefetch(p, 0, kLocality);
  __builtin_prefetch(one_line ? held : last, 0, kLocality);
}

}  // namespace recsys_kernels
