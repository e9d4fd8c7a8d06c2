// `flashinterp inspect`: config summary, tensor inventory, and what a decode will need
// (rows, GEMM FLOPs, LM-head bytes per node, map size; per rank with --ranks); --sweep: the
// cost model of `flashinterp sweep`.
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "parallel/partition.h"
#include "forward/forward.h"
#include "job/sweep_job.h"
#include "map/format.h"
#include "model/config.h"
#include "model/layer_tensors.h"
#include "model/vocab.h"

namespace fi {
namespace {

std::string human(double bytes) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int i = 0;
  while (bytes >= 1024 && i < 5) {
    bytes /= 1024;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", bytes, u[i]);
  return buf;
}

struct InspectOptions {
  std::string model;
  int ranks = 1, top_k = 20, bottom_k = 0, token_index = 32, ranks_per_node = 0;
  double cpu_gflops_per_core = 40, gpu_tflops = 500;
  int64_t chunk_rows = 512;
  int cores_per_rank = 1;
  std::string matrices = "up,gate,down";
  bool sweep = false;  // the cost model of `flashinterp sweep`
  int64_t sweep_neurons = 1000, sweep_values = 4, sweep_prompts = 8, sweep_tokens = 8;
  double gpu_tbps = 4.8, cpu_gbps = 10;
  double read_gbs = 2;  // GB/s a node reads the checkpoint at (page cache, NVMe, a parallel FS client)
};

std::string human_time(double s) {
  char buf[32];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.3g s", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.3g min", s / 60);
  else if (s < 2 * 86400) std::snprintf(buf, sizeof buf, "%.3g h", s / 3600);
  else std::snprintf(buf, sizeof buf, "%.3g days", s / 86400);
  return buf;
}

// `inspect --sweep`: the cost of `flashinterp sweep` from job/sweep_job.h's model of one clamped
// run (layers from the neuron's own to the LM-head), averaged over the layers; a neuron's values
// run as one batch per prompt (both backends), so its weights are read once per prompt, not once
// per run. Times from the stated throughputs, on o.ranks ranks.
void print_sweep_cost(const ModelConfig& c, const InspectOptions& o) {
  double flops = 0, bytes = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const SweepCost k = sweep_run_cost(c, l, o.sweep_tokens);
    flops += k.flops / double(c.num_layers);
    bytes += k.weight_bytes / double(c.num_layers);
  }
  const double runs = double(o.sweep_values * o.sweep_prompts), reads = double(o.sweep_prompts);
  std::printf("sweep      per neuron: %.0f clamped runs (%lld values x %lld prompts of %lld tokens) from its "
              "layer on, mean over layers: %.3g GFLOP, %s of weights read (once per prompt: the values run "
              "as one batch)\n", runs, (long long)o.sweep_values, (long long)o.sweep_prompts, (long long)o.sweep_tokens,
              runs * flops / 1e9, human(reads * bytes).c_str());
  // Every neuron of one matrix: the dense layers', the routed experts' and the shared ones'.
  const int64_t moe = c.moe.moe_layer_count();
  const double all = double((c.num_layers - moe) * c.intermediate_size +
                            moe * (c.moe.experts * c.moe.expert_size + c.moe.shared_size));
  for (double n : {double(o.sweep_neurons), all}) {
    const double f = n * runs * flops / o.ranks, b = n * reads * bytes / o.ranks;
    const double cpu = std::max(f / (o.cpu_gflops_per_core * 1e9 * o.cores_per_rank), b / (o.cpu_gbps * 1e9));
    const double gpu = std::max(f / (o.gpu_tflops * 1e12), b / (o.gpu_tbps * 1e12));
    std::printf("           %.0f neurons%s on %d rank%s: CPU ~%s; GPU ~%s (%.1f TB/s of weight reads)\n",
                n, n == all ? " (all of one matrix)" : "", o.ranks, o.ranks > 1 ? "s" : "", human_time(cpu).c_str(),
                human_time(gpu).c_str(), o.gpu_tbps);
  }
}

