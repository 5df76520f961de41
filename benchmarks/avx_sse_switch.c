/* What a switch between 256-bit AVX and legacy (non-VEX) SSE instructions costs on this machine.
 *
 * fbgemm 1.8's JIT row-wise Adagrad kernel does this on every embedding row (a ymm multiply,
 * then movss/addss/divss/sqrtss); docs/benchmarks.md quotes what it cost here. Three loops of
 * the same work: AVX then legacy SSE (dirty upper state: the switch), AVX then VEX-encoded scalar
 * ops (no switch), AVX + vzeroupper then legacy SSE (no switch).
 *
 *     cc -O2 benchmarks/avx_sse_switch.c -o /tmp/avx_sse_switch && /tmp/avx_sse_switch
 */
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  float row[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float m = 1.0f;
  const long n = 2000000;
  const char* names[3] = {"ymm op, then legacy SSE scalar ops", "ymm op, then VEX scalar ops",
                          "ymm op, vzeroupper, then legacy SSE"};
  for (int mode = 0; mode < 3; ++mode) {
    double t = now();
    for (long i = 0; i < n; ++i) {
      if (mode == 0) {
        __asm__ volatile(
            "vmovups (%0), %%ymm1\n vmulps %%ymm1, %%ymm1, %%ymm1\n"
            "movss (%1), %%xmm2\n addss %%xmm2, %%xmm2\n sqrtss %%xmm2, %%xmm2\n"
            "movss %%xmm2, (%1)\n" ::"r"(row), "r"(&m) : "xmm1", "xmm2", "memory");
      } else if (mode == 1) {
        __asm__ volatile(
            "vmovups (%0), %%ymm1\n vmulps %%ymm1, %%ymm1, %%ymm1\n"
            "vmovss (%1), %%xmm2\n vaddss %%xmm2, %%xmm2, %%xmm2\n"
            "vsqrtss %%xmm2, %%xmm2, %%xmm2\n vmovss %%xmm2, (%1)\n" ::"r"(row), "r"(&m)
            : "xmm1", "xmm2", "memory");
      } else {
        __asm__ volatile(
            "vmovups (%0), %%ymm1\n vmulps %%ymm1, %%ymm1, %%ymm1\n vzeroupper\n"
            "movss (%1), %%xmm2\n addss %%xmm2, %%xmm2\n sqrtss %%xmm2, %%xmm2\n"
            "movss %%xmm2, (%1)\n" ::"r"(row), "r"(&m) : "xmm1", "xmm2", "memory");
      }
    }
    printf("%-40s %8.1f ns per iteration\n", names[mode], (now() - t) / n * 1e9);
  }
  return 0;
}
