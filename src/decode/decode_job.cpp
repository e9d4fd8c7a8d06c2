// The decode job: every step that can fail on one rank is agreed on collectively (parallel/mpi_env),
// so a bad file ends every rank with one line instead of a hang.
#include "decode/decode_job.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "decode/decoder.h"
#include "decode/token_index.h"
#include "gpu/device.h"
#include "parallel/partition.h"
#include "h5/h5.h"
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

// Stop signals: the first asks for a clean stop at the next round (the round in flight is
// finished and flushed), a second one ends the process at once.
volatile sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) {
  if (g_stop) _exit(kExitStopped);
  g_stop = 1;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

namespace {

// FNV-1a over bytes: a cheap content hash for the fingerprint.
uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

uint64_t hash_file_prefix(const std::string& path, uint64_t max_bytes, uint64_t* size) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) FI_FAIL(path + ": cannot open");
  std::vector<char> buf(1 << 16);
  uint64_t h = 1469598103934665603ull, total = 0;
  size_t n;
  while (total < max_bytes && (n = std::fread(buf.data(), 1, std::min<uint64_t>(buf.size(), max_bytes - total), f)) > 0) {
    h = fnv1a(buf.data(), n, h);
    total += n;
  }
  std::fseek(f, 0, SEEK_END);
  *size = uint64_t(std::ftell(f));
  std::fclose(f);
  return h;
}

// What a partial map must share with this run to be resumed: every model file's size and
// header hash (tensor names, shapes, offsets), config.json and tokenizer.json, and every option
// that changes the datasets.
std::string fingerprint(const Model& m, const std::vector<Matrix>& mats, const std::vector<int64_t>& layers,
                        const DecodeParams& p, int token_index) {
  std::ostringstream o;
  for (const auto& sh : m.ckpt.shards()) {
    uint64_t size = 0, h = hash_file_prefix(sh->path(), sh->header_bytes(), &size);
    o << sh->path().substr(sh->path().find_last_of('/') + 1) << ":" << size << ":" << std::hex << h
      << std::dec << ";";
  }
  for (const char* f : {"/config.json", "/tokenizer.json"}) {
    uint64_t size = 0, h = hash_file_prefix(m.dir + f, UINT64_MAX, &size);
    o << (f + 1) << ":" << size << ":" << std::hex << h << std::dec << ";";
  }
  o << "matrices=";
  for (Matrix x : mats) o << matrix_name(x) << ",";
  o << ";layers=" << layers.front() << "-" << layers.back() << ";top_k=" << p.top_k
    << ";bottom_k=" << p.bottom_k << ";norm=" << norm_name(p.norm) << ";chunk_rows=" << p.chunk_rows
    << ";token_index=" << token_index;
  return o.str();
}

// Reads what a partial map has done. Returns false when the file is unusable as a start (cut off
// while being created: no fingerprint), throws when it was made by another model or options.
bool read_partial(const std::string& path, const std::string& fp, const std::vector<Matrix>& mats,
                  std::vector<uint8_t>& done, std::vector<uint8_t>& included, std::vector<TokenIndex>& tis) {
  h5::silence_errors();
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return false;
  h5::Handle f(id, H5Fclose, path);
  if (!h5::has_attr(f, "fingerprint")) return false;
  std::string theirs = h5::read_attr_string(f, "fingerprint");
  if (theirs != fp)
    FI_FAIL(path + ": made from another model or other options; cannot --resume it (theirs: " +
            theirs + "; ours: " + fp + ")");
  done.clear();
  included.clear();
  for (size_t mi = 0; mi < mats.size(); ++mi) {
    const std::string g = std::string("/") + matrix_name(mats[mi]) + "/";
    auto d = h5::read_u8(f, g + "done");
    done.insert(done.end(), d.begin(), d.end());
    if (tis.empty()) continue;
    auto inc = h5::read_u8(f, g + "token_index/included");
    included.insert(included.end(), inc.begin(), inc.end());
    // Nothing included: never saved, or cut off inside a save (see MapWriter::write_token_index);
    // the lists on disk may then hold rows that are indexed again, so start this matrix empty.
    if (std::find(inc.begin(), inc.end(), uint8_t(1)) == inc.end()) continue;
    TokenIndex& ti = tis[mi];
    auto read = [&](const char* name, hid_t type, void* dst) {
      h5::Handle ds = h5::open_dataset(f, g + "token_index/" + name);
      h5::check(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst), path + ": cannot read " + name);
    };
    read("layer", H5T_NATIVE_INT32, ti.layer.data());
    read("neuron", H5T_NATIVE_INT32, ti.neuron.data());
    read("logp", H5T_NATIVE_DOUBLE, ti.logp.data());
    // Slots never written hold the fill value 0: mark them empty again.
    for (size_t i = 0; i < ti.layer.size(); ++i)
      if (ti.layer[i] < 0 || ti.neuron[i] < 0 || (ti.layer[i] == 0 && ti.neuron[i] == 0 && ti.logp[i] == 0)) {
        ti.layer[i] = ti.neuron[i] = -1;
        ti.logp[i] = -INFINITY;
      }
    ti.refresh_worst();
  }
  return true;
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
  if (b < a) FI_FAIL("--layers " + spec + ": the range is reversed (write A-B with A <= B)");
  if (a < 0 || b >= num_layers)
    FI_FAIL("--layers " + spec + ": the model has layers 0-" + std::to_string(num_layers - 1));
  for (int64_t l = a; l <= b; ++l) out.push_back(l);
  return out;
}

