/* Three properties of this machine's memory that bound the embedding-bag lookups (issue 5), with
 * no torch and no FBGEMM involved: docs/benchmarks.md ("What the arithmetic costs on rows from
 * memory") reads its numbers.
 *
 * 1. Load latency by working set: a pointer chase over one 64-byte line after another in a
 *    random cyclic order, in a 2 MiB-aligned buffer advised for huge pages (as the benchmark's
 *    tables are). Shows which table sizes the caches hold and which wait on DRAM.
 * 2. What a row's arithmetic adds to a lookup whose rows come from memory. Tables in FBGEMM's
 *    int8 layout (D codes, then fp32 scale and bias), batch 512 x pooling 20, uniform ids, one
 *    thread, every variant prefetching the row 24 ids ahead into L1 (our kernel's near plan):
 *      touch       one byte of each cache line of the row: memory only
 *      touch+nops  the touch, plus one NOP per vector instruction of a row's arithmetic (3
 *                  per vector of codes): as many to decode and retire, nothing to execute
 *      touch+hot   the touch, plus a row's arithmetic (widen, convert, FMA per vector; the
 *                  bias summed) on one of 4 rows kept in L1: the same instructions, none
 *                  waiting on the row
 *      lookup      the arithmetic on the row's own bytes, bag sums stored: the lookup itself
 *    The variants run interleaved (rotating order, a fresh id set per sample); medians. On a
 *    cache-resident table (1000 rows) lookup - touch is the arithmetic's own cost; on tables
 *    served from memory, it is what of the arithmetic the core did not hide behind the misses.
 * 3. Address translation: a chase through lines each in its own 4 KiB page (L2-resident data)
 *    against the same lines packed: whether translations are 2 MiB- or 4 KiB-grained here
 *    (a VM's hypervisor can map its huge pages in 4 KiB ones), and what a page walk costs on
 *    spans of 16 MiB to 1 GiB (section 3 below).
 *
 *     cc -O2 -march=native benchmarks/memory_probes.c -o /tmp/memory_probes && \
 *       /tmp/memory_probes [--quick] [--dims D ...] [--json FILE]   (dims: 128 64 16)
 *
 * Prints a table; with --json writes the numbers there (written to FILE.tmp, then renamed).
 * The arithmetic is AVX-512 (F/BW) when the compiler targets it, else AVX2 with FMA (two 8-lane
 * vectors per 16 codes, as both libraries' AVX2 kernels do); -march=native picks the host's. A
 * binary run on a CPU without the ISA it was built for exits with a message.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* The arithmetic's vectors: kAccPer16 accumulators of kLanes floats per 16 codes. */
/* acc_codes16 adds scale * 16 codes into the kAccPer16 accumulators at acc; store_acc writes an
 * accumulator plus the bag's bias to kLanes floats. */
#if defined(__AVX512F__) && defined(__AVX512BW__)
typedef __m512 Acc;
enum { kLanes = 16, kAccPer16 = 1 };
static const char kIsa[] = "avx512";
static int cpu_has_isa(void) {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
static inline __attribute__((always_inline)) void acc_codes16(Acc* acc, const uint8_t* codes,
                                                              const float scale) {
  const __m128i c = _mm_loadu_si128((const __m128i*)codes);
  acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)), _mm512_set1_ps(scale),
                           acc[0]);
}
static inline __attribute__((always_inline)) void store_acc(float* dst, const Acc a,
                                                            const float bias) {
  _mm512_storeu_ps(dst, _mm512_add_ps(a, _mm512_set1_ps(bias)));
}
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 Acc;
enum { kLanes = 8, kAccPer16 = 2 };
static const char kIsa[] = "avx2";
static int cpu_has_isa(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static inline __attribute__((always_inline)) void acc_codes16(Acc* acc, const uint8_t* codes,
                                                              const float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  for (int h = 0; h < 2; ++h) {
    const __m128i c = _mm_loadl_epi64((const __m128i*)(codes + 8 * h));
    acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), s, acc[h]);
  }
}
static inline __attribute__((always_inline)) void store_acc(float* dst, const Acc a,
                                                            const float bias) {
  _mm256_storeu_ps(dst, _mm256_add_ps(a, _mm256_set1_ps(bias)));
}
#else
#error "memory_probes needs AVX-512 (F/BW) or AVX2 with FMA: build it with -march=native"
#endif

