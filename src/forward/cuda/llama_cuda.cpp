// The CUDA stage of the forward pass (forward/stage.h): weights in their checkpoint dtype
// on the current device, activations fp32, the same arithmetic as the CPU stage. It runs every
// family of model/layer_tensors.cpp (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text,
// gemma3, olmo2, phi3, and the mixtures of experts mixtral, qwen2_moe, qwen3_moe, deepseek_v3),
// with every RoPE type, sliding-window layers, query_pre_attn_scalar and both soft-caps; a layer
// tensor it does not implement is cuda_stage_refusal's (forward/forward.cpp), checked before any
// device work. FP8 weights stay as stored on the device (1 byte per parameter, plus their scale)
// and are widened to fp32 into one scratch matrix before each GEMM that uses them (the decode's
// widening kernel, gpu/widen.h: the same single fp32 rounding as the host's dequantisation), then
// multiplied by plain fp32 SGEMM; an FP8 embedding is dequantised as it loads.
// Per layer, for the T new positions (in pieces of kRows rows for the GEMMs), where a norm the
// family lacks is the identity (OLMo 2 has no pre-norms, Llama-style layers no post-norms):
//   qkv = [q; k; v](pre(x)) + bias       one GEMM with the three matrices stacked by rows (Phi-3's
//                                        qkv_proj is that matrix already)
//   q, k = qn(q), kn(k)                  RMSNorm per head or over the width (Qwen 3, Gemma 3,
//                                        OLMo 2), in place in qkv
//   rope(q, k), k and v appended to the KV cache (fp32, capacity doubled when full); cos and sin
//                                        of the layer's RoPE (local or global), times its
//                                        attention factor
//   x  += post_attn(o(attention(q, cache)))   one GEMM; the window of a sliding layer
//   h   = act(gate(n)) * up(n), n = pre_mlp(x), clamps applied to h  one GEMM (gate; up stacked)
//   x  += post_mlp(down(h))               one GEMM
// so a generated token costs 4 GEMMs per layer plus the LM-head's one.
// An MoE layer (moe_mlp) replaces the MLP: the router's GEMM on the device, its logits copied to
// the host, which routes (route_experts, forward/ops.h: the CPU stage's own routing); then per
// expert with tokens, its rows of n = pre_mlp(x) gathered, its gate/up GEMM, SwiGLU and clamps,
// its down GEMM, and the result weighted and added to its tokens' rows; the shared expert(s) on
// every row (Qwen2-MoE: weighted by sigmoid(shared_expert_gate·n), computed on the host).
// DeepSeek's MLA (mla_attention) replaces q/k/v: q = q_b(norm(q_a(x))) (or q_proj(x)), kv_a(x)
// = [latent | k_rope], kv_b(norm(latent)) = per head [k_nope | v]; RoPE over the rope parts and
// the cache rows in one kernel; the attention kernel with keys of nope + rope dims and values of
// v_head_dim. Without a post-norm the
// GEMM's halves are added to x directly; with one they are summed in place in the GEMM output,
// then normed and added to x (rms_norm_kernel.cuh).
//
// Exact inputs: a 16-bit weight multiplies the fp32 input split as hi + lo (both 16-bit; see
// forward_kernels.h), in ONE GEMM of 2 · rows rows, so the weights are read once per call; an
// fp32 weight runs plain fp32 SGEMM (no TF32). Device memory per layer: its weights (2 bytes per
// parameter for bf16/f16), gammas and biases as fp32, and the KV cache, 2 · nkv · hd · 4 bytes
// per cached position. Scratch (shared by the layers): x, qkv, attention output for T rows and
// the GEMM input/output of one piece of at most kRows rows.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "forward/clamp.h"
#include "forward/cuda/forward_kernels.h"
#include "forward/ops.h"
#include "forward/stage.h"
#include "gpu/buffers.h"
#include "gpu/check.h"
#include "gpu/gemm.h"
#include "gpu/handles.h"
#include "gpu/norm_split.h"
#include "gpu/widen.h"
#include "io/checkpoint.h"
#include "model/layer_tensors.h"