// The clamp/generate pipeline over `ranks` ranks: each rank's layers and the weights it holds,
// in the checkpoint's dtype on either backend, but the CPU stage holds FP8 ones dequantised to
// fp32 (4 bytes per parameter; the CUDA stage keeps them as stored and widens each before its
// GEMM), and reads an untied embedding from disk. A layer's weights are the tensors the forward
// pass loads (model/layer_tensors.h).
void print_forward_plan(const Model& m, int ranks) {
  const ModelConfig& c = m.cfg;
  if (const std::string why = forward_refusal(c); !why.empty()) {
    std::printf("forward    clamp/generate: not supported: %s\n", why.c_str());
    return;
  }
  if (ranks > c.num_layers) {
    std::printf("forward    clamp/generate: at most %lld ranks (one layer each)\n", (long long)c.num_layers);
    return;
  }
  const double e = embedding_layer_equivalents(c);
  const std::vector<int64_t> b = split_layers(c.num_layers, ranks, e, e);
  std::vector<double> bytes(size_t(c.num_layers), 0), cpu_bytes(size_t(c.num_layers), 0);
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const ModelTensor& t : layer_tensors_present(m, l)) {
      bytes[size_t(l)] += double(t.bytes());
      cpu_bytes[size_t(l)] += is_fp8(t.info->dtype) ? 4.0 * double(t.info->numel()) : double(t.bytes());
    }
  const TensorInfo& emb = m.ckpt.info(m.names.embed);
  const TensorInfo& head = m.ckpt.info(m.lm_head_name());
  std::string spans;
  double gpu = 0, cpu = 0;
  for (int r = 0; r < ranks; ++r) {
    double w = 0, wc = 0;
    for (int64_t l = b[size_t(r)]; l < b[size_t(r) + 1]; ++l) {
      w += bytes[size_t(l)];
      wc += cpu_bytes[size_t(l)];
    }
    const bool first = r == 0, last = r == ranks - 1;
    if (last) {
      w += double(head.end - head.begin);
      wc += double(head.end - head.begin);
    }
    // A tied embedding on the head's stage is the LM-head itself.
    const double embedding = first && !(last && c.tie_word_embeddings) ? double(emb.end - emb.begin) : 0;
    gpu = std::max(gpu, w + embedding);
    cpu = std::max(cpu, wc + (c.tie_word_embeddings ? embedding : 0));
    spans += (r ? " | " : "") + std::to_string(b[size_t(r)]) + "-" + std::to_string(b[size_t(r) + 1] - 1);
  }
  std::printf("forward    clamp/generate over %d rank%s: layers %s\n", ranks, ranks > 1 ? "s (pipeline)" : "",
              spans.c_str());
  std::printf("           weights per rank (checkpoint dtype; the CPU holds FP8 as fp32): up to %s on a GPU, %s on CPU, + KV cache\n",
              human(gpu).c_str(), human(cpu).c_str());
}

// The map's neuron groups of one matrix: the dense layers, and an MoE model's routed experts
// (layers x experts x expert_size) and shared experts (layers x shared_size).
struct NeuronGroup {
  const char* name;
  int64_t layers, experts, neurons;
};

std::vector<NeuronGroup> neuron_groups(const ModelConfig& c) {
  const int64_t moe = c.moe.moe_layer_count(), dense = c.num_layers - moe;
  std::vector<NeuronGroup> g;
  if (dense > 0) g.push_back({"dense", dense, 1, c.intermediate_size});
  if (moe > 0) g.push_back({"moe", moe, c.moe.experts, c.moe.expert_size});
  if (moe > 0 && c.moe.shared_size > 0) g.push_back({"shared", moe, 1, c.moe.shared_size});
  return g;
}

// The model's MoE layers (moe) or dense layers as spans: "0-2", "3-60".
std::string spans(const ModelConfig& c, bool moe) {
  std::string out;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (c.is_moe_layer(l) != moe) continue;
    int64_t e = l;
    while (e + 1 < c.num_layers && c.is_moe_layer(e + 1) == moe) ++e;
    out += (out.empty() ? "" : ",") + std::to_string(l) + (e > l ? "-" + std::to_string(e) : "");
    l = e;
  }
  return out;
}

