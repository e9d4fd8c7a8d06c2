// The CUDA decoder: per call, the rows go through the device in pieces of sub_rows rows, each
// piece: upload (host input) -> norm + conversion to the LM-head dtype -> cuBLAS GEMM into an
// fp32 logits buffer [sub_rows, vocab] -> the fused reduction kernel -> small results. Two
// buffers per stage and three streams (upload, GEMM, reduction) let the GEMM of piece i+1 run
// while piece i is reduced and piece i+2 uploads; only the per-row results come back (one
// asynchronous copy per call into pinned memory). The rows come from the row feed's pinned
// buffers (host_alloc) without a staging copy. The job calls the decoder from a worker thread
// (job/round_overlap.h), so the host's write of round r overlaps the device's round r + 1; every
// entry point sets the device first.
//
// Precision. A bf16/f16 LM-head stays 16-bit on the device, and cuBLAS multiplies it by the
// normed rows ROUNDED TO THE SAME 16-BIT TYPE (the CPU path keeps the normed rows fp32), with
// fp32 accumulation and fp32 output. The rounding (up to 2^-9 relative per bf16 component)
// moves a logit by about 1.1e-3 × sqrt(sum_h x_h² w_h²) ≈ 1.1e-3 × |x|·|w|/sqrt(H) (random
// signs), and a probability by that much relative. For nearly flat distributions (logits of
// order 0.1–1) that is inside the 1e-3 contract; at Llama scale it is not. A CPU simulation
// (H 4096, V 32000, bf16 W ~ N(0, σ²), gamma ≈ g, top-20, double-precision reference) gave a
// worst relative probability error of 1.6e-3 (σ 0.005, g 1), 6.5e-3 (σ 0.02, g 1), 1.3e-2
// (σ 0.02, g 2) and 4.5e-2 (σ 0.05, g 2). split_input feeds the GEMM hi + lo (lo = the
// rounding remainder, itself 16-bit): two GEMMs, and the same cases stay under 5e-5.
// fp32 LM-heads: fp32 SGEMM, TF32 only with allow_tf32.
// rescore (--gemm bf16, decode/rescore.h): one 16-bit GEMM, the reduction keeps k + 64 and b + 64
// candidates, the re-scoring kernel (rescore_kernel.cuh) computes their exact logits from the fp32
// normed rows and corrects the lse on the device; the host picks the final top-k / bottom-k and
// checks the error bound; the rows it cannot certify go through the hi + lo path again.
#include "decode/cuda/cuda_decoder.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>

#include "decode/cuda/cuda_decoder_impl.h"
#include "decode/cuda/kernels.h"
#include "decode/cuda/token_index_kernel.cuh"
#include "decode/rescore.h"
#include "decode/token_index.h"
#include "common/half.h"
#include "gpu/check.h"
#include "gpu/device.h"
#include "gpu/gemm.h"
#include "gpu/handles.h"
#include "gpu/widen.h"