namespace fi {
namespace gpu {
namespace {

static_assert(kMaxHeadDim == kCudaMaxHeadDim, "cuda_stage_refusal checks the kernels' limit");

constexpr int64_t kRows = 256;                  // rows per GEMM in layers()
constexpr size_t kHeadBytes = size_t(64) << 20;  // GEMM output bytes per piece of head()
constexpr size_t kStagingBytes = size_t(64) << 20;  // host staging of the weight upload



float* f32(const DeviceBuffer& b) { return static_cast<float*>(b.get()); }

// A weight matrix on the device in its checkpoint dtype: [rows, cols], row-major.
struct Weight {
  DeviceBuffer data;
  DType dtype = DType::F32;  // the GEMM's: an FP8 weight is F32 (widened before each GEMM)
  int64_t rows = 0, cols = 0;
  // FP8: data holds the codes as stored; each stacked part's rows row0.., its code format, its
  // scale on the device and the scale's layout (Checkpoint::Scale without the values).
  struct Fp8Part {
    int64_t row0 = 0, rows = 0;
    DType code = DType::F8_E4M3;
    DeviceBuffer scale;
    Checkpoint::Scale layout;
  };
  std::vector<Fp8Part> fp8;
  bool split() const { return dtype != DType::F32; }  // 16-bit: the input goes as hi + lo
};

// Every copy to the device goes on the stage's own stream, then waits for it: a plain cudaMemcpy
// runs on the legacy default stream, which the stage's non-blocking stream does not wait for.
void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  FI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  FI_CUDA_CHECK(cudaStreamSynchronize(stream));
}

DeviceBuffer upload(const std::vector<float>& v, const std::string& what, cudaStream_t stream) {
  DeviceBuffer b(v.size() * sizeof(float), what);
  if (!v.empty()) copy_to_device(b.get(), v.data(), b.bytes(), stream);
  return b;
}

// The parts' raw bytes stacked by rows in one device buffer (same dtype and cols required);
// the parts come checked from model/layer_tensors.h. FP8 parts keep their codes, each with its
// scale (Weight::fp8), unless keep_fp8 is false: then they are dequantised on the host and held
// as fp32 (the embedding, whose rows a kernel reads directly).
Weight load_weight(const Model& m, const std::vector<const ModelTensor*>& parts,
                   std::vector<uint8_t>& staging, cudaStream_t stream, bool keep_fp8 = true) {
  Weight w;
  const ModelTensor& p0 = *parts[0];
  const DType d0 = p0.stored().dtype;
  for (const ModelTensor* p : parts) {
    if (p->stored().dtype != d0)
      FI_FAIL(m.dir + ": " + p->name + " is " + dtype_name(p->info->dtype) + " but " + p0.name +
              " is " + dtype_name(d0) + " (the CUDA forward stacks them in one matrix)");
    w.rows += p->shape[0];
  }
  w.cols = p0.shape[1];
  w.dtype = is_fp8(d0) ? DType::F32 : d0;
  if (is_fp8(d0) && !keep_fp8) {
    w.data = DeviceBuffer(size_t(w.rows * w.cols) * sizeof(float), p0.name);
    char* dst = static_cast<char*>(w.data.get());
    for (const ModelTensor* p : parts) {
      const std::vector<float> v = p->read_f32();
      copy_to_device(dst, v.data(), v.size() * sizeof(float), stream);
      dst += v.size() * sizeof(float);
    }
    return w;
  }
  const size_t es = dtype_size(d0);
  w.data = DeviceBuffer(size_t(w.rows * w.cols) * es, p0.name);
  char* dst = static_cast<char*>(w.data.get());
  int64_t row0 = 0;
  for (const ModelTensor* p : parts) {
    if (is_fp8(d0)) {
      Weight::Fp8Part f;
      f.row0 = row0;
      f.rows = p->shape[0];
      f.code = d0;
      f.layout = p->ckpt->scale_of(p->name);
      f.scale = upload(f.layout.s, p->name + " (scale)", stream);
      f.layout.s.clear();
      w.fp8.push_back(std::move(f));
    }
    row0 += p->shape[0];
    const uint64_t bytes = p->info->numel() * es;
    for (uint64_t off = 0; off < bytes; off += staging.size()) {
      const uint64_t n = std::min<uint64_t>(staging.size(), bytes - off);
      p->file->read_bytes(*p->info, off, n, staging.data());
      copy_to_device(dst + off, staging.data(), n, stream);
    }
    dst += bytes;
  }
  return w;
}

// The layer's tensor of role r as fp32 on the device; an empty buffer (null) when the family has
// no such tensor.
DeviceBuffer upload_if(const LayerTensors& t, Role r, cudaStream_t stream) {
  const ModelTensor* m = t.find(r);
  return m ? upload(m->read_f32(), m->name, stream) : DeviceBuffer();
}

class CudaStage final : public Stage {
 public:
  CudaStage(const Model& model, const StageSpan& span);
  const char* name() const override { return "cuda"; }
  void set_clamps(const std::vector<Clamp>& clamps, ClampSite site) override;
  void reset() override { len_ = 0; }
  void embed(const std::vector<int32_t>& tokens, float* x) override;
  void layers(float* x, int64_t T, int64_t pos) override { run(x, T, pos, 0, layers_.size()); }
  void layer_range(float* x, int64_t T, int64_t first, int64_t last) override {
    const int64_t a = std::max(first, span_.first), b = std::min(last, span_.last);
    if (a < b) run(x, T, 0, size_t(a - span_.first), size_t(b - span_.first));
  }
  // The sweep's batch (forward/stage.h): B sequences of T positions in one pass, so each GEMM
  // reads the weights once for all; attention and the clamps per sequence. Untested: compiled
  // only, no device was lent when it was written (check sweep --backend cuda against cpu).
  bool layer_range_batch(float* x, int64_t B, int64_t T, int64_t first, int64_t last,
                         const std::vector<std::vector<Clamp>>& clamps, ClampSite site) override;
  void head(const float* x, int64_t n, float* logits) override;

 private:
  // Norm gammas (fp32) are empty buffers, null, where the family has no such norm.
  struct Layer {
    DeviceBuffer attn_norm, mlp_norm;            // [H]: the pre-norms
    DeviceBuffer post_attn_norm, post_mlp_norm;  // [H]: norms of the blocks' outputs
    DeviceBuffer q_norm, k_norm;       // [hd] per head, or [qd], [kvd] over the width
    int64_t q_norm_n = 0, k_norm_n = 0;  // their lengths
    Weight qkv;                        // [qd + 2 kvd, H]: q, k, v stacked
    DeviceBuffer qkv_bias;             // [qd + 2 kvd] fp32 (Qwen2) or empty
    Weight o;                          // [H, qd]
    Weight gate_up;                    // [2I, H]: gate, up stacked (Phi-3's gate_up_proj)
    Weight down;                       // [H, I]
    bool sliding = false;              // attends to the last sliding_window positions
    bool local_rope = false;           // RoPE of rope_local_theta (Gemma 3's sliding layers)
    // DeepSeek's MLA: q_a [ql, H] (empty: q_proj is qkv), q_b [nh qk, ql], kv_a [kvr + rope, H],
    // kv_b [nh (nope + vd), kvr] and the gammas of q_a's and the latent's norms.
    bool mla = false;
    Weight q_a, q_b, kv_a, kv_b;
    DeviceBuffer q_a_norm, kv_a_norm;
    // An MoE layer: the router [E, H] (its correction bias stays on the host, where the routing
    // runs), each routed expert's gate and up stacked [2N, H] and down [H, N], the shared
    // expert(s) likewise and Qwen2-MoE's shared_expert_gate [1, H] (empty where none).
    bool moe = false;
    Weight router, shared_router;
    std::vector<float> router_bias;
    std::vector<Weight> expert_gate_up, expert_down;
    Weight shared_gate_up, shared_down;
    int64_t k_width = 0, v_width = 0;  // cache values per position: nkv hd (MLA: nh qk, nh vd)
    DeviceBuffer k_cache, v_cache;     // [cap_, k_width], [cap_, v_width] fp32
    std::vector<const Weight*> matrices() const {  // every GEMM's weight (some empty)
      std::vector<const Weight*> m = {&qkv, &o, &gate_up, &down, &q_a, &q_b, &kv_a, &kv_b,
                                      &router, &shared_router, &shared_gate_up, &shared_down};
      for (size_t e = 0; e < expert_gate_up.size(); ++e) {
        m.push_back(&expert_gate_up[e]);
        m.push_back(&expert_down[e]);
      }
      return m;
    }
  };
  void use_device() const { FI_CUDA_CHECK(cudaSetDevice(device_)); }
  // w's matrix for a GEMM in w.dtype: its data, or an FP8 weight widened to fp32 into wide_
  // (valid until the next call: the GEMMs run in stream order). The pieces of a long prompt
  // use one weight in a row: it is widened once for them.
  const void* gemm_data(const Weight& w);
  void ensure(DeviceBuffer& b, size_t bytes, const char* what);
  void grow_cache(int64_t positions);
  RowNorm norm_params(bool rms) const;
  // y2_ = w · norm(in[r, :]) for r < rows, the GEMM's output as launch_add_halves takes it
  // ([2 rows, w.rows] when w.split()); in: [rows, w.cols] fp32 (device); gamma: the RMSNorm's
  // [w.cols] or null (no norm).
  void gemm(const Weight& w, const float* in, int64_t rows, const float* gamma);
  // out[r, :] (+)= w · norm(in[r, :]) (+ bias): gemm, then the halves summed; out: row stride ldo.
  void linear(const Weight& w, const float* in, int64_t rows, const float* gamma,
              const float* bias, float* out, int64_t ldo, bool accumulate);
  // x [rows, H] (rows row0.. of the pass) += post_mlp(down(h)), clamped
  void mlp(size_t li, float* x, int64_t rows, int64_t row0);
  // y2_ = down(act(gate(n)) * up(n)) of in [rows, H] fp32 normed by gamma (null: none), with the
  // clamps of (layer li, expert) for each row's sequence seq[r] (rows of one sequence adjacent).
  void gated(size_t li, int64_t expert, const Weight& gate_up, const Weight& down, int64_t I,
             const float* in, int64_t rows, const float* gamma, const std::vector<int64_t>& seq);
  void moe_mlp(size_t li, float* x, int64_t rows, int64_t row0);  // an MoE layer's mlp
  // x [T, H] -> ctx_ [T, nh vd] for an MLA layer, positions pos.., cache rows appended
  void mla_attention(Layer& w, const float* x, int64_t T, int64_t pos);
  int64_t seq_of_row(int64_t r) const { return seq_ > 0 ? r / seq_ : 0; }  // r: a row of the pass
  // Clamp lists to the device: list b's clamps of this stage's layers (the later of two for one
  // neuron wins, as on the CPU), grouped by list then layer.
  void upload_clamps(const std::vector<std::vector<Clamp>>& lists, ClampSite site);
  // x [rows, H] += post(y), y = the GEMM output in y2_ (split: its two halves, summed in place
  // first); post: the post-norm's gamma, or empty (none: y itself is added).
  void add_block_output(bool split, const DeviceBuffer& post, int64_t rows, float* x);
  void qk_norms(const Layer& w, float* qkv, int64_t T);  // in place, before RoPE
  void run(float* x, int64_t T, int64_t pos, size_t li0, size_t li1);  // layers_[li0, li1)

