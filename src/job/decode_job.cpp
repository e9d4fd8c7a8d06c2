// `flashinterp decode` as its phases, each a function: checked options (validate) -> the
// model's inputs and this rank's backend (load_inputs) -> the plan and resume state (plan_work)
// -> the rounds, with the token index saved as it goes (run_rounds, IndexSaver) -> the rename
// and report (finish). Every step that can fail on one rank is agreed on collectively
// (parallel/mpi_env), so a bad file ends every rank with one line instead of a hang.
#include "job/decode_job.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>

#include "common/error.h"
#include "decode/backend.h"
#include "decode/decoder.h"
#include "decode/token_index.h"
#include "io/row_feed.h"
#include "job/fingerprint.h"
#include "job/output.h"
#include "job/round_overlap.h"
#include "map/format.h"
#include "map/map_reader.h"
#include "map/map_writer.h"
#include "model/config.h"
#include "model/vocab.h"
#include "parallel/cores.h"
#include "parallel/memory.h"
#include "parallel/partition.h"

namespace fi {
namespace {

using Clock = std::chrono::steady_clock;
std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// One group of the map (map/map_writer.h MatrixLayout): a matrix of the dense MLP layers, of
// the routed experts (version 2: /moe/<matrix>) or of the shared experts (/shared/<matrix>),
// with the layers and experts it decodes. Its slices are layers, or (layer, expert) pairs
// (slice = layer index * E + expert index: parallel/partition.h).
struct Group {
  TiGroup kind = kTiDense;
  Matrix mat = Matrix::Up;
  int index = 0;                 // the token index it feeds: the position of mat in --matrices
  std::vector<int64_t> layers;   // model layer ids
  std::vector<int64_t> experts;  // routed: expert ids; empty otherwise
  int64_t neurons = 0;
  std::string name;  // up, moe/up, shared/up
  int64_t slices() const { return int64_t(layers.size()) * (experts.empty() ? 1 : int64_t(experts.size())); }
  int64_t layer(int64_t slice) const { return layers[size_t(experts.empty() ? slice : slice / int64_t(experts.size()))]; }
  int64_t expert(int64_t slice) const { return experts.empty() ? -1 : experts[size_t(slice % int64_t(experts.size()))]; }
  // The tensor a slice's neurons are in, and from which row (Phi-3's fused gate_up_proj).
  MatrixSource source(const Model& m, int64_t slice) const {
    if (kind == kTiRouted) return {m.names.expert(mat, layer(slice), expert(slice)), 0};
    if (kind == kTiShared) return {m.names.shared(mat, layer(slice)), 0};
    return m.names.matrix_source(mat, layer(slice));
  }
};

// Where a work item's neuron vectors are: rows of up/gate, columns of down (io/row_feed.h).
FeedItem feed_item(const Model& m, const Group& g, const WorkItem& it) {
  const MatrixSource src = g.source(m, it.layer_index);
  if (g.mat == Matrix::Down) return {src.tensor, it.row0, it.rows, true};
  return {src.tensor, src.row0 + it.row0, it.rows, false};
}

// Stop signals: the first asks for a clean stop at the next round (the round in flight is
// finished and flushed), a second one ends the process at once.
volatile sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int sig) {
  if (g_stop) _exit(kExitStopped);
  g_stop = sig;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

int stop_signal() { return g_stop; }

namespace {

class Progress {
 public:
  Progress(bool on, int64_t total) : on_(on), total_(total), t0_(Clock::now()), last_(t0_) {}
  void update(int64_t done) {
    if (!on_ || seconds_since(last_) < 3.0) return;
    last_ = Clock::now();
    double s = seconds_since(t0_), rate = done / std::max(s, 1e-9);
    std::fprintf(stderr, "flashinterp: %lld / %lld rows (%.1f%%), %.0f rows/s, ETA %.0f s\n",
                 (long long)done, (long long)total_, 100.0 * done / total_, rate,
                 (total_ - done) / std::max(rate, 1e-9));
  }

 private:
  bool on_;
  int64_t total_;
  Clock::time_point t0_, last_;
};

}  // namespace

// "A-B" or "A" over [0, count): the ids, or all of them for "". opt and noun name the option
// and what it counts in the error lines ("--layers", "layers").
static std::vector<int64_t> parse_range(const std::string& spec, int64_t count, const std::string& opt,
                                        const std::string& noun) {
  std::vector<int64_t> out;
  if (spec.empty()) {
    for (int64_t l = 0; l < count; ++l) out.push_back(l);
    return out;
  }
  int64_t a = 0, b = 0;
  char dash = 0, extra = 0;
  int n = std::sscanf(spec.c_str(), "%lld%c%lld%c", (long long*)&a, &dash, (long long*)&b, &extra);
  if (n == 1) b = a;
  else if (n != 3 || dash != '-') FI_FAIL(opt + ": expected A-B or A, got '" + spec + "'");
  if (b < a) FI_FAIL(opt + " " + spec + ": the range is reversed (write A-B with A <= B)");
  if (a < 0 || b >= count)
    FI_FAIL(opt + " " + spec + ": the model has " + noun + " 0-" + std::to_string(count - 1));
  for (int64_t l = a; l <= b; ++l) out.push_back(l);
  return out;
}

std::vector<int64_t> parse_layers(const std::string& spec, int64_t num_layers) {
  return parse_range(spec, num_layers, "--layers", "layers");
}

namespace {

// ---- phase 1: the job as checked options -------------------------------------------------

struct Job {
  Job(const DecodeOptions& o, bool t) : opt(o), partial(o.out + ".partial"), talk(t) {}
  const DecodeOptions& opt;
  std::string partial;  // OUT.partial
  bool talk = false;    // rank 0 prints progress
  std::unique_ptr<Model> model;
  DecodeParams p;
  std::vector<Matrix> mats;
  std::vector<int64_t> layers;
  std::vector<int64_t> experts;  // --experts (a model with routed experts): the ids decoded
  std::vector<Group> groups;     // in plan and map order: dense, routed, shared; each by --matrices
  int64_t version = map::kFormatVersionDense;  // 2: the model has routed experts
  TiKey key;                     // the token index's (layer, group, expert) packing
  BackendKind backend = BackendKind::Cpu;
  int M = 0;  // token index entries per token (0: none)
  std::unique_ptr<OutputLock> lock;  // rank 0: OUT.lock
};

// The map's groups: per kind, one per matrix, each with the chosen layers of its kind (a group
// without a layer is left out). A dense model has dense groups only (a version 1 map).
std::vector<Group> make_groups(const Job& j) {
  const ModelConfig& c = j.model->cfg;
  std::vector<Group> out;
  for (TiGroup kind : {kTiDense, kTiRouted, kTiShared})
    for (size_t mi = 0; mi < j.mats.size(); ++mi) {
      Group g;
      g.kind = kind;
      g.mat = j.mats[mi];
      g.index = int(mi);
      for (int64_t l : j.layers)
        if (kind == kTiDense ? !c.is_moe_layer(l) : c.is_moe_layer(l) && (kind == kTiRouted || c.moe.shared_size > 0))
          g.layers.push_back(l);
      if (g.layers.empty()) continue;
      const std::string m = matrix_name(g.mat);
      if (kind == kTiRouted) g.experts = j.experts;
      g.neurons = kind == kTiDense ? c.intermediate_size : kind == kTiRouted ? c.moe.expert_size : c.moe.shared_size;
      g.name = kind == kTiDense ? m : std::string(kind == kTiRouted ? map::kMoe : map::kShared) + "/" + m;
      out.push_back(g);
    }
  return out;
}

// Everything that can be checked before work starts, on every rank.
Job validate(const DecodeOptions& opt, const Comms& c) {
  Job j(opt, c.rank == 0 && !opt.quiet);
  collective(c.world, [&] {
    FI_CHECK(!opt.out.empty(), "--out is required");
    if (opt.top_k < 1) FI_FAIL("--top-k must be at least 1");
    if (opt.bottom_k < 0) FI_FAIL("--bottom-k must be 0 or more");
    if (opt.token_index < 0) FI_FAIL("--token-index must be 0 (off) or more");
    if (opt.chunk_rows < 0) FI_FAIL("--chunk-rows must be positive");
    if (opt.threads < 0) FI_FAIL("--threads must be 0 (the rank's cores) or more");
    j.p.norm = parse_norm(opt.norm);
    for (const auto& s : opt.matrices) {
      Matrix m = parse_matrix(s);
      for (Matrix o : j.mats)
        if (o == m) FI_FAIL("--matrices lists '" + s + "' twice");
      j.mats.push_back(m);
    }
    FI_CHECK(!j.mats.empty(), "--matrices is empty");
    j.backend = choose_backend(opt.backend);
    if (opt.fast_gemm && opt.gemm != "auto" && opt.gemm != "bf16")
      FI_FAIL("--fast-gemm (= --gemm bf16) contradicts --gemm " + opt.gemm);
    j.p.gemm = parse_gemm(opt.fast_gemm ? "bf16" : opt.gemm, j.backend == BackendKind::Cuda);
    j.p.chunk_rows = opt.chunk_rows > 0 ? opt.chunk_rows : (j.backend == BackendKind::Cuda ? 4096 : 512);
    if (opt.resume && opt.overwrite) FI_FAIL("--resume and --overwrite exclude each other");
    if (c.rank == 0) {
      check_output_path(opt.out, opt.model_dir, opt.overwrite || opt.resume);
      if (!opt.resume && !opt.overwrite) {
        if (file_exists(opt.out)) FI_FAIL(opt.out + ": output exists; pass --overwrite to replace it");
        if (file_exists(j.partial))
          FI_FAIL(j.partial + ": an unfinished decode exists; pass --resume to continue it or --overwrite to start over");
      }
      j.lock = std::make_unique<OutputLock>(opt.out);  // held until the job ends, resume included
    }
    j.model = std::make_unique<Model>(opt.model_dir);
    const ModelConfig& mc = j.model->cfg;
    j.layers = parse_layers(opt.layers, mc.num_layers);
    if (mc.moe.experts > 0) {
      j.version = map::kFormatVersionMoe;
      j.experts = parse_range(opt.experts, mc.moe.experts, "--experts", "experts");
      j.key.experts = mc.moe.experts;
      j.key.check_fits(mc.num_layers);
    } else if (!opt.experts.empty()) {
      FI_FAIL("--experts " + opt.experts + ": " + mc.path + " has no routed experts (model_type " +
              mc.model_type + ")");
    }
    j.groups = make_groups(j);
    // CUDA multiplies an fp32 LM-head in fp32 (SGEMM): nothing to round, nothing to re-score.
    if (j.backend == BackendKind::Cuda && j.p.gemm == GemmMode::Bf16 &&
        j.model->ckpt.info(j.model->lm_head_name()).dtype == DType::F32) {
      if (opt.gemm == "bf16" || opt.fast_gemm)
        FI_FAIL("--gemm bf16 on cuda needs a bf16 or f16 LM-head; this one is fp32 (use --gemm exact)");
      j.p.gemm = GemmMode::Exact;
    }
    // Gemma 2's final soft-cap bends every logit; the re-scoring's lse correction assumes plain
    // ones, so a soft-capped model decodes with the exact GEMM.
    j.p.softcap = float(j.model->cfg.final_logit_softcapping);
    if (j.p.softcap > 0 && j.p.gemm == GemmMode::Bf16) {
      if (opt.gemm == "bf16" || opt.fast_gemm)
        FI_FAIL(j.model->cfg.path + ": final_logit_softcapping " + std::to_string(j.model->cfg.final_logit_softcapping) +
                ": --gemm bf16 cannot re-score soft-capped logits (use --gemm exact)");
      j.p.gemm = GemmMode::Exact;
    }
    if (c.rank == 0 && !(opt.resume && file_exists(j.partial))) {  // a partial has its space already
      const ModelConfig& m = j.model->cfg;
      double bytes = map::vocab_bytes(m.vocab_size) + (1 << 20);
      for (const Group& g : j.groups)
        bytes += map::matrix_group_bytes(g.slices(), g.neurons, j.p.chunk_rows, opt.top_k, opt.bottom_k,
                                         m.vocab_size, opt.token_index);
      check_free_space(opt.out, bytes);
    }
    for (const Group& g : j.groups)
      for (int64_t s = 0; s < g.slices(); ++s) {
        if (g.kind == kTiRouted) j.model->expect_expert(g.mat, g.layer(s), g.expert(s));
        else if (g.kind == kTiShared) j.model->expect_shared(g.mat, g.layer(s));
        else j.model->expect_matrix(g.mat, g.layer(s));
      }
  });
  const bool cuda = j.backend == BackendKind::Cuda;
  if (opt.fast_gemm && j.talk)
    std::fprintf(stderr, "flashinterp: --fast-gemm is now --gemm bf16: one 16-bit GEMM with the top and "
                 "bottom candidates re-scored exactly (README, Numerics)\n");
  if (opt.backend == "auto" && j.talk)
    std::fprintf(stderr, "flashinterp: backend auto: %s\n",
                 cuda ? "CUDA device found, using cuda" : "no CUDA device, using cpu");
  const MoeConfig& moe = j.model->cfg.moe;
  if (moe.mtp_layers > 0 && j.talk)
    std::fprintf(stderr, "flashinterp: notice: layer%s %lld%s (num_nextn_predict_layers %lld): DeepSeek's "
                 "multi-token-prediction layer%s, not on the model's main path: not decoded\n",
                 moe.mtp_layers > 1 ? "s" : "", (long long)j.model->cfg.num_layers,
                 moe.mtp_layers > 1 ? ("-" + std::to_string(j.model->cfg.num_layers + moe.mtp_layers - 1)).c_str() : "",
                 (long long)moe.mtp_layers, moe.mtp_layers > 1 ? "s" : "");
  const ModelConfig& cfg = j.model->cfg;
  j.p.top_k = opt.top_k;
  j.p.bottom_k = opt.bottom_k;
  j.p.norm_plus_one = cfg.norm_plus_one;
  j.p.eps = cfg.rms_norm_eps;
  j.p.allow_tf32 = opt.allow_tf32;
  if (j.p.top_k > cfg.vocab_size || j.p.bottom_k > cfg.vocab_size)
    collective(c.world, [&] { FI_FAIL("--top-k/--bottom-k larger than the vocabulary"); });
  j.M = opt.token_index;
  return j;
}

// What this rank will allocate, checked against the machine's limits before it does (collective):
// the LM-head (CPU: one fp32 window per node, mapped by each of its ranks), the chunk's rows and
// logits, the token index with its merge buffers, and each worker's stack and OpenBLAS buffer.
void check_decode_memory(const Job& j, const Comms& c) {
  const ModelConfig& m = j.model->cfg;
  const double V = double(m.vocab_size), H = double(m.hidden_size), R = double(j.p.chunk_rows);
  const double M = double(j.M), mats = double(j.mats.size()), MiB = 1048576.0;
  const bool cpu = j.backend == BackendKind::Cpu;
  const double T = j.opt.threads > 0 ? j.opt.threads : affinity_cores();
  // The lists per matrix, and at a save: probs, the merge's packed copies and MPI's buffers.
  const double index = M > 0 ? mats * (V * M * 16 + V * 8) + V * M * 68 : 0;
  // the fp32 rows and the reader's two buffers of stored rows (at most fp32 each)
  const double rows = R * H * 12 + (cpu ? T * R * 2048 * 4 + (M > 0 ? R * V * 4 : 0) : R * H * 16);
  // CPU: fp32; --gemm bf16: a bf16 copy beside it, or only that for a bf16 checkpoint.
  const bool bf16_head = j.model->ckpt.info(j.model->lm_head_name()).dtype == DType::BF16;
  const double lm = !cpu ? 0 : j.p.gemm != GemmMode::Bf16 ? V * H * 4 : V * H * (bf16_head ? 2 : 6);
  const double workers = cpu ? T * 72 * MiB : 0;  // 8 MiB stack + 64 MiB OpenBLAS buffer each
  const double resident = rows + index + (c.local_rank == 0 ? lm : 0);
  collective(c.world, [&] {
    check_memory("the decode (LM-head " + std::to_string(int64_t(lm / MiB)) + " MiB, token index " +
                     std::to_string(int64_t(index / MiB)) + " MiB)",
                 lm + rows + index + workers + 64 * MiB, resident);
  });
}

// The numerics every chunk of one map shares: the backend and its GEMM options.
std::string backend_mode(const Job& j) {
  const std::string gemm = j.p.gemm == GemmMode::Bf16 ? "+bf16" : "";
  if (j.backend == BackendKind::Cpu) return "cpu" + gemm;
  return "cuda" + gemm + (j.opt.allow_tf32 ? "+tf32" : "");
}

// ---- phase 2: the model's inputs and this rank's backend ----------------------------------

struct Inputs {
  std::vector<float> gamma;  // [hidden] the final norm's weight
  Vocab vocab;               // rank 0 only
  DecodeBackend backend;
};

Inputs load_inputs(const Job& j, const Comms& c) {
  Inputs in;
  const Model& m = *j.model;
  const ModelConfig& cfg = m.cfg;
  collective(c.world, [&] {
    const TensorInfo& g = m.expect(m.names.final_norm, {cfg.hidden_size}, "hidden_size");
    in.gamma = m.ckpt.file_of(m.names.final_norm).read_f32(g);
    m.expect(m.lm_head_name(), {cfg.vocab_size, cfg.hidden_size}, "vocab_size,hidden_size");
    if (c.rank == 0) in.vocab = load_vocab(j.opt.model_dir + "/tokenizer.json", cfg.vocab_size);
  });
  in.backend = make_decoder(j.backend, m, in.gamma, j.p, {j.opt.threads}, c);
  std::string workers;
  if (j.backend == BackendKind::Cpu)
    workers = ", " + std::to_string(in.backend.threads) + " worker thread" +
              (in.backend.threads > 1 ? "s" : "") + " per rank on " + std::to_string(affinity_cores()) +
              " of " + std::to_string(machine_cores()) + " cores";
  if (j.talk)
    std::fprintf(stderr, "flashinterp: LM-head [%lld x %lld] ready in %.2f s (%s, %d rank%s, %d node%s%s; "
                 "GEMM %s)\n",
                 (long long)cfg.vocab_size, (long long)cfg.hidden_size, in.backend.replicate_s,
                 in.backend.dec->name(), c.size, c.size > 1 ? "s" : "", c.num_nodes,
                 c.num_nodes > 1 ? "s" : "", workers.c_str(), in.backend.dec->gemm_info().c_str());
  // A rank bound to a small part of its node (mpirun binds each rank to one core when np <= 2).
  if (j.talk && j.backend == BackendKind::Cpu && j.opt.threads == 0 &&
      2 * in.backend.threads * c.local_size <= machine_cores())
    std::fprintf(stderr, "flashinterp: warning: this node's ranks use %d of its %d cores (their "
                 "affinity masks); mpirun binds each rank to one core when np <= 2: add --bind-to "
                 "none, or run more ranks, to use them all\n", in.backend.threads * c.local_size,
                 machine_cores());
  return in;
}

// ---- phase 3: the plan and the resume state ------------------------------------------------

enum class Start { Fresh, Resume, NothingToDo };

struct Plan {
  Start start = Start::Fresh;
  std::vector<WorkItem> full;   // every (matrix, layer, chunk), in the map's order
  std::vector<WorkItem> todo;   // what this run decodes: full less the chunks already done
  std::vector<uint8_t> done;    // [full.size()] skipped as already done (empty when fresh)
  std::vector<TokenIndex> tis;  // per matrix; rank 0 starts from the stored lists on resume
  Range share;                  // this rank's items of todo
  size_t rounds = 0;
  std::vector<size_t> group_start;    // [groups] where each group's items begin in full
  std::vector<int64_t> group_chunks;  // [groups] chunks per slice
  size_t full_index(const WorkItem& w) const {
    return group_start[size_t(w.matrix)] + size_t(w.layer_index) * size_t(group_chunks[size_t(w.matrix)]) +
           size_t(w.chunk);
  }
  size_t group_items(size_t g) const {
    return (g + 1 < group_start.size() ? group_start[g + 1] : full.size()) - group_start[g];
  }
};

// Group g's part of a mask over the full plan ([slices, C]).
std::vector<uint8_t> group_part(const Plan& plan, const std::vector<uint8_t>& mask, size_t g) {
  return std::vector<uint8_t>(mask.begin() + long(plan.group_start[g]),
                              mask.begin() + long(plan.group_start[g] + plan.group_items(g)));
}

// Reads what a partial map has done (rank 0). Returns false when the file is unusable as a
// start (cut off while being created), throws when it was made by another model or options.
bool read_partial(const Job& j, const std::string& fp, Plan& plan, std::vector<uint8_t>& included) {
  std::unique_ptr<MapReader> r = MapReader::try_open(j.partial);
  if (!r || !r->has_fingerprint()) return false;
  std::string theirs = r->fingerprint();
  if (theirs != fp)
    FI_FAIL(j.partial + ": made from another model or other options; cannot --resume it (" +
            fingerprint_difference(theirs, fp) + ")");
  plan.done.clear();
  included.clear();
  std::vector<std::vector<uint8_t>> inc(j.groups.size());
  for (size_t gi = 0; gi < j.groups.size(); ++gi) {
    const std::string& name = j.groups[gi].name;
    auto d = r->done(name);
    FI_CHECK(d.size() == plan.group_items(gi), j.partial + ": /" + name + "/done does not have this run's shape");
    // A chunk marked done whose data is not sane (a damaged file) is decoded again.
    const std::vector<uint8_t> sane = r->sane_chunks(name, j.model->cfg.vocab_size, j.p.chunk_rows);
    size_t redo = 0;
    for (size_t i = 0; i < d.size(); ++i)
      if (d[i] && !sane.at(i)) d[i] = 0, ++redo;
    if (redo && j.talk)
      std::fprintf(stderr, "flashinterp: %s: %zu chunk%s of /%s marked done hold invalid data (token ids out of "
                   "range or non-finite values); decoding them again\n", j.partial.c_str(), redo,
                   redo > 1 ? "s" : "", name.c_str());
    plan.done.insert(plan.done.end(), d.begin(), d.end());
    if (!plan.tis.empty()) inc[gi] = r->index_included(name);
  }
  // One token index per matrix over its groups. Nothing included: never saved, or cut off
  // inside a save (see MapWriter::write_token_index); the lists on disk may then hold rows that
  // are indexed again, so start this matrix empty.
  const ModelConfig& cfg = j.model->cfg;
  const int64_t widths[3] = {cfg.intermediate_size, cfg.moe.expert_size, cfg.moe.shared_size};
  for (size_t mi = 0; mi < plan.tis.size(); ++mi) {
    bool any = false;
    for (size_t gi = 0; gi < j.groups.size(); ++gi)
      if (j.groups[gi].index == int(mi)) any = any || std::find(inc[gi].begin(), inc[gi].end(), uint8_t(1)) != inc[gi].end();
    if (!any) continue;
    const std::string name = matrix_name(j.mats[mi]);
    r->read_token_index(name, plan.tis[mi], j.key);
    if (!MapReader::sane_token_index(plan.tis[mi], j.key, cfg.num_layers, widths)) {
      const std::string where = j.version >= map::kFormatVersionMoe ? "/token_index/" + name : "/" + name;
      if (j.talk)
        std::fprintf(stderr, "flashinterp: %s: the token index of %s is damaged; indexing its chunks again\n",
                     j.partial.c_str(), where.c_str());
      plan.tis[mi] = TokenIndex(cfg.vocab_size, j.M);
      for (size_t gi = 0; gi < j.groups.size(); ++gi)
        if (j.groups[gi].index == int(mi)) std::fill(inc[gi].begin(), inc[gi].end(), uint8_t(0));
    }
  }
  for (const auto& x : inc) included.insert(included.end(), x.begin(), x.end());
  return true;
}

// --resume: rank 0 reads the partial map's fingerprint and done masks, and everyone skips the
// chunks already written. --overwrite drops an old .partial now; an old complete map stays
// until the new one replaces it by rename, so a failed run never costs the previous map.
Plan plan_work(const Job& j, const std::string& fingerprint, const Comms& c) {
  Plan plan;
  std::vector<PlanGroup> shapes;
  for (const Group& g : j.groups) {
    plan.group_start.push_back(shapes.empty() ? 0 : plan.group_start.back() + size_t(shapes.back().slices * plan.group_chunks.back()));
    plan.group_chunks.push_back(num_chunks(g.neurons, j.p.chunk_rows));
    shapes.push_back({g.slices(), g.neurons});
  }
  plan.full = make_plan(shapes, j.p.chunk_rows);
  if (j.M > 0) plan.tis.assign(j.mats.size(), TokenIndex(j.model->cfg.vocab_size, j.M));
  std::vector<uint8_t> included;
  int start = int(Start::Fresh);
  collective(c.world, [&] {
    if (c.rank != 0) return;
    if (j.opt.resume && file_exists(j.partial)) {
      if (read_partial(j, fingerprint, plan, included)) start = int(Start::Resume);
      else if (j.talk) std::fprintf(stderr, "flashinterp: %s was cut off while being created; starting over\n", j.partial.c_str());
    } else if (j.opt.resume && file_exists(j.opt.out)) {
      MapReader done(j.opt.out);
      done.require_map(true);
      const std::string theirs = done.has_fingerprint() ? done.fingerprint() : "";
      if (theirs != fingerprint)
        FI_FAIL(j.opt.out + ": is complete but was made from another model or other options; --resume "
                "would not make it this run's map (" + fingerprint_difference(theirs, fingerprint) +
                "); pass --overwrite to replace it");
      start = int(Start::NothingToDo);
    }
    if (start == int(Start::Fresh) && (j.opt.overwrite || j.opt.resume)) std::remove(j.partial.c_str());
  });
  MPI_Bcast(&start, 1, MPI_INT, 0, c.world);
  plan.start = Start(start);
  if (plan.start == Start::Resume) {
    int64_t n = int64_t(plan.done.size());
    MPI_Bcast(&n, 1, MPI_INT64_T, 0, c.world);
    plan.done.resize(size_t(n));
    MPI_Bcast(plan.done.data(), int(n), MPI_UINT8_T, 0, c.world);
    included.resize(j.M > 0 ? size_t(n) : 0);
    if (j.M > 0) MPI_Bcast(included.data(), int(n), MPI_UINT8_T, 0, c.world);
    // done is [matrix][layer][chunk], the plan's own order. A chunk is skipped only when its
    // data is written and (with a token index) its rows are in the stored index; rank 0 starts
    // from the stored index, the merge adds the rest.
    for (size_t i = 0; i < plan.full.size(); ++i) {
      bool skip = plan.done.at(i) && (j.M == 0 || included.at(i));
      if (!skip) plan.todo.push_back(plan.full[i]);
      plan.done[i] = skip;
    }
    if (c.rank != 0)
      for (auto& ti : plan.tis) ti = TokenIndex(j.model->cfg.vocab_size, j.M);
    if (j.talk)
      std::fprintf(stderr, "flashinterp: resuming %s: %zu of %zu chunks already done\n", j.partial.c_str(),
                   plan.full.size() - plan.todo.size(), plan.full.size());
  } else {
    plan.todo = plan.full;
  }
  plan.share = rank_share(plan.todo.size(), c.rank, c.size);
  plan.rounds = num_rounds(plan.todo.size(), c.size);
  return plan;
}

MapMeta map_meta(const Job& j, const Decoder& dec, const std::string& fingerprint, const Comms& c) {
  const ModelConfig& cfg = j.model->cfg;
  MapMeta meta;
  meta.model_dir = j.opt.model_dir;
  meta.model_type = cfg.model_type;
  meta.norm = norm_name(j.p.norm);
  meta.backend = std::string(dec.name()) + (j.p.gemm == GemmMode::Bf16 ? "+bf16" : "");
  meta.command_line = j.opt.command_line;
  meta.created_utc = utc_now();
  meta.hidden_size = cfg.hidden_size;
  meta.intermediate_size = cfg.intermediate_size;
  meta.num_layers = cfg.num_layers;
  meta.vocab_size = cfg.vocab_size;
  meta.top_k = j.p.top_k;
  meta.bottom_k = j.p.bottom_k;
  meta.token_index_m = j.M;
  meta.world_size = c.size;
  meta.fingerprint = fingerprint;
  meta.format_version = j.version;
  meta.num_experts = cfg.moe.experts;
  meta.expert_size = cfg.moe.expert_size;
  meta.shared_size = cfg.moe.shared_size;
  return meta;
}

std::vector<MatrixLayout> map_layouts(const Job& j) {
  std::vector<MatrixLayout> layouts;
  const TensorNames& n = j.model->names;
  for (const Group& g : j.groups) {
    const std::string pattern = g.kind == kTiRouted   ? n.expert_pattern(g.mat)
                                : g.kind == kTiShared ? n.shared_pattern(g.mat)
                                                      : n.matrix_pattern(g.mat);
    layouts.push_back({g.name, pattern, g.mat == Matrix::Down, g.layers, g.neurons, j.p.chunk_rows, g.experts,
                       matrix_name(g.mat)});
  }
  return layouts;
}

// ---- phase 4: the rounds, and the token index saved as they go -----------------------------

// Merges the ranks' token indexes on rank 0 and stores them with the chunks they cover: the
// chunks skipped at the start plus every item of the first `rounds_done` rounds.
class IndexSaver {
 public:
  IndexSaver(const Job& j, Plan& plan, Decoder& dec, MapWriter& writer, const Comms& c)
      : j_(j), plan_(plan), dec_(dec), writer_(writer), c_(c) {}
  bool due() const {  // rank 0's clock decides the periodic saves
    return c_.rank == 0 && j_.M > 0 && j_.opt.save_index_minutes > 0 &&
           seconds_since(saved_) >= 60 * j_.opt.save_index_minutes;
  }
  void save(size_t rounds_done) {
    if (j_.M == 0) return;
    collective(c_.world, [&] { dec_.sync_token_index(); });  // a GPU's copy back to the host
    std::vector<uint8_t> inc = plan_.done.empty() ? std::vector<uint8_t>(plan_.full.size(), 0) : plan_.done;
    for (int r = 0; r < c_.size; ++r) {
      Range sh = rank_share(plan_.todo.size(), r, c_.size);
      for (size_t i = sh.begin; i < sh.begin + std::min(sh.size(), rounds_done); ++i)
        inc[plan_.full_index(plan_.todo[i])] = 1;
    }
    for (size_t mi = 0; mi < j_.mats.size(); ++mi) {
      reduce_token_index(plan_.tis[mi], c_.world);
      std::vector<uint8_t> mine;  // the masks of the matrix's groups, in map order
      for (size_t gi = 0; gi < j_.groups.size(); ++gi)
        if (j_.groups[gi].index == int(mi)) {
          const std::vector<uint8_t> part = group_part(plan_, inc, gi);
          mine.insert(mine.end(), part.begin(), part.end());
        }
      writer_.write_token_index(matrix_name(j_.mats[mi]), plan_.tis[mi], mine);
    }
    // Rank 0 holds everyone's entries now; the others start again from empty lists, so that
    // the next merge counts each row once.
    if (c_.rank != 0)
      for (auto& ti : plan_.tis) ti = TokenIndex(j_.model->cfg.vocab_size, j_.M);
    saved_ = Clock::now();
  }

 private:
  const Job& j_;
  Plan& plan_;
  Decoder& dec_;
  MapWriter& writer_;
  const Comms& c_;
  Clock::time_point saved_ = Clock::now();
};

bool hurried() { return g_stop == SIGTERM || g_stop == SIGINT; }

// Test only (FLASHINTERP_TEST_HOLD_ROUND): every rank waits until one of them has a stop signal,
// for at most 10 minutes. Sets stop[0] (a signal came) and stop[1] (a hurried one).
void hold_for_stop_signal(const Comms& c, int64_t* stop) {
  for (int i = 0; i < 12000; ++i) {
    int64_t mine[2] = {int64_t(g_stop != 0), int64_t(hurried())};
    MPI_Allreduce(mine, stop, 2, MPI_INT64_T, MPI_SUM, c.world);
    if (stop[0]) return;
    usleep(50000);
  }
}

// Per-round time split on rank 0 (FLASHINTERP_ROUND_TIMES=1): each round's decode, how long the
// main thread waited for it (what the previous write did not hide), and its write.
struct RoundTimes {
  bool on = false, overlap = false;
  double decode = 0, wait = 0, write = 0;
  void add(size_t round, double d, double w, double wr) {
    decode += d, wait += w, write += wr;
    if (on) std::fprintf(stderr, "flashinterp: round %zu: decode %.4f s, waited %.4f s, write %.4f s\n", round, d, w, wr);
  }
  void report(size_t rounds) const {
    if (on) std::fprintf(stderr, "flashinterp: %zu rounds (overlap %s): decode %.3f s, waited for decodes %.3f s, "
                         "writes %.3f s\n", rounds, overlap ? "on" : "off", decode, wait, write);
  }
};

// Returns the rows decoded over all ranks, or -1 when a stop signal ended the rounds early
// (the work so far kept in OUT.partial, the index saved).
//
// Round r: collect this rank's decode of r; agree on (rows, stop, save due); start the decode of
// r + 1 on the worker (round_overlap.h) unless round r ends in a save or a stop; write r while it
// runs. The token index is thus touched by one decode at a time, and at a save or a stop after
// round r no decode of r + 1 has added rows to it: `included` names exactly rounds 0..r, whose
// data the write has flushed (docs/MAP_FORMAT.md, "How a map is written").
int64_t run_rounds(const Job& j, Plan& plan, Decoder& dec, int widen_threads, MapWriter& writer,
                   const Comms& c) {
  IndexSaver saver(j, plan, dec, writer, c);
  int64_t total_rows = 0;
  for (const Group& g : j.groups) total_rows += g.slices() * g.neurons;
  Progress progress(j.talk, plan.todo.size() > 0 ? total_rows : 0);
  // The reader runs one item ahead: the next item's rows come off the disk (or page cache)
  // while this one is decoded and written.
  std::vector<FeedItem> items;
  for (size_t i = plan.share.begin; i < plan.share.begin + plan.share.size(); ++i) {
    const WorkItem& w = plan.todo[i];
    items.push_back(feed_item(*j.model, j.groups[size_t(w.matrix)], w));
  }
  // CUDA: two threads share each read (one thread's copy out of the page cache falls short of
  // what the device could take; tests/bench/feed_bench); CPU: the decode is the bottleneck.
  const int readers = j.backend == BackendKind::Cuda ? std::min(2, affinity_cores()) : 1;
  RowFeed feed(j.model->ckpt, std::move(items), dec.host_alloc(), readers);
  std::vector<float> x;
  auto item_of = [&](size_t round) { return round < plan.share.size() ? &plan.todo[plan.share.begin + round] : nullptr; };
  // This rank's item of a round into res (on the worker thread; nothing for a round past its share).
  RoundOverlap pipe([&](size_t round, ChunkResult& res) {
    const WorkItem* item = item_of(round);
    if (!item) return;
    const RowBlock& b = feed.next();
    if (j.M > 0) {  // the entries' (layer, group, expert) as one key (decode/token_index.h)
      const Group& g = j.groups[size_t(item->matrix)];
      dec.set_token_index_target(&plan.tis[size_t(g.index)],
                                 j.key.key(g.layer(item->layer_index), g.kind, g.expert(item->layer_index)),
                                 item->row0);
    }
    if (dec.takes_block(b)) {  // widened by the backend (CUDA: on the device)
      dec.decode_block(b, res);
    } else {
      x.resize(size_t(b.count * b.width));
      widen_block(b, x.data(), widen_threads);
      dec.decode(x.data(), item->rows, res);
    }
  });
  auto env_on = [](const char* name) { const char* v = std::getenv(name); return v && *v && *v != '0'; };
  RoundTimes times;
  times.on = c.rank == 0 && env_on("FLASHINTERP_ROUND_TIMES");
  // The overlap is for a backend whose decode leaves the host idle (CUDA: the worker waits on
  // the device). The CPU decode already keeps every core of the rank busy: there the write only
  // competes with it for the cores (and MPI's busy waits), measured slower on a loaded node.
  // FLASHINTERP_ROUND_OVERLAP=1 / =0 turns it on / off for either (the map is the same).
  const char* ov = std::getenv("FLASHINTERP_ROUND_OVERLAP");
  const bool overlap = ov && *ov ? env_on("FLASHINTERP_ROUND_OVERLAP") : j.backend == BackendKind::Cuda;
  times.overlap = overlap;
  int64_t rows_done = 0;
  for (size_t round = 0; round < plan.rounds; ++round) {
    const WorkItem* item = item_of(round);
    ChunkResult* res = nullptr;
    collective(c.world, [&] {
      if (round == 1 && test_fail_rank() == c.rank) FI_FAIL("rank " + std::to_string(c.rank) + ": injected failure (FLASHINTERP_TEST_FAIL_RANK)");
      res = &pipe.collect(round);
    });
    // SIGTERM and SIGINT come from mpirun (which kills the ranks soon after forwarding them) or
    // a shell: stop at once, keeping the index as last saved. SIGUSR1 (what the Slurm scripts
    // send) also saves the index.
    // [rows, stop, hurried stop, index save due]
    int64_t mine[4] = {item ? item->rows : 0, int64_t(g_stop != 0), int64_t(hurried()), saver.due() ? 1 : 0};
    int64_t all[4] = {0, 0, 0, 0};
    MPI_Allreduce(mine, all, 4, MPI_INT64_T, MPI_SUM, c.world);
    const bool more = round + 1 < plan.rounds;
    const bool hold = all[1] == 0 && plan.start == Start::Fresh && int64_t(round) == test_hold_round();
    if (overlap && more && all[1] == 0 && all[3] == 0 && !hold) pipe.start(round + 1);  // overlaps the write
    const auto t_write = Clock::now();
    writer.write_round(item, item ? res : nullptr);
    times.add(round, pipe.decode_s(), pipe.wait_s(), seconds_since(t_write));
    rows_done += all[0];
    progress.update(rows_done);
    if (hold) hold_for_stop_signal(c, &all[1]);

    if (all[1] > 0 && more) {
      if (c.rank == 0 && all[2] == 0)
        std::fprintf(stderr, "flashinterp: stopped by a signal after %zu of %zu rounds; %s keeps the "
                     "work done, continue with --resume\n", round + 1, plan.rounds, j.partial.c_str());
      if (c.rank == 0 && all[2] > 0)
        std::fprintf(stderr, "flashinterp: stopped by SIGTERM/SIGINT after %zu of %zu rounds; %s keeps the "
                     "data of every chunk written, the token index as last saved (SIGUSR1 saves it too); "
                     "continue with --resume\n", round + 1, plan.rounds, j.partial.c_str());
      if (all[2] == 0) saver.save(round + 1);
      writer.close();
      MPI_Barrier(c.world);
      return -1;
    }
    if (all[3] > 0 && more) saver.save(round + 1);
  }
  times.report(plan.rounds);
  saver.save(plan.rounds);
  return rows_done;
}

// ---- phase 5: the map into place, and the report -------------------------------------------

void finish(const Job& j, MapWriter& writer, const Decoder& dec, int64_t rows_done, double elapsed,
            const Comms& c) {
  writer.finish(elapsed);
  collective(c.world, [&] {
    if (c.rank == 0) test_kill_point("rename");
    if (c.rank == 0 && std::rename(j.partial.c_str(), j.opt.out.c_str()) != 0)
      FI_FAIL(j.opt.out + ": cannot rename " + j.partial + " into place (" + std::strerror(errno) + ")");
  });
  long rss = peak_rss_kb();
  std::vector<long> all_rss(c.size);
  MPI_Gather(&rss, 1, MPI_LONG, all_rss.data(), 1, MPI_LONG, 0, c.world);
  long long redone = dec.redecoded_rows(), redone_all = 0;
  MPI_Reduce(&redone, &redone_all, 1, MPI_LONG_LONG, MPI_SUM, 0, c.world);
  if (!j.talk) return;
  const ModelConfig& cfg = j.model->cfg;
  double flops = 2.0 * double(rows_done) * double(cfg.vocab_size) * double(cfg.hidden_size);
  std::fprintf(stderr, "flashinterp: done: %lld rows in %.2f s (%.0f rows/s, %.1f GFLOP/s) -> %s\n",
               (long long)rows_done, elapsed, rows_done / elapsed, flops / elapsed / 1e9, j.opt.out.c_str());
  if (j.p.gemm == GemmMode::Bf16)
    std::fprintf(stderr, "flashinterp: gemm bf16: %lld of %lld rows not certified by the error bound, "
                 "decoded again exactly\n", redone_all, (long long)rows_done);
  std::string r = "flashinterp: peak RSS per rank (MiB):";
  for (long kb : all_rss) r += " " + std::to_string(kb / 1024);
  std::fprintf(stderr, "%s\n", r.c_str());
}

// What the fingerprint covers; a version 2 map also every tensor of its groups, its experts and groups.
FingerprintInputs fingerprint_inputs(const Job& j) {
  FingerprintInputs in{*j.model, j.mats, j.layers, j.p, j.M, backend_mode(j), j.version, {}, "", ""};
  if (j.version < map::kFormatVersionMoe) return in;
  for (const Group& g : j.groups) {
    for (int64_t s = 0; s < g.slices(); ++s) in.tensors.push_back(g.source(*j.model, s).tensor);
    in.groups += (in.groups.empty() ? "" : ",") + g.name;
  }
  in.experts = std::to_string(j.experts.front()) + "-" + std::to_string(j.experts.back());
  return in;
}

}  // namespace

int run_decode(const DecodeOptions& opt, const Comms& c) {
  const auto t0 = Clock::now();
  install_stop_handlers();  // a stop asked for during set-up takes effect after the first round
  Job job = validate(opt, c);
  check_decode_memory(job, c);
  Inputs in = load_inputs(job, c);
  Decoder& dec = *in.backend.dec;
  std::string fp;  // rank 0's; the writer puts it in the file
  collective(c.world, [&] {
    if (c.rank == 0) fp = decode_fingerprint(fingerprint_inputs(job));
  });
  Plan plan = plan_work(job, fp, c);
  if (plan.start == Start::NothingToDo) {
    if (job.talk) std::fprintf(stderr, "flashinterp: %s is complete; nothing to resume\n", opt.out.c_str());
    return 0;
  }
  MapWriter writer(c.world, job.partial, map_meta(job, dec, fp, c), map_layouts(job), in.vocab,
                   default_writer_kind(), plan.start == Start::Resume);
  const int64_t rows_done = run_rounds(job, plan, dec, in.backend.threads > 0 ? in.backend.threads : affinity_cores(),
                                       writer, c);
  if (rows_done < 0) return kExitStopped;
  finish(job, writer, dec, rows_done, seconds_since(t0), c);
  return 0;
}

}  // namespace fi
