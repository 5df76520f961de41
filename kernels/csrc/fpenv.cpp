// Flush-to-zero and denormals-are-zero for every thread of torch's pool, not only the caller.
//
// x86 CPUs run arithmetic on subnormal floats (|x| < 1.2e-38) through a microcode assist that
// costs ~100 cycles per operation. Training produces such values: Adam's first moment of a
// weight whose gradient stays zero decays by 0.9 a step and is subnormal after ~850 steps, and
// gradients of a model that fits its data shrink into that range; MKL's GEMMs and the fused
// optimizer kernels then run several times slower. `torch.set_flush_denormal` sets the two
// MXCSR bits on the calling thread; an OpenMP worker keeps the MXCSR it copied from its
// creator when the pool started, so the products it runs may or may not flush.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RECSYS_HAS_MXCSR 1
#endif

namespace recsys_kernels {
namespace {

bool set_this_thread(bool on) {
#ifdef RECSYS_HAS_MXCSR
  constexpr unsigned kFlushToZero = 1u << 15, kDenormalsAreZero = 1u << 6;
  constexpr unsigned bits = kFlushToZero | kDenormalsAreZero;
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(on ? (csr | bits) : (csr & ~bits));
  return true;
#else
  (void)on;
  return false;
#endif
}

}  // namespace

// Sets (or clears) FTZ + DAZ on the calling thread and on each thread of torch's intra-op pool;
// returns how many threads ran the setting (0 where the CPU has no MXCSR: nothing changed).
int64_t set_flush_denormal(bool on) {
  if (!set_this_thread(on)) return 0;
  std::atomic<int64_t> threads{0};
  // One index per thread and a grain of 1: the OpenMP team runs the body once on each thread.
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      set_this_thread(on);
      threads.fetch_add(1, std::memory_order_relaxed);
    }
  });
  return threads.load();
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("set_flush_denormal(bool on) -> int", recsys_kernels::set_flush_denormal);
}