  ModelConfig cfg_;
  StageSpan span_;
  Act act_;
  int device_ = 0;
  Stream stream_;
  Blas blas_;
  std::vector<Layer> layers_;  // layers_[l - span_.first]
  Weight embed_, lm_head_own_;
  const Weight* lm_head_ = nullptr;  // &embed_ when tied
  DeviceBuffer final_norm_;          // [H] fp32
  // Clamps: [n] int32 neurons then [n] fp32 values, grouped by list, layer and expert;
  // clamp_at_[{b, li, expert}] = (first, count) of list b's at layer li for that expert (or
  // kDenseMlp, kSharedExpert); one list unless a batch. The lists stay on the host too (the
  // routing reads --force-route there).
  DeviceBuffer clamp_buf_;
  int64_t clamp_n_ = 0;
  std::map<std::tuple<int64_t, size_t, int64_t>, std::pair<int64_t, int64_t>> clamp_at_;
  std::vector<std::vector<Clamp>> clamp_lists_{{}};
  int64_t max_rows_ = 0, max_cols_ = 0;  // of the layers' weights: the GEMM scratch's size
  ClampSite site_ = ClampSite::Act;
  int64_t cap_ = 0, len_ = 0;  // KV cache capacity and positions held
  int64_t seq_ = 0;            // a batch's positions per sequence (layer_range_batch); 0: none
  // Scratch, grown on demand: x [T, H], qkv [T, qd + 2 kvd], ctx [T, qd], rope [2, 2, T, hd/2]
  // (global then local RoPE, each cos then sin), ids [T], xs (GEMM input) and y2 (GEMM output) of one piece.
  // MLA: mla_ holds qr, kva, latent, kvb and q_a's output for T rows (q itself in qkv_).
  // MoE, per piece: xn (normed rows), gx (an expert's gathered rows), mo (the block's output),
  // rl (router logits), route ([n] int32 rows then [n] fp32 weights of every expert's tokens).
  DeviceBuffer x_, qkv_, ctx_, rope_, ids_, xs_, y2_, mla_, xn_, gx_, mo_, rl_, route_;
  // FP8 weights: one widened to fp32 (sized for the largest at load), and each code format's
  // [256] values (fp8_to_f32), E4M3 then E5M2.
  DeviceBuffer wide_, fp8_table_[2];
  const Weight* wide_of_ = nullptr;  // the weight wide_ holds (weights never move after load)
};

CudaStage::CudaStage(const Model& model, const StageSpan& span)
    : cfg_(model.cfg), span_(span), act_(parse_act(model.cfg.hidden_act)) {
  const ModelConfig& c = cfg_;
  check_forward_supported(c);
  if (const std::string why = cuda_stage_refusal(c); !why.empty()) FI_FAIL(why);
  FI_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
           c.path + ": num_attention_heads must be a multiple of num_key_value_heads");
  check_layer_span(c, span.first, span.last);
  FI_CHECK(c.mla.kv_lora_rank == 0 || c.head_dim == c.mla.qk_rope_head_dim,
           c.path + ": MLA's head_dim must be qk_rope_head_dim (the rotary dimension)");
  FI_CUDA_CHECK(cudaGetDevice(&device_));
  FI_CUBLAS_CHECK(cublasSetStream(blas_.h, stream_.s));
  std::vector<uint8_t> staging(kStagingBytes);
  const cudaStream_t st = stream_.s;
  layers_.resize(size_t(span.last - span.first));
  // The tensors as model/layer_tensors.h lists and checks them for each layer.
  for (int64_t l = span.first; l < span.last; ++l) {
    Layer& w = layers_[size_t(l - span.first)];
    const LayerTensors t = layer_tensors(model, l);
    w.attn_norm = upload_if(t, Role::AttnNorm, st);
    w.mlp_norm = upload_if(t, Role::MlpNorm, st);
    w.post_attn_norm = upload_if(t, Role::PostAttnNorm, st);
    w.post_mlp_norm = upload_if(t, Role::PostMlpNorm, st);
    w.q_norm = upload_if(t, Role::QNorm, st);
    w.k_norm = upload_if(t, Role::KNorm, st);
    if (const ModelTensor* q = t.find(Role::QNorm)) w.q_norm_n = q->shape[0];
    if (const ModelTensor* k = t.find(Role::KNorm)) w.k_norm_n = k->shape[0];
    // The norm's segments tile q (k): a head each, or the whole width.
    FI_CHECK(w.q_norm_n == 0 || (c.num_heads * c.head_dim) % w.q_norm_n == 0,
             c.path + ": q_norm's length does not tile the q width");
    FI_CHECK(w.k_norm_n == 0 || (c.num_kv_heads * c.head_dim) % w.k_norm_n == 0,
             c.path + ": k_norm's length does not tile the k width");
    if (t.find(Role::KVA)) {  // DeepSeek's MLA
      w.mla = true;
      if (t.find(Role::QA)) {
        w.q_a = load_weight(model, {&t[Role::QA]}, staging, st);
        w.q_a_norm = upload_if(t, Role::QANorm, st);
        w.q_b = load_weight(model, {&t[Role::QB]}, staging, st);
      } else {
        w.qkv = load_weight(model, {&t[Role::Q]}, staging, st);
      }
      w.kv_a = load_weight(model, {&t[Role::KVA]}, staging, st);
      w.kv_a_norm = upload_if(t, Role::KVANorm, st);
      w.kv_b = load_weight(model, {&t[Role::KVB]}, staging, st);
      w.k_width = c.num_heads * (c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim);
      w.v_width = c.num_heads * c.mla.v_head_dim;
    } else if (t.find(Role::QKV)) {
      w.qkv = load_weight(model, {&t[Role::QKV]}, staging, st);
    } else {
      w.qkv = load_weight(model, {&t[Role::Q], &t[Role::K], &t[Role::V]}, staging, st);
    }
    if (!w.mla) w.k_width = w.v_width = c.num_kv_heads * c.head_dim;
    if (t.find(Role::QBias)) {  // Qwen2's q/k/v biases (the three together)
      std::vector<float> b = t[Role::QBias].read_f32();
      for (Role r : {Role::KBias, Role::VBias}) {
        const std::vector<float> p = t[r].read_f32();
        b.insert(b.end(), p.begin(), p.end());
      }
      w.qkv_bias = upload(b, "q/k/v biases", st);
    }
    w.o = load_weight(model, {&t[Role::O]}, staging, st);
    if (c.is_moe_layer(l)) {  // experts in table order: every gate, then every up, then every down
      w.moe = true;
      w.router = load_weight(model, {&t[Role::Router]}, staging, st);
      if (const ModelTensor* b = t.find(Role::RouterBias)) w.router_bias = b->read_f32();
      std::vector<const ModelTensor*> gate, up, down;
      for (const ModelTensor& m : t.tensors) {
        if (m.role == Role::ExpertGate) gate.push_back(&m);
        if (m.role == Role::ExpertUp) up.push_back(&m);
        if (m.role == Role::ExpertDown) down.push_back(&m);
      }
      FI_CHECK(int64_t(gate.size()) == c.moe.experts && up.size() == gate.size() && down.size() == gate.size(),
               c.path + ": layer " + std::to_string(l) + " does not list every expert's gate, up and down");
      for (size_t e = 0; e < gate.size(); ++e) {
        w.expert_gate_up.push_back(load_weight(model, {gate[e], up[e]}, staging, st));
        w.expert_down.push_back(load_weight(model, {down[e]}, staging, st));
      }
      if (t.find(Role::SharedGate)) {
        w.shared_gate_up = load_weight(model, {&t[Role::SharedGate], &t[Role::SharedUp]}, staging, st);
        w.shared_down = load_weight(model, {&t[Role::SharedDown]}, staging, st);
        if (t.find(Role::SharedRouter))
          w.shared_router = load_weight(model, {&t[Role::SharedRouter]}, staging, st);
      }
    } else if (t.find(Role::GateUp)) {
      w.gate_up = load_weight(model, {&t[Role::GateUp]}, staging, st);
    } else {
      w.gate_up = load_weight(model, {&t[Role::Gate], &t[Role::Up]}, staging, st);
    }
    w.sliding = c.sliding_window > 0 && c.sliding_layers.at(size_t(l)) != 0;
    w.local_rope = w.sliding && c.rope_local_theta > 0;
    if (!w.moe) w.down = load_weight(model, {&t[Role::Down]}, staging, st);
  }
  // The embedding: on the first stage, and as the LM-head of a tied model's last stage.
  if (span.embed || (span.head && c.tie_word_embeddings)) {
    const ModelTensor e = model_tensor(model, Role::Embed);
    embed_ = load_weight(model, {&e}, staging, st, false);  // a kernel reads its rows
  }
  if (span.head) {
    final_norm_ = upload(model_tensor(model, Role::FinalNorm).read_f32(), "final norm", st);
    if (c.tie_word_embeddings) {
      lm_head_ = &embed_;
    } else {
      const ModelTensor h = model_tensor(model, Role::LmHead);
      lm_head_own_ = load_weight(model, {&h}, staging, st);
      lm_head_ = &lm_head_own_;
    }
  }
  // The GEMM scratch's sizes; for FP8, the code tables and the widening scratch, once (the
  // largest FP8 weight of the stage).
  int64_t widest = lm_head_ && !lm_head_->fp8.empty() ? lm_head_->rows * lm_head_->cols : 0;
  for (const Layer& w : layers_)
    for (const Weight* m : w.matrices()) {
      max_rows_ = std::max(max_rows_, m->rows);
      max_cols_ = std::max(max_cols_, m->cols);
      if (!m->fp8.empty()) widest = std::max(widest, m->rows * m->cols);
    }
  if (widest > 0) {
    wide_ = DeviceBuffer(size_t(widest) * 4, "FP8 weight widened to fp32");
    for (int k = 0; k < 2; ++k) {
      std::vector<float> t(256);
      for (int code = 0; code < 256; ++code)
        t[size_t(code)] = fp8_to_f32(k ? DType::F8_E5M2 : DType::F8_E4M3, uint8_t(code));
      fp8_table_[k] = upload(t, "FP8 code table", st);
    }
  }
}

const void* CudaStage::gemm_data(const Weight& w) {
  if (w.fp8.empty()) return w.data.get();
  if (wide_of_ == &w) return wide_.get();
  ensure(wide_, size_t(w.rows * w.cols) * 4, "FP8 weight widened to fp32");
  wide_of_ = &w;
  const uint8_t* codes = static_cast<const uint8_t*>(w.data.get());
  for (const Weight::Fp8Part& p : w.fp8) {
    RowBlock b;
    b.dtype = p.code;
    b.count = p.rows;
    b.width = w.cols;
    b.scale = &p.layout;
    launch_widen(b, codes + p.row0 * w.cols, f32(fp8_table_[p.code == DType::F8_E5M2 ? 1 : 0]),
                 f32(p.scale), f32(wide_) + p.row0 * w.cols, stream_.s);
  }
  return wide_.get();
}

void CudaStage::ensure(DeviceBuffer& b, size_t bytes, const char* what) {
  if (b.bytes() >= bytes) return;
  FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));  // nothing in flight may use the old buffer
  b = DeviceBuffer();
  b = DeviceBuffer(bytes, what);
}

