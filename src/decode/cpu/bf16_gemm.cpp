// Bf16Gemm: oneDNN matmul (bf16 x bf16 -> fp32) when oneDNN is built in and the CPU has bf16
// instructions, OpenBLAS sgemm on the widened values otherwise (decode/cpu/bf16_gemm.h).
#include "decode/cpu/bf16_gemm.h"

#include <cblas.h>

#include <map>
#include <tuple>

#include "common/error.h"
#include "common/half.h"

#ifdef FI_HAVE_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace fi {

#ifdef FI_HAVE_ONEDNN
namespace {

bool dnnl_has_bf16() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

}  // namespace

// One engine and stream per worker, and one matmul primitive per shape (rows, n, ldc): the
// chunk's rows and the vocab block rarely change, so this holds two or three.
struct Bf16Gemm::Impl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, dnnl::matmul> prims;

  void run(const uint16_t* x, int64_t rows, const uint16_t* w, int64_t n, int64_t H, float* c,
           int64_t ldc) {
    using dt = dnnl::memory::data_type;
    // Our workers split the vocabulary; oneDNN must not start an OpenMP team inside each. The
    // primitive is planned for the calling thread's thread count, so this comes first.
    omp_set_num_threads(1);
    const dnnl::memory::desc xd({rows, H}, dt::bf16, dnnl::memory::dims{H, 1});
    const dnnl::memory::desc wd({H, n}, dt::bf16, dnnl::memory::dims{1, H});  // W block transposed
    const dnnl::memory::desc cd({rows, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    auto key = std::make_tuple(rows, n, H, ldc);
    auto it = prims.find(key);
    if (it == prims.end()) {
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(xd, wd, cd), eng);
      it = prims.emplace(key, dnnl::matmul(pd)).first;
    }
    dnnl::memory xm(xd, eng, const_cast<uint16_t*>(x)), wm(wd, eng, const_cast<uint16_t*>(w)),
        cm(cd, eng, c);
    it->second.execute(strm, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}});
    strm.wait();
  }
};

bool Bf16Gemm::native() {
  static const bool yes = dnnl_has_bf16();
  return yes;
}

std::string Bf16Gemm::engine() {
  if (!native()) return "OpenBLAS sgemm on bf16 values (no bf16 instructions seen by oneDNN)";
  const bool amx = dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx;
  return std::string("oneDNN bf16 matmul (") + (amx ? "AMX" : "AVX512-BF16") + ")";
}
#else
struct Bf16Gemm::Impl {
  void run(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, float*, int64_t) {}
};
bool Bf16Gemm::native() { return false; }
std::string Bf16Gemm::engine() { return "OpenBLAS sgemm on bf16 values (built without oneDNN)"; }
#endif

Bf16Gemm::Bf16Gemm() : impl_(native() ? std::make_unique<Impl>() : nullptr) {}
Bf16Gemm::~Bf16Gemm() = default;
Bf16Gemm::Bf16Gemm(Bf16Gemm&&) noexcept = default;
Bf16Gemm& Bf16Gemm::operator=(Bf16Gemm&&) noexcept = default;

void Bf16Gemm::run(const uint16_t* x16, const float* x32, int64_t rows, const uint16_t* w, int64_t n,
                   int64_t H, float* c, int64_t ldc) {
  if (rows <= 0 || n <= 0) return;
  if (impl_) {
    impl_->run(x16, rows, w, n, H, c, ldc);
    return;
  }
  run_f32(x32, rows, w, n, H, c, ldc);
}

void Bf16Gemm::run_f32(const float* x32, int64_t rows, const uint16_t* w, int64_t n, int64_t H,
                       float* c, int64_t ldc) {
  if (rows <= 0 || n <= 0) return;
  w32_.resize(size_t(n * H));
  for (int64_t i = 0; i < n * H; ++i) w32_[size_t(i)] = bf16_to_f32(w[i]);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(n), int(H), 1.f, x32, int(H),
              w32_.data(), int(H), 0.f, c, int(ldc));
}

}  // namespace fi
