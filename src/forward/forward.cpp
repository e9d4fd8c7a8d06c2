// The forward pass over one stage or a pipeline of ranks (see forward.h).
#include "forward/forward.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "common/error.h"
#include "gpu/device.h"
#include "model/layer_tensors.h"
#include "parallel/mpi_env.h"
#include "parallel/partition.h"

namespace fi {
namespace {

constexpr int kTagHidden = 17;

std::unique_ptr<Stage> make_stage(const Model& model, const StageSpan& span, const ForwardOptions& opt) {
  std::string b = opt.backend;
  if (b != "auto" && b != "cpu" && b != "cuda")
    FI_FAIL("--backend must be cpu, cuda or auto (got '" + b + "')");
  if (b == "auto") b = cuda_available() && cuda_stage_refusal(model.cfg).empty() ? "cuda" : "cpu";
  if (b == "cpu") return make_cpu_stage(model, span);
  if (const std::string why = cuda_stage_refusal(model.cfg); !why.empty()) FI_FAIL(why);
  if (!cuda_available())
    FI_FAIL("--backend cuda: no usable CUDA device (or flashinterp was built without CUDA)");
  gpu::select_device(opt.node);
  return make_cuda_stage(model, span);
}

// Runs one step of the stage; in a pipeline a failure here would leave the other ranks waiting
// in a receive, so it ends the whole job with this rank's one error line.
template <typename F>
void run_or_abort(MPI_Comm comm, int size, F&& f) {
  if (size == 1) return f();
  try {
    f();
  } catch (const std::exception& e) {
    print_error_line(e.what());
    MPI_Abort(comm, 1);
  }
}

// Whether the CUDA stage (forward/cuda/llama_cuda.cpp) loads and applies a layer tensor of this
// role: all of them today. A role added to model/layer_tensors.h is refused until it is decided
// here (the switch has no default, so -Wswitch names the new role).
bool cuda_stage_implements(Role r) {
  switch (r) {
    case Role::Embed: case Role::FinalNorm: case Role::LmHead:
    case Role::AttnNorm: case Role::Q: case Role::K: case Role::V:
    case Role::QBias: case Role::KBias: case Role::VBias: case Role::O:
    case Role::MlpNorm: case Role::Gate: case Role::Up: case Role::Down:
    case Role::PostAttnNorm: case Role::PostMlpNorm: case Role::QNorm: case Role::KNorm:
    case Role::QKV: case Role::GateUp:
    case Role::Router: case Role::RouterBias: case Role::ExpertGate: case Role::ExpertUp:
    case Role::ExpertDown: case Role::SharedGate: case Role::SharedUp: case Role::SharedDown:
    case Role::SharedRouter: case Role::QA: case Role::QANorm: case Role::QB: case Role::KVA:
    case Role::KVANorm: case Role::KVB:
      return true;
  }
  return false;
}

}  // namespace

std::string cuda_stage_refusal(const ModelConfig& c) {
  for (const TensorRow& r : family_of(c).layer)
    if (!cuda_stage_implements(r.role))
      return c.path + ": the CUDA forward does not implement tensor model.layers.L." + r.suffix +
             " (" + role_name(r.role) + ") of model_type " + c.model_type + "; use --backend cpu";
  const int64_t mla_qk = c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim;
  if (c.mla.kv_lora_rank && std::max(mla_qk, c.mla.v_head_dim) > kCudaMaxHeadDim)
    return c.path + ": the CUDA forward takes MLA heads of up to " + std::to_string(kCudaMaxHeadDim) +
           " dims (this config has qk_nope_head_dim + qk_rope_head_dim " + std::to_string(mla_qk) +
           ", v_head_dim " + std::to_string(c.mla.v_head_dim) + "); use --backend cpu";
  if (c.head_dim > kCudaMaxHeadDim)
    return c.path + ": the CUDA forward takes head_dim up to " + std::to_string(kCudaMaxHeadDim) +
           " (this config has " + std::to_string(c.head_dim) + "); use --backend cpu";
  return "";
}

double embedding_layer_equivalents(const ModelConfig& c) {
  const double H = double(c.hidden_size), kv = double(c.num_kv_heads * c.head_dim),
               q = double(c.num_heads * c.head_dim);
  // MLP neurons of the average layer (an MoE layer holds all of its experts').
  const double moe = double(c.moe.moe_layer_count()), L = double(c.num_layers);
  const double neurons = ((L - moe) * double(c.intermediate_size) +
                          moe * double(c.moe.experts * c.moe.expert_size + c.moe.shared_size)) / L;
  const double layer = H * q * 2 + H * kv * 2 + 3 * H * neurons;
  return layer > 0 ? double(c.vocab_size) * H / layer : 0;
}

Forward::Forward(const Model& model, const ForwardOptions& opt) : model_(model), comm_(opt.comm) {
  if (comm_ != MPI_COMM_NULL) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  auto load = [&] {
    const double e = embedding_layer_equivalents(model.cfg);
    bounds_ = split_layers(model.cfg.num_layers, size_, e, e);
    span_ = {bounds_[size_t(rank_)], bounds_[size_t(rank_) + 1], rank_ == 0, rank_ == size_ - 1};
    stage_ = make_stage(model, span_, opt);
  };
  if (comm_ == MPI_COMM_NULL) {
    load();
  } else {
    collective(comm_, load);
  }
}

Forward::~Forward() = default;

void Forward::set_clamps(const std::vector<Clamp>& clamps, ClampSite site) {
  check_clamps(config(), clamps);
  stage_->set_clamps(clamps, site);
}

void Forward::reset() {
  pos_ = 0;
  stage_->reset();
}

// logit_rows: the positions whose logits are sent (the last only, unless all are asked for).
void Forward::check_tokens(const std::vector<int32_t>& tokens, int64_t logit_rows) const {
  const int64_t T = int64_t(tokens.size()), H = config().hidden_size, V = config().vocab_size;
  FI_CHECK(T > 0, "forward: no tokens");
  check_token_ids(config(), tokens);
  FI_CHECK(T * H < (int64_t(1) << 31) && logit_rows * V < (int64_t(1) << 31),
           "forward: " + std::to_string(T) + " tokens at once are too many for one message");
}

// This rank's part of one forward: receive (or embed), run the layers, send on (or apply the
// head to rows first.. of the result). logits: [T - first, V], written on the last stage only.
void Forward::stage_step(const std::vector<int32_t>& tokens, int64_t first, float* logits) {
  const int64_t T = int64_t(tokens.size()), H = config().hidden_size;
  std::vector<float> x(size_t(T * H));
  run_or_abort(comm_, size_, [&] {
    if (span_.embed) {
      stage_->embed(tokens, x.data());
    } else {
      MPI_Recv(x.data(), int(T * H), MPI_FLOAT, rank_ - 1, kTagHidden, comm_, MPI_STATUS_IGNORE);
    }
    if (pos_ > 0 && test_fail_rank() == rank_)
      FI_FAIL("rank " + std::to_string(rank_) + ": injected failure (FLASHINTERP_TEST_FAIL_RANK)");
    stage_->layers(x.data(), T, pos_);
    if (!span_.head) {
      MPI_Send(x.data(), int(T * H), MPI_FLOAT, rank_ + 1, kTagHidden, comm_);
    } else {
      stage_->head(x.data() + first * H, T - first, logits);
    }
  });
  pos_ += T;
}

std::vector<float> Forward::forward(const std::vector<int32_t>& tokens, bool all_positions) {
  check_tokens(tokens, all_positions ? int64_t(tokens.size()) : 1);
  const int64_t T = int64_t(tokens.size()), V = config().vocab_size;
  const int64_t first = all_positions ? 0 : T - 1;
  std::vector<float> logits(size_t((T - first) * V));
  stage_step(tokens, first, logits.data());
  if (size_ > 1) MPI_Bcast(logits.data(), int(logits.size()), MPI_FLOAT, size_ - 1, comm_);
  return logits;
}

std::vector<std::vector<float>> Forward::forward_each(const std::vector<std::vector<int32_t>>& prompts,
                                                      const std::vector<std::vector<Clamp>>& clamps,
                                                      ClampSite site) {
  FI_CHECK(prompts.size() == clamps.size(), "forward_each: one clamp list per prompt");
  for (size_t i = 0; i < prompts.size(); ++i) {
    check_tokens(prompts[i], 1);
    check_clamps(config(), clamps[i]);
  }
  const int64_t V = config().vocab_size;
  std::vector<std::vector<float>> logits(prompts.size(), std::vector<float>(size_t(V)));
  for (size_t i = 0; i < prompts.size(); ++i) {  // no collective inside: the stages overlap
    stage_->set_clamps(clamps[i], site);
    reset();
    stage_step(prompts[i], int64_t(prompts[i].size()) - 1, logits[i].data());
  }
  if (size_ > 1)
    for (std::vector<float>& l : logits) MPI_Bcast(l.data(), int(V), MPI_FLOAT, size_ - 1, comm_);
  return logits;
}

std::vector<float> Forward::embed(const std::vector<int32_t>& tokens) {
  FI_CHECK(span_.embed, "forward: embed() on a stage without the embedding");
  check_tokens(tokens, 1);
  reset();
  std::vector<float> x(tokens.size() * size_t(config().hidden_size));
  stage_->embed(tokens, x.data());
  return x;
}

std::vector<float> Forward::run_layers(float* x, int64_t T, int64_t first, int64_t last,
                                       const std::vector<Clamp>& clamps, ClampSite site) {
  const ModelConfig& c = config();
  FI_CHECK(T > 0 && span_.first <= first && first <= last && last <= span_.last,
           "forward: run_layers() of layers " + std::to_string(first) + ".." + std::to_string(last));
  check_clamps(c, clamps);
  reset();
  stage_->set_clamps(clamps, site);
  if (first < last) stage_->layer_range(x, T, first, last);
  stage_->set_clamps({}, site);
  reset();
  if (last < c.num_layers) return {};
  std::vector<float> logits(size_t(c.vocab_size));
  stage_->head(x + (T - 1) * c.hidden_size, 1, logits.data());
  return logits;
}

std::vector<std::vector<float>> Forward::run_batch(const float* x, int64_t T, int64_t first,
                                                   const std::vector<std::vector<Clamp>>& clamps,
                                                   ClampSite site) {
  const ModelConfig& c = config();
  const int64_t B = int64_t(clamps.size()), H = c.hidden_size, V = c.vocab_size, L = c.num_layers;
  FI_CHECK(size_ == 1, "forward: run_batch() needs the whole model in one stage");
  FI_CHECK(B > 0 && T > 0 && 0 <= first && first <= L, "forward: run_batch() of layers from " + std::to_string(first));
  std::vector<float> xb(size_t(B * T * H));
  for (int64_t b = 0; b < B; ++b) std::copy(x, x + T * H, xb.begin() + b * T * H);
  batch_layers(xb.data(), B, T, first, L, clamps, site);
  std::vector<float> last(size_t(B * H));
  for (int64_t b = 0; b < B; ++b)
    std::copy_n(xb.begin() + (b * T + T - 1) * H, H, last.begin() + b * H);
  const std::vector<float> logits = head(last.data(), B);
  std::vector<std::vector<float>> out;
  for (int64_t b = 0; b < B; ++b) out.emplace_back(logits.begin() + b * V, logits.begin() + (b + 1) * V);
  return out;
}

void Forward::batch_layers(float* xb, int64_t B, int64_t T, int64_t first, int64_t last,
                           const std::vector<std::vector<Clamp>>& clamps, ClampSite site) {
  const int64_t H = config().hidden_size;
  FI_CHECK(B > 0 && T > 0 && int64_t(clamps.size()) == B && span_.first <= first && first <= last &&
               last <= span_.last,
           "forward: batch_layers() of layers " + std::to_string(first) + ".." + std::to_string(last));
  for (const std::vector<Clamp>& k : clamps) check_clamps(config(), k);
  reset();
  if (first < last && !stage_->layer_range_batch(xb, B, T, first, last, clamps, site))
    for (int64_t b = 0; b < B; ++b) {  // a stage that cannot batch: one sequence at a time
      stage_->set_clamps(clamps[size_t(b)], site);
      stage_->layer_range(xb + b * T * H, T, first, last);
    }
  stage_->set_clamps({}, site);
  reset();
}

std::vector<float> Forward::head(const float* x, int64_t n) {
  FI_CHECK(span_.head && n > 0, "forward: head() on a stage without the LM-head");
  std::vector<float> logits(size_t(n * config().vocab_size));
  stage_->head(x, n, logits.data());
  return logits;
}

void check_clamps(const ModelConfig& c, const std::vector<Clamp>& clamps) {
  for (const Clamp& k : clamps) {
    if (k.layer < 0 || k.layer >= c.num_layers)
      FI_FAIL("clamp: layer " + std::to_string(k.layer) + " is out of range (the model has " +
              std::to_string(c.num_layers) + " layers, 0.." + std::to_string(c.num_layers - 1) + ")");
    const bool moe = c.is_moe_layer(k.layer);
    const std::string at = "clamp " + clamp_name(k) + ": ";
    if (k.expert == kDenseMlp && moe)
      FI_FAIL(at + "layer " + std::to_string(k.layer) + " is a mixture-of-experts layer; name the expert (" +
              std::to_string(k.layer) + ":eE:N)" + (c.moe.shared_size > 0 ? " or the shared expert (" +
              std::to_string(k.layer) + ":s:N)" : std::string()));
    if (k.expert != kDenseMlp && !moe)
      FI_FAIL(at + "layer " + std::to_string(k.layer) + " is a dense layer (no experts); write " +
              std::to_string(k.layer) + ":N=V");
    if (k.expert >= c.moe.experts)
      FI_FAIL(at + "expert " + std::to_string(k.expert) + " is out of range (the layer has " +
              std::to_string(c.moe.experts) + " experts)");
    if (k.force_route && k.expert < 0)
      FI_FAIL(at + "--force-route applies to a routed expert's neuron (LAYER:eEXPERT:NEURON), not to " +
              (k.expert == kSharedExpert ? "the shared expert, which sees every position" : "a dense layer's"));
    if (k.expert == kSharedExpert && c.moe.shared_size == 0) FI_FAIL(at + "the model has no shared expert");
    const int64_t n = k.expert == kDenseMlp ? c.intermediate_size
                      : k.expert == kSharedExpert ? c.moe.shared_size : c.moe.expert_size;
    if (k.neuron < 0 || k.neuron >= n)
      FI_FAIL("clamp: neuron " + std::to_string(k.neuron) + " is out of range (" +
              (k.expert == kDenseMlp ? std::string("layers have ") : std::string("the expert has ")) +
              std::to_string(n) + " neurons, 0.." + std::to_string(n - 1) + ")");
  }
}

std::vector<float> softmax(const std::vector<float>& logits) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  std::vector<float> p(logits.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = float(std::exp(double(logits[i]) - mx) / sum);
  return p;
}

}  // namespace fi
