// DLRM's pairwise dot-product interaction on CPU, forward and backward, fused.
//
// Sample b holds n = F + 1 vectors of `dim` floats: t_0 = its dense row (the bottom MLP's
// output), t_f = its f-th pooled embedding (f = 1..F, rows of the sparse input). The pairs are
// (i, j) with i < j (i <= j with self terms), row-major: the upper triangle of the Gram matrix in
// torchrec's InteractionArch order. Output row b = [t_0, dot(t_i, t_j) for each pair].
//
// Why our own: in PyTorch the layer is a cat, a batched GEMM of [n, dim] x [dim, n] per sample
// (tiny GEMMs run far below peak), an index_select of the pairs and another cat, and the
// backward a gather of the pair gradients into a symmetric matrix plus one more batched GEMM:
// ~6-10 ms per Criteo-shaped step at batch 2048 on 2 cores, most of it moving [B, n * n]
// intermediates through memory. Here each sample's vectors stay in L1 and only the inputs and
// outputs are touched.
#pragma once

#include <cstdint>

namespace recsys_kernels {

struct DotPairs {
  const float* dense;     // [B, dim] rows, dense_stride floats apart
  int64_t dense_stride;
  const float* sparse;    // [B, F * dim] rows (F vectors of dim floats each), sparse_stride apart
  int64_t sparse_stride;
  int64_t n;              // F + 1
  int64_t dim;
  bool self_terms;        // include dot(t_i, t_i)
};

inline int64_t num_pairs(int64_t n, bool self_terms) {
  return self_terms ? n * (n + 1) / 2 : n * (n - 1) / 2;
}

// Output rows [dim + P], `stride` elements apart: fp32 into f32, or (when bf16 is set) rounded
// to bfloat16 (nearest even, as PyTorch's .to(torch.bfloat16)) into bf16.
struct DotOut {
  float* f32;
  uint16_t* bf16;
  int64_t stride;
};

// Forward for samples [b0, b1): out row b = [t_0, pairs].
void dot_pairs_forward_scalar(const DotPairs& a, const DotOut& out, int64_t b0, int64_t b1);
void dot_pairs_forward_avx2(const DotPairs& a, const DotOut& out, int64_t b0, int64_t b1);
void dot_pairs_forward_avx512(const DotPairs& a, const DotOut& out, int64_t b0, int64_t b1);

// Backward for samples [b0, b1): given the output's gradient rows [dim + P], writes
// d_dense = grad[:dim] + dL/dt_0 and the sparse rows' gradient dL/dt_1 .. dL/dt_F. The gradient
// rows are fp32 (grad) or bfloat16 (grad_bf16, when set).
struct DotPairsGrad {
  const float* grad;
  const uint16_t* grad_bf16;
  int64_t grad_stride;
  float* d_dense;
  int64_t d_dense_stride;
  float* d_sparse;
  int64_t d_sparse_stride;
};
void dot_pairs_backward_scalar(const DotPairs& a, const DotPairsGrad& g, int64_t b0, int64_t b1);
void dot_pairs_backward_avx2(const DotPairs& a, const DotPairsGrad& g, int64_t b0, int64_t b1);
void dot_pairs_backward_avx512(const DotPairs& a, const DotPairsGrad& g, int64_t b0, int64_t b1);

}  // namespace recsys_kernels
