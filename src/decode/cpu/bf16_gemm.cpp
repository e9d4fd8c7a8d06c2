// Bf16Gemm: oneDNN matmul (bf16 x bf16 -> fp32) when oneDNN is built in (its C API, opened at
// run time) and the CPU has bf16 instructions, OpenBLAS sgemm on the widened values otherwise
// (decode/cpu/bf16_gemm.h).
#include "decode/cpu/bf16_gemm.h"

#include <cblas.h>

#include <map>
#include <string>
#include <tuple>
#include <type_traits>

#include "common/error.h"
#include "common/half.h"

#ifdef FI_HAVE_ONEDNN
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>  // types only: the library is opened at first use (dlopen)
#endif

namespace fi {

#ifdef FI_HAVE_ONEDNN
namespace {

// oneDNN's C API, opened on first use, so a decode that never asks for --gemm bf16 does not map
// the library (nor its OpenMP and OpenCL runtimes) at all. Null when it cannot be opened.
struct Dnnl {
  decltype(&dnnl_get_effective_cpu_isa) effective_isa;
  decltype(&dnnl_engine_create) engine_create;
  decltype(&dnnl_engine_destroy) engine_destroy;
  decltype(&dnnl_stream_create) stream_create;
  decltype(&dnnl_stream_wait) stream_wait;
  decltype(&dnnl_stream_destroy) stream_destroy;
  decltype(&dnnl_memory_desc_init_by_strides) md_init;
  decltype(&dnnl_matmul_desc_init) matmul_init;
  decltype(&dnnl_primitive_desc_create) pd_create;
  decltype(&dnnl_primitive_desc_destroy) pd_destroy;
  decltype(&dnnl_primitive_create) prim_create;
  decltype(&dnnl_primitive_destroy) prim_destroy;
  decltype(&dnnl_primitive_execute) execute;
  decltype(&dnnl_memory_create) mem_create;
  decltype(&dnnl_memory_destroy) mem_destroy;
  void (*omp_set_num_threads)(int);  // oneDNN's OpenMP runtime
};

const Dnnl* dnnl() {
  static const Dnnl* api = [] () -> const Dnnl* {
    void* h = dlopen(FI_ONEDNN_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) return nullptr;
    static Dnnl d;
    bool ok = true;
    auto get = [&](auto& f, const char* name) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(dlsym(h, name));
      ok = ok && f;
    };
    get(d.effective_isa, "dnnl_get_effective_cpu_isa");
    get(d.engine_create, "dnnl_engine_create");
    get(d.engine_destroy, "dnnl_engine_destroy");
    get(d.stream_create, "dnnl_stream_create");
    get(d.stream_wait, "dnnl_stream_wait");
    get(d.stream_destroy, "dnnl_stream_destroy");
    get(d.md_init, "dnnl_memory_desc_init_by_strides");
    get(d.matmul_init, "dnnl_matmul_desc_init");
    get(d.pd_create, "dnnl_primitive_desc_create");
    get(d.pd_destroy, "dnnl_primitive_desc_destroy");
    get(d.prim_create, "dnnl_primitive_create");
    get(d.prim_destroy, "dnnl_primitive_destroy");
    get(d.execute, "dnnl_primitive_execute");
    get(d.mem_create, "dnnl_memory_create");
    get(d.mem_destroy, "dnnl_memory_destroy");
    get(d.omp_set_num_threads, "omp_set_num_threads");  // from its libgomp dependency
    return ok ? &d : nullptr;
  }();
  return api;
}

void check(dnnl_status_t st, const char* what) {
  if (st != dnnl_success) FI_FAIL(std::string("oneDNN: ") + what + " failed (status " + std::to_string(int(st)) + ")");
}

}  // namespace

// One engine and stream per worker, and one matmul primitive per shape (rows, n, H, ldc): the
// chunk's rows and the vocab block rarely change, so this holds two or three.
struct Bf16Gemm::Impl {
  const Dnnl& d = *dnnl();
  dnnl_engine_t eng = nullptr;
  dnnl_stream_t strm = nullptr;
  struct Prim {
    dnnl_primitive_t p;
    dnnl_memory_desc_t xd, wd, cd;
  };
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, Prim> prims;

  Impl() {
    check(d.engine_create(&eng, dnnl_cpu, 0), "engine");
    check(d.stream_create(&strm, eng, dnnl_stream_default_flags), "stream");
  }
  ~Impl() {
    for (auto& [k, p] : prims) d.prim_destroy(p.p);
    if (strm) d.stream_destroy(strm);
    if (eng) d.engine_destroy(eng);
  }

  void run(const uint16_t* x, int64_t rows, const uint16_t* w, int64_t n, int64_t H, float* c,
           int64_t ldc) {
    // Our workers split the vocabulary; oneDNN must not start an OpenMP team inside each. The
    // primitive is planned for the calling thread's thread count, so this comes first.
    d.omp_set_num_threads(1);
    auto key = std::make_tuple(rows, n, H, ldc);
    auto it = prims.find(key);
    if (it == prims.end()) {
      Prim p{};
      const dnnl_dims_t xdims = {rows, H}, xstr = {H, 1};
      const dnnl_dims_t wdims = {H, n}, wstr = {1, H};  // the W block [n, H] seen transposed
      const dnnl_dims_t cdims = {rows, n}, cstr = {ldc, 1};
      check(d.md_init(&p.xd, 2, xdims, dnnl_bf16, xstr), "memory desc");
      check(d.md_init(&p.wd, 2, wdims, dnnl_bf16, wstr), "memory desc");
      check(d.md_init(&p.cd, 2, cdims, dnnl_f32, cstr), "memory desc");
      dnnl_matmul_desc_t md;
      check(d.matmul_init(&md, &p.xd, &p.wd, nullptr, &p.cd), "matmul desc");
      dnnl_primitive_desc_t pd = nullptr;
      check(d.pd_create(&pd, &md, nullptr, eng, nullptr), "matmul primitive desc");
      const dnnl_status_t st = d.prim_create(&p.p, pd);
      d.pd_destroy(pd);
      check(st, "matmul primitive");
      it = prims.emplace(key, p).first;
    }
    Prim& p = it->second;
    dnnl_memory_t xm = nullptr, wm = nullptr, cm = nullptr;
    check(d.mem_create(&xm, &p.xd, eng, const_cast<uint16_t*>(x)), "memory");
    check(d.mem_create(&wm, &p.wd, eng, const_cast<uint16_t*>(w)), "memory");
    check(d.mem_create(&cm, &p.cd, eng, c), "memory");
    const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}};
    const dnnl_status_t st = d.execute(p.p, strm, 3, args);
    const dnnl_status_t sw = st == dnnl_success ? d.stream_wait(strm) : st;
    d.mem_destroy(xm);
    d.mem_destroy(wm);
    d.mem_destroy(cm);
    check(sw, "matmul");
  }
};

bool Bf16Gemm::native() {
  static const bool yes = [] {
    const Dnnl* d = dnnl();
    if (!d) return false;
    const dnnl_cpu_isa_t isa = d->effective_isa();
    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  }();
  return yes;
}

std::string Bf16Gemm::engine() {
  if (!dnnl()) return "OpenBLAS sgemm on bf16 values (" FI_ONEDNN_SONAME " could not be opened)";
  if (!native()) return "OpenBLAS sgemm on bf16 values (no bf16 instructions seen by oneDNN)";
  const bool amx = dnnl()->effective_isa() == dnnl_cpu_isa_avx512_core_amx;
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
