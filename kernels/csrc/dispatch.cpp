// Kernel path selection: the best path CPUID reports, lowered (never raised) by the environment
// variable RECSYS_KERNELS_ISA or by set_isa, so a forced path cannot run unsupported instructions.
#include "dispatch.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

namespace recsys_kernels {
namespace {

Isa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
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

Isa clamp(Isa wanted) {
  const Isa best = detect_isa();
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> isa([] {
    const char* env = std::getenv("RECSYS_KERNELS_ISA");
    Isa isa = detect_isa();
    if (env != nullptr && env[0] != '\0' && std::strcmp(env, "auto") != 0) {
      isa = clamp(parse_isa(env));
    }
    return static_cast<int>(isa);
  }());
  return isa;
}

std::atomic<bool> g_checks{true};
// Rows ahead for calls below the far size: 24 since 2026-11-30 (seventh session), 16 before
// (docs/kernels.md, "Memory": ours / FBGEMM int8 on 100k-row tables up 0-20 %, most on Zipf ids).
std::atomic<int> g_prefetch{24};
std::atomic<int> g_far_prefetch{64};
// Rows by which a row's first line is prefetched before its others (0: all at once), near and
// far plans (2026-12-01, eleventh session; docs/kernels.md, "Prefetch lead").
std::atomic<int> g_near_lead{4};
std::atomic<int> g_far_lead{16};

// Half the last-level cache as the OS reports it (32 MiB when it reports none).
int64_t default_far_bytes() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? static_cast<int64_t>(l3) / 2 : int64_t{32} << 20;
}
std::atomic<int64_t> g_far_bytes{default_far_bytes()};

// Twice the L2 as the OS reports it (4 MiB when it reports none): calls from this size up to
// the far size take the mid plan (2026-12-01, thirteenth session; before, the far plan from
// here on one thread only). On this VM rows of tables beyond a few MB come from DRAM (the memory
// probes: 46 ns at 4 MiB, 150 at 8), not from the 300 MB L3 sysconf reports (docs/kernels.md,
// "Mid plan").
int64_t default_mid_bytes() {
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return l2 > 0 ? int64_t{2} * l2 : int64_t{4} << 20;
}
std::atomic<int64_t> g_mid_bytes{default_mid_bytes()};
// Rows ahead of the mid plan's L1 prefetch (8 read best of 4, 8, 12 and 16).
std::atomic<int> g_mid_near{8};
// Each run prefetches the next run's ids (2026-12-01, sixteenth session; docs/kernels.md,
// "Ids ahead").
std::atomic<bool> g_prefetch_ids{true};
// Calls beyond the far size pool rows wider than the ISA's kFarVectors in column blocks
// (2026-12-01, nineteenth session; docs/kernels.md, "Two passes under the far plan").
std::atomic<bool> g_far_split{true};
// Beyond the far size, runs of up to this many ids per bag on average take the mid plan's L1
// half on rows of any width (2026-12-02, twenty-first session; one-id bags only since the
// twentieth; docs/kernels.md, "Small bags take the L1 half").
std::atomic<int> g_far_near_bags{3};

}  // namespace

Isa active_isa() { return static_cast<Isa>(isa_slot().load()); }

std::string set_isa(const std::string& name) {
  const Isa isa = name == "auto" ? detect_isa() : clamp(parse_isa(name));
  isa_slot().store(static_cast<int>(isa));
  return isa_name(isa);
}

std::string current_isa() { return isa_name(active_isa()); }
std::string best_isa() { return isa_name(detect_isa()); }
bool set_index_checks(bool enabled) { return g_checks.exchange(enabled); }
int64_t set_prefetch_distance(int64_t rows) {
  TORCH_CHECK(rows >= 0 && rows <= 256, "recsys_kernels: prefetch distance must be in [0, 256]");
  return g_prefetch.exchange(static_cast<int>(rows));
}

