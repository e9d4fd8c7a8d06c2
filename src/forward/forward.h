// The forward pass as the clamp and generate commands use it: one stage in this process, or a
// pipeline of stages over the ranks of an MPI communicator, layers split contiguously
// (parallel/partition.h split_layers). Rank 0 embeds; each rank runs its layers and sends the hidden
// states [T, hidden] (fp32) to the next; the last rank applies the final norm and the LM-head and
// broadcasts the logits, so every rank returns them and can pick the same next token.
//
// A pipeline exists for memory, not speed: a model too big for one GPU (70B in bf16 is 141 GB)
// fits on several, and each rank loads only its own layers. One sequence keeps one stage busy at
// a time; independent prompts (a clamp curve) fill it (forward_each).
#pragma once
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "forward/stage.h"

namespace fi {

struct ForwardOptions {
  std::string backend = "auto";   // cpu | cuda | auto (cuda when a device is usable)
  MPI_Comm comm = MPI_COMM_NULL;  // the pipeline's ranks; MPI_COMM_NULL: one stage, no MPI
  MPI_Comm node = MPI_COMM_NULL;  // ranks of this node: the local rank picks the GPU (cuda)
};

class Forward {
 public:
  // Collective over opt.comm: plans the split and loads this rank's stage.
  Forward(const Model& model, const ForwardOptions& opt);
  ~Forward();
  const ModelConfig& config() const { return model_.cfg; }
  const char* backend() const { return stage_->name(); }
  int stages() const { return size_; }
  const std::vector<int64_t>& bounds() const { return bounds_; }  // split_layers' result

  // Clamps applied from the next forward; throws (before any communication) on a bad range.
  void set_clamps(const std::vector<Clamp>& clamps, ClampSite site);
  void reset();                               // forgets the KV cache (position back to 0)
  int64_t position() const { return pos_; }  // tokens seen so far

  // Collective: runs tokens at positions position()..position()+T-1 and appends them to the
  // cache. Returns logits on every rank: [T, V] for every new position when all_positions,
  // else [V] of the last one. Token ids are checked on every rank before anything is sent.
  std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_positions = false);

  // Collective: independent prompts, each from an empty cache with its own clamps; returns the
  // last position's logits of each, [prompts][V], on every rank. In a pipeline the prompts
  // follow each other through the stages (stage s works on prompt i while stage s+1 works on
  // prompt i-1), so N ranks run a clamp curve up to N times faster than one prompt at a time.
  // Afterwards the cache holds the last prompt.
  std::vector<std::vector<float>> forward_each(const std::vector<std::vector<int32_t>>& prompts,
                                               const std::vector<std::vector<Clamp>>& clamps,
                                               ClampSite site);

  // The sweep's reuse of an unclamped prefix: with a clamp only at layer L, the hidden states
  // entering L are those of the unclamped run, so they are computed once and every clamp runs
  // layers L.. only. No communication: on a pipeline stage they run this rank's layers only
  // (span()) and the caller moves the hidden states between stages (job/sweep_job.cpp). They
  // clear the KV cache.
  const StageSpan& span() const { return span_; }
  // Token ids -> the hidden states entering layer 0, [T, hidden] (the first stage).
  std::vector<float> embed(const std::vector<int32_t>& tokens);
  // Runs layers [first, last) (within span()) on x [T, hidden] in place as a new sequence
  // (positions 0..T-1), with the clamps given (checked; those outside the range do nothing). x
  // must hold the hidden states entering layer `first`. When last is the model's layer count,
  // returns the last position's logits [V] (the same bits as forward() of the whole prompt).
  std::vector<float> run_layers(float* x, int64_t T, int64_t first, int64_t last,
                                const std::vector<Clamp>& clamps, ClampSite site);
  // run_layers(x, T, first, num_layers) of B = clamps.size() copies of x [T, hidden] (left as
  // it is), copy b clamped by clamps[b], as one batch where the stage can (the CPU stage: one
  // weight read for all); returns each copy's last-position logits, [B][V]. The bits may differ
  // from run_layers' in the last place (other GEMM shapes), never with the rank count.
  std::vector<std::vector<float>> run_batch(const float* x, int64_t T, int64_t first,
                                            const std::vector<std::vector<Clamp>>& clamps, ClampSite site);
  // run_batch's two halves, for a pipeline stage: layers [first, last) (within span()) of the B
  // sequences xb [B * T, hidden] in place, copy b clamped by clamps[b]; and the final norm and
  // LM-head of rows x [n, hidden] -> logits [n * V] (the last stage).
  void batch_layers(float* xb, int64_t B, int64_t T, int64_t first, int64_t last,
                    const std::vector<std::vector<Clamp>>& clamps, ClampSite site);
  std::vector<float> head(const float* x, int64_t n);

 private:
  void check_tokens(const std::vector<int32_t>& tokens, int64_t logit_rows) const;
  void stage_step(const std::vector<int32_t>& tokens, int64_t first, float* logits);

  const Model& model_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int64_t> bounds_;
  StageSpan span_;
  std::unique_ptr<Stage> stage_;
  int64_t pos_ = 0;
};

// Throws unless every clamp names a layer and neuron of the model (cheap: call before loading).
void check_clamps(const ModelConfig& cfg, const std::vector<Clamp>& clamps);

// The stage's memory in layer-equivalents for split_layers: embedding (first) and LM-head (last).
double embedding_layer_equivalents(const ModelConfig& cfg);

// Softmax of logits [n] in double precision, as float.
std::vector<float> softmax(const std::vector<float>& logits);

}  // namespace fi