void CudaStage::grow_cache(int64_t positions) {
  if (positions <= cap_) return;
  const int64_t cap = std::max({positions, 2 * cap_, int64_t(64)});
  FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
  for (size_t li = 0; li < layers_.size(); ++li) {
    Layer& w = layers_[li];
    const size_t krow = size_t(w.k_width) * sizeof(float), vrow = size_t(w.v_width) * sizeof(float);
    const std::string l = std::to_string(span_.first + int64_t(li));
    DeviceBuffer k(size_t(cap) * krow, "KV cache (keys, layer " + l + ")");
    DeviceBuffer v(size_t(cap) * vrow, "KV cache (values, layer " + l + ")");
    if (len_ > 0) {
      FI_CUDA_CHECK(cudaMemcpyAsync(k.get(), w.k_cache.get(), size_t(len_) * krow,
                                    cudaMemcpyDeviceToDevice, stream_.s));
      FI_CUDA_CHECK(cudaMemcpyAsync(v.get(), w.v_cache.get(), size_t(len_) * vrow,
                                    cudaMemcpyDeviceToDevice, stream_.s));
      FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));  // before the old buffers are freed
    }
    w.k_cache = std::move(k);
    w.v_cache = std::move(v);
  }
  cap_ = cap;
}

RowNorm CudaStage::norm_params(bool rms) const {
  RowNorm p;
  p.kind = rms ? RowNorm::Kind::Rms : RowNorm::Kind::None;
  p.plus_one = cfg_.norm_plus_one;
  p.eps = cfg_.rms_norm_eps;
  return p;
}

