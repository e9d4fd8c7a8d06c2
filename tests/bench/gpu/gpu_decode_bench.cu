// gpu_decode_bench: the CUDA decode of a whole Llama-3.1-8B-shaped map (32 layers × 14336 rows,
// hidden 4096, vocab 128256, bf16, random weights made on the device: no disk), top-20 + lse,
// against cuBLAS GEMM alone on the same pieces. Reports total time, GEMM-alone time, their ratio,
// the reduction and norm kernels alone, rows/s, and the LM-head upload (host -> device).
// Usage: gpu_decode_bench [--layers L] [--neurons N] [--hidden H] [--vocab V] [--top-k K]
//        [--bottom-k B] [--chunk-rows R] [--sub-rows S] [--split-input | --rescore] [--reps N]
//        [--token-index M] (the decode also keeps the token -> neuron index, as the job does)
//        [--check N] (N rows of the first chunk against a float64 reference on the host:
//        top-k ids up to ties, probabilities; a failure exits 1)
// With --split-input the second GEMM (the lo parts, beta = 1) is timed as it runs, after the
// first (beta = 0), not estimated as twice one GEMM.
// --rescore: --gemm bf16, one GEMM with the candidates re-scored exactly (decode/rescore.h); its
// goal is <= 1.15x the cuBLAS GEMM alone.
// Prints "SKIPPED (no CUDA device)" and exits 0 without a device.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/half.h"
#include "decode/cuda/cuda_decoder_impl.h"
#include "decode/cuda/kernels.h"
#include "decode/token_index.h"
#include "gpu/buffers.h"
#include "gpu/check.h"
#include "gpu/device.h"
#include "gpu/gemm.h"
#include "parallel/cores.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Args {
  int64_t layers = 32, neurons = 14336, hidden = 4096, vocab = 128256;
  int top_k = 20, bottom_k = 0;
  int64_t chunk_rows = 2048, sub_rows = 0;
  bool split = false, rescore = false;
  int reps = 1;
  int token_index = 0;
  int check = 0;  // rows compared with the float64 reference
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&]() -> long long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gpu_decode_bench: %s needs a value\n", s.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (s == "--layers") a.layers = next();
    else if (s == "--neurons") a.neurons = next();
    else if (s == "--hidden") a.hidden = next();
    else if (s == "--vocab") a.vocab = next();
    else if (s == "--top-k") a.top_k = int(next());
    else if (s == "--bottom-k") a.bottom_k = int(next());
    else if (s == "--chunk-rows") a.chunk_rows = next();
    else if (s == "--sub-rows") a.sub_rows = next();
    else if (s == "--split-input") a.split = true;
    else if (s == "--rescore") a.rescore = true;
    else if (s == "--reps") a.reps = int(next());
    else if (s == "--token-index") a.token_index = int(next());
    else if (s == "--check") a.check = int(next());
    else {
      std::fprintf(stderr, "gpu_decode_bench: unknown option %s\n", s.c_str());
      std::exit(2);
    }
  }
  return a;
}

// Times f() between two events on the default stream (f enqueues work on stream 0).
template <typename F>
double time_on_device(F f) {
  cudaEvent_t a, b;
  FI_CUDA_CHECK(cudaEventCreate(&a));
  FI_CUDA_CHECK(cudaEventCreate(&b));
  FI_CUDA_CHECK(cudaEventRecord(a, nullptr));
  f();
  FI_CUDA_CHECK(cudaEventRecord(b, nullptr));
  FI_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  FI_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 1e3;
}

