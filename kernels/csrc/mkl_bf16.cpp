// MKL's bf16 GEMM for the MLP's small-batch products (mlp_stack.cpp). At batch 128 a bf16
// at::mm or oneDNN linear spends ~30 us per call outside the product (~250 allocations of
// descriptors, attributes and scratchpads in ideep), as long as the product itself for DLRM's
// layers; MKL's gemm_bf16bf16f32 takes ~5 us of fixed cost and writes fp32 directly (the weight
// gradients' dtype). libtorch_cpu links MKL statically and exports its Fortran entry points;
// the symbol is looked up at run time so that a torch without it leaves the oneDNN path in use.
#include "mkl_bf16.h"

#include <ATen/record_function.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace recsys_kernels {
namespace {

// MKL's ILP64 Fortran interface: column-major, every argument by pointer.
using GemmBf16 = void (*)(const char* transa, const char* transb, const int64_t* m,
                          const int64_t* n, const int64_t* k, const float* alpha,
                          const uint16_t* a, const int64_t* lda, const uint16_t* b,
                          const int64_t* ldb, const float* beta, float* c, const int64_t* ldc);

GemmBf16 find_gemm() {
  void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  void* sym = lib != nullptr ? dlsym(lib, "GEMM_BF16BF16F32_64") : nullptr;
  return reinterpret_cast<GemmBf16>(sym);
}

// Default 1024: at batch 128 oneDNN's ~30 us per call outside the product outweighs its faster
// kernels (DLRM's layers: forward 0.50 -> 0.28 ms, weight gradients 0.50 -> 0.28, input
// gradients 0.43 -> 0.26); at 512 MKL is still 1.2-1.5x faster; at 2048 it is ~1.3x slower on
// the wide layers (it writes fp32, oneDNN bf16).
std::atomic<int64_t> g_max_rows{1024};

GemmBf16 gemm() {
  static const GemmBf16 fn = find_gemm();
  return fn;
}

// Unit stride along rows (plain row-major) or along columns (a transposed view).
bool rows_contiguous(const at::Tensor& t) {
  return t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1));
}
bool columns_contiguous(const at::Tensor& t) {
  return t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0));
}

// A row-major matrix as MKL's column-major operand of its transpose: (op, ld).
void as_column_major(const at::Tensor& t, char& op, int64_t& ld) {
  const bool rows = rows_contiguous(t);
  op = rows ? 'N' : 'T';
  ld = rows ? t.stride(0) : t.stride(1);
}

at::Tensor with_unit_stride(const at::Tensor& t) {
  return rows_contiguous(t) || columns_contiguous(t) ? t : t.contiguous();
}

}  // namespace

bool mkl_bf16_available() { return gemm() != nullptr; }
int64_t mkl_bf16_max_rows() { return g_max_rows.load(); }

int64_t set_mkl_bf16_max_rows(int64_t rows) {
  TORCH_CHECK(rows >= 0, "recsys_kernels.set_mkl_bf16_max_rows: rows must be >= 0, got ", rows);
  return g_max_rows.exchange(rows);
}

at::Tensor mm_bf16_f32(const at::Tensor& a_in, const at::Tensor& b_in) {
  TORCH_CHECK(mkl_bf16_available(), "recsys_kernels: MKL's bf16 GEMM is not in this torch");
  TORCH_CHECK(a_in.dim() == 2 && b_in.dim() == 2 && a_in.size(1) == b_in.size(0) &&
                  a_in.scalar_type() == at::kBFloat16 && b_in.scalar_type() == at::kBFloat16 &&
                  a_in.device().is_cpu() && b_in.device().is_cpu(),
              "recsys_kernels.mm_bf16_f32: expects bf16 CPU matrices [M, K] and [K, N], got ",
              a_in.scalar_type(), " ", a_in.sizes(), " and ", b_in.scalar_type(), " ",
              b_in.sizes());
  // Called from C++ (mlp_stack.cpp), not through the dispatcher: named for torch.profiler here.
  RECORD_FUNCTION("recsys_kernels::mm_bf16_f32", std::vector<c10::IValue>());
  const at::Tensor a = with_unit_stride(a_in), b = with_unit_stride(b_in);
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  at::Tensor c = at::empty({m, n}, a.options().dtype(at::kFloat));
  if (m == 0 || n == 0) return c;
  if (k == 0) return c.zero_();
  // Row-major c = a b is column-major c^T = b^T a^T: b is the first operand.
  char op_b, op_a;
  int64_t ld_b, ld_a;
  as_column_major(b, op_b, ld_b);
  as_column_major(a, op_a, ld_a);
  const float one = 1.0f, zero = 0.0f;
  gemm()(&op_b, &op_a, &n, &m, &k, &one, static_cast<const uint16_t*>(b.data_ptr()), &ld_b,
         static_cast<const uint16_t*>(a.data_ptr()), &ld_a, &zero, c.data_ptr<float>(), &n);
  return c;
}

}  // namespace recsys_kernels

TORCH_LIBRARY_FRAGMENT(recsys_kernels, m) {
  m.def("mkl_bf16_available() -> bool", recsys_kernels::mkl_bf16_available);
  m.def("set_mkl_bf16_max_rows(int rows) -> int", recsys_kernels::set_mkl_bf16_max_rows);
  m.def("mm_bf16_f32(Tensor a, Tensor b) -> Tensor");
}

TORCH_LIBRARY_IMPL(recsys_kernels, CPU, m) { m.impl("mm_bf16_f32", recsys_kernels::mm_bf16_f32); }
