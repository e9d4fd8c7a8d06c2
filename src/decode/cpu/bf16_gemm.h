// The CPU's bf16 GEMM for `--gemm bf16`: c[r, j] = sum_h x[r, h] · w[j, h] over bf16 inputs with
// fp32 accumulation (the GPU's 16-bit GEMM, up to summation order). oneDNN's matmul where the CPU
// has bf16 instructions (AVX512-BF16 or AMX, asked of oneDNN at run time, so ONEDNN_MAX_CPU_ISA
// can turn them off); otherwise OpenBLAS sgemm on the same values widened to fp32, which is the
// same arithmetic (every bf16 product is exact in fp32). One object per worker thread.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fi {

class Bf16Gemm {
 public:
  Bf16Gemm();
  ~Bf16Gemm();
  Bf16Gemm(Bf16Gemm&&) noexcept;
  Bf16Gemm& operator=(Bf16Gemm&&) noexcept;
  // x16: [rows, H] bf16 bits; x32: the same values as fp32 (the fallback's input);
  // w: [n, H] bf16 bits (row-major); c: [rows, ldc] fp32. Single-threaded.
  void run(const uint16_t* x16, const float* x32, int64_t rows, const uint16_t* w, int64_t n,
           int64_t H, float* c, int64_t ldc);
  // c = x32 · widen(w)ᵀ by sgemm: every bf16 value is exact in fp32, so with an exact x32 this
  // is the exact path's arithmetic (the rows --gemm bf16 decodes again). Single-threaded.
  void run_f32(const float* x32, int64_t rows, const uint16_t* w, int64_t n, int64_t H, float* c,
               int64_t ldc);
  // Whether run() uses oneDNN on bf16 instructions, and a description for the start line.
  static bool native();
  static std::string engine();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<float> w32_;  // the fallback's widened weight block [n, H]
};

}  // namespace fi
