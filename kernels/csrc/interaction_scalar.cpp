// Dot interaction kernels (interaction.h), portable build: the fallback path, and the loops
// that interaction_avx2.cpp compiles for AVX2.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "interaction.h"

#define RK_NAME(base) base##_scalar

#include "interaction_simd.inc"
