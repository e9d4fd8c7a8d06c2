// The decode job: every step that can fail on one rank is agreed on collectively (dist/mpi_env),
// so a bad file ends every rank with one line instead of a hang.
#include "decode/decode_job.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <thread>

#include "common/error.h"
#include "decode/decoder.h"
#include "dist/partition.h"
#include "h5/map_writer.h"
#include "model/config.h"
#include "model/vocab.h"
#ifdef FI_HAVE_CUDA
#include "decode/cuda/cuda_decoder.h"
#endif

namespace fi {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The LM-head as fp32, one copy per node in an MPI shared-memory window. Each rank of the node
// reads and widens its share of the rows, so the node reads the tensor from disk exactly once.
class SharedLmHead {
 public:
  SharedLmHead(const Model& model, const Comms& c) {
    const std::string name = model.lm_head_name();
    const TensorInfo& t = model.ckpt.info(name);
    vocab_ = t.shape[0];
    hidden_ = t.shape[1];
    MPI_Aint bytes = c.local_rank == 0 ? MPI_Aint(vocab_ * hidden_ * sizeof(float)) : 0;
    float* base = nullptr;
    FI_CHECK(MPI_Win_allocate_shared(bytes, sizeof(float), MPI_INFO_NULL, c.node, &base, &win_) ==
                 MPI_SUCCESS,
             "cannot allocate the shared LM-head window (" + std::to_string(bytes >> 20) + " MiB)");
    MPI_Aint size = 0;
    int disp = 0;
    MPI_Win_shared_query(win_, 0, &size, &disp, &data_);
    const SafetensorsFile& f = model.ckpt.file_of(name);
    int64_t r0 = vocab_ * c.local_rank / c.local_size, r1 = vocab_ * (c.local_rank + 1) / c.local_size;
    std::string error;  // reported by the caller's collective check, after the fence
    try {
      const int64_t step = 4096;
      for (int64_t r = r0; r < r1; r += step)
        f.read_rows_f32(t, r, std::min(step, r1 - r), data_ + r * hidden_);
    } catch (const std::exception& e) {
      error = e.what();
    }
    MPI_Win_fence(0, win_);
    MPI_Barrier(c.node);
    if (!error.empty()) throw Error(error);
  }
  ~SharedLmHead() {
    if (win_ != MPI_WIN_NULL) MPI_Win_free(&win_);
  }
  LmHead view() const { return {vocab_, hidden_, data_}; }

