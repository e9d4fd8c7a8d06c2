// Host launchers of the CUDA decode's kernels (norm + 16-bit conversion, the fused row
// reduction, the token index, random fills). Shared by the decoder, the tests' helpers and the
// benchmark, so all of them run exactly the same device code; the GEMM is gpu/gemm.h.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "decode/decoder.h"
#include "io/safetensors.h"

namespace fi::gpu {

// The largest top_k / bottom_k the reduction kernel takes (its candidate buffers live in shared
// memory: 2 × next_pow2(k + 1024) × 8 bytes ≤ 32 KiB).
constexpr int kMaxK = 1024;

// Device pointers of one launch's per-row results (row r at offset r·k, r·b, r): the fields of
// ChunkResult (decode/chunk_result.h), named for the kernel.
struct RowOutputs {
  int32_t* top_ids = nullptr;      // [rows, k]
  float* top_logits = nullptr;     // [rows, k]
  float* top_probs = nullptr;      // [rows, k]
  float* lse = nullptr;            // [rows]
  int32_t* bottom_ids = nullptr;   // [rows, b]
  float* bottom_logits = nullptr;  // [rows, b]
  float* entropy = nullptr;        // [rows]
  float* margin = nullptr;         // [rows]

  // Field i of kChunkFields, as 4-byte elements.
  char* field(int i) const {
    void* const f[kNumChunkFields] = {top_ids,    top_logits,    top_probs, lse,
                                      bottom_ids, bottom_logits, entropy,   margin};
    return static_cast<char*>(f[i]);
  }
  void set(int i, void* p) {
    switch (i) {
      case 0: top_ids = static_cast<int32_t*>(p); break;
      case 1: top_logits = static_cast<float*>(p); break;
      case 2: top_probs = static_cast<float*>(p); break;
      case 3: lse = static_cast<float*>(p); break;
      case 4: bottom_ids = static_cast<int32_t*>(p); break;
      case 5: bottom_logits = static_cast<float*>(p); break;
      case 6: entropy = static_cast<float*>(p); break;
      default: margin = static_cast<float*>(p); break;
    }
  }
  // The same fields from row r0 on.
  RowOutputs from_row(int64_t r0, int k, int b) const {
    RowOutputs s;
    for (int i = 0; i < kNumChunkFields; ++i)
      s.set(i, field(i) + size_t(r0 * field_width(kChunkFields[i], k, b)) * 4);
    return s;
  }
};

// The fields of `rows` rows packed one after another in kChunkFields order (one copy back per
// call), and the bytes they take.
inline size_t packed_result_bytes(int64_t rows, int k, int b) {
  size_t n = 0;
  for (const ChunkField& f : kChunkFields) n += size_t(rows * field_width(f, k, b)) * 4;
  return n;
}
inline RowOutputs packed_results(void* base, int64_t rows, int k, int b) {
  RowOutputs o;
  char* p = static_cast<char*>(base);
  for (int i = 0; i < kNumChunkFields; ++i) {
    o.set(i, p);
    p += size_t(rows * field_width(kChunkFields[i], k, b)) * 4;
  }
  return o;
}
// A host ChunkResult's fields (already sized), e.g. for the kernel run on CPU threads.
inline RowOutputs host_results(ChunkResult& r) {
  RowOutputs o;
  for (int i = 0; i < kNumChunkFields; ++i) o.set(i, r.data(i));
  return o;
}

// logits: [rows, ld] fp32 on the device, tokens [0, vocab) of each row. k, b in [0, kMaxK].
// Gemma 2's final soft-cap in place: logits[r, v] = cap·tanh(logits[r, v] / cap) (softcap.cu).
void launch_softcap(float* logits, int64_t rows, int64_t vocab, int64_t ld, float cap, cudaStream_t stream);

// The row reduction (row_reduce_kernel.cuh); with marks.marks, it also marks the tokens that may
// enter their token index lists (token_index_kernel.cuh TokenMarks).
struct TokenMarks;
void launch_row_reduce(const float* logits, int64_t rows, int64_t vocab, int64_t ld, int k, int b,
                       const RowOutputs& out, cudaStream_t stream);
void launch_row_reduce(const float* logits, int64_t rows, int64_t vocab, int64_t ld, int k, int b,
                       const RowOutputs& out, const TokenMarks& marks, cudaStream_t stream);

struct TokenIndexLists;  // token_index_kernel.cuh

// The token index update of one logits piece: rows [rows, ld] fp32 (device) are neurons row0..
// of model layer `layer`, lse: [rows] their log-sum-exp (device, from launch_row_reduce or the
// re-scoring); every token's list in t (device) takes the rows that beat its M-th entry, reading
// only the marked rows' logits (marks: [rows, marks_ld] from launch_row_reduce, made against
// lse_marks, the reduction's own lse; null: every row read).
void launch_token_index(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
                        const float* lse, const uint32_t* marks, int64_t marks_ld,
                        const float* lse_marks, int32_t layer, int64_t row0,
                        const TokenIndexLists& t, cudaStream_t stream);

// gpu::launch_norm_split (gpu/norm_split.h) with the decode's norm (p.norm, norm_plus_one, eps):
// x: [rows, hidden] of x_dtype (device); gamma: [hidden] fp32 (device; unused for None).
// hi: [rows, hidden] of out_dtype = the normed rows rounded to out_dtype. lo (optional, only
// for 16-bit out_dtype): the rounding remainder, also rounded, so hi + lo carries ~16 bits more.
void launch_norm_convert(const void* x, DType x_dtype, void* hi, void* lo, DType out_dtype,
                         int64_t rows, int64_t hidden, const float* gamma, const DecodeParams& p,
                         cudaStream_t stream);

// The re-scoring of --gemm bf16 (rescore_kernel.cuh) for one piece of rows. xn: [rows, hidden]
// fp32 exact normed rows; xg: [rows, hidden] the GEMM's 16-bit input; w: [vocab, hidden] the
// 16-bit LM-head (bf16: bf16, else f16); mean: [hidden] double, its mean row; spread: tr(C)/H.
// cand: the reduction's outputs with kc / bc candidates per row. Out: exact [rows, kc + bc]
// double, stats [rows, 4] double (corrected lse, |x~ - x|, |x~|, shift), lse_out [rows] float;
// logits[r, id] (row stride ld) overwritten with the exact value of every candidate, and its bit
// set in marks (the token marks of launch_row_reduce, marks_ld words per row; null: none).
void launch_rescore(const float* xn, const void* xg, const void* w, bool bf16, int64_t rows,
                    int64_t hidden, const double* mean, double spread, const RowOutputs& cand,
                    int kc, int bc, double* exact, double* stats, float* lse_out, float* logits,
                    int64_t ld, uint32_t* marks, int64_t marks_ld, cudaStream_t stream);

// Fills n values of dtype at dst with uniform random numbers in [-scale, scale) from a
// counter-based hash of (seed, index): reproducible, no state. For tests and the benchmark.
void launch_fill_uniform(void* dst, DType dtype, int64_t n, float scale, uint64_t seed,
                         cudaStream_t stream);

}  // namespace fi::gpu
