// The backend interface of the decode: a chunk of neuron vectors in, per-row results out.
// Plain C++ (no CUDA header), so the job and the tests see every backend the same way.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decode/chunk_result.h"
#include "io/row_feed.h"
#include "io/safetensors.h"

namespace fi {

enum class NormMode { Rms, Gamma, None };
NormMode parse_norm(const std::string& s);  // rms | gamma | none
const char* norm_name(NormMode n);

// The decode's GEMM (decode/rescore.h): exact (CPU fp32 sgemm; CUDA the hi + lo 16-bit split,
// fp32 SGEMM for fp32 heads) or bf16 (one 16-bit GEMM on the row rounded to bf16, the top and
// bottom candidates re-scored exactly, the log-sum-exp corrected).
enum class GemmMode { Exact, Bf16 };
// auto | exact | bf16; auto = bf16 on cuda (16-bit heads; fp32 heads stay exact), exact on cpu.
GemmMode parse_gemm(const std::string& s, bool cuda);
const char* gemm_name(GemmMode g);

struct DecodeParams {
  int top_k = 20, bottom_k = 0;
  NormMode norm = NormMode::Rms;
  bool norm_plus_one = false;  // Gemma: multiply by (1 + gamma)
  double eps = 1e-5;
  int64_t chunk_rows = 256;
  bool allow_tf32 = false;
  GemmMode gemm = GemmMode::Exact;
  // Gemma 2's final_logit_softcapping c: every logit becomes c·tanh(x/c) before the softmax, as
  // the model's own output does (0: none). Exact GEMM only (the re-scoring's lse correction
  // assumes plain logits).
  float softcap = 0;
};

// The LM-head as the CPU backend sees it: [vocab, hidden] fp32 on the host. (The CUDA backend
// reads the checkpoint's rows itself, make_cuda_decoder, and keeps 16-bit weights 16-bit.)
struct LmHead {
  int64_t vocab = 0, hidden = 0;
  const float* f32 = nullptr;  // [vocab, hidden], may be a shared-memory window
  // GemmMode::Bf16: the GEMM's copy W~ of f32 rounded to bf16 (bits; also shared per node), and
  // whether W~ = W (a bf16 checkpoint: then f32 may be null, the decoder widens W~ as it needs).
  const uint16_t* bf16 = nullptr;  // [vocab, hidden]
  bool bf16_exact = false;
};

struct TokenIndex;

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual const char* name() const = 0;
  // The token index (decode/token_index.h): the backend adds the rows of the next decode()
  // call (neurons row0.. of model layer `layer`) to *ti; without a call, no index is kept.
  virtual void set_token_index_target(TokenIndex* ti, int32_t layer, int64_t row0) = 0;
  // Brings every target TokenIndex up to date on the host (a backend that keeps the index
  // elsewhere, e.g. on a GPU); call before reading or merging them. Later decode() calls start
  // again from the host objects.
  virtual void sync_token_index() {}
  // x: [rows, hidden] fp32, the raw neuron vectors (widened exactly). The backend applies its
  // norm (DecodeParams::norm, with the final norm's gamma given when it was made) and the LM-head.
  virtual void decode(const float* x, int64_t rows, ChunkResult& out) = 0;
  // Rows as the checkpoint stores them (io/row_feed.h): a backend that widens on its own side
  // (CUDA: on the device, with half the upload of fp32 for bf16) says which blocks it takes;
  // decode_block then gives the same result as decode() of widen_block(b). The job widens the
  // rest (all of the CPU backend's) itself.
  virtual bool takes_block(const RowBlock&) const { return false; }
  virtual void decode_block(const RowBlock& b, ChunkResult& out);
  // Memory for the row feed's buffers (io/row_feed.h): the default, or (CUDA) pinned memory that
  // decode_block uploads from directly. The decode calls come from one worker thread at a time
  // (job/round_overlap.h), not always the thread that made the decoder.
  virtual HostAlloc host_alloc() const { return {}; }
  // How the logits are computed, for the start line (e.g. "bf16 GEMM: oneDNN ... + re-scoring").
  virtual std::string gemm_info() const { return ""; }
  // GemmMode::Bf16: rows so far whose ids the error bound could not certify, decoded again
  // exactly (decode/rescore.h).
  virtual int64_t redecoded_rows() const { return 0; }
};

// norm: applies the chosen norm in place. x: [rows, hidden]
void apply_norm(float* x, int64_t rows, int64_t hidden, const float* gamma, const DecodeParams& p);

// threads: worker threads for this rank (decode/backend.h: the cores of its affinity mask).
std::unique_ptr<Decoder> make_cpu_decoder(const LmHead& head, const std::vector<float>& gamma,
                                          const DecodeParams& p, int threads = 1);

}  // namespace fi