void CudaStage::set_clamps(const std::vector<Clamp>& clamps, ClampSite site) {
  upload_clamps({clamps}, site);
}

void CudaStage::upload_clamps(const std::vector<std::vector<Clamp>>& lists, ClampSite site) {
  use_device();
  std::map<std::tuple<int64_t, size_t, int64_t>, std::map<int64_t, float>> per;
  for (size_t b = 0; b < lists.size(); ++b)
    for (const Clamp& k : lists[b]) {
      if (k.layer < span_.first || k.layer >= span_.last) continue;
      const int64_t n = k.expert == kDenseMlp      ? cfg_.intermediate_size
                        : k.expert == kSharedExpert ? cfg_.moe.shared_size
                                                    : cfg_.moe.expert_size;
      FI_CHECK(k.neuron >= 0 && k.neuron < n, "clamp: neuron " + std::to_string(k.neuron) + " is out of range");
      per[{int64_t(b), size_t(k.layer - span_.first), k.expert}][k.neuron] = k.value;
    }
  std::vector<int32_t> neurons;
  std::vector<float> values;
  clamp_at_.clear();
  for (const auto& [key, clamps] : per) {
    clamp_at_[key] = {int64_t(neurons.size()), int64_t(clamps.size())};
    for (const auto& [neuron, value] : clamps) {
      neurons.push_back(int32_t(neuron));
      values.push_back(value);
    }
  }
  clamp_lists_ = lists.empty() ? std::vector<std::vector<Clamp>>{{}} : lists;
  const size_t n = neurons.size();
  FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
  clamp_buf_ = DeviceBuffer(n * 8, "clamps");
  if (n > 0) {
    copy_to_device(clamp_buf_.get(), neurons.data(), n * 4, stream_.s);
    copy_to_device(static_cast<char*>(clamp_buf_.get()) + n * 4, values.data(), n * 4, stream_.s);
  }
  clamp_n_ = int64_t(n);
  site_ = site;
}

bool CudaStage::layer_range_batch(float* x, int64_t B, int64_t T, int64_t first, int64_t last,
                                  const std::vector<std::vector<Clamp>>& clamps, ClampSite site) {
  FI_CHECK(int64_t(clamps.size()) == B && B > 0 && T > 0, "forward: a batch of one clamp list per sequence");
  const int64_t a = std::max(first, span_.first), b = std::min(last, span_.last);
  if (a >= b) return true;
  upload_clamps(clamps, site);
  seq_ = T;  // the B·T rows as one pass from position 0; the cache rows b·T.. hold sequence b
  len_ = 0;
  try {
    run(x, B * T, 0, size_t(a - span_.first), size_t(b - span_.first));
  } catch (...) {
    seq_ = 0;
    throw;
  }
  seq_ = 0;
  len_ = 0;  // the cache holds no one sequence now
  upload_clamps({{}}, site);
  return true;
}

void CudaStage::embed(const std::vector<int32_t>& tokens, float* x) {
  FI_CHECK(span_.embed, "CUDA forward: embed() on a stage without the embedding");
  const int64_t T = int64_t(tokens.size()), H = cfg_.hidden_size;
  if (T == 0) return;
  check_token_ids(cfg_, tokens);
  use_device();
  ensure(ids_, size_t(T) * 4, "token ids");
  ensure(x_, size_t(T * H) * 4, "hidden states");
  FI_CUDA_CHECK(cudaMemcpyAsync(ids_.get(), tokens.data(), size_t(T) * 4, cudaMemcpyHostToDevice,
                                stream_.s));
  // Gemma scales the embedding by sqrt(hidden_size), in fp32 as the CPU stage.
  const float scale = cfg_.norm_plus_one ? float(std::sqrt(double(H))) : 1.f;
  launch_embed(embed_.data.get(), embed_.dtype, static_cast<const int32_t*>(ids_.get()), T, H,
               scale, f32(x_), stream_.s);
  FI_CUDA_CHECK(cudaMemcpyAsync(x, x_.get(), size_t(T * H) * 4, cudaMemcpyDeviceToHost, stream_.s));
  FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
}

void CudaStage::gemm(const Weight& w, const float* in, int64_t rows, const float* gamma) {
  const size_t es = dtype_size(w.dtype);
  const int64_t grows = w.split() ? 2 * rows : rows;
  void* hi = xs_.get();
  void* lo = w.split() ? static_cast<char*>(hi) + size_t(rows * w.cols) * es : nullptr;
  launch_norm_split(in, DType::F32, hi, lo, w.dtype, rows, w.cols, gamma,
                    norm_params(gamma != nullptr), stream_.s);
  gemm_logits(blas_.h, gemm_data(w), w.dtype, w.rows, w.cols, hi, grows, f32(y2_), w.rows, false,
              false);
}

void CudaStage::linear(const Weight& w, const float* in, int64_t rows, const float* gamma,
                       const float* bias, float* out, int64_t ldo, bool accumulate) {
  gemm(w, in, rows, gamma);
  launch_add_halves(f32(y2_), rows, w.rows, w.split(), bias, out, ldo, accumulate, stream_.s);
}