enum { kBatch = 512, kPool = 20, kIds = kBatch * kPool, kAhead = 24, kMaxDim = 256 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t next_random(uint64_t* state) { /* xorshift64 */
  *state ^= *state << 13;
  *state ^= *state >> 7;
  *state ^= *state << 17;
  return *state;
}

static int by_value(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof *v, by_value);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* At least `bytes`, aligned to `alignment` (a power of two); exits with a message when memory
 * runs out. */
static void* must_alloc(size_t alignment, size_t bytes) {
  bytes = (bytes + alignment - 1) / alignment * alignment; /* as aligned_alloc requires */
  void* p = aligned_alloc(alignment, bytes);
  if (!p) {
    fprintf(stderr, "memory_probes: cannot allocate %zu MiB\n", (bytes + (1 << 20) - 1) >> 20);
    exit(1);
  }
  return p;
}

/* 2 MiB-aligned, advised for huge pages. */
static char* huge_buffer(size_t bytes) {
  const size_t huge = (size_t)2 << 20;
  const size_t size = (bytes + huge - 1) / huge * huge;
  char* p = must_alloc(huge, size);
  madvise(p, size, MADV_HUGEPAGE);
  return p;
}

/* ---- 1. load latency ---------------------------------------------------------------------- */

/* ns per load of a pointer chase through the lines at `offsets` (n of them) of `buf`, visited
 * in one random cycle; `steps` loads timed after one lap to settle. */
static double chase_through(char* buf, const size_t* offsets, size_t n, long steps) {
  size_t* order = must_alloc(64, n * sizeof *order);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (size_t i = n - 1; i > 0; --i) { /* Fisher-Yates: one cycle through every line */
    const size_t j = next_random(&state) % (i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (size_t i = 0; i < n; ++i) {
    *(void**)(buf + offsets[order[i]]) = buf + offsets[order[(i + 1) % n]];
  }
  void** p = (void**)(buf + offsets[order[0]]);
  for (size_t i = 0; i < n; ++i) p = (void**)*p; /* one lap to settle */
  const double t0 = now();
  for (long i = 0; i < steps; ++i) p = (void**)*p;
  const double ns = (now() - t0) / (double)steps * 1e9;
  if (p == NULL) puts(""); /* keeps the chase */
  free(order);
  return ns;
}

static double chase_ns(size_t bytes) {
  const size_t lines = bytes / 64;
  char* buf = huge_buffer(bytes);
  size_t* offsets = must_alloc(64, lines * sizeof *offsets);
  for (size_t i = 0; i < lines; ++i) offsets[i] = i * 64;
  long steps = (long)lines * 8;
  if (steps < 4000000) steps = 4000000;
  if (steps > 20000000) steps = 20000000;
  const double ns = chase_through(buf, offsets, lines, steps);
  free(offsets);
  free(buf);
  return ns;
}

/* ---- 3. address translation ---------------------------------------------------------------
 * A chase through n lines, each in its own 4 KiB page of a buffer on 2 MiB pages, the pages
 * `stride` bytes apart (the line within each page varies, so the lines spread over the cache's
 * sets), against the same n lines packed side by side: at most 1 MiB of lines, so both stay
 * in L2 and what separates them is finding each line's translation. With 2 MiB translations n
 * pages 4 KiB apart would need n / 512 TLB entries; a step where n passes the TLB's 4 KiB
 * entries (64 in the first level) shows translations kept at 4 KiB. Pages `stride` apart over
 * a large span show what a page walk costs as the table grows. */
enum { kPageBytes = 4096 };

static double pages_chase_ns(char* buf, size_t n, size_t stride) {
  size_t* offsets = must_alloc(64, n * sizeof *offsets);
  for (size_t i = 0; i < n; ++i) offsets[i] = i * stride + (i * 37 % 64) * 64;
  const double ns = chase_through(buf, offsets, n, 4000000);
  free(offsets);
  return ns;
}

static double packed_chase_ns(char* buf, size_t n) {
  size_t* offsets = must_alloc(64, n * sizeof *offsets);
  for (size_t i = 0; i < n; ++i) offsets[i] = i * 64;
  const double ns = chase_through(buf, offsets, n, 4000000);
  free(offsets);
  return ns;
}

/* ---- 2. the arithmetic on rows from memory ------------------------------------------------ */

/* The row's lines, into L1: its first byte, +64, ... and its last byte. */
static inline __attribute__((always_inline)) void prefetch_row(const uint8_t* row,
                                                               const int64_t row_bytes) {
#pragma GCC unroll 8
  for (int64_t b = 0; b < row_bytes - 1; b += 64) __builtin_prefetch(row + b, 0, 3);
  __builtin_prefetch(row + row_bytes - 1, 0, 3);
}

/* One byte of each of the row's lines. */
static inline __attribute__((always_inline)) long touch_row(const uint8_t* row,
                                                            const int64_t row_bytes) {
  long sum = row[row_bytes - 1];
#pragma GCC unroll 8
  for (int64_t b = 0; b < row_bytes - 1; b += 64) sum += row[b];
  return sum;
}

/* A row's arithmetic, as FBGEMM's kernel and ours do it: acc += scale * codes, per 16 codes
 * widen, convert, FMA (once with AVX-512, twice with AVX2), and the bias summed as a scalar,
 * added once per bag. */
static inline __attribute__((always_inline)) void row_arithmetic(const uint8_t* row,
                                                                 const int vectors, Acc* acc,
                                                                 float* bias) {
  float scale_bias[2];
  memcpy(scale_bias, row + 16 * vectors, sizeof scale_bias);
  *bias += scale_bias[1];
#pragma GCC unroll 16
  for (int k = 0; k < vectors; ++k) acc_codes16(acc + k * kAccPer16, row + 16 * k, scale_bias[0]);
}

typedef enum { kTouch, kTouchNops, kTouchHot, kLookup, kVariants } Variant;
static const char* const kVariantNames[kVariants] = {"touch", "touch+nops", "touch+hot",
                                                     "lookup"};

/* One batch of kBatch bags of kPool ids from `table` (rows of `vectors` 16-code vectors, then
 * scale and bias); `hot` holds 4 rows of the same layout that stay in L1. Returns a checksum,
 * so that nothing is optimised away. Called with `vectors` a constant (run_batch), so the
 * loops unroll and the accumulators live in registers, as in a real kernel. */
static inline __attribute__((always_inline)) double batch(const uint8_t* table,
                                                          const int64_t* ids, const Variant v,
                                                          const uint8_t* hot, float* out,
                                                          const int vectors) {
  const int64_t row_bytes = 16 * vectors + 8;
  long sum = 0;
  float bias = 0.0f;
  Acc acc[kMaxDim / 16 * kAccPer16];
  for (int bag = 0; bag < kBatch; ++bag) {
#pragma GCC unroll 32
    for (int k = 0; k < vectors * kAccPer16; ++k) acc[k] = (Acc){0};
    for (int j = 0; j < kPool; ++j) {
      const int64_t i = (int64_t)bag * kPool + j;
      prefetch_row(table + ids[i + kAhead] * row_bytes, row_bytes);
      const uint8_t* row = table + ids[i] * row_bytes;
      if (v == kLookup) {
        row_arithmetic(row, vectors, acc, &bias);
      } else {
        sum += touch_row(row, row_bytes);
        if (v == kTouchHot) row_arithmetic(hot + (j & 3) * row_bytes, vectors, acc, &bias);
        /* As many instructions as the arithmetic's vector part, each a NOP: decoded,
         * allocated and retired, never executed (6-byte NOPs: the decoded-uop cache holds
         * them, as it holds the arithmetic). */
        if (v == kTouchNops) {
          __asm__ volatile(".rept %c0\n nopw 0(%%rax,%%rax,1)\n .endr"
                           ::"i"(3 * kAccPer16 * vectors));
        }
      }
    }
#pragma GCC unroll 32
    for (int k = 0; k < vectors * kAccPer16; ++k) {
      store_acc(out + (bag * vectors * kAccPer16 + k) * kLanes, acc[k], bias);
    }
    bias = 0.0f;
  }
  return (double)sum + out[1];
}

#define VARIANT_CASE(n)                                                    \
  case n:                                                                  \
    return v == kLookup      ? batch(table, ids, kLookup, hot, out, n)     \
           : v == kTouchHot  ? batch(table, ids, kTouchHot, hot, out, n)   \
           : v == kTouchNops ? batch(table, ids, kTouchNops, hot, out, n)  \
                             : batch(table, ids, kTouch, hot, out, n);

static double run_batch(const uint8_t* table, int vectors, const int64_t* ids, Variant v,
                        const uint8_t* hot, float* out) {
  switch (vectors) {
    VARIANT_CASE(1) VARIANT_CASE(2) VARIANT_CASE(3) VARIANT_CASE(4) VARIANT_CASE(5)
    VARIANT_CASE(6) VARIANT_CASE(7) VARIANT_CASE(8) VARIANT_CASE(9) VARIANT_CASE(10)
    VARIANT_CASE(11) VARIANT_CASE(12) VARIANT_CASE(13) VARIANT_CASE(14) VARIANT_CASE(15)
    VARIANT_CASE(16)
    default: return 0;
  }
}

/* `rows` rows of `dim` random int8 codes, each with a finite scale and bias after them. */
static uint8_t* int8_table(int64_t rows, int dim, uint64_t* state) {
  const int64_t row_bytes = dim + 8;
  uint8_t* table = (uint8_t*)huge_buffer((size_t)(rows * row_bytes));
  for (int64_t b = 0; b + 8 <= rows * row_bytes; b += 8) {
    const uint64_t word = next_random(state);
    memcpy(table + b, &word, 8);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float scale_bias[2] = {1.0f / (float)(1 + r % 7), (float)(r % 5)};
    memcpy(table + r * row_bytes + dim, scale_bias, sizeof scale_bias);
  }
  return table;
}

/* ns per id of each variant on a table of `rows` rows of `dim` int8 codes. */
static void arithmetic_cost(int64_t rows, int dim, int samples, double* ns) {
  uint64_t state = 88172645463325252ull;
  uint8_t* table = int8_table(rows, dim, &state);
  uint8_t* hot = int8_table(4, dim, &state);
  const int64_t per_set = kIds + kAhead;
  int64_t* ids = must_alloc(64, (size_t)(per_set * samples * kVariants) * sizeof *ids);
  float* out = must_alloc(64, (size_t)kBatch * kMaxDim * sizeof(float));
  for (int64_t i = 0; i < per_set * samples * kVariants; ++i) {
    ids[i] = (int64_t)(next_random(&state) % (uint64_t)rows);
  }
  double* times[kVariants];
  for (int v = 0; v < kVariants; ++v) times[v] = must_alloc(64, (size_t)samples * sizeof(double));
  double check = 0;
  const int64_t* next = ids;
  for (int s = 0; s < samples; ++s) {
    for (int k = 0; k < kVariants; ++k) {
      const Variant v = (Variant)((k + s) % kVariants); /* rotate who goes first */
      const double t0 = now();
      check += run_batch(table, dim / 16, next, v, hot, out);
      times[v][s] = (now() - t0) / kIds * 1e9;
      next += per_set; /* every sample on ids no earlier sample looked up */
    }
  }
  for (int v = 0; v < kVariants; ++v) {
    ns[v] = median(times[v], samples);
    free(times[v]);
  }
  if (check == 1.2345) puts("");
  free(ids);
  free(out);
  free(hot);
  free(table);
}

/* The CPU's model name from /proc/cpuinfo, for the JSON ("unknown" where there is none). */
static void cpu_model(char* name, size_t size) {
  snprintf(name, size, "unknown");
  FILE* f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    const char* colon = strchr(line, ':');
    if (!strncmp(line, "model name", 10) && colon) {
      snprintf(name, size, "%s", colon + 2);
      name[strcspn(name, "\n\"\\")] = '\0'; /* one line, nothing to escape */
      break;
    }
  }
  fclose(f);
}

/* ---- report -------------------------------------------------------------------------------- */

int main(int argc, char** argv) {
  if (!cpu_has_isa()) {
    fprintf(stderr, "memory_probes: built for %s, which this CPU lacks: rebuild it here with "
            "-march=native\n", kIsa);
    return 2;
  }
  int quick = 0, dims[8] = {128, 64, 16}, n_dims = 3;
  const char* json = NULL;
  for (int a = 1; a < argc; ++a) {
    if (!strcmp(argv[a], "--quick")) {
      quick = 1;
    } else if (!strcmp(argv[a], "--json") && a + 1 < argc) {
      json = argv[++a];
    } else if (!strcmp(argv[a], "--dims")) {
      n_dims = 0;
      while (a + 1 < argc && argv[a + 1][0] != '-' && n_dims < 8) {
        const int d = atoi(argv[++a]);
        if (d < 16 || d > kMaxDim || d % 16) {
          fprintf(stderr, "memory_probes: --dims takes multiples of 16 in [16, %d], got %s\n",
                  kMaxDim, argv[a]);
          return 2;
        }
        dims[n_dims++] = d;
      }
      if (!n_dims) {
        fprintf(stderr, "memory_probes: --dims needs at least one width\n");
        return 2;
      }
    } else {
      fprintf(stderr, "usage: %s [--quick] [--dims D ...] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  const size_t kib[] = {32, 256, 1024, 2048, 4096, 8192, 16384, 65536, 262144, 1048576};
  const int n_sizes = quick ? 6 : 10;
  double latency[10];
  printf("load latency (pointer chase, 64-byte lines, random cycle, huge pages)\n");
  printf("%12s %10s\n", "working set", "ns/load");
  for (int i = 0; i < n_sizes; ++i) {
    latency[i] = chase_ns(kib[i] << 10);
    printf("%9zu KiB %10.1f\n", kib[i], latency[i]);
    fflush(stdout);
  }
  const int64_t table_rows[] = {1000, 100000, 10000000};
  const int n_tables = quick ? 2 : 3, samples = quick ? 6 : 100;
  double cost[8][3][kVariants];
  printf("\nint8 rows, batch %d x pooling %d, 1 thread, %s arithmetic, ns per id (median of %d "
         "samples)\n", kBatch, kPool, kIsa, samples);
  printf("%5s %9s %8s %11s %10s %8s %15s\n", "dim", "rows", "touch", "touch+nops", "touch+hot",
         "lookup", "lookup - touch");
  for (int d = 0; d < n_dims; ++d) {
    for (int i = 0; i < n_tables; ++i) {
      arithmetic_cost(table_rows[i], dims[d], samples, cost[d][i]);
      printf("%5d %9lld %8.2f %11.2f %10.2f %8.2f %15.2f\n", dims[d], (long long)table_rows[i],
             cost[d][i][kTouch], cost[d][i][kTouchNops], cost[d][i][kTouchHot],
             cost[d][i][kLookup], cost[d][i][kLookup] - cost[d][i][kTouch]);
      fflush(stdout);
    }
  }
  /* 3. translation: one line per 4 KiB page against the same lines packed, then 4096 pages
   * spread over growing spans. */
  const size_t page_counts[] = {32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
  const size_t spans_mib[] = {16, 64, 256, 1024};
  const int n_counts = 10, n_spans = quick ? 2 : 4;
  double per_page[10], packed[10], spread[4];
  char* pages = huge_buffer(spans_mib[n_spans - 1] << 20);
  memset(pages, 1, spans_mib[n_spans - 1] << 20); /* faulted in before any chase */
  printf("\naddress translation (pointer chase, L2-resident lines, huge pages), ns/load\n");
  printf("%7s %16s %8s\n", "lines", "one per 4K page", "packed");
  for (int i = 0; i < n_counts; ++i) {
    per_page[i] = pages_chase_ns(pages, page_counts[i], kPageBytes);
    packed[i] = packed_chase_ns(pages, page_counts[i]);
    printf("%7zu %16.1f %8.1f\n", page_counts[i], per_page[i], packed[i]);
    fflush(stdout);
  }
  printf("4096 lines, one per 4K page, spread over:");
  for (int i = 0; i < n_spans; ++i) {
    spread[i] = pages_chase_ns(pages, 4096, (spans_mib[i] << 20) / 4096);
    printf(" %zu MiB %.1f", spans_mib[i], spread[i]);
    fflush(stdout);
  }
  printf("\n");
  free(pages);
  if (json) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", json);
    FILE* f = fopen(tmp, "w");
    if (!f) {
      fprintf(stderr, "memory_probes: cannot write %s\n", tmp);
      return 1;
    }
    char cpu[256], date[32];
    const time_t t = time(NULL);
    cpu_model(cpu, sizeof cpu);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    fprintf(f, "{\n  \"cpu\": \"%s\", \"date\": \"%s\", \"isa\": \"%s\",\n", cpu, date, kIsa);
    fprintf(f, "  \"load_latency_ns\": {");
    for (int i = 0; i < n_sizes; ++i) {
      fprintf(f, "%s\"%zu KiB\": %.1f", i ? ", " : "", kib[i], latency[i]);
    }
    fprintf(f, "},\n  \"batch\": %d, \"pooling\": %d, \"prefetch_ahead\": %d,\n", kBatch, kPool,
            kAhead);
    fprintf(f, "  \"int8_ns_per_id\": [");
    for (int d = 0; d < n_dims; ++d) {
      for (int i = 0; i < n_tables; ++i) {
        fprintf(f, "%s\n    {\"dim\": %d, \"rows\": %lld", d || i ? "," : "", dims[d],
                (long long)table_rows[i]);
        for (int v = 0; v < kVariants; ++v) {
          fprintf(f, ", \"%s\": %.2f", kVariantNames[v], cost[d][i][v]);
        }
        fprintf(f, "}");
      }
    }
    fprintf(f, "\n  ],\n  \"translation_ns\": {\"one_line_per_4k_page\": {");
    for (int i = 0; i < n_counts; ++i) {
      fprintf(f, "%s\"%zu\": %.1f", i ? ", " : "", page_counts[i], per_page[i]);
    }
    fprintf(f, "},\n    \"packed\": {");
    for (int i = 0; i < n_counts; ++i) {
      fprintf(f, "%s\"%zu\": %.1f", i ? ", " : "", page_counts[i], packed[i]);
    }
    fprintf(f, "},\n    \"4096_pages_over\": {");
    for (int i = 0; i < n_spans; ++i) {
      fprintf(f, "%s\"%zu MiB\": %.1f", i ? ", " : "", spans_mib[i], spread[i]);
    }
    fprintf(f, "}}\n}\n");
    if (fclose(f) != 0 || rename(tmp, json) != 0) {
      fprintf(stderr, "memory_probes: cannot write %s\n", json);
      return 1;
    }
  }
  return 0;
}