std::string fmt_g(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

// The tokenizer against the LM-head: ids without a token (padding rows) and tokenizer ids the
// LM-head does not have (Gemma 3 1B's image token), which the decode leaves out of the map.
void print_vocab(const std::string& dir, const ModelConfig& c) {
  const std::string path = dir + "/tokenizer.json";
  try {
    const Vocab v = load_vocab(path, c.vocab_size);
    std::printf("vocab      tokenizer.json: ids 0..%lld for vocab_size %lld", (long long)v.tokenizer_max_id,
                (long long)c.vocab_size);
    if (v.padding == 0 && v.beyond == 0) std::printf(", one token per LM-head row\n");
    else std::printf("; %lld LM-head row%s without a token (padding)%s%lld tokenizer id%s >= vocab_size (not in the LM-head, left out of the map)\n",
                     (long long)v.padding, v.padding == 1 ? "" : "s", ", ", (long long)v.beyond, v.beyond == 1 ? "" : "s");
  } catch (const std::exception& e) {
    std::printf("vocab      not usable: %s\n", e.what());
  }
}

int run_inspect(const InspectOptions& o) {
  Model m(o.model);
  const ModelConfig& c = m.cfg;
  std::printf("model      %s\n", o.model.c_str());
  std::printf("type       %s%s\n", c.model_type.c_str(), c.norm_plus_one ? " (RMSNorm (1+w))" : "");
  std::printf("shape      hidden %lld, intermediate %lld, layers %lld, heads %lld (kv %lld, head_dim %lld), vocab %lld\n",
              (long long)c.hidden_size, (long long)c.intermediate_size, (long long)c.num_layers,
              (long long)c.num_heads, (long long)c.num_kv_heads, (long long)c.head_dim,
              (long long)c.vocab_size);
  std::printf("norm       rms_norm_eps %g, rope_theta %g%s, tied embeddings %s\n", c.rms_norm_eps,
              c.rope_theta, c.rope_scaling.type.empty() ? "" : (", rope_scaling " + c.rope_scaling.type).c_str(),
              c.tie_word_embeddings ? "yes" : "no");

  std::string extras;  // the attention and logit details of the families that have them
  if (c.rope_local_theta > 0) extras += ", local rope_theta " + fmt_g(c.rope_local_theta);
  if (c.sliding_window > 0) {
    int64_t n = 0;
    for (uint8_t x : c.sliding_layers) n += x;
    extras += ", sliding window " + std::to_string(c.sliding_window) + " on " + std::to_string(n) + " of " +
              std::to_string(c.num_layers) + " layers";
  }
  if (c.attn_logit_softcapping > 0) extras += ", attention soft-cap " + fmt_g(c.attn_logit_softcapping);
  if (c.final_logit_softcapping > 0) extras += ", final logit soft-cap " + fmt_g(c.final_logit_softcapping);
  if (c.fused_gate_up) extras += ", fused gate_up_proj (gate rows first)";
  if (!c.dtype.empty()) extras += ", dtype " + c.dtype;
  if (!c.quant_method.empty())
    extras += ", quantised (" + c.quant_method + "; FP8 weights dequantised in fp32 with their scales, " +
              "block scales in " + std::to_string(c.weight_block_rows) + " x " + std::to_string(c.weight_block_cols) + ")";
  if (!extras.empty()) std::printf("details    %s\n", extras.substr(2).c_str());
  if (c.moe.experts > 0) {
    const MoeConfig& e = c.moe;
    std::printf("experts    %lld routed experts of %lld neurons, %lld per token, on %lld of %lld layers (%s)", (long long)e.experts,
                (long long)e.expert_size, (long long)e.experts_per_token, (long long)e.moe_layer_count(),
                (long long)c.num_layers, spans(c, true).c_str());
    if (e.shared_size > 0)
      std::printf("; shared: %lld expert%s, %lld neurons", (long long)e.shared_experts, e.shared_experts == 1 ? "" : "s",
                  (long long)e.shared_size);
    std::printf("\n           router: %s scores%s%s%s%s\n", e.scoring_func.c_str(),
                e.norm_topk_prob ? ", top-k weights renormalised" : "",
                e.topk_method.empty() ? "" : (", " + e.topk_method).c_str(),
                e.n_group > 1 ? (", " + std::to_string(e.topk_group) + " of " + std::to_string(e.n_group) + " groups").c_str() : "",
                e.routed_scaling_factor != 1 ? (", scaling " + fmt_g(e.routed_scaling_factor)).c_str() : "");
    if (e.mtp_layers > 0)
      std::printf("           multi-token prediction: %lld layer%s numbered from %lld (not on the main path; decode and inspect leave %s out)\n",
                  (long long)e.mtp_layers, e.mtp_layers == 1 ? "" : "s", (long long)c.num_layers, e.mtp_layers == 1 ? "it" : "them");
  }
  if (c.mla.kv_lora_rank > 0)
    std::printf("attention  MLA: q_lora_rank %lld, kv_lora_rank %lld, q/k heads %lld + %lld (RoPE, interleaved), v heads %lld\n",
                (long long)c.mla.q_lora_rank, (long long)c.mla.kv_lora_rank, (long long)c.mla.qk_nope_head_dim,
                (long long)c.mla.qk_rope_head_dim, (long long)c.mla.v_head_dim);
  print_vocab(o.model, c);

  // Inventory: tensors per dtype and bytes per matrix kind.
  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype, by_kind;
  std::map<std::string, std::string> kind_of;  // the MLP matrices' tensors (Phi-3: gate_up)
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (Matrix mx : {Matrix::Up, Matrix::Gate, Matrix::Down})
      kind_of[m.names.matrix(mx, l)] = c.fused_gate_up && mx != Matrix::Down ? "gate_up" : matrix_name(mx);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    for (Matrix mx : {Matrix::Up, Matrix::Gate, Matrix::Down}) {
      for (int64_t e = 0; e < c.moe.experts; ++e) kind_of[m.names.expert(mx, l, e)] = std::string("expert_") + matrix_name(mx);
      if (c.moe.shared_size > 0) kind_of[m.names.shared(mx, l)] = std::string("shared_") + matrix_name(mx);
    }
  }
  kind_of[m.lm_head_name()] = "lm_head";
  for (const std::string& n : m.ckpt.tensor_names()) {
    const TensorInfo& t = m.ckpt.info(n);
    auto& d = by_dtype[dtype_name(t.dtype)];
    d.first++;
    d.second += t.end - t.begin;
    auto it = kind_of.find(n);
    const std::string kind = it == kind_of.end() ? "other" : it->second;
    auto& k = by_kind[kind];
    k.first++;
    k.second += t.end - t.begin;
  }
  std::printf("tensors    %zu in %zu shard(s)\n", m.ckpt.tensor_names().size(), m.ckpt.shards().size());
  for (auto& [d, v] : by_dtype)
    std::printf("  %-8s %6lld tensors  %s\n", d.c_str(), (long long)v.first, human(double(v.second)).c_str());
  for (auto& [k, v] : by_kind)
    std::printf("  %-8s %6lld tensors  %s\n", k.c_str(), (long long)v.first, human(double(v.second)).c_str());

  // The decode's needs, for the matrices asked about: per matrix, the neuron groups of the map
  // (dense layers; an MoE model's routed experts and shared experts, docs/MAP_FORMAT.md).
  std::vector<std::string> mats;
  std::stringstream ss(o.matrices);
  for (std::string s; std::getline(ss, s, ',');) mats.push_back(matrix_name(parse_matrix(s)));
  const double V = double(c.vocab_size), H = double(c.hidden_size), R = double(o.chunk_rows);
  const std::vector<NeuronGroup> groups = neuron_groups(c);
  double rows = 0, items = 0, map_bytes = 0, done = 0;
  for (const NeuronGroup& g : groups) {
    const double slices = double(g.layers) * double(g.experts), chunks = std::ceil(double(g.neurons) / R);
    rows += slices * double(g.neurons);
    items += slices * chunks;
    done += slices * chunks;
    map_bytes += map::matrix_group_bytes(g.layers * g.experts, g.neurons, o.chunk_rows, o.top_k, o.bottom_k,
                                         c.vocab_size, 0);
  }
  if (o.token_index > 0) map_bytes += V * double(o.token_index) * 20.0 + done;  // one index per matrix
  const double flops = 2 * rows * V * H;
  if (c.moe.experts > 0) {
    std::string parts;
    for (const NeuronGroup& g : groups)
      parts += std::string(parts.empty() ? "" : "; ") + g.name + " " + std::to_string(g.layers) + " layers x " +
               (g.experts > 1 ? std::to_string(g.experts) + " experts x " : "") + std::to_string(g.neurons) + " = " +
               std::to_string(g.layers * g.experts * g.neurons);
    std::printf("decode     neurons per matrix: %s\n", parts.c_str());
  }
  std::printf("decode     per matrix: %.0f rows, %.3g GFLOP of GEMM, map ~%s\n", rows, flops / 1e9,
              human(map_bytes).c_str());
  std::printf("           all of %s: %.3g PFLOP, map ~%s + vocab ~%s\n", o.matrices.c_str(),
              flops * mats.size() / 1e15, human(map_bytes * mats.size()).c_str(),
              human(map::vocab_bytes(c.vocab_size)).c_str());
  if (c.moe.experts > 0)
    std::printf("           map format version 2: every group above (/<matrix> dense, /moe/<matrix>, /shared/<matrix>)\n");
  std::printf("           LM-head replica: %s fp32 per node on CPU (shared by its ranks), %s per GPU\n",
              human(V * H * 4).c_str(), human(V * H * dtype_size(m.ckpt.info(m.lm_head_name()).dtype)).c_str());
  // Per rank: its share of the work items (each chunk of each layer, expert and matrix), its
  // memory and a time estimate from stated throughputs.
  const int64_t total_items = int64_t(items) * int64_t(mats.size());
  Range first = rank_share(size_t(total_items), 0, o.ranks), last = rank_share(size_t(total_items), o.ranks - 1, o.ranks);
  const double rows_per_item = items > 0 ? rows / items : 0;
  const double rank_flops = 2.0 * double(first.size()) * rows_per_item * V * H;
  const int rpn = o.ranks_per_node > 0 ? std::min(o.ranks_per_node, o.ranks) : o.ranks;
  const double lm32 = V * H * 4, lm16 = V * H * dtype_size(m.ckpt.info(m.lm_head_name()).dtype);
  const double ti_bytes = double(mats.size()) * V * o.token_index * 16.0;
  const double cpu_mem = lm32 / rpn + (o.token_index > 0 ? o.chunk_rows * V * 4.0 : 0) + ti_bytes +
                         o.chunk_rows * H * 8.0;
  const double gpu_chunk = 4096;
  const double gpu_mem = lm16 + gpu_chunk * V * 4.0 + gpu_chunk * H * 4.0 + ti_bytes;
  std::printf("ranks      %d (%d per node): %lld work items of %lld rows; each rank %zu-%zu items, up to %.3g GFLOP\n",
              o.ranks, rpn, (long long)total_items, (long long)o.chunk_rows, last.size(), first.size(), rank_flops / 1e9);
  std::printf("memory     CPU rank: ~%s (LM-head %s per node shared by its %d ranks, logits chunk, token index %s)\n",
              human(cpu_mem).c_str(), human(lm32).c_str(), rpn, human(ti_bytes).c_str());
  std::printf("           GPU rank: ~%s of device memory (LM-head %s + a %g-row fp32 logits chunk, token index %s)\n",
              human(gpu_mem).c_str(), human(lm16).c_str(), gpu_chunk, human(ti_bytes).c_str());
  std::printf("time       CPU ranks at %.0f GFLOP/s per core, %d cores per rank: ~%.0f s;  GPU ranks at %.0f TFLOP/s: ~%.1f s\n",
              o.cpu_gflops_per_core, o.cores_per_rank, rank_flops / (o.cpu_gflops_per_core * 1e9 * o.cores_per_rank),
              o.gpu_tflops, rank_flops / (o.gpu_tflops * 1e12));
  // The decode reads every decoded matrix once, in its stored dtype: with an MoE model in FP8
  // this, not the GEMM, is what bounds a GPU rank.
  const int64_t top = c.num_layers - 1;  // a layer with the model's MLP tensors, for their dtype
  const std::string mlp = c.is_moe_layer(top) ? m.names.expert(Matrix::Up, top, 0) : m.names.matrix(Matrix::Up, top);
  const double read = rows * H * dtype_size(m.ckpt.info(mlp).dtype) * double(mats.size());
  const double rank_read = read * double(first.size()) / std::max<double>(double(total_items), 1);
  std::printf("read       the decoded matrices: %s (%s), %s per rank; at %.3g GB/s per node read by %d ranks: ~%s "
              "per rank (a lower bound on the decode time, whatever the GEMM speed)\n",
              human(read).c_str(), dtype_name(m.ckpt.info(mlp).dtype), human(rank_read).c_str(), o.read_gbs, rpn,
              human_time(rank_read * rpn / (o.read_gbs * 1e9)).c_str());
  print_forward_plan(m, o.ranks);
  if (o.sweep) print_sweep_cost(c, o);
  return 0;
}

}  // namespace