void CudaStage::add_block_output(bool split, const DeviceBuffer& post, int64_t rows, float* x) {
  const int64_t H = cfg_.hidden_size;
  if (!post.get()) {
    launch_add_halves(f32(y2_), rows, H, split, nullptr, x, H, true, stream_.s);
    return;
  }
  // As the CPU stage: y = the block's output in fp32, then x += norm(y).
  launch_add_halves(f32(y2_), rows, H, split, nullptr, f32(y2_), H, false, stream_.s);
  launch_rms_norm(f32(y2_), H, x, H, rows, H, 1, f32(post), cfg_.norm_plus_one, cfg_.rms_norm_eps,
                  true, stream_.s);
}

void CudaStage::qk_norms(const Layer& w, float* qkv, int64_t T) {
  const ModelConfig& c = cfg_;
  const int64_t qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim,
                nq = qd + 2 * kvd;
  if (w.q_norm.get())
    launch_rms_norm(qkv, nq, qkv, nq, T, w.q_norm_n, qd / w.q_norm_n, f32(w.q_norm),
                    c.norm_plus_one, c.rms_norm_eps, false, stream_.s);
  if (w.k_norm.get())
    launch_rms_norm(qkv + qd, nq, qkv + qd, nq, T, w.k_norm_n, kvd / w.k_norm_n, f32(w.k_norm),
                    c.norm_plus_one, c.rms_norm_eps, false, stream_.s);
}

void CudaStage::gated(size_t li, int64_t expert, const Weight& gu, const Weight& dn, int64_t I,
                      const float* in, int64_t rows, const float* gamma,
                      const std::vector<int64_t>& seq) {
  const int64_t H = cfg_.hidden_size;
  // gate and up: y2 [rows (x2 when split), 2I]
  void* hi = xs_.get();
  void* lo =
      gu.split() ? static_cast<char*>(hi) + size_t(rows * H) * dtype_size(gu.dtype) : nullptr;
  launch_norm_split(in, DType::F32, hi, lo, gu.dtype, rows, H, gamma, norm_params(gamma != nullptr),
                    stream_.s);
  gemm_logits(blas_.h, gemm_data(gu), gu.dtype, 2 * I, H, hi, gu.split() ? 2 * rows : rows,
              f32(y2_), 2 * I, false, false);
  // h = act(gate) * up, then the clamps: the down GEMM's input, written over xs_
  launch_swiglu(f32(y2_), rows, I, gu.split(), act_, xs_.get(), dn.dtype, stream_.s);
  // Each sequence's clamps on its rows (one sequence, all of them, outside a batch).
  const int32_t* neurons = static_cast<const int32_t*>(clamp_buf_.get());
  for (int64_t r = 0; r < rows;) {
    int64_t end = r + 1;
    while (end < rows && seq[size_t(end)] == seq[size_t(r)]) ++end;
    const auto at = clamp_at_.find({seq[size_t(r)], li, expert});
    if (at != clamp_at_.end()) {
      const auto [first, count] = at->second;
      launch_clamps(f32(y2_), rows, I, gu.split(), act_, neurons + first,
                    reinterpret_cast<const float*>(neurons + clamp_n_) + first, count, site_,
                    xs_.get(), dn.dtype, stream_.s, r, end - r);
    }
    r = end;
  }
  gemm_logits(blas_.h, gemm_data(dn), dn.dtype, H, I, xs_.get(), dn.split() ? 2 * rows : rows,
              f32(y2_), H, false, false);
}

void CudaStage::mlp(size_t li, float* x, int64_t rows, int64_t row0) {
  const Layer& w = layers_[li];
  if (w.moe) return moe_mlp(li, x, rows, row0);
  std::vector<int64_t> seq(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) seq[size_t(r)] = seq_of_row(row0 + r);
  gated(li, kDenseMlp, w.gate_up, w.down, cfg_.intermediate_size, x, rows, f32(w.mlp_norm), seq);
  add_block_output(w.down.split(), w.post_mlp_norm, rows, x);
}

void CudaStage::moe_mlp(size_t li, float* x, int64_t rows, int64_t row0) {
  const Layer& w = layers_[li];
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, E = c.moe.experts;
  const cudaStream_t st = stream_.s;
  ensure(xn_, size_t(rows * H) * 4, "MoE: normed rows");
  ensure(gx_, size_t(rows * H) * 4, "MoE: an expert's rows");
  ensure(mo_, size_t(rows * H) * 4, "MoE: the block's output");
  ensure(rl_, size_t(rows * (E + 1)) * 4, "MoE: router logits");
  float *xn = f32(xn_), *gx = f32(gx_), *mo = f32(mo_), *rl = f32(rl_);
  if (w.mlp_norm.get()) {
    launch_rms_norm(x, H, xn, H, rows, H, 1, f32(w.mlp_norm), c.norm_plus_one, c.rms_norm_eps,
                    false, st);
  } else {
    FI_CUDA_CHECK(cudaMemcpyAsync(xn, x, size_t(rows * H) * 4, cudaMemcpyDeviceToDevice, st));
  }
  // The router's logits (and the shared expert's gate) to the host, which routes.
  linear(w.router, xn, rows, nullptr, nullptr, rl, E, false);
  if (w.shared_router.rows) linear(w.shared_router, xn, rows, nullptr, nullptr, rl + rows * E, 1, false);
  std::vector<float> logits(size_t(rows * (E + 1)));
  FI_CUDA_CHECK(cudaMemcpyAsync(logits.data(), rl, logits.size() * 4, cudaMemcpyDeviceToHost, st));
  FI_CUDA_CHECK(cudaStreamSynchronize(st));
  const int64_t layer = span_.first + int64_t(li);
  const ExpertRoute route = route_experts(c, layer, logits.data(), rows, w.router_bias,
                                          [&](int64_t t) -> const std::vector<Clamp>& {
                                            return clamp_lists_.at(size_t(seq_of_row(row0 + t)));
                                          });
  // Every expert's rows and weights in one upload, then the shared expert's (every row).
  std::vector<int32_t> idx;
  std::vector<float> wt;
  std::vector<size_t> at(size_t(E) + 1);
  for (int64_t e = 0; e < E; ++e) {
    at[size_t(e)] = idx.size();
    for (int64_t t : route.tokens[size_t(e)]) idx.push_back(int32_t(t));
    wt.insert(wt.end(), route.weights[size_t(e)].begin(), route.weights[size_t(e)].end());
  }
  at[size_t(E)] = idx.size();
  if (w.shared_gate_up.rows) {
    for (int64_t t = 0; t < rows; ++t) {
      idx.push_back(int32_t(t));
      const float g = logits[size_t(rows * E + t)];
      wt.push_back(w.shared_router.rows ? 1.f / (1.f + std::exp(-g)) : 1.f);
    }
  }
  const size_t n = idx.size();
  ensure(route_, n * 8, "MoE: routes");
  int32_t* idx_d = static_cast<int32_t*>(route_.get());
  float* wt_d = reinterpret_cast<float*>(idx_d + n);
  FI_CUDA_CHECK(cudaMemcpyAsync(idx_d, idx.data(), n * 4, cudaMemcpyHostToDevice, st));
  FI_CUDA_CHECK(cudaMemcpyAsync(wt_d, wt.data(), n * 4, cudaMemcpyHostToDevice, st));
  FI_CUDA_CHECK(cudaMemsetAsync(mo, 0, size_t(rows * H) * 4, st));
  std::vector<int64_t> seq;
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int64_t>& ts = route.tokens[size_t(e)];
    if (ts.empty()) continue;
    const int64_t m = int64_t(ts.size());
    seq.resize(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) seq[i] = seq_of_row(row0 + ts[i]);
    launch_gather_rows(xn, H, idx_d + at[size_t(e)], m, gx, st);
    const Weight& dn = w.expert_down[size_t(e)];
    gated(li, e, w.expert_gate_up[size_t(e)], dn, c.moe.expert_size, gx, m, nullptr, seq);
    launch_scatter_add(f32(y2_), m, H, dn.split(), idx_d + at[size_t(e)], wt_d + at[size_t(e)], mo,
                       H, st);
  }
  if (w.shared_gate_up.rows) {
    seq.resize(size_t(rows));
    for (int64_t t = 0; t < rows; ++t) seq[size_t(t)] = seq_of_row(row0 + t);
    gated(li, kSharedExpert, w.shared_gate_up, w.shared_down, c.moe.shared_size, xn, rows, nullptr, seq);
    launch_scatter_add(f32(y2_), rows, H, w.shared_down.split(), idx_d + at[size_t(E)],
                       wt_d + at[size_t(E)], mo, H, st);
  }
  if (w.post_mlp_norm.get()) {
    launch_rms_norm(mo, H, x, H, rows, H, 1, f32(w.post_mlp_norm), c.norm_plus_one, c.rms_norm_eps,
                    true, st);
  } else {
    launch_add_halves(mo, rows, H, false, nullptr, x, H, true, st);
  }
  // idx and wt are pageable host memory the copies read: they end before the vectors do.
  FI_CUDA_CHECK(cudaStreamSynchronize(st));
}