std::vector<int64_t> set_prefetch_lead(int64_t near, int64_t far) {
  TORCH_CHECK(near >= 0 && near <= 256 && far >= 0 && far <= 256,
              "recsys_kernels: prefetch leads must be in [0, 256], got ", near, " and ", far);
  return {g_near_lead.exchange(static_cast<int>(near)),
          g_far_lead.exchange(static_cast<int>(far))};
}

PrefetchPlan prefetch_plan(int64_t table_bytes) {
  const bool far = table_bytes >= g_far_bytes.load();
  if (!far && table_bytes < g_mid_bytes.load()) {
    const int distance = g_prefetch.load(), lead = g_near_lead.load();
    return {distance, lead < distance ? lead : 0, false, 0, false, 0, g_prefetch_ids.load(),
            false};
  }
  const int distance = g_far_prefetch.load(), lead = g_far_lead.load();
  // The L1 half's distance as set: the kernels drop it where it is not below the distance they
  // prefetch at (rows_of), the one place that guards the ids it reads ahead.
  return {distance, lead < distance ? lead : 0, true, g_mid_near.load(), far,
          g_far_near_bags.load(), g_prefetch_ids.load(), far && g_far_split.load()};
}

std::vector<int64_t> set_far_prefetch(int64_t distance, int64_t min_table_bytes) {
  TORCH_CHECK(distance >= 0 && distance <= 256 && min_table_bytes >= 0,
              "recsys_kernels: far prefetch takes a distance in [0, 256] and min_table_bytes >= "
              "0, got ", distance, " and ", min_table_bytes);
  return {g_far_prefetch.exchange(static_cast<int>(distance)),
          g_far_bytes.exchange(min_table_bytes)};
}

bool set_prefetch_ids(bool enabled) { return g_prefetch_ids.exchange(enabled); }
bool set_far_split(bool enabled) { return g_far_split.exchange(enabled); }
int64_t set_far_near_bags(int64_t ids) {
  TORCH_CHECK(ids >= 0 && ids <= 1024,
              "recsys_kernels: set_far_near_bags takes ids per bag in [0, 1024], got ", ids);
  return g_far_near_bags.exchange(static_cast<int>(ids));
}

std::vector<int64_t> set_mid_prefetch(int64_t min_table_bytes, int64_t near) {
  TORCH_CHECK(min_table_bytes >= 0 && near >= 0 && near <= 256,
              "recsys_kernels: set_mid_prefetch takes min_table_bytes >= 0 and a near distance in "
              "[0, 256], got ", min_table_bytes, " and ", near);
  return {g_mid_bytes.exchange(min_table_bytes), g_mid_near.exchange(static_cast<int>(near))};
}

template <typename Index>
Kernel<Index> pick_kernel() {
  const bool checks = g_checks.load();
  switch (active_isa()) {
    case Isa::kAvx512: return checks ? bags_avx512<Index> : bags_unchecked_avx512<Index>;
    case Isa::kAvx2: return checks ? bags_avx2<Index> : bags_unchecked_avx2<Index>;
    default: return bags_scalar<Index>;
  }
}

DotKernels pick_dot_kernels() {
  switch (active_isa()) {
    case Isa::kAvx512: return {dot_pairs_forward_avx512, dot_pairs_backward_avx512};
    case Isa::kAvx2: return {dot_pairs_forward_avx2, dot_pairs_backward_avx2};
    default: return {dot_pairs_forward_scalar, dot_pairs_backward_scalar};
  }
}

ReluGradKernels pick_relu_grad_kernels() {
  return active_isa() == Isa::kAvx512 ? relu_grad_kernels_avx512() : relu_grad_kernels_scalar();
}

BiasActKernel pick_bias_act_kernel() {
  return active_isa() == Isa::kAvx512 ? bias_act_kernel_avx512() : bias_act_kernel_scalar();
}

HeadKernels pick_head_kernels() {
  return active_isa() == Isa::kAvx512 ? head_kernels_avx512() : head_kernels_scalar();
}

template Kernel<int32_t> pick_kernel<int32_t>();
template Kernel<int64_t> pick_kernel<int64_t>();

}  // namespace recsys_kernels