namespace fi {

namespace gpu {
namespace {

// The packed results of `rows` rows (kernels.h packed_results) into a ChunkResult.
void unpack_results(const void* packed, int64_t rows, int k, int b, ChunkResult& out) {
  const RowOutputs h = packed_results(const_cast<void*>(packed), rows, k, b);
  out.resize(rows, k, b);
  for (int i = 0; i < kNumChunkFields; ++i)
    if (const size_t n = size_t(rows * out.width(i))) std::memcpy(out.data(i), h.field(i), n * 4);
}

// Whether p is in page-locked host memory (cudaHostAlloc'd or registered): a copy from it needs
// no staging.
bool is_pinned(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // pageable memory on an old runtime: an error, not a state to keep
    return false;
  }
  return a.type == cudaMemoryTypeHost;
}

}  // namespace

// ---- upload ----------------------------------------------------------------------------------

DeviceLmHead upload_lm_head(const void* host, DType dtype, int64_t vocab, int64_t hidden) {
  DeviceLmHead h;
  h.dtype = dtype;
  h.vocab = vocab;
  h.hidden = hidden;
  const size_t bytes = size_t(vocab) * size_t(hidden) * dtype_size(dtype);
  h.data = DeviceBuffer(bytes, "the LM-head replica");
  if (bytes) FI_CUDA_CHECK(cudaMemcpy(h.data.get(), host, bytes, cudaMemcpyHostToDevice));
  return h;
}

// ---- the decoder ---------------------------------------------------------------------------

struct CudaDecoder::Impl {
  DeviceLmHead head;
  DecodeParams p;
  CudaDecoderOptions o;
  int device = 0;
  int64_t H = 0, V = 0, ld = 0, max_sub = 0;
  bool split = false;
  bool rescore = false;  // --gemm bf16 with a 16-bit head
  int kc = 0, bc = 0;    // rescore: candidates per row kept by the reduction
  HeadStats hstats;      // rescore: the LM-head's mean row, spread and largest row norm
  DeviceBuffer mean;     // rescore: [H] double, hstats.mean_exact
  int64_t redecoded = 0;
  DeviceBuffer gamma;  // [H] fp32
  Stream gemm_stream, reduce_stream, copy_stream;
  Blas blas;
  struct Slot {
    DeviceBuffer x;        // [max_sub, H] fp32 bytes: uploaded host rows, as stored (bf16, f16, f32)
    DeviceBuffer hi, lo;   // [max_sub, H] head dtype: normed rows (lo with split or rescore)
    DeviceBuffer xn;       // [max_sub, H] fp32: the exact normed rows (rescore only)
    DeviceBuffer logits;   // [max_sub, ld] fp32
    DeviceBuffer marks;    // [max_sub, ld / 32] uint32: token index marks (made on first use)
    PinnedBuffer staging;  // [max_sub, H] fp32 bytes of host staging (host input; made on first use)
    Event h2d_done, norm_done, gemm_done, reduce_done;
  };
  Slot slot[2];
  DeviceBuffer results;  // packed per-row results of one call (device)
  PinnedBuffer results_host;
  // rescore: per call, exact [rows, kc + bc] and stats [rows, 4] double, the corrected lse [rows].
  DeviceBuffer exact, stats, lse_fixed;
  PinnedBuffer exact_host, stats_host;
  // The token index: a device copy of each target TokenIndex (made from the host one on first
  // use, brought back by sync_token_index), and the target of the next run().
  struct DeviceIndex {
    DeviceBuffer logp, layer, neuron, worst, worst_f;
    TokenIndexLists lists;
  };
  std::map<TokenIndex*, DeviceIndex> indexes;
  TokenIndex* ti = nullptr;
  int32_t ti_layer = 0;
  int64_t ti_row0 = 0;