int run_decode(const DecodeOptions& opt, const Comms& c) {
  const auto t0 = Clock::now();
  const bool talk = c.rank == 0 && !opt.quiet;
  const std::string partial = opt.out + ".partial";
  install_stop_handlers();  // a stop asked for during set-up takes effect after the first round

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
    if (opt.token_index < 0) FI_FAIL("--token-index must be 0 (off) or more");
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
    if (opt.resume && opt.overwrite) FI_FAIL("--resume and --overwrite exclude each other");
    if (c.rank == 0 && !opt.resume && !opt.overwrite) {
      if (file_exists(opt.out)) FI_FAIL(opt.out + ": output exists; pass --overwrite to replace it");
      if (file_exists(partial))
        FI_FAIL(partial + ": an unfinished decode exists; pass --resume to continue it or --overwrite to start over");
    }
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
      setup.split_input = !opt.fast_gemm;
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
  const int M = opt.token_index;
  if (talk)
    std::fprintf(stderr, "flashinterp: LM-head [%lld x %lld] ready in %.2f s (%s, %d rank%s, %d node%s)\n",
                 (long long)cfg.vocab_size, (long long)cfg.hidden_size, replicate_s, dec->name(),
                 c.size, c.size > 1 ? "s" : "", c.num_nodes, c.num_nodes > 1 ? "s" : "");

  // The plan and the map.
  const int64_t N = cfg.intermediate_size;
  std::vector<WorkItem> plan = make_plan(int(mats.size()), int(layers.size()), N, p.chunk_rows);
  Range share = rank_share(plan.size(), c.rank, c.size);
  size_t rounds = num_rounds(plan.size(), c.size);

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
  meta.token_index_m = M;
  meta.world_size = c.size;
  std::vector<MatrixLayout> layouts;
  for (Matrix m : mats)
    layouts.push_back({matrix_name(m), model->names.matrix_pattern(m), m == Matrix::Down, layers, N,
                       p.chunk_rows});
  // --resume: rank 0 reads the partial map's fingerprint and done masks, and everyone skips
  // the chunks already written. --overwrite drops an old .partial now; an old complete map stays
  // until the new one replaces it by rename, so a failed run never costs the previous map.
  int mode = 0;  // 0 fresh, 1 resume, 2 nothing to do (OUT complete, no partial)
  std::vector<uint8_t> done, included;
  std::vector<TokenIndex> tis;
  if (M > 0) tis.assign(mats.size(), TokenIndex(cfg.vocab_size, M));
  collective(c.world, [&] {
    if (c.rank != 0) return;
    meta.fingerprint = fingerprint(*model, mats, layers, p, M);
    if (opt.resume && file_exists(partial)) {
      if (read_partial(partial, meta.fingerprint, mats, done, included, tis)) mode = 1;
      else if (talk) std::fprintf(stderr, "flashinterp: %s was cut off while being created; starting over\n", partial.c_str());
    } else if (opt.resume && file_exists(opt.out)) {
      mode = 2;
    }
    if (mode == 0 && (opt.overwrite || opt.resume)) std::remove(partial.c_str());
  });
  MPI_Bcast(&mode, 1, MPI_INT, 0, c.world);
  if (mode == 2) {
    if (talk) std::fprintf(stderr, "flashinterp: %s is complete; nothing to resume\n", opt.out.c_str());
    return 0;
  }
  if (mode == 1) {
    int64_t n = int64_t(done.size());
    MPI_Bcast(&n, 1, MPI_INT64_T, 0, c.world);
    done.resize(size_t(n));
    MPI_Bcast(done.data(), int(n), MPI_UINT8_T, 0, c.world);
    included.resize(M > 0 ? size_t(n) : 0);
    if (M > 0) MPI_Bcast(included.data(), int(n), MPI_UINT8_T, 0, c.world);
    // done is [matrix][layer][chunk], the plan's own order. A chunk is skipped only when its
    // data is written and (with a token index) its rows are in the stored index; rank 0 starts
    // from the stored index, the merge adds the rest.
    std::vector<WorkItem> todo;
    for (size_t i = 0; i < plan.size(); ++i) {
      bool skip = done.at(i) && (M == 0 || included.at(i));
      if (!skip) todo.push_back(plan[i]);
      done[i] = skip;
    }
    if (c.rank != 0)
      for (auto& ti : tis) ti = TokenIndex(cfg.vocab_size, M);
    if (talk)
      std::fprintf(stderr, "flashinterp: resuming %s: %zu of %zu chunks already done\n", partial.c_str(),
                   plan.size() - todo.size(), plan.size());
    plan = std::move(todo);
    share = rank_share(plan.size(), c.rank, c.size);
    rounds = num_rounds(plan.size(), c.size);
  }
  MapWriter writer(c.world, partial, meta, layouts, vocab, default_writer_kind(), mode == 1);

  // Merges the ranks' token indexes on rank 0 and stores them with the chunks they cover:
  // the chunks skipped at the start plus every item of the first `rounds_done` rounds.
  const std::vector<WorkItem> full_plan = make_plan(int(mats.size()), int(layers.size()), N, p.chunk_rows);
  auto save_token_index = [&](size_t rounds_done) {
    if (M == 0) return;
    collective(c.world, [&] { dec->sync_token_index(); });  // a GPU's copy back to the host
    std::vector<uint8_t> inc = done.empty() ? std::vector<uint8_t>(full_plan.size(), 0) : done;
    for (int r = 0; r < c.size; ++r) {
      Range sh = rank_share(plan.size(), r, c.size);
      for (size_t i = sh.begin; i < sh.begin + std::min(sh.size(), rounds_done); ++i) {
        const WorkItem& w = plan[i];
        inc[(size_t(w.matrix) * layers.size() + size_t(w.layer_index)) * size_t(num_chunks(N, p.chunk_rows)) +
            size_t(w.chunk)] = 1;
      }
    }
    const size_t per = inc.size() / mats.size();
    for (size_t mi = 0; mi < mats.size(); ++mi) {
      reduce_token_index(tis[mi], c.world);
      writer.write_token_index(mi, tis[mi], std::vector<uint8_t>(inc.begin() + mi * per, inc.begin() + (mi + 1) * per));
    }
    // Rank 0 holds everyone's entries now; the others start again from empty lists, so that
    // the next merge counts each row once.
    if (c.rank != 0)
      for (auto& ti : tis) ti = TokenIndex(cfg.vocab_size, M);
  };
  Clock::time_point t_saved = Clock::now();  // rank 0's clock decides the periodic saves

  Progress progress(talk, int64_t(plan.size() > 0 ? mats.size() * layers.size() * N : 0));
  std::vector<float> x;
  ChunkResult res;
  int64_t rows_done = 0;
  for (size_t round = 0; round < rounds; ++round) {
    const WorkItem* item = round < share.size() ? &plan[share.begin + round] : nullptr;
    collective(c.world, [&] {
      if (round == 1 && test_fail_rank() == c.rank) FI_FAIL("rank " + std::to_string(c.rank) + ": injected failure (FLASHINTERP_TEST_FAIL_RANK)");
      if (!item) return;
      read_item(*model, mats[item->matrix], layers[item->layer_index], *item, x);
      if (M > 0)
        dec->set_token_index_target(&tis[item->matrix], int32_t(layers[item->layer_index]), item->row0);
      dec->decode(x.data(), item->rows, res);
    });
    writer.write_round(item, item ? &res : nullptr);
    const bool save_due = c.rank == 0 && M > 0 && opt.save_index_minutes > 0 &&
                          seconds_since(t_saved) >= 60 * opt.save_index_minutes;
    int64_t mine[3] = {item ? item->rows : 0, int64_t(g_stop), save_due ? 1 : 0}, all[3] = {0, 0, 0};
    MPI_Allreduce(mine, all, 3, MPI_INT64_T, MPI_SUM, c.world);
    rows_done += all[0];
    progress.update(rows_done);
    if (all[1] > 0 && round + 1 < rounds) {
      if (c.rank == 0)
        std::fprintf(stderr, "flashinterp: stopped by a signal after %zu of %zu rounds; %s keeps the "
                     "work done, continue with --resume\n", round + 1, rounds, partial.c_str());
      save_token_index(round + 1);
      writer.close();
      MPI_Barrier(c.world);
      return kExitStopped;
    }
    if (all[2] > 0 && round + 1 < rounds) {
      save_token_index(round + 1);
      t_saved = Clock::now();
    }
  }
  save_token_index(rounds);
  const double elapsed = seconds_since(t0);
  writer.finish(elapsed);
  collective(c.world, [&] {
    if (c.rank == 0) test_kill_point("rename");
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
  return 0;
}

}  // namespace fi
