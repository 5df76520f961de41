// Dot interaction kernels (interaction.h), portable build (the fallback path and the reference the SIMD paths are tested against).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "interaction.h"

#define RK_NAME(base) base##_scalar

#include "interaction_simd.inc"