// --check: rows [0, n) of the bench's rows decoded again and compared with a float64 reference
// on the host over the same bf16 values: the norm (RMS, gamma) and every logit in double, lse
// by max + log-sum-exp. Each top-k id must be the reference's up to ties (its reference logit
// within 1e-3 of the reference's at that rank) and each probability within 1e-3 relative of
// exp(reference logit - reference lse) (the contract of --gemm bf16 and exact). Returns false
// on a failure.
bool check_rows(int64_t n, fi::gpu::CudaDecoder& dec, const void* x_dev, const std::vector<float>& gamma,
                const fi::DecodeParams& p) {
  using namespace fi;
  const gpu::DeviceLmHead& h = dec.head();
  const int64_t V = h.vocab, H = h.hidden;
  const int k = p.top_k;
  ChunkResult res;
  dec.decode_device(x_dev, DType::BF16, n, res);
  std::vector<uint16_t> xb(size_t(n * H)), wb(size_t(V * H));
  FI_CUDA_CHECK(cudaMemcpy(xb.data(), x_dev, xb.size() * 2, cudaMemcpyDeviceToHost));
  FI_CUDA_CHECK(cudaMemcpy(wb.data(), h.data.get(), wb.size() * 2, cudaMemcpyDeviceToHost));
  const int T = std::max(1, affinity_cores());
  double worst_prob = 0, worst_lse = 0, worst_tie = 0;
  int64_t bad = 0;
  for (int64_t r = 0; r < n; ++r) {
    std::vector<double> xn(static_cast<size_t>(H)), logit(static_cast<size_t>(V));
    double ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += double(bf16_to_f32(xb[size_t(r * H + i)])) * bf16_to_f32(xb[size_t(r * H + i)]);
    const double scale = 1.0 / std::sqrt(ss / double(H) + p.eps);
    for (int64_t i = 0; i < H; ++i) xn[size_t(i)] = double(bf16_to_f32(xb[size_t(r * H + i)])) * scale * gamma[size_t(i)];
    std::vector<std::thread> pool;
    for (int t = 0; t < T; ++t)
      pool.emplace_back([&, t] {
        for (int64_t v = t; v < V; v += T) {
          double acc = 0;
          const uint16_t* w = wb.data() + v * H;
          for (int64_t i = 0; i < H; ++i) acc += double(bf16_to_f32(w[i])) * xn[size_t(i)];
          logit[size_t(v)] = acc;
        }
      });
    for (auto& th : pool) th.join();
    const double mx = *std::max_element(logit.begin(), logit.end());
    double sum = 0;
    for (double l : logit) sum += std::exp(l - mx);
    const double lse = mx + std::log(sum);
    std::vector<double> sorted = logit;
    std::partial_sort(sorted.begin(), sorted.begin() + k, sorted.end(), std::greater<double>());
    worst_lse = std::max(worst_lse, std::fabs(double(res.lse[size_t(r)]) - lse));
    for (int j = 0; j < k; ++j) {
      const int32_t id = res.top_ids[size_t(r * k + j)];
      const double gap = sorted[size_t(j)] - logit[size_t(id)];  // 0 when the id is the reference's
      const double want = std::exp(logit[size_t(id)] - lse);
      const double rel = std::fabs(double(res.top_probs[size_t(r * k + j)]) - want) / want;
      worst_tie = std::max(worst_tie, gap);
      worst_prob = std::max(worst_prob, rel);
      if (gap > 1e-3 || rel > 1e-3) ++bad;
    }
  }
  std::printf("check: %lld rows vs float64: %s; largest gap to the reference's logit at the same rank %.2e "
              "(ties up to 1e-3), largest probability error %.2e relative (limit 1e-3), lse %.2e\n",
              (long long)n, bad ? "FAILED" : "passed", worst_tie, worst_prob, worst_lse);
  return bad == 0;
}