void CudaStage::mla_attention(Layer& w, const float* x, int64_t T, int64_t pos) {
  const ModelConfig& c = cfg_;
  const MlaConfig& a = c.mla;
  const int64_t H = c.hidden_size, nh = c.num_heads, nope = a.qk_nope_head_dim,
                rope = a.qk_rope_head_dim, vd = a.v_head_dim, qk = nope + rope,
                kvr = a.kv_lora_rank, ql = a.q_lora_rank, nkb = nh * (nope + vd);
  const cudaStream_t st = stream_.s;
  float* q = f32(qkv_);  // [T, nh qk]
  float* qr = f32(mla_);
  float* kva = qr + T * nh * qk;
  float* lat = kva + T * (kvr + rope);
  float* kvb = lat + T * kvr;
  float* qa = kvb + T * nkb;  // [T, ql] when q_lora_rank
  const float* gamma = f32(w.attn_norm);
  for (int64_t r0 = 0; r0 < T; r0 += kRows) {
    const int64_t rows = std::min(kRows, T - r0);
    if (w.q_a.rows) {
      linear(w.q_a, x + r0 * H, rows, gamma, nullptr, qa + r0 * ql, ql, false);
    } else {
      linear(w.qkv, x + r0 * H, rows, gamma, nullptr, q + r0 * nh * qk, nh * qk, false);
    }
    linear(w.kv_a, x + r0 * H, rows, gamma, nullptr, kva + r0 * (kvr + rope), kvr + rope, false);
  }
  if (w.q_a.rows) {
    launch_rms_norm(qa, ql, qa, ql, T, ql, 1, f32(w.q_a_norm), c.norm_plus_one, c.rms_norm_eps,
                    false, st);
    for (int64_t r0 = 0; r0 < T; r0 += kRows)
      linear(w.q_b, qa + r0 * ql, std::min(kRows, T - r0), nullptr, nullptr, q + r0 * nh * qk,
             nh * qk, false);
  }
  launch_rms_norm(kva, kvr + rope, lat, kvr, T, kvr, 1, f32(w.kv_a_norm), c.norm_plus_one,
                  c.rms_norm_eps, false, st);
  for (int64_t r0 = 0; r0 < T; r0 += kRows)
    linear(w.kv_b, lat + r0 * kvr, std::min(kRows, T - r0), nullptr, nullptr, kvb + r0 * nkb, nkb,
           false);
  const float* cs = f32(rope_);  // the global RoPE: cos [T, rope/2], then sin
  launch_mla_rope_cache(q, kva, kvb, cs, cs + T * (rope / 2), T, nh, nope, rope, vd, kvr,
                        a.rope_interleave, qr, f32(w.k_cache), f32(w.v_cache), pos, st);
  double scale = 1.0 / std::sqrt(double(qk));
  if (c.rope_scaling.mscale_all_dim > 0 && c.rope_scaling.factor > 1) {
    const double m = 0.1 * c.rope_scaling.mscale_all_dim * std::log(c.rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  const int64_t S = seq_ > 0 ? seq_ : T;  // a batch: each sequence its own cache rows, from 0
  for (int64_t s0 = 0; s0 < T; s0 += S)
    launch_attention(qr + s0 * nh * qk, nh * qk, f32(w.k_cache) + s0 * w.k_width,
                     f32(w.v_cache) + s0 * w.v_width, S, nh, nh, qk, vd, seq_ > 0 ? 0 : pos,
                     float(scale), 0, 0.f, f32(ctx_) + s0 * nh * vd, st);
}

void CudaStage::run(float* x, int64_t T, int64_t pos, size_t li0, size_t li1) {
  FI_CHECK(T > 0, "CUDA forward: layers() of no positions");
  FI_CHECK(pos >= 0 && pos <= len_, "CUDA forward: position " + std::to_string(pos) +
                                        " is past the cached " + std::to_string(len_));
  if (layers_.empty()) {
    len_ = pos + T;
    return;
  }
  use_device();
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, hd = c.head_dim, half = hd / 2, nh = c.num_heads,
                nkv = c.num_kv_heads, qd = nh * hd, nq = qd + 2 * nkv * hd;
  const MlaConfig& a = c.mla;
  const int64_t mla_q = a.kv_lora_rank ? nh * (a.qk_nope_head_dim + a.qk_rope_head_dim) : 0;
  grow_cache(pos + T);
  const int64_t piece = std::min(T, kRows);
  ensure(x_, size_t(T * H) * 4, "hidden states");
  ensure(qkv_, size_t(T * std::max(nq, mla_q)) * 4, "q, k, v");
  ensure(ctx_, size_t(T * std::max(qd, nh * a.v_head_dim)) * 4, "attention output");
  ensure(rope_, size_t(4 * T * half) * 4, "rotary cos/sin");
  if (a.kv_lora_rank)  // qr, kva, latent, kvb, q_a's output
    ensure(mla_, size_t(T * (mla_q + 2 * a.kv_lora_rank + a.qk_rope_head_dim +
                             nh * (a.qk_nope_head_dim + a.v_head_dim) + a.q_lora_rank)) * 4,
           "MLA scratch");
  // GEMM input: rows · k values of 4 bytes (fp32) or 2 · rows · k of 2 bytes (hi + lo); output:
  // 2 · rows · n fp32 (the halves), of the largest weight matrix of the layers.
  ensure(xs_, size_t(piece * std::max(H, max_cols_)) * 4, "GEMM input");
  ensure(y2_, size_t(2 * piece * std::max(H, max_rows_)) * 4, "GEMM output");
  // cos, sin of the angles (pos + t) · inv_freq[i] times the attention factor, computed in
  // double as on the CPU: [global, local][cos, sin][T, half].
  std::vector<float> cs(size_t(4 * T * half));
  for (int local = 0; local < 2; ++local) {
    const RopeFreqs rf = rope_freqs(c, seq_ > 0 ? seq_ : pos + T, local != 0);
    float* out = &cs[size_t(local * 2 * T * half)];
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(seq_ > 0 ? t % seq_ : pos + t) * rf.inv_freq[size_t(i)];
        out[size_t(t * half + i)] = float(std::cos(a) * rf.attention_factor);
        out[size_t((T + t) * half + i)] = float(std::sin(a) * rf.attention_factor);
      }
  }
  const double scalar = c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : double(hd);
  const float scale = float(1.0 / std::sqrt(scalar));
  FI_CUDA_CHECK(
      cudaMemcpyAsync(rope_.get(), cs.data(), cs.size() * 4, cudaMemcpyHostToDevice, stream_.s));
  FI_CUDA_CHECK(cudaMemcpyAsync(x_.get(), x, size_t(T * H) * 4, cudaMemcpyHostToDevice, stream_.s));
  float *xd = f32(x_), *qkv = f32(qkv_), *ctx = f32(ctx_);
  for (size_t li = li0; li < li1; ++li) {
    Layer& w = layers_[li];
    if (w.mla) {
      mla_attention(w, xd, T, pos);
    } else {
      for (int64_t r0 = 0; r0 < T; r0 += kRows)
        linear(w.qkv, xd + r0 * H, std::min(kRows, T - r0), f32(w.attn_norm),
               w.qkv_bias.get() ? f32(w.qkv_bias) : nullptr, qkv + r0 * nq, nq, false);
      qk_norms(w, qkv, T);
      const float* rope = f32(rope_) + (w.local_rope ? 2 * T * half : 0);
      launch_rope_cache(qkv, T, nh, nkv, hd, rope, rope + T * half, f32(w.k_cache),
                        f32(w.v_cache), pos, stream_.s);
      // A batch: each sequence attends to its own cache rows, from position 0.
      const int64_t S = seq_ > 0 ? seq_ : T, kvd = nkv * hd;
      for (int64_t s0 = 0; s0 < T; s0 += S)
        launch_attention(qkv + s0 * nq, nq, f32(w.k_cache) + s0 * kvd, f32(w.v_cache) + s0 * kvd,
                         S, nh, nkv, hd, hd, seq_ > 0 ? 0 : pos, scale,
                         w.sliding ? c.sliding_window : 0, float(c.attn_logit_softcapping),
                         ctx + s0 * qd, stream_.s);
    }
    const int64_t od = w.o.cols;  // the attention output's width: nh hd (MLA: nh v_head_dim)
    for (int64_t r0 = 0; r0 < T; r0 += kRows) {
      const int64_t rows = std::min(kRows, T - r0);
      gemm(w.o, ctx + r0 * od, rows, nullptr);
      add_block_output(w.o.split(), w.post_attn_norm, rows, xd + r0 * H);
    }
    for (int64_t r0 = 0; r0 < T; r0 += kRows) mlp(li, xd + r0 * H, std::min(kRows, T - r0), r0);
  }
  FI_CUDA_CHECK(cudaMemcpyAsync(x, xd, size_t(T * H) * 4, cudaMemcpyDeviceToHost, stream_.s));
  FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
  len_ = pos + T;
}

void CudaStage::head(const float* x, int64_t n, float* logits) {
  FI_CHECK(span_.head, "CUDA forward: head() on a stage without the LM-head");
  if (n <= 0) return;
  use_device();
  const int64_t H = cfg_.hidden_size, V = cfg_.vocab_size;
  const Weight& w = *lm_head_;
  const int64_t piece =
      std::clamp<int64_t>(int64_t(kHeadBytes / size_t(8 * V)), 1, std::min(n, kRows));
  ensure(x_, size_t(n * H) * 4, "hidden states");
  ensure(xs_, size_t(piece * H) * 4, "GEMM input");
  ensure(y2_, size_t(2 * piece * V) * 4, "logits");
  FI_CUDA_CHECK(cudaMemcpyAsync(x_.get(), x, size_t(n * H) * 4, cudaMemcpyHostToDevice, stream_.s));
  for (int64_t r0 = 0; r0 < n; r0 += piece) {
    const int64_t rows = std::min(piece, n - r0);
    // The halves summed in place: logits [rows, V] at the start of y2.
    linear(w, f32(x_) + r0 * H, rows, f32(final_norm_), nullptr, f32(y2_), V, false);
    FI_CUDA_CHECK(cudaMemcpyAsync(logits + r0 * V, y2_.get(), size_t(rows * V) * 4,
                                  cudaMemcpyDeviceToHost, stream_.s));
  }
  FI_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
  if (cfg_.final_logit_softcapping > 0)  // Gemma 2, on the host as the CPU stage does it
    for (int64_t i = 0; i < n * V; ++i) logits[i] = softcap(logits[i], cfg_.final_logit_softcapping);
}

}  // namespace
}  // namespace gpu

std::unique_ptr<Stage> make_cuda_stage(const Model& model, const StageSpan& span) {
  return std::make_unique<gpu::CudaStage>(model, span);
}

}  // namespace fi
