// Weight: 16-bit or fp32 matrices and their products with fp32 activations (see weight.h).
#include "forward/weight.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "common/half.h"
#include "io/safetensors.h"
#include "parallel/cores.h"

namespace fi {
namespace {

// Dot products in four independent 8-lane accumulators (so the adds do not wait on each other),
// folded in a fixed order: the same sums on every machine and in every target_clones variant
// (-ffp-contract=off keeps each multiply and add apart).
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

inline v8f load_f32(const float* p) {
  v8f v;
  std::memcpy(&v, p, 32);
  return v;
}

inline float fold(v8f a, v8f b, v8f c, v8f d) {
  const v8f s = (a + b) + (c + d);
  float t = 0;
  for (int j = 0; j < 8; ++j) t += s[j];
  return t;
}

__attribute__((target_clones("avx2", "default"))) float dot_f32(const float* w, const float* x, int64_t n) {
  v8f a = {}, b = {}, c = {}, d = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a += load_f32(w + i) * load_f32(x + i);
    b += load_f32(w + i + 8) * load_f32(x + i + 8);
    c += load_f32(w + i + 16) * load_f32(x + i + 16);
    d += load_f32(w + i + 24) * load_f32(x + i + 24);
  }
  for (; i + 8 <= n; i += 8) a += load_f32(w + i) * load_f32(x + i);
  float s = fold(a, b, c, d);
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

// bf16 pairs: a 32-bit word holds elements 2i (low half) and 2i+1 (high half); as fp32 they are
// the word shifted left by 16 and the word with its low half cleared: no shuffles, so the loop
// runs at memory speed. xe, xo: the even and odd elements of x; n2 pairs.
__attribute__((target_clones("avx2", "default"))) float dot_bf16(const uint16_t* w, const float* xe,
                                                                  const float* xo, int64_t n2) {
  v8f a = {}, b = {}, c = {}, d = {};
  const v8u hi_mask = {0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u,
                       0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u};
  int64_t i = 0;
  auto step = [&](int64_t j, v8f& even, v8f& odd) {
    v8u u;
    std::memcpy(&u, w + 2 * j, 32);
    const v8u lo = u << 16, hi = u & hi_mask;
    v8f fe, fo;
    std::memcpy(&fe, &lo, 32);
    std::memcpy(&fo, &hi, 32);
    even += fe * load_f32(xe + j);
    odd += fo * load_f32(xo + j);
  };
  for (; i + 16 <= n2; i += 16) {
    step(i, a, b);
    step(i + 8, c, d);
  }
  for (; i + 8 <= n2; i += 8) step(i, a, b);
  float s = fold(a, b, c, d);
  for (; i < n2; ++i) s += bf16_to_f32(w[2 * i]) * xe[i] + bf16_to_f32(w[2 * i + 1]) * xo[i];
  return s;
}

// Runs f(r0, r1) over [0, n) split into one contiguous range per core.
template <class F>
void parallel_rows(int64_t n, F f) {
  const int64_t T = std::clamp<int64_t>(affinity_cores(), 1, std::max<int64_t>(1, n / 64));
  if (T == 1) return f(0, n);
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < T; ++t) pool.emplace_back([&, t] { f(n * t / T, n * (t + 1) / T); });
  f(0, n / T);
  for (auto& th : pool) th.join();
}

}  // namespace

Weight Weight::load(const ModelTensor& mt) {
  const TensorInfo& t = mt.stored();
  Weight w;
  w.dtype = t.dtype;
  w.rows = mt.shape[0];
  w.cols = mt.shape.size() > 1 ? mt.shape[1] : 1;
  if (t.dtype == DType::F32) {
    w.f32 = mt.file->read_f32(t);
  } else if (is_fp8(t.dtype)) {  // dequantised with its scale, held in fp32
    w.dtype = DType::F32;
    w.f32 = mt.read_f32();
  } else {
    w.h16.resize(size_t(w.rows * w.cols));
    mt.file->read_bytes(t, 0, w.h16.size() * 2, w.h16.data());  // little-endian, as the host
  }
  return w;
}

void Weight::row(int64_t r, float* dst) const {
  if (dtype == DType::F32) {
    std::copy_n(f32.data() + r * cols, cols, dst);
    return;
  }
  widen_to_f32(dtype, h16.data() + r * cols, size_t(cols), dst);
}

void linear(const float* x, int64_t T, const Weight& w, const std::vector<float>& bias, float* y) {
  const int64_t n = w.rows, k = w.cols;
  if (T == 1) {  // one token: every weight read once, on all cores
    const bool pairs = w.dtype == DType::BF16 && k % 2 == 0;
    std::vector<float> xe(pairs ? size_t(k / 2) : 0), xo(xe.size());
    for (size_t i = 0; i < xe.size(); ++i) {
      xe[i] = x[2 * i];
      xo[i] = x[2 * i + 1];
    }
    parallel_rows(n, [&](int64_t r0, int64_t r1) {
      std::vector<float> buf(w.dtype != DType::F32 && !pairs ? size_t(k) : 0);
      for (int64_t r = r0; r < r1; ++r) {
        if (w.dtype == DType::F32) {
          y[r] = dot_f32(w.f32.data() + r * k, x, k);
        } else if (pairs) {
          y[r] = dot_bf16(w.h16.data() + r * k, xe.data(), xo.data(), k / 2);
        } else {  // f16 (or an odd width): widen the row, then the fp32 product
          w.row(r, buf.data());
          y[r] = dot_f32(buf.data(), x, k);
        }
      }
    });
  } else if (w.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(n), int(k), 1.f, x, int(k),
                w.f32.data(), int(k), 0.f, y, int(n));
  } else {  // several tokens: SGEMM over blocks of rows widened into ~8 MB of fp32
    const int64_t block = std::max<int64_t>(1, (int64_t(2) << 20) / std::max<int64_t>(1, k));
    std::vector<float> wf(size_t(std::min(block, n) * k));
    for (int64_t r0 = 0; r0 < n; r0 += block) {
      const int64_t nb = std::min(block, n - r0);
      parallel_rows(nb, [&](int64_t a, int64_t b) {
        for (int64_t r = a; r < b; ++r) w.row(r0 + r, wf.data() + r * k);
      });
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(nb), int(k), 1.f, x, int(k),
                  wf.data(), int(k), 0.f, y + r0, int(n));
    }
  }
  if (!bias.empty())
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < n; ++i) y[t * n + i] += bias[i];
}

}  // namespace fi