 private:
  MPI_Win win_ = MPI_WIN_NULL;
  float* data_ = nullptr;
  int64_t vocab_ = 0, hidden_ = 0;
};

// Reads a work item's neuron vectors: rows of up/gate, columns of down. x: [rows, hidden]
void read_item(const Model& m, Matrix mat, int64_t layer, const WorkItem& it, std::vector<float>& x) {
  const std::string name = m.names.matrix(mat, layer);
  const TensorInfo& t = m.ckpt.info(name);
  x.resize(size_t(it.rows * m.cfg.hidden_size));
  if (mat == Matrix::Down) m.ckpt.file_of(name).read_cols_f32(t, it.row0, it.rows, x.data());
  else m.ckpt.file_of(name).read_rows_f32(t, it.row0, it.rows, x.data());
}

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

std::vector<int64_t> parse_layers(const std::string& spec, int64_t num_layers) {
  std::vector<int64_t> out;
  if (spec.empty()) {
    for (int64_t l = 0; l < num_layers; ++l) out.push_back(l);
    return out;
  }
  int64_t a = 0, b = 0;
  char dash = 0, extra = 0;
  int n = std::sscanf(spec.c_str(), "%lld%c%lld%c", (long long*)&a, &dash, (long long*)&b, &extra);
  if (n == 1) b = a;
  else if (n != 3 || dash != '-') FI_FAIL("--layers: expected A-B or A, got '" + spec + "'");
  if (a < 0 || b < a || b >= num_layers)
    FI_FAIL("--layers " + spec + ": the model has layers 0-" + std::to_string(num_layers - 1));
  for (int64_t l = a; l <= b; ++l) out.push_back(l);
  return out;
}

void run_decode(const DecodeOptions& opt, const Comms& c) {
  const auto t0 = Clock::now();
  const bool talk = c.rank == 0 && !opt.quiet;
  const std::string partial = opt.out + ".partial";

  // Everything that can be checked before work starts, on every rank.
  std::unique_ptr<Model> model;
  DecodeParams p;
  std::vector<Matrix> mats;
  std::vector<int64_t> layers;
  bool use_cuda = false;
  collective(c.world, [&] {
    FI_CHECK(!opt.out.empty(), "--out is required");
    if (opt.top_k < 1) FI_FAIL("--top-k must be at least 1");
    if (opt.bottom_k < 0) FI_FAIL("--bottom-k must be 0 or more");
    if (opt.token_index != 0) FI_FAIL("--token-index is not implemented yet (use 0)");
    if (opt.chunk_rows < 0) FI_FAIL("--chunk-rows must be positive");
    p.norm = parse_norm(opt.norm);
    for (const auto& s : opt.matrices) {
      Matrix m = parse_matrix(s);
      for (Matrix o : mats)
        if (o == m) FI_FAIL("--matrices lists '" + s + "' twice");
      mats.push_back(m);
    }
    FI_CHECK(!mats.empty(), "--matrices is empty");
    if (opt.backend == "cuda") {
      if (!cuda_available()) FI_FAIL("--backend cuda: no usable CUDA device on this node");
      use_cuda = true;
    } else if (opt.backend == "auto") {
      use_cuda = cuda_available();
    } else if (opt.backend != "cpu") {
      FI_FAIL("--backend: unknown backend '" + opt.backend + "' (expected auto, cpu or cuda)");
    }
    if (c.rank == 0 && (file_exists(opt.out) || file_exists(partial)) && !opt.overwrite)
      FI_FAIL(opt.out + (file_exists(opt.out) ? "" : ".partial") +
              ": output exists; pass --overwrite to replace it");
    model = std::make_unique<Model>(opt.model_dir);
    layers = parse_layers(opt.layers, model->cfg.num_layers);
    for (Matrix m : mats)
      for (int64_t l : layers) {
        auto I = model->cfg.intermediate_size, H = model->cfg.hidden_size;
        if (m == Matrix::Down) model->expect(model->names.matrix(m, l), {H, I}, "hidden_size,intermediate_size");
        else model->expect(model->names.matrix(m, l), {I, H}, "intermediate_size,hidden_size");
      }
  });
  if (opt.backend == "auto" && c.rank == 0 && !opt.quiet)
    std::fprintf(stderr, "flashinterp: backend auto: %s\n",
                 use_cuda ? "CUDA device found, using cuda" : "no CUDA device, using cpu");
  const ModelConfig& cfg = model->cfg;
  p.top_k = opt.top_k;
  p.bottom_k = opt.bottom_k;
  p.norm_plus_one = cfg.norm_plus_one;
  p.eps = cfg.rms_norm_eps;
  p.allow_tf32 = opt.allow_tf32;
  p.chunk_rows = opt.chunk_rows > 0 ? opt.chunk_rows : (use_cuda ? 4096 : 512);
  if (p.top_k > cfg.vocab_size || p.bottom_k > cfg.vocab_size) {
    collective(c.world, [&] { FI_FAIL("--top-k/--bottom-k larger than the vocabulary"); });
  }

  // The norm weight, the vocab (rank 0 only) and the LM-head replica.
  std::vector<float> gamma;
  Vocab vocab;
  collective(c.world, [&] {
    const TensorInfo& g = model->expect(model->names.final_norm, {cfg.hidden_size}, "hidden_size");
    gamma = model->ckpt.file_of(model->names.final_norm).read_f32(g);
    model->expect(model->lm_head_name(), {cfg.vocab_size, cfg.hidden_size}, "vocab_size,hidden_size");
    if (c.rank == 0) vocab = load_vocab(opt.model_dir + "/tokenizer.json", cfg.vocab_size);
  });

  std::unique_ptr<SharedLmHead> head;
  std::unique_ptr<Decoder> dec;
  double replicate_s = 0;
  const auto t_head = Clock::now();
  if (use_cuda) {
#ifdef FI_HAVE_CUDA
    collective(c.world, [&] {
      CudaSetup setup;
      setup.node_comm = c.node;
      dec = make_cuda_decoder(*model, gamma, p, setup);
      replicate_s = setup.replicate_seconds;
    });
#endif
  } else {
    collective(c.world, [&] { head = std::make_unique<SharedLmHead>(*model, c); });
    replicate_s = seconds_since(t_head);
    int threads = opt.threads > 0 ? opt.threads
                                  : std::max(1, int(std::thread::hardware_concurrency()) / c.local_size);
    dec = make_cpu_decoder(head->view(), gamma, p, threads);
  }
  if (talk)
    std::fprintf(stderr, "flashinterp: LM-head [%lld x %lld] ready in %.2f s (%s, %d rank%s, %d node%s)\n",
                 (long long)cfg.vocab_size, (long long)cfg.hidden_size, replicate_s, dec->name(),
                 c.size, c.size > 1 ? "s" : "", c.num_nodes, c.num_nodes > 1 ? "s" : "");

  // The plan and the map.
  const int64_t N = cfg.intermediate_size;
  std::vector<WorkItem> plan = make_plan(int(mats.size()), int(layers.size()), N, p.chunk_rows);
  Range share = rank_share(plan.size(), c.rank, c.size);
  const size_t rounds = num_rounds(plan.size(), c.size);

  MapMeta meta;
  meta.model_dir = opt.model_dir;
  meta.model_type = cfg.model_type;
  meta.norm = norm_name(p.norm);
  meta.backend = dec->name();
  meta.command_line = opt.command_line;
  meta.created_utc = utc_now();
  meta.hidden_size = cfg.hidden_size;
  meta.intermediate_size = N;
  meta.num_layers = cfg.num_layers;
  meta.vocab_size = cfg.vocab_size;
  meta.top_k = p.top_k;
  meta.bottom_k = p.bottom_k;
  meta.world_size = c.size;
  std::vector<MatrixLayout> layouts;
  for (Matrix m : mats)
    layouts.push_back({matrix_name(m), model->names.matrix_pattern(m), m == Matrix::Down, layers, N,
                       p.chunk_rows});
  // --overwrite drops an old .partial now; an old complete map stays until the new one
  // replaces it by rename, so a failed run never costs the previous map.
  collective(c.world, [&] {
    if (c.rank == 0 && opt.overwrite) std::remove(partial.c_str());
  });
  MapWriter writer(c.world, partial, meta, layouts, vocab, default_writer_kind());

  Progress progress(talk, int64_t(plan.size() > 0 ? mats.size() * layers.size() * N : 0));
  std::vector<float> x;
  ChunkResult res;
  int64_t rows_done = 0;
  for (size_t round = 0; round < rounds; ++round) {
    const WorkItem* item = round < share.size() ? &plan[share.begin + round] : nullptr;
    collective(c.world, [&] {
      if (!item) return;
      read_item(*model, mats[item->matrix], layers[item->layer_index], *item, x);
      dec->decode(x.data(), item->rows, res);
    });
    writer.write_round(item, item ? &res : nullptr);
    int64_t mine = item ? item->rows : 0, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT64_T, MPI_SUM, c.world);
    rows_done += all;
    progress.update(rows_done);
  }
  const double elapsed = seconds_since(t0);
  writer.finish(elapsed);
  collective(c.world, [&] {
    if (c.rank == 0 && std::rename(partial.c_str(), opt.out.c_str()) != 0)
      FI_FAIL(opt.out + ": cannot rename " + partial + " into place");
  });

  long rss = peak_rss_kb();
  std::vector<long> all_rss(c.size);
  MPI_Gather(&rss, 1, MPI_LONG, all_rss.data(), 1, MPI_LONG, 0, c.world);
  if (talk) {
    double flops = 2.0 * double(rows_done) * double(cfg.vocab_size) * double(cfg.hidden_size);
    std::fprintf(stderr, "flashinterp: done: %lld rows in %.2f s (%.0f rows/s, %.1f GFLOP/s) -> %s\n",
                 (long long)rows_done, elapsed, rows_done / elapsed, flops / elapsed / 1e9,
                 opt.out.c_str());
    std::string r = "flashinterp: peak RSS per rank (MiB):";
    for (long kb : all_rss) r += " " + std::to_string(kb / 1024);
    std::fprintf(stderr, "%s\n", r.c_str());
  }
}

}  // namespace fi