std::function<int()> add_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  auto* cmd = app.add_subcommand("inspect", "Show a checkpoint's config, tensors and what a decode needs");
  cmd->add_option("--model", o->model, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--ranks", o->ranks, "show each rank's share for this many ranks")->capture_default_str();
  cmd->add_option("--matrices", o->matrices, "matrices to size the decode for")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "top-k of the planned map")->capture_default_str();
  cmd->add_option("--chunk-rows", o->chunk_rows, "rows per work item")->capture_default_str();
  cmd->add_option("--token-index", o->token_index, "token index size M of the planned map")->capture_default_str();
  cmd->add_option("--ranks-per-node", o->ranks_per_node, "ranks sharing a node (default: all on one)");
  cmd->add_option("--cores-per-rank", o->cores_per_rank, "CPU cores per rank, for the CPU estimate")->capture_default_str();
  cmd->add_option("--cpu-gflops", o->cpu_gflops_per_core, "assumed sgemm GFLOP/s per core")->capture_default_str();
  cmd->add_option("--gpu-tflops", o->gpu_tflops, "assumed GEMM TFLOP/s per GPU (H100 bf16: ~600)")->capture_default_str();
  cmd->add_option("--read-gbs", o->read_gbs, "assumed GB/s a node reads the checkpoint at")->capture_default_str();
  cmd->add_flag("--sweep", o->sweep, "also print the cost model of flashinterp sweep");
  cmd->add_option("--sweep-neurons", o->sweep_neurons, "neurons for the sweep estimate")->capture_default_str();
  cmd->add_option("--sweep-values", o->sweep_values, "clamp values per neuron")->capture_default_str();
  cmd->add_option("--sweep-prompts", o->sweep_prompts, "prompts per value")->capture_default_str();
  cmd->add_option("--sweep-tokens", o->sweep_tokens, "tokens per prompt")->capture_default_str();
  cmd->add_option("--cpu-gbps", o->cpu_gbps, "assumed weight-read bandwidth per CPU rank, GB/s")->capture_default_str();
  cmd->add_option("--gpu-tbps", o->gpu_tbps, "assumed memory bandwidth per GPU, TB/s (H200: 4.8)")->capture_default_str();
  return [o] { return run_inspect(*o); };
}

}  // namespace fi