  Impl(DeviceLmHead h, const std::vector<float>& g, const DecodeParams& params,
       const CudaDecoderOptions& opt)
      : head(std::move(h)), p(params), o(opt) {
    if (p.top_k < 0 || p.top_k > kMaxK || p.bottom_k < 0 || p.bottom_k > kMaxK)
      FI_FAIL("--backend cuda: --top-k and --bottom-k must be in [0, " + std::to_string(kMaxK) +
              "], got " + std::to_string(p.top_k) + " and " + std::to_string(p.bottom_k));
    H = head.hidden;
    V = head.vocab;
    if (H <= 0 || V <= 0 || V > INT_MAX - 4096 || H > INT_MAX)
      FI_FAIL("CUDA decode: unsupported LM-head shape [" + std::to_string(V) + ", " +
              std::to_string(H) + "]");
    FI_CUDA_CHECK(cudaGetDevice(&device));
    ld = (V + 31) / 32 * 32;  // 128-byte aligned rows for the GEMM's stores and the kernel's loads
    split = o.split_input && head.dtype != DType::F32;
    rescore = o.rescore && head.dtype != DType::F32;
    if (rescore) {
      split = false;
      kc = int(std::min<int64_t>(p.top_k + kRescoreMargin, V));
      bc = p.bottom_k > 0 ? int(std::min<int64_t>(p.bottom_k + kRescoreMargin, V)) : 0;
      if (kc > kMaxK || bc > kMaxK)
        FI_FAIL("--gemm bf16 on cuda: --top-k and --bottom-k must be at most " +
                std::to_string(kMaxK - kRescoreMargin) + " (" + std::to_string(kRescoreMargin) +
                " more candidates are re-scored)");
      compute_head_stats();
    }
    if (p.norm != NormMode::None) {
      if (int64_t(g.size()) != H)
        FI_FAIL("CUDA decode: gamma has " + std::to_string(g.size()) + " values, hidden is " +
                std::to_string(H));
      gamma = DeviceBuffer(size_t(H) * 4, "gamma");
      FI_CUDA_CHECK(cudaMemcpy(gamma.get(), g.data(), size_t(H) * 4, cudaMemcpyHostToDevice));
    }
    plan_and_allocate();
    FI_CUBLAS_CHECK(cublasSetStream(blas.h, gemm_stream.s));
    // Never reduce in a narrower type than fp32 (our output is fp32 anyway; belt and braces).
    FI_CUBLAS_CHECK(cublasSetMathMode(
        blas.h, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  }

  ~Impl() {
    // Pending work must finish before the buffers it uses are freed.
    cudaSetDevice(device);
    cudaDeviceSynchronize();
    cudaGetLastError();
  }

  // The LM-head's statistics for the re-scoring, on the host from the device copy (once).
  void compute_head_stats() {
    const int64_t step = 4096;
    std::vector<uint16_t> bits(size_t(step * H));
    std::vector<float> rows(size_t(step * H));
    for (int64_t r0 = 0; r0 < V; r0 += step) {
      const int64_t n = std::min(step, V - r0);
      FI_CUDA_CHECK(cudaMemcpy(bits.data(), static_cast<const uint16_t*>(head.data.get()) + r0 * H,
                               size_t(n * H) * 2, cudaMemcpyDeviceToHost));
      for (int64_t i = 0; i < n * H; ++i)
        rows[i] = head.dtype == DType::BF16 ? bf16_to_f32(bits[i]) : f16_to_f32(bits[i]);
      merge_head_stats(hstats, head_stats_part(rows.data(), nullptr, 0, n, H));
    }
    finish_head_stats(hstats, V);
    mean = DeviceBuffer(size_t(H) * 8, "the LM-head's mean row");
    FI_CUDA_CHECK(cudaMemcpy(mean.get(), hstats.mean_exact.data(), size_t(H) * 8, cudaMemcpyHostToDevice));
  }

  DeviceIndex& device_index(TokenIndex* t) {
    auto it = indexes.find(t);
    if (it != indexes.end()) return it->second;
    if (t->vocab != V || t->m <= 0) FI_FAIL("CUDA decode: the token index does not match the LM-head");
    DeviceIndex d;
    const size_t n = size_t(t->vocab * t->m);
    d.logp = DeviceBuffer(n * 8, "the token index");
    d.layer = DeviceBuffer(n * 4, "the token index");
    d.neuron = DeviceBuffer(n * 4, "the token index");
    d.worst = DeviceBuffer(size_t(t->vocab) * 8, "the token index");
    d.worst_f = DeviceBuffer(size_t(t->vocab) * 4, "the token index");
    std::vector<float> wf(size_t(t->vocab));
    for (int64_t v = 0; v < t->vocab; ++v) wf[size_t(v)] = round_down_f32(t->worst[size_t(v)]);
    FI_CUDA_CHECK(cudaMemcpy(d.worst_f.get(), wf.data(), wf.size() * 4, cudaMemcpyHostToDevice));
    FI_CUDA_CHECK(cudaMemcpy(d.logp.get(), t->logp.data(), n * 8, cudaMemcpyHostToDevice));
    FI_CUDA_CHECK(cudaMemcpy(d.layer.get(), t->layer.data(), n * 4, cudaMemcpyHostToDevice));
    FI_CUDA_CHECK(cudaMemcpy(d.neuron.get(), t->neuron.data(), n * 4, cudaMemcpyHostToDevice));
    FI_CUDA_CHECK(cudaMemcpy(d.worst.get(), t->worst.data(), size_t(t->vocab) * 8, cudaMemcpyHostToDevice));
    d.lists = {static_cast<double*>(d.logp.get()), static_cast<int32_t*>(d.layer.get()),
               static_cast<int32_t*>(d.neuron.get()), static_cast<double*>(d.worst.get()),
               static_cast<float*>(d.worst_f.get()), t->m};
    return indexes.emplace(t, std::move(d)).first->second;
  }

  void sync_token_index() {
    if (indexes.empty()) return;
    FI_CUDA_CHECK(cudaSetDevice(device));
    FI_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& [t, d] : indexes) {
      const size_t n = size_t(t->vocab * t->m);
      FI_CUDA_CHECK(cudaMemcpy(t->logp.data(), d.logp.get(), n * 8, cudaMemcpyDeviceToHost));
      FI_CUDA_CHECK(cudaMemcpy(t->layer.data(), d.layer.get(), n * 4, cudaMemcpyDeviceToHost));
      FI_CUDA_CHECK(cudaMemcpy(t->neuron.data(), d.neuron.get(), n * 4, cudaMemcpyDeviceToHost));
      t->refresh_worst();
    }
    indexes.clear();  // the host copies are the index now (the job may merge into them)
  }

  // Rows per GEMM: as many as memory allows up to max_sub_rows, halved until two pieces' buffers
  // fit next to a reserve for cuBLAS's workspace and the context.
  void plan_and_allocate() {
    const size_t es = dtype_size(head.dtype);
    const size_t per_row = size_t(H) * 4 + size_t(H) * es * (split || rescore ? 2 : 1) +
                           (rescore ? size_t(H) * 4 : 0) + size_t(ld) * 4 + size_t(ld) / 8;  // + marks
    const size_t reserve = size_t(512) << 20;
    const size_t free = free_device_bytes();
    int64_t sub = std::max<int64_t>(1, o.sub_rows > 0 ? o.sub_rows : o.max_sub_rows);
    auto need = [&](int64_t rows) { return 2 * size_t(rows) * per_row + reserve; };
    while (sub > 64 && need(sub) > free) sub = (sub + 1) / 2;
    if (need(sub) > free)
      FI_FAIL("CUDA decode: device " + std::to_string(device) + " has " + bytes_str(free) +
              " free after the LM-head replica (" + bytes_str(head.data.bytes()) + "); the decode needs " +
              bytes_str(need(sub)) + " more for " + std::to_string(sub) +
              "-row logits buffers: use a device with more memory or fewer ranks per device");
    max_sub = sub;
    for (Slot& s : slot) {
      s.x = DeviceBuffer(size_t(sub) * H * 4, "the input rows");
      s.hi = DeviceBuffer(size_t(sub) * H * es, "the normed rows");
      if (split || rescore) s.lo = DeviceBuffer(size_t(sub) * H * es, "the normed rows' remainder");
      if (rescore) s.xn = DeviceBuffer(size_t(sub) * H * 4, "the exact normed rows");
      s.logits = DeviceBuffer(size_t(sub) * ld * 4, "a logits buffer");
    }
  }

  int64_t sub_rows(int64_t rows) const {
    if (o.sub_rows > 0) return std::min(o.sub_rows, max_sub);
    // Pieces of a quarter of the call (for overlap), but at least 512 rows (GEMM efficiency).
    const int64_t quarter = (rows + 3) / 4;
    return std::min(max_sub, std::max<int64_t>(quarter, 512));
  }

  void ensure_results(size_t bytes) {
    if (bytes <= results.bytes()) return;
    const size_t cap = (bytes + (1u << 20) - 1) / (1u << 20) * (1u << 20);
    results = DeviceBuffer(cap, "the per-row results");
    results_host = PinnedBuffer(cap, "the per-row results");
  }

  void ensure_rescore(int64_t rows) {
    const size_t eb = size_t(rows) * size_t(kc + bc) * 8, sb = size_t(rows) * 4 * 8;
    if (eb > exact.bytes()) {
      exact = DeviceBuffer(eb, "the candidates' exact logits");
      exact_host = PinnedBuffer(eb, "the candidates' exact logits");
    }
    if (sb > stats.bytes()) {
      stats = DeviceBuffer(sb, "the re-scoring's row statistics");
      stats_host = PinnedBuffer(sb, "the re-scoring's row statistics");
      lse_fixed = DeviceBuffer(size_t(rows) * 4, "the corrected lse");
    }
  }

  // rescore: the final rows from the candidates (exact logits, corrected lse, error bound);
  // returns the rows the bound could not certify.
  std::vector<int64_t> finish_rescored(int64_t rows, ChunkResult& out) {
    const int k = p.top_k, b = p.bottom_k, nc = kc + bc;
    const RowOutputs h = packed_results(results_host.get(), rows, kc, bc);
    const double* ex = static_cast<const double*>(exact_host.get());
    const double* st = static_cast<const double*>(stats_host.get());
    out.resize(rows, k, b);
    std::vector<int64_t> redo;
    for (int64_t r = 0; r < rows; ++r) {
      int nt = 0, nb = 0;
      while (nt < kc && h.top_ids[r * kc + nt] >= 0) ++nt;
      while (nb < bc && h.bottom_ids[r * bc + nb] >= 0) ++nb;
      const Candidates top{h.top_ids + r * kc, h.top_logits + r * kc, ex + r * nc, nt, k + kRescoreMargin};
      const Candidates bot{h.bottom_ids + r * bc, h.bottom_logits + r * bc, ex + r * nc + kc, nb,
                           b > 0 ? b + kRescoreMargin : 0};
      RowResidual res;
      res.delta_norm = st[r * 4 + 1];
      res.gemm_norm = st[r * 4 + 2];
      res.shift = st[r * 4 + 3];
      if (!finish_rescored_row(top, bot, st[r * 4], logit_error_bound(res, hstats), k, b,
                               out.top_ids.data() + r * k, out.top_logits.data() + r * k,
                               out.top_probs.data() + r * k, out.lse.data() + r,
                               out.bottom_ids.data() + r * b, out.bottom_logits.data() + r * b,
                               out.margin.data() + r))
        redo.push_back(r);
      // The reduction's lse and entropy are those of the one-GEMM logits (fp32 sums).
      out.entropy[r] = float(corrected_entropy(h.lse[r], h.entropy[r], h.top_logits + r * kc, ex + r * nc,
                                               nt, res.shift, st[r * 4]));
    }
    return redo;
  }

  // The rows `redo` of x again through the hi + lo path, into their rows of out.
  void redecode(const void* x, bool host_input, DType x_dtype, const std::vector<int64_t>& redo,
                ChunkResult& out) {
    const int64_t n = int64_t(redo.size());
    const size_t row_bytes = size_t(H) * dtype_size(x_dtype);
    ChunkResult sub;
    if (host_input) {
      std::vector<char> xs(size_t(n) * row_bytes);
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(xs.data() + size_t(i) * row_bytes, static_cast<const char*>(x) + size_t(redo[i]) * row_bytes,
                    row_bytes);
      run(xs.data(), true, x_dtype, n, sub, true);
    } else {
      DeviceBuffer xs(size_t(n) * row_bytes, "the rows decoded again");
      for (int64_t i = 0; i < n; ++i)
        FI_CUDA_CHECK(cudaMemcpy(static_cast<char*>(xs.get()) + size_t(i) * row_bytes,
                                 static_cast<const char*>(x) + size_t(redo[i]) * row_bytes, row_bytes,
                                 cudaMemcpyDeviceToDevice));
      run(xs.get(), false, x_dtype, n, sub, true);
    }
    for (int64_t i = 0; i < n; ++i)
      for (int f = 0; f < kNumChunkFields; ++f) {
        const int64_t w = out.width(f);
        std::memcpy(static_cast<char*>(out.data(f)) + size_t(redo[i] * w) * 4,
                    static_cast<const char*>(sub.data(f)) + size_t(i * w) * 4, size_t(w) * 4);
      }
    redecoded += n;
  }

  // Columns (down) and FP8: the whole block uploaded as stored, then widened, transposed and
  // dequantised into fp32 rows on the device (gpu/widen.h), and decoded from there.
  DeviceBuffer stored, widened, fp8_table, fp8_scale;  // [bytes], [count, H] fp32, [256], scale
  PinnedBuffer stored_host;
  DType table_dtype = DType::F32;  // the FP8 format fp8_table holds
  void run_widened(const RowBlock& b, ChunkResult& out) {
    FI_CUDA_CHECK(cudaSetDevice(device));
    const size_t bytes = size_t(b.bytes()), wide = size_t(b.count * b.width) * 4;
    if (stored.bytes() < bytes) stored = DeviceBuffer(bytes, "the stored rows");
    if (widened.bytes() < wide) widened = DeviceBuffer(wide, "the widened rows");
    const cudaStream_t sg = gemm_stream.s;  // the last call's work is done: run() ends synchronised
    const void* src = b.data;  // the row feed's pinned buffer, or a pinned copy of it
    if (!is_pinned(src)) {
      if (stored_host.bytes() < bytes) stored_host = PinnedBuffer(bytes, "the stored rows");
      std::memcpy(stored_host.get(), b.data, bytes);
      src = stored_host.get();
    }
    FI_CUDA_CHECK(cudaMemcpyAsync(stored.get(), src, bytes, cudaMemcpyHostToDevice, sg));
    if (is_fp8(b.dtype)) {
      if (!fp8_table.get() || table_dtype != b.dtype) {
        std::vector<float> t(256);
        for (int c = 0; c < 256; ++c) t[size_t(c)] = fp8_to_f32(b.dtype, uint8_t(c));
        if (!fp8_table.get()) fp8_table = DeviceBuffer(256 * 4, "the FP8 code table");
        FI_CUDA_CHECK(cudaMemcpy(fp8_table.get(), t.data(), 256 * 4, cudaMemcpyHostToDevice));
        table_dtype = b.dtype;
      }
      const size_t sb = b.scale->s.size() * 4;
      if (fp8_scale.bytes() < sb) fp8_scale = DeviceBuffer(sb, "the FP8 scale");
      FI_CUDA_CHECK(cudaMemcpy(fp8_scale.get(), b.scale->s.data(), sb, cudaMemcpyHostToDevice));
    }
    launch_widen(b, stored.get(), static_cast<const float*>(fp8_table.get()),
                 static_cast<const float*>(fp8_scale.get()), static_cast<float*>(widened.get()), sg);
    run(widened.get(), false, DType::F32, b.count, out);
  }

  // force_split: this call uses the hi + lo path whatever the mode (the rows re-decoded).
  void run(const void* x, bool host_input, DType x_dtype, int64_t rows, ChunkResult& out,
           bool force_split = false) {
    const int k = p.top_k, b = p.bottom_k;
    if (rows <= 0) {
      out.resize(0, k, b);
      return;
    }
    FI_CUDA_CHECK(cudaSetDevice(device));
    const bool rs = rescore && !force_split, sp = split || (force_split && rescore);
    const int kr = rs ? kc : k, br = rs ? bc : b;  // what the reduction keeps per row
    if (rs) ensure_rescore(rows);
    const size_t rbytes = packed_result_bytes(rows, kr, br);
    ensure_results(rbytes);
    const RowOutputs all = packed_results(results.get(), rows, kr, br);
    const cudaStream_t sg = gemm_stream.s, sr = reduce_stream.s;
    const int64_t sub = sub_rows(rows);
    const float* gamma_d = static_cast<const float*>(gamma.get());
    // Rows in pinned memory (the row feed's, host_alloc) are uploaded from where they are; they
    // stay valid until this call returns, after every upload is done.
    const bool pinned = host_input && is_pinned(x);
    TokenIndex* target = ti;
    ti = nullptr;  // a target holds for one call, as on the CPU
    const TokenIndexLists* lists = target ? &device_index(target).lists : nullptr;
    for (int64_t r0 = 0, piece = 0; r0 < rows; r0 += sub, ++piece) {
      const int64_t n = std::min(sub, rows - r0);
      Slot& s = slot[piece % 2];
      const void* xin = nullptr;
      DType xin_dtype = x_dtype;
      if (host_input) {  // rows as stored: the norm kernel widens them (exactly) on the device
        const size_t w = dtype_size(x_dtype), piece_bytes = size_t(n * H) * w;
        const void* src = static_cast<const char*>(x) + size_t(r0 * H) * w;
        if (!pinned) {  // pageable rows go through a pinned staging buffer
          if (!s.staging.get()) s.staging = PinnedBuffer(size_t(max_sub) * H * 4, "the input rows");
          // The staging buffer is free once its previous upload (two pieces ago) is done; the
          // host copy into it overlaps the device's work on the piece before.
          FI_CUDA_CHECK(cudaEventSynchronize(s.h2d_done.e));
          std::memcpy(s.staging.get(), src, piece_bytes);
          src = s.staging.get();
        }
        // The upload runs on its own stream so it overlaps the GEMM of the piece before; it
        // waits until the norm of two pieces ago has read this slot's x.
        FI_CUDA_CHECK(cudaStreamWaitEvent(copy_stream.s, s.norm_done.e, 0));
        FI_CUDA_CHECK(cudaMemcpyAsync(s.x.get(), src, piece_bytes, cudaMemcpyHostToDevice, copy_stream.s));
        FI_CUDA_CHECK(cudaEventRecord(s.h2d_done.e, copy_stream.s));
        FI_CUDA_CHECK(cudaStreamWaitEvent(sg, s.h2d_done.e, 0));
        xin = s.x.get();
      } else {
        xin = static_cast<const char*>(x) + size_t(r0) * H * dtype_size(x_dtype);
      }
      // This slot's logits buffer is free once the reduction of two pieces ago is done.
      FI_CUDA_CHECK(cudaStreamWaitEvent(sg, s.reduce_done.e, 0));
      if (rs)  // the exact normed rows for the re-scoring, then the same rounded for the GEMM
        launch_norm_convert(xin, xin_dtype, s.xn.get(), nullptr, DType::F32, n, H, gamma_d, p, sg);
      launch_norm_convert(xin, xin_dtype, s.hi.get(), sp ? s.lo.get() : nullptr, head.dtype,
                          n, H, gamma_d, p, sg);
      FI_CUDA_CHECK(cudaEventRecord(s.norm_done.e, sg));
      float* logits = static_cast<float*>(s.logits.get());
      gemm_logits(blas.h, head.data.get(), head.dtype, V, H, s.hi.get(), n, logits, ld,
                  p.allow_tf32, false);
      if (sp)
        gemm_logits(blas.h, head.data.get(), head.dtype, V, H, s.lo.get(), n, logits, ld,
                    p.allow_tf32, true);
      if (p.softcap > 0) launch_softcap(logits, n, V, ld, p.softcap, sg);  // Gemma 2: before any reader
      FI_CUDA_CHECK(cudaEventRecord(s.gemm_done.e, sg));
      FI_CUDA_CHECK(cudaStreamWaitEvent(sr, s.gemm_done.e, 0));
      const RowOutputs piece_out = all.from_row(r0, kr, br);
      // With the token index the reduction marks its candidates (token_index_kernel.cuh), so
      // the index kernel reads only their logits.
      TokenMarks tm;
      if (lists) {
        if (!s.marks.get()) s.marks = DeviceBuffer(size_t(max_sub) * size_t(ld / 32) * 4, "the token marks");
        tm = {lists->worst_f, static_cast<uint32_t*>(s.marks.get()), ld / 32};
      }
      launch_row_reduce(logits, n, V, ld, kr, br, piece_out, tm, sr);
      const float* lse_piece = piece_out.lse;
      if (rs) {  // exact candidates, corrected lse, and the exact values into the logits
        float* fixed = static_cast<float*>(lse_fixed.get()) + r0;
        launch_rescore(static_cast<const float*>(s.xn.get()), s.hi.get(), head.data.get(),
                       head.dtype == DType::BF16, n, H, static_cast<const double*>(mean.get()),
                       hstats.spread, piece_out, kc, bc,
                       static_cast<double*>(exact.get()) + r0 * (kc + bc),
                       static_cast<double*>(stats.get()) + r0 * 4, fixed, logits, ld, tm.marks, tm.ld, sr);
        lse_piece = fixed;
      }
      if (lists)  // after the reduction on the same stream: it needs the rows' lse
        launch_token_index(logits, ld, n, V, lse_piece, tm.marks, tm.ld, piece_out.lse, ti_layer,
                           ti_row0 + r0, *lists, sr);
      FI_CUDA_CHECK(cudaEventRecord(s.reduce_done.e, sr));
    }
    // Every upload precedes a norm on the GEMM stream, and every GEMM-stream operation precedes
    // a gemm_done that the reduction stream waited on: syncing sr and sg covers all three.
    FI_CUDA_CHECK(cudaMemcpyAsync(results_host.get(), results.get(), rbytes,
                                  cudaMemcpyDeviceToHost, sr));
    if (rs) {
      FI_CUDA_CHECK(cudaMemcpyAsync(exact_host.get(), exact.get(), size_t(rows) * (kc + bc) * 8,
                                    cudaMemcpyDeviceToHost, sr));
      FI_CUDA_CHECK(cudaMemcpyAsync(stats_host.get(), stats.get(), size_t(rows) * 4 * 8,
                                    cudaMemcpyDeviceToHost, sr));
    }
    FI_CUDA_CHECK(cudaStreamSynchronize(sr));
    FI_CUDA_CHECK(cudaStreamSynchronize(sg));
    if (!rs) {
      unpack_results(results_host.get(), rows, k, b, out);
      return;
    }
    const std::vector<int64_t> redo = finish_rescored(rows, out);
    if (!redo.empty()) redecode(x, host_input, x_dtype, redo, out);
  }
};

CudaDecoder::CudaDecoder(DeviceLmHead head, const std::vector<float>& gamma, const DecodeParams& p,
                         const CudaDecoderOptions& o)
    : impl_(std::make_unique<Impl>(std::move(head), gamma, p, o)) {}

CudaDecoder::~CudaDecoder() = default;

void CudaDecoder::decode(const float* x, int64_t rows, ChunkResult& out) {
  impl_->run(x, true, DType::F32, rows, out);
}

bool CudaDecoder::takes_block(const RowBlock&) const { return true; }

HostAlloc CudaDecoder::host_alloc() const {
  const int dev = impl_->device;
  // Called on the row feed's reader thread: its current device must be the decoder's, or the
  // runtime would make a context on device 0 for it. Portable: pinned for every context.
  return {[dev](size_t n) -> void* {
            void* p = nullptr;
            if (cudaSetDevice(dev) != cudaSuccess || cudaHostAlloc(&p, n, cudaHostAllocPortable) != cudaSuccess) {
              cudaGetLastError();
              return nullptr;  // RowFeed: "out of memory" for the chunk's rows
            }
            return p;
          },
          [dev](void* p) {
            cudaSetDevice(dev);
            cudaFreeHost(p);
          }};
}

void CudaDecoder::decode_block(const RowBlock& b, ChunkResult& out) {
  FI_CHECK(b.width == impl_->H, "CUDA decode: rows of " + std::to_string(b.width) + " values for an LM-head of " +
                                    std::to_string(impl_->H));
  if (!b.columns && !is_fp8(b.dtype)) return impl_->run(b.data, true, b.dtype, b.count, out);
  impl_->run_widened(b, out);
}

void CudaDecoder::decode_device(const void* x, DType x_dtype, int64_t rows, ChunkResult& out) {
  impl_->run(x, false, x_dtype, rows, out);
}

void CudaDecoder::set_token_index_target(TokenIndex* ti, int32_t layer, int64_t row0) {
  impl_->ti = ti;
  impl_->ti_layer = layer;
  impl_->ti_row0 = row0;
}

void CudaDecoder::sync_token_index() { impl_->sync_token_index(); }

int64_t CudaDecoder::sub_rows(int64_t rows) const { return impl_->sub_rows(rows); }
int64_t CudaDecoder::max_sub_rows() const { return impl_->max_sub; }
int64_t CudaDecoder::redecoded_rows() const { return impl_->redecoded; }
std::string CudaDecoder::gemm_info() const {
  if (impl_->rescore)
    return "bf16: one 16-bit cuBLAS GEMM, candidates re-scored exactly";
  return impl_->split ? "exact: hi + lo 16-bit cuBLAS GEMMs" : "one cuBLAS GEMM in the head's dtype";
}
int CudaDecoder::device() const { return impl_->device; }
int64_t CudaDecoder::logits_ld() const { return impl_->ld; }
const DeviceLmHead& CudaDecoder::head() const { return impl_->head; }

// ---- test helper ---------------------------------------------------------------------------

void reduce_rows_cuda(const float* logits, int64_t rows, int64_t vocab, int top_k, int bottom_k,
                      ChunkResult& out) {
  out.resize(rows, top_k, bottom_k);
  if (rows <= 0) return;
  DeviceBuffer d_logits(size_t(rows) * size_t(vocab) * 4, "test logits");
  if (vocab > 0)
    FI_CUDA_CHECK(cudaMemcpy(d_logits.get(), logits, d_logits.bytes(), cudaMemcpyHostToDevice));
  const size_t rbytes = packed_result_bytes(rows, top_k, bottom_k);
  DeviceBuffer d_res(rbytes, "test results");
  launch_row_reduce(static_cast<const float*>(d_logits.get()), rows, vocab, vocab, top_k, bottom_k,
                    packed_results(d_res.get(), rows, top_k, bottom_k), nullptr);
  FI_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<unsigned char> host(rbytes);
  FI_CUDA_CHECK(cudaMemcpy(host.data(), d_res.get(), rbytes, cudaMemcpyDeviceToHost));
  unpack_results(host.data(), rows, top_k, bottom_k, out);
}

}  // namespace gpu

// ---- the job's entry point -----------------------------------------------------------------

std::unique_ptr<Decoder> make_cuda_decoder(const Model& model, const std::vector<float>& gamma,
                                           const DecodeParams& p, CudaSetup& setup) {
  setup.device = gpu::select_device(setup.node_comm);
  gpu::DeviceLmHead head =
      gpu::replicate_lm_head(model, setup.node_comm, gpu::ReplicaOptions{}, &setup.replicate_seconds);
  gpu::CudaDecoderOptions o;
  o.split_input = setup.split_input;
  o.rescore = setup.rescore;
  return std::make_unique<gpu::CudaDecoder>(std::move(head), gamma, p, o);
}

}  // namespace fi