int run(const Args& a) {
  using namespace fi;
  using namespace fi::gpu;
  const int dev = select_device(MPI_COMM_NULL);
  cudaDeviceProp prop{};
  FI_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  const int64_t V = a.vocab, H = a.hidden, total_rows = a.layers * a.neurons;
  std::printf("device %d: %s, %d SMs, %.1f GiB; shape: %lld layers x %lld rows, hidden %lld, vocab %lld, "
              "top-%d bottom-%d, chunk %lld rows%s\n",
              dev, prop.name, prop.multiProcessorCount, double(prop.totalGlobalMem) / (1ull << 30),
              (long long)a.layers, (long long)a.neurons, (long long)H, (long long)V, a.top_k,
              a.bottom_k, (long long)a.chunk_rows,
              a.split ? ", split input (2 GEMMs)" : a.rescore ? ", one GEMM + re-scoring" : "");

  // Random bf16 weights and rows on the device (uniform ±0.035: std 0.02 like a real LM-head).
  DeviceBuffer w(size_t(V) * H * 2, "bench LM-head");
  DeviceBuffer x(size_t(total_rows) * H * 2, "bench rows");
  launch_fill_uniform(w.get(), DType::BF16, V * H, 0.035f, 1, nullptr);
  launch_fill_uniform(x.get(), DType::BF16, total_rows * H, 1.f, 2, nullptr);
  FI_CUDA_CHECK(cudaDeviceSynchronize());

  // The single-rank replica minus the disk: the LM-head from (pageable) host memory.
  std::vector<unsigned char> host_w(w.bytes());
  w.copy_to_host(host_w.data(), host_w.size());
  auto t_up = Clock::now();
  DeviceLmHead head = upload_lm_head(host_w.data(), DType::BF16, V, H);
  const double upload_s = seconds_since(t_up);
  host_w = {};
  w = DeviceBuffer();

  std::vector<float> gamma(static_cast<size_t>(H));
  for (int64_t i = 0; i < H; ++i) gamma[i] = 0.8f + 0.4f * float(i % 7) / 6.f;
  DecodeParams p;
  p.top_k = a.top_k;
  p.bottom_k = a.bottom_k;
  CudaDecoderOptions o;
  o.split_input = a.split;
  o.rescore = a.rescore;
  o.sub_rows = a.sub_rows;
  CudaDecoder dec(std::move(head), gamma, p, o);
  const DeviceLmHead& h = dec.head();
  const int64_t ld = dec.logits_ld();

  // The work list: every layer's rows in chunks of chunk_rows, each decoded in pieces.
  struct Chunk {
    int64_t row0, rows;
  };
  std::vector<Chunk> chunks;
  for (int64_t l = 0; l < a.layers; ++l)
    for (int64_t c = 0; c < a.neurons; c += a.chunk_rows)
      chunks.push_back({l * a.neurons + c, std::min(a.chunk_rows, a.neurons - c)});
  const char* xb = static_cast<const char*>(x.get());

  ChunkResult res;
  dec.decode_device(xb, DType::BF16, chunks[0].rows, res);  // warm-up (cuBLAS heuristics, pinned buffers)
  FI_CUDA_CHECK(cudaDeviceSynchronize());

  double total_s = 1e30;
  long long checksum = 0;
  for (int rep = 0; rep < a.reps; ++rep) {
    auto t0 = Clock::now();
    TokenIndex ti(a.token_index > 0 ? a.vocab : 0, a.token_index);
    for (const Chunk& c : chunks) {
      if (a.token_index > 0)
        dec.set_token_index_target(&ti, int32_t(c.row0 / a.neurons), c.row0 % a.neurons);
      dec.decode_device(xb + size_t(c.row0) * H * 2, DType::BF16, c.rows, res);
      checksum += res.top_ids[0];
    }
    dec.sync_token_index();  // the index's copy back, as the job's save does
    FI_CUDA_CHECK(cudaDeviceSynchronize());
    total_s = std::min(total_s, seconds_since(t0));
  }

  bool checked = true;
  if (a.check > 0) checked = check_rows(std::min<int64_t>(a.check, chunks[0].rows), dec, xb, gamma, p);

  // The same pieces through each stage alone, on one stream.
  const int64_t max_sub = dec.max_sub_rows();
  DeviceBuffer logits(size_t(max_sub) * ld * 4, "bench logits");
  DeviceBuffer xn(size_t(max_sub) * H * 2, "bench normed rows");
  DeviceBuffer out(packed_result_bytes(max_sub, a.top_k, a.bottom_k), "bench results");
  const RowOutputs ro = packed_results(out.get(), max_sub, a.top_k, a.bottom_k);
  cublasHandle_t blas;
  FI_CUBLAS_CHECK(cublasCreate(&blas));
  float* L = static_cast<float*>(logits.get());
  auto for_each_piece = [&](auto f) {
    for (const Chunk& c : chunks) {
      const int64_t sub = dec.sub_rows(c.rows);
      for (int64_t r = 0; r < c.rows; r += sub) f(c.row0 + r, std::min(sub, c.rows - r));
    }
  };
  for (const Chunk* c : {&chunks.front(), &chunks.back()}) {  // warm-up: the pieces' shapes
    const int64_t sub = dec.sub_rows(c->rows);
    for (int64_t r = 0; r < c->rows; r += sub)
      gemm_logits(blas, h.data.get(), DType::BF16, V, H, xb, std::min(sub, c->rows - r), L, ld, false, false);
  }
  FI_CUDA_CHECK(cudaDeviceSynchronize());
  const double gemm_s = time_on_device([&] {
    for_each_piece([&](int64_t r0, int64_t n) {
      gemm_logits(blas, h.data.get(), DType::BF16, V, H, xb + size_t(r0) * H * 2, n, L, ld, false, false);
    });
  });
  // Split input: the second GEMM of each piece as the decode runs it, accumulating (beta = 1)
  // into the logits the first one wrote; the pair is timed together, the second alone below.
  double gemm2_s = 0;
  if (a.split) {
    const double pair_s = time_on_device([&] {
      for_each_piece([&](int64_t r0, int64_t n) {
        const char* xr = xb + size_t(r0) * H * 2;
        gemm_logits(blas, h.data.get(), DType::BF16, V, H, xr, n, L, ld, false, false);
        gemm_logits(blas, h.data.get(), DType::BF16, V, H, xr, n, L, ld, false, true);
      });
    });
    gemm2_s = pair_s - gemm_s;
  }
  const double reduce_s = time_on_device([&] {
    for_each_piece([&](int64_t, int64_t n) { launch_row_reduce(L, n, V, ld, a.top_k, a.bottom_k, ro, nullptr); });
  });
  DeviceBuffer gamma_d(size_t(H) * 4, "bench gamma");
  FI_CUDA_CHECK(cudaMemcpy(gamma_d.get(), gamma.data(), size_t(H) * 4, cudaMemcpyHostToDevice));
  const double norm_s = time_on_device([&] {
    for_each_piece([&](int64_t r0, int64_t n) {
      launch_norm_convert(xb + size_t(r0) * H * 2, DType::BF16, xn.get(), nullptr, DType::BF16, n, H,
                          static_cast<const float*>(gamma_d.get()), p, nullptr);
    });
  });
  cublasDestroy(blas);

  const double flops = 2.0 * double(total_rows) * double(V) * double(H);
  const double gemm_all_s = gemm_s + gemm2_s;  // the GEMMs the decode runs, as they run
  std::printf("pieces: %lld rows per GEMM (chunk %lld rows)\n", (long long)dec.sub_rows(a.chunk_rows),
              (long long)a.chunk_rows);
  std::printf("decode total      %8.3f s   %10.0f rows/s   %6.1f TFLOP/s (one GEMM's flops)%s\n", total_s,
              double(total_rows) / total_s, flops / total_s / 1e12,
              a.token_index > 0 ? (", token index M=" + std::to_string(a.token_index)).c_str() : "");
  std::printf("cuBLAS GEMM alone %8.3f s   %6.1f TFLOP/s\n", gemm_s, flops / gemm_s / 1e12);
  if (a.split)
    std::printf("second GEMM (beta 1) %5.3f s   (measured with the first: both %.3f s)\n", gemm2_s, gemm_all_s);
  std::printf("reduction alone   %8.3f s   (logits read: %.1f GB, %.0f GB/s)\n", reduce_s,
              double(total_rows) * double(V) * 4 / 1e9, double(total_rows) * double(V) * 4 / 1e9 / reduce_s);
  std::printf("norm alone        %8.3f s\n", norm_s);
  std::printf("ratio total / GEMMs alone = %.3f   (goal <= 1.15; total goal <= 1.5 s)\n", total_s / gemm_all_s);
  std::printf("LM-head upload    %8.3f s   (%.2f GB from pageable host memory; no disk)\n", upload_s,
              double(size_t(V) * H * 2) / 1e9);
  std::printf("RESULT {\"device\": \"%s\", \"chunk_rows\": %lld, \"sub_rows\": %lld, \"split\": %s, "
              "\"rescore\": %s, \"redecoded_rows\": %lld, \"total_s\": %.4f, \"gemm_s\": %.4f, \"gemm2_s\": %.4f, \"reduce_s\": %.4f, \"norm_s\": %.4f, "
              "\"rows_per_s\": %.0f, \"upload_s\": %.4f, \"checksum\": %lld}\n",
              prop.name, (long long)a.chunk_rows, (long long)dec.sub_rows(a.chunk_rows),
              a.split ? "true" : "false", a.rescore ? "true" : "false", (long long)dec.redecoded_rows(), total_s, gemm_s, gemm2_s, reduce_s, norm_s,
              double(total_rows) / total_s, upload_s, checksum);
  return checked ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (!fi::cuda_available()) {
    std::printf("SKIPPED (no CUDA device)\n");
    return 0;
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_decode_bench: error: %s\n", e.what());
    return 1;
  }
}
