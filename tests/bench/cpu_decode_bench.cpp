// The floor the CPU decode is measured against: the same loading (LM-head widened to fp32, the
// layer's rows read by byte range) and the bare OpenBLAS sgemm of the same shape, full vocab per
// call, no reduction. Run by tests/bench/cpu_bench.sh beside `flashinterp decode` and numpy.
// An MoE layer (tests/bench/moe_bench.sh): the routed experts' up rows, expert after expert, each
// cut into chunks of chunk_rows as the decode's items are.
// usage: cpu_decode_bench MODEL_DIR [rows] [chunk_rows] [layer]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "model/config.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: cpu_decode_bench MODEL_DIR [rows] [chunk_rows] [layer]\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  fi::Model m(argv[1]);
  const int64_t H = m.cfg.hidden_size, V = m.cfg.vocab_size;
  const int64_t layer = argc > 4 ? std::atoll(argv[4]) : 0;
  const bool moe = m.cfg.is_moe_layer(layer);
  const int64_t slice = moe ? m.cfg.moe.expert_size : m.cfg.intermediate_size;  // rows per tensor
  const int64_t rows = argc > 2 ? std::atoll(argv[2]) : slice;
  const int64_t cr = argc > 3 ? std::atoll(argv[3]) : 512;
  std::vector<float> wu(size_t(V * H));
  const auto& head = m.ckpt.info(m.lm_head_name());
  m.ckpt.file_of(m.lm_head_name()).read_rows_f32(head, 0, V, wu.data());
  auto t_load = Clock::now();
  std::vector<float> x(size_t(cr * H)), logits(size_t(cr * V));
  double gemm_s = 0;
  for (int64_t r = 0; r < rows;) {  // r: rows done; tensor r / slice, its row r % slice
    const std::string up = moe ? m.names.expert(fi::Matrix::Up, layer, r / slice)
                               : m.names.matrix(fi::Matrix::Up, layer);
    const int64_t r0 = r % slice, n = std::min({cr, rows - r, slice - r0});
    m.ckpt.file_of(up).read_rows_f32(m.ckpt.info(up), r0, n, x.data());
    auto g0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(V), int(H), 1.f, x.data(),
                int(H), wu.data(), int(H), 0.f, logits.data(), int(V));
    gemm_s += std::chrono::duration<double>(Clock::now() - g0).count();
    r += n;
  }
  double total = std::chrono::duration<double>(Clock::now() - t0).count();
  double load = std::chrono::duration<double>(t_load - t0).count();
  double gflop = 2.0 * rows * V * H / 1e9;
  std::printf("bare sgemm: rows %lld, hidden %lld, vocab %lld: load %.2f s, sgemm %.2f s (%.1f GFLOP/s), total %.2f s\n",
              (long long)rows, (long long)H, (long long)V, load, gemm_s, gflop / gemm_s, total);
  std::printf("checksum %g\n", double(logits[0]) + double(logits[logits.size() / 2]));
  return 0;
}
