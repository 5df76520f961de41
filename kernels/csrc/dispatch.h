// Runtime choice of the kernel path (CPUID, RECSYS_KERNELS_ISA, set_isa) and the tunables the
// operators share: prefetch distance, index checks, work split over threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "embedding_bag.h"
#include "interaction.h"
#include "mlp.h"

namespace recsys_kernels {

template <typename Index>
using Kernel = int64_t (*)(const Bags<Index>&);

// The kernel of the active path (unchecked only while index checks are switched off, and only
// on the SIMD paths: the scalar reference always checks).
template <typename Index>
Kernel<Index> pick_kernel();

// The dot-interaction kernels of the active path.
struct DotKernels {
  void (*forward)(const DotPairs&, const DotOut&, int64_t, int64_t);
  void (*backward)(const DotPairs&, const DotPairsGrad&, int64_t, int64_t);
};
DotKernels pick_dot_kernels();

// The MLP bias + ReLU backward kernels of the active path (AVX-512, else portable).
ReluGradKernels pick_relu_grad_kernels();

// The MLP width-1 last-layer kernels and the fp32 bias + ReLU pass of the active path
// (AVX-512, else portable).
HeadKernels pick_head_kernels();
BiasActKernel pick_bias_act_kernel();

Isa active_isa();
std::string set_isa(const std::string& name);
std::string current_isa();
std::string best_isa();
bool set_index_checks(bool enabled);
int64_t set_prefetch_distance(int64_t rows);
// Sets the leads of the near and the far plan (each 0..256); returns the previous pair.
std::vector<int64_t> set_prefetch_lead(int64_t near, int64_t far);

// How a lookup prefetches its tables' rows: `distance` ids ahead, into L1, or, when the call's
// tables add up to at least the far size (default: half the last-level cache, so most of their
// rows come from DRAM), the far distance ahead into L2. An L1 prefetch that misses to DRAM holds
// one of the core's few L1 fill buffers for the whole DRAM latency; an L2 prefetch queues in the
// L2's larger miss queue, so more rows are in flight. Measured (docs/kernels.md, "Memory: huge
// pages and prefetch"): +10-20 % on 10M-row tables at pooling 20 and 100, mixed on cache-resident
// ones.
// `lead` (rows, < distance, else 0): rows of 3 or more lines have their first line prefetched
// `distance` ahead and their other lines `distance - lead` ahead (4 near, 16 far by default):
// measured in the full benchmark, same process, +4 % on 10M x 128 int8 rows, +2 % on 100k x 128
// (docs/kernels.md, "Prefetch lead").
struct PrefetchPlan {
  int distance;
  int lead;
  bool into_l2;
  int near;  // with into_l2: rows ahead whose lines are also prefetched into L1 (0: none)
  bool near_wide_only;  // beyond the far size: the L1 half only for rows of 3 or more lines, or
                        // in runs of small bags (the kernels' rows_of decides per run)
  int near_bag_ids;     // ... small bags: at most this many ids per bag on average over the run
                        // (set_far_near_bags; 0: no run)
  bool ids;             // each run prefetches the ids of the next into L2 (set_prefetch_ids)
  bool split_wide;      // beyond the far size: rows wider than the ISA's kFarVectors are pooled
                        // in column blocks (set_far_split)
};
// The plan of a call whose tables add up to `table_bytes`: far (into L2) from the far size on;
// the mid plan, far plus each row's lines into L1 `near` rows ahead, from the mid size (default
// twice the L2) up to the far size; near below. Measured (docs/kernels.md, "Mid plan"): on 7-136
// MB tables the mid plan ran up to 1.18x as fast as the far plan alone at 1 thread and up to
// 1.34x the near plan at 2 threads. Beyond the far size the L1 half stays on rows of 3 or more
// lines (near_wide_only): on 1.4 GB tables it lost on 16- and 64-wide int8 rows in bags of 20 and
// 100 ids and gained 2-8 % on 128-wide ones (docs/kernels.md, "Mid plan"); and on runs of small
// bags (up to near_bag_ids ids per bag on average, default 3), rows of any width: one-id bags
// +3-40 % on 10M-row tables of rows of 1-2 lines, 12-byte int4 rows even ("One-id bags take the
// L1 half"); bags of 2-3 ids -4 to +20 %, mostly gains, bags of 5 and 10 ids mostly losses
// ("Small bags take the L1 half").
PrefetchPlan prefetch_plan(int64_t table_bytes);
// Sets the far prefetch (distance 0..256, min_table_bytes >= 0); returns the previous pair.
std::vector<int64_t> set_far_prefetch(int64_t distance, int64_t min_table_bytes);
// Sets the mid plan (min_table_bytes >= 0, near distance 0..256; 0: no L1 half, the far plan
// alone from that size on); returns the previous pair.
std::vector<int64_t> set_mid_prefetch(int64_t min_table_bytes, int64_t near);
// Switches the prefetch of the next run's ids (on by default); returns the previous setting.
bool set_prefetch_ids(bool enabled);
// Switches the column blocks of wide rows beyond the far size (on by default; on AVX2 int8 rows
// of 97-128 columns go in two passes, docs/kernels.md, "Two passes under the far plan");
// returns the previous setting.
bool set_far_split(bool enabled);
// Sets the most ids per bag (on average over a run) for which runs beyond the far size take the
// L1 half on rows of fewer than 3 lines (0..1024; 0: none, 1: one-id bags); returns the previous.
int64_t set_far_near_bags(int64_t ids);

// Bags per task of at::parallel_for: about 1024 ids per task, so small batches stay on one
// thread (waking a second costs more than it saves) and large ones split evenly. A call with
// fewer tasks than threads is split so every thread gets a task when it still moves >= 64 KiB
// (row reads plus output writes: one-id bags of wide rows; measured at batch 512, one id per
// bag, 2 threads, int8 10M x 128: 0.65-0.77 -> 1.14-1.17x FBGEMM's op), or when its rows come
// from DRAM (`far`: the plan prefetches into L2, the mid or the far plan) and every thread gets
// >= 256 ids: there each id costs a DRAM latency, tens of ns, not the few ns of a cached row
// (batch 512, one id per bag, 2 threads, 10M x 16 int8, 45 KB: 1.12-1.14x the one-thread call;
// at 64 and 128 ids a split lost 11-14 %, at 256 it was even; docs/kernels.md, Dispatch).
// A call split over the threads gets a task count that is a multiple of them, in runs of equal
// bags: at::parallel_for gives each thread ceil(tasks / threads) consecutive tasks, so 3 tasks
// on 2 threads left one thread 2/3 of the work, and a short last run more (batch 512 in bags of 5
// ids: runs of 205, 205 and 102 bags, 410 bags on one thread; docs/kernels.md, "Balanced runs").
// `bytes()` gives the call's bytes; it is asked only for a call with fewer tasks than threads.
template <typename Bytes>
int64_t bag_grain(int64_t n_idx, int64_t n_bags, int64_t batch, int64_t n_tables, int threads,
                  bool far, const Bytes& bytes) {
  const int64_t avg = n_bags > 0 ? n_idx / n_bags : 1;
  const int64_t grain = std::min(batch, avg > 0 ? (1024 + avg - 1) / avg : int64_t{1024});
  if (threads <= 1 || grain <= 0) return std::max<int64_t>(grain, 1);
  int64_t runs = (batch + grain - 1) / grain;  // per table
  if (n_tables * runs < threads) {
    if (!((far && n_idx >= int64_t{256} * threads) || bytes() >= (int64_t{64} << 10))) return grain;
    runs = (threads + n_tables - 1) / n_tables;
  }
  // The fewest runs per table, from `runs` on, that make n_tables * runs a multiple of threads.
  const int64_t step = threads / std::gcd(n_tables, static_cast<int64_t>(threads));
  runs = (runs + step - 1) / step * step;
  return std::max<int64_t>(1, (batch + runs - 1) / runs);
}

}  // namespace recsys_kernels
