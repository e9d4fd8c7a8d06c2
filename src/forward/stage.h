// One share of the Llama forward pass, as a backend runs it: layers [first, last) of the model,
// plus the token embedding on the first stage and the final norm + LM-head on the last. A model
// that fits one device is one stage holding everything; the pipeline (forward/forward.h) chains
// stages over MPI ranks and passes the hidden states [T, hidden] between them as fp32 on the host.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "forward/clamp.h"
#include "model/config.h"

namespace fi {

struct StageSpan {
  int64_t first = 0, last = 0;  // layers [first, last)
  bool embed = false;           // holds the embedding (the first stage)
  bool head = false;            // holds the final norm and the LM-head (the last stage)
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual const char* name() const = 0;  // "cpu" | "cuda"
  // Clamps take effect from the next layers() call; those of other stages' layers are ignored.
  // Layer and neuron ranges were checked by the caller (check_clamps).
  virtual void set_clamps(const std::vector<Clamp>& clamps, ClampSite site) = 0;
  virtual void reset() = 0;  // empties the KV cache
  // Token ids -> x [T, hidden] fp32 (embed stages only; ids already checked against vocab_size).
  virtual void embed(const std::vector<int32_t>& tokens, float* x) = 0;
  // Runs this stage's layers on x [T, hidden] in place, for positions pos..pos+T-1, and appends
  // those positions to the KV cache (pos is the number of positions already cached).
  virtual void layers(float* x, int64_t T, int64_t pos) = 0;
  // Runs layers [first, last) of this stage (clipped to its span) on x [T, hidden] in place as a
  // new sequence, positions 0..T-1: x holds the hidden states entering layer `first`, the layers
  // before it are not run. The KV cache is only valid again after reset(). What the sweep uses
  // to reuse an unclamped prefix (Forward::run_layers).
  virtual void layer_range(float* x, int64_t T, int64_t first, int64_t last) = 0;
  // layer_range of B sequences of T positions at once, x [B * T, hidden] stacked by sequence,
  // sequence b clamped by clamps[b] (every other clamp is ignored): one weight read for all.
  // Returns false, doing nothing, where the stage cannot batch (then the caller loops).
  virtual bool layer_range_batch(float* x, int64_t B, int64_t T, int64_t first, int64_t last,
                                 const std::vector<std::vector<Clamp>>& clamps, ClampSite site) {
    (void)x, (void)B, (void)T, (void)first, (void)last, (void)clamps, (void)site;
    return false;
  }
  // Final norm and LM-head of x [n, hidden] -> logits [n, vocab_size] (head stages only).
  virtual void head(const float* x, int64_t n, float* logits) = 0;
};

// The CPU stage (forward/llama_cpu.cpp), activations fp32: weights stay in the checkpoint dtype
// (forward/weight.h) and are widened as they are used; matmuls by widening dot products (one
// token) or OpenBLAS SGEMM over widened row blocks (several).
std::unique_ptr<Stage> make_cpu_stage(const Model& model, const StageSpan& span);

// The CUDA stage (forward/cuda/): weights in their checkpoint dtype on the current device (FP8
// ones dequantised to fp32 as they load), cuBLAS GEMMs with fp32 accumulation; mixtures of
// experts routed on the host. Throws when built without CUDA, or with cuda_stage_refusal's reason.
std::unique_ptr<Stage> make_cuda_stage(const Model& model, const StageSpan& span);

// Most head_dim the CUDA stage takes (its attention kernel keeps the query head in shared memory).
constexpr int64_t kCudaMaxHeadDim = 512;

// Why the CUDA stage cannot run this config ("" when it can): a layer tensor of the family's
// table it does not implement (none of today's families has one), naming it and the model_type,
// or a head_dim above kCudaMaxHeadDim. Checked before any device is touched; `--backend auto`
// then picks the CPU stage.
std::string cuda_stage_refusal(const ModelConfig& cfg);

}  // namespace fi
