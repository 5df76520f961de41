// Dot interaction kernels (interaction.h) for AVX2 + FMA: the portable loops of
// interaction_simd.inc, vectorized by the compiler for this instruction set.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "interaction.h"

// Everything below is compiled for this instruction set only (the headers are included above).
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define RK_NAME(base) base##_avx2

#include "interaction_simd.inc"

#pragma GCC pop_options
