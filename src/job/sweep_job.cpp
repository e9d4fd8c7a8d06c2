// `flashinterp sweep` as its phases (see sweep_job.h): checked options and the selected neurons
// (from the map) -> the stages per pipeline and each rank's stage of the forward -> the
// fingerprint and resume state -> the unclamped log-probabilities -> rounds: each pipeline
// sweeps the next few neurons of its share, rank 0 writes them and their done bits -> complete,
// rename. Every neuron's numbers depend on the neuron alone (its layer's prefix states are the
// same bits however they were reached, each layer the same computation wherever it runs), so the
// file is the same for any number of ranks or stages and after any resume.
#include "job/sweep_job.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "common/error.h"
#include "forward/forward.h"
#include "job/decode_job.h"
#include "job/output.h"
#include "map/map_reader.h"
#include "model/layer_tensors.h"
#include "parallel/memory.h"
#include "parallel/partition.h"

namespace fi {
namespace {

using Clock = std::chrono::steady_clock;
uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
std::string hex(uint64_t h) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

bool parse_i64(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end || v < 0) return false;
  out = v;
  return true;
}

// ---- the selected neurons, from the map ----------------------------------------------------

// One group of the map: a dense matrix (/up), a routed-expert matrix (/moe/up, datasets with an
// expert axis after the layer axis) or a shared-expert matrix (/shared/up); its layers (and
// experts) and the datasets the sweep reads.
struct Group {
  int32_t matrix = 0;
  int32_t kind = sweep::kGroupDense;  // sweep::kGroupDense | kGroupMoe | kGroupShared
  std::string name;                   // "up", "moe/up", "shared/up"
  h5::Handle g;
  std::vector<int64_t> layers;   // model layer ids, dataset order
  std::vector<int64_t> experts;  // moe only: the expert ids along axis 1
  int64_t N = 0, K = 0;          // neurons per layer (per expert), top_k
  bool entropy = false;          // <group>/entropy (exact entropy in nats) is present
  int64_t index_of(int64_t layer) const {
    auto it = std::find(layers.begin(), layers.end(), layer);
    return it == layers.end() ? -1 : int64_t(it - layers.begin());
  }
  int64_t expert_index(int64_t e) const {
    auto it = std::find(experts.begin(), experts.end(), e);
    return it == experts.end() ? -1 : int64_t(it - experts.begin());
  }
};

class MapView {
 public:
  MapView(const std::string& path, const ModelConfig& cfg) : path_(path) {
    MapReader r(path);
    r.require_map(true);
    fingerprint = r.fingerprint();
    f_ = h5::open_file(path, false);
    for (const auto& [attr, want] : {std::pair{"intermediate_size", cfg.intermediate_size},
                                     {"num_layers", cfg.num_layers}, {"vocab_size", cfg.vocab_size},
                                     {"hidden_size", cfg.hidden_size}})
      if (h5::read_attr_int(f_, attr) != want)
        FI_FAIL(path + ": the map was made from another model (" + attr + " " +
                std::to_string(h5::read_attr_int(f_, attr)) + ", --model's " + std::to_string(want) + ")");
    if (h5::has_attr(f_, "num_experts") && h5::read_attr_int(f_, "num_experts") != cfg.moe.experts)
      FI_FAIL(path + ": the map was made from another model (num_experts " +
              std::to_string(h5::read_attr_int(f_, "num_experts")) + ", --model's " +
              std::to_string(cfg.moe.experts) + ")");
    for (int32_t kind : {sweep::kGroupDense, sweep::kGroupMoe, sweep::kGroupShared})
      for (int32_t m = 0; m < 3; ++m) {
        const std::string name = std::string(kind == sweep::kGroupMoe ? "moe/" : kind == sweep::kGroupShared ? "shared/" : "") +
                                 matrix_name(Matrix(m));
        if (!h5::exists(f_, name)) continue;
        Group gr;
        gr.matrix = m, gr.kind = kind, gr.name = name;
        gr.g = h5::Handle(H5Gopen2(f_, name.c_str(), H5P_DEFAULT), H5Gclose, path + ": open group " + name);
        gr.layers = h5::read_attr_ints(gr.g, "layers");
        if (kind == sweep::kGroupMoe) gr.experts = h5::read_attr_ints(gr.g, "experts");
        h5::Handle d = h5::open_dataset(gr.g, "top_ids");
        const std::vector<hsize_t> dims = h5::dataset_dims(d);
        const size_t ax = kind == sweep::kGroupMoe ? 2 : 1;  // the neuron axis
        FI_CHECK(dims.size() == ax + 2, path + ": /" + name + "/top_ids has " + std::to_string(dims.size()) +
                                            " dimensions, not " + std::to_string(ax + 2));
        gr.N = int64_t(dims[ax]);
        gr.K = int64_t(dims[ax + 1]);
        gr.entropy = h5::exists(gr.g, "entropy");
        groups_.push_back(std::move(gr));
      }
  }
  std::string fingerprint;

  // A group by name ("up", "moe/up", "shared/up").
  const Group& group(const std::string& name) const {
    for (const Group& g : groups_)
      if (name == g.name) return g;
    FI_FAIL(path_ + ": the map has no " + name + " group");
  }
  const Group& group(int32_t kind, int32_t matrix) const {
    for (const Group& g : groups_)
      if (g.kind == kind && g.matrix == matrix) return g;
    FI_FAIL(path_ + ": the map has no such group");
  }
  const std::vector<Group>& groups() const { return groups_; }
  const std::string& path() const { return path_; }

  // Dataset rows [li, (ei,) :, :cols] of a group as T (ei: the index along a moe group's expert axis).
  template <class T>
  std::vector<T> rows(const Group& g, const char* ds, hid_t type, int64_t li, int64_t ei, int64_t cols) const {
    h5::Handle d = h5::open_dataset(g.g, ds);
    const bool three = h5::dataset_dims(d).size() == (g.kind == sweep::kGroupMoe ? 4u : 3u);
    std::vector<T> v(size_t(g.N * cols));
    std::vector<hsize_t> start{hsize_t(li)}, count{1};
    if (g.kind == sweep::kGroupMoe) start.push_back(hsize_t(ei)), count.push_back(1);
    start.push_back(0), count.push_back(hsize_t(g.N));
    if (three) start.push_back(0), count.push_back(hsize_t(cols));
    h5::read_slab(d, type, start, count, v.data());
    return v;
  }

 private:
  std::string path_;
  h5::Handle f_;
  std::vector<Group> groups_;
};

// (layer, group kind, expert (-1 but for a routed one), matrix, neuron): the sweep's order.
using Key = std::tuple<int64_t, int32_t, int64_t, int32_t, int64_t>;

// The groups --matrices names: each name picks that matrix in every group of the map ("up":
// /up, /moe/up and /shared/up); "" picks every group.
std::vector<const Group*> chosen_groups(const MapView& map, const std::string& list) {
  std::vector<const Group*> out;
  if (list.empty()) {
    for (const Group& g : map.groups()) out.push_back(&g);
    return out;
  }
  std::stringstream ss(list);
  for (std::string m; std::getline(ss, m, ',');) {
    const int32_t mi = int32_t(parse_matrix(m));
    bool any = false;
    for (const Group& g : map.groups())
      if (g.matrix == mi) out.push_back(&g), any = true;
    if (!any) FI_FAIL(map.path() + ": the map has no " + m + " group");
  }
  return out;
}

std::vector<Key> select_keys(const SweepOptions& o, const MapView& map, const ModelConfig& cfg) {
  const size_t colon = o.select.find(':');
  const std::string kind = o.select.substr(0, colon), arg = colon == std::string::npos ? "" : o.select.substr(colon + 1);
  std::vector<Key> keys;
  // Every (expert index, expert id) of a group: its experts, or one slot (-1) for dense/shared.
  auto slots = [](const Group& g) {
    std::vector<std::pair<int64_t, int64_t>> s;
    if (g.kind != sweep::kGroupMoe) return std::vector<std::pair<int64_t, int64_t>>{{0, -1}};
    for (size_t i = 0; i < g.experts.size(); ++i) s.emplace_back(int64_t(i), g.experts[i]);
    return s;
  };
  if (kind == "list" && !arg.empty()) {
    std::ifstream in(arg);
    if (!in) FI_FAIL("--select list:" + arg + ": cannot read the file");
    std::stringstream text;
    text << in.rdbuf();
    for (const ListedNeuron& n : parse_neuron_list(text.str(), arg)) {
      const Group& g = map.group(n.matrix);
      if (g.index_of(n.layer) < 0)
        FI_FAIL(arg + ": " + n.matrix + " layer " + std::to_string(n.layer) + " is not in the map");
      if (g.kind == sweep::kGroupMoe && g.expert_index(n.expert) < 0)
        FI_FAIL(arg + ": " + n.matrix + " layer " + std::to_string(n.layer) + " expert " +
                std::to_string(n.expert) + " is not in the map (its experts: " + std::to_string(g.experts.size()) +
                (g.experts.empty() ? "" : ", " + std::to_string(g.experts.front()) + ".." + std::to_string(g.experts.back())) + ")");
      if (n.neuron >= g.N)
        FI_FAIL(arg + ": neuron " + std::to_string(n.neuron) + " is out of range (" + n.matrix + " has " +
                std::to_string(g.N) + ")");
      keys.emplace_back(n.layer, g.kind, g.kind == sweep::kGroupMoe ? n.expert : -1, g.matrix, n.neuron);
    }
  } else if (kind == "layer" && !arg.empty()) {
    int64_t layer = -1;
    if (!parse_i64(arg, layer) || layer >= cfg.num_layers)
      FI_FAIL("--select layer:" + arg + ": not a layer of the model (0.." + std::to_string(cfg.num_layers - 1) + ")");
    bool any = false;
    for (const Group* g : chosen_groups(map, o.matrices)) {
      if (g->index_of(layer) < 0) continue;  // a dense group has no MoE layer, and the reverse
      any = true;
      for (const auto& [ei, e] : slots(*g))
        for (int64_t n = 0; n < g->N; ++n) keys.emplace_back(layer, g->kind, e, g->matrix, n);
    }
    if (!any) FI_FAIL("--select layer:" + arg + ": no chosen group of the map has layer " + arg);
  } else if (kind == "top" && !arg.empty()) {
    int64_t k = 0;
    if (!parse_i64(arg, k) || k <= 0) FI_FAIL("--select top:" + arg + ": expected a positive count");
    // Most specialised first: the lowest exact entropy where every group has it, else the
    // highest top-1 probability; ties in the sweep's order.
    const std::vector<const Group*> gs = chosen_groups(map, o.matrices);
    bool ent = true;
    for (const Group* g : gs) ent = ent && g->entropy;
    std::vector<std::pair<float, Key>> all;
    for (const Group* g : gs)
      for (size_t li = 0; li < g->layers.size(); ++li)
        for (const auto& [ei, e] : slots(*g)) {
          const std::vector<float> v = ent ? map.rows<float>(*g, "entropy", H5T_NATIVE_FLOAT, int64_t(li), ei, 1)
                                           : map.rows<float>(*g, "top_probs", H5T_NATIVE_FLOAT, int64_t(li), ei, 1);
          for (int64_t n = 0; n < g->N; ++n)
            all.push_back({ent ? v[size_t(n)] : -v[size_t(n)], Key{g->layers[li], g->kind, e, g->matrix, n}});
        }
    k = std::min<int64_t>(k, int64_t(all.size()));
    std::partial_sort(all.begin(), all.begin() + k, all.end());
    for (int64_t i = 0; i < k; ++i) keys.push_back(all[size_t(i)].second);
  } else {
    FI_FAIL("--select: expected top:K, layer:L or list:FILE, got '" + o.select + "'");
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  FI_CHECK(!keys.empty(), "--select " + o.select + ": no neurons selected");
  return keys;
}

// The neurons with what the map says of each: top tokens, top-1 probability, entropy.
std::vector<sweep::Neuron> describe(const std::vector<Key>& keys, const MapView& map, int64_t vocab) {
  std::vector<sweep::Neuron> out;
  using Slice = std::tuple<int32_t, int32_t, int64_t, int64_t>;  // (kind, matrix, layer, expert)
  std::map<Slice, std::tuple<std::vector<int32_t>, std::vector<float>, std::vector<float>>> cache;
  for (const auto& [layer, kind, expert, m, n] : keys) {
    const Group& g = map.group(kind, m);
    auto it = cache.find({kind, m, layer, expert});
    if (it == cache.end()) {
      const int64_t li = g.index_of(layer), ei = kind == sweep::kGroupMoe ? g.expert_index(expert) : 0;
      const int64_t k = std::min<int64_t>(g.K, sweep::kTopN);
      std::vector<int32_t> ids = map.rows<int32_t>(g, "top_ids", H5T_NATIVE_INT32, li, ei, k);
      std::vector<float> p = map.rows<float>(g, "top_probs", H5T_NATIVE_FLOAT, li, ei, 1);
      std::vector<float> e = g.entropy ? map.rows<float>(g, "entropy", H5T_NATIVE_FLOAT, li, ei, 1) : std::vector<float>();
      cache.clear();  // keys come slice by slice: keep one at a time
      it = cache.emplace(Slice{kind, m, layer, expert}, std::tuple{std::move(ids), std::move(p), std::move(e)}).first;
    }
    const auto& [ids, p, e] = it->second;
    const int64_t k = int64_t(ids.size()) / g.N;
    sweep::Neuron s;
    s.matrix = m, s.group = kind, s.layer = int32_t(layer), s.expert = int32_t(expert), s.neuron = int32_t(n);
    for (int64_t j = 0; j < k; ++j) s.top[j] = ids[size_t(n * k + j)];
    for (int64_t j = 0; j < k; ++j)  // ids index the log-probabilities: a bad one is an error
      if (s.top[j] < (j ? -1 : 0) || s.top[j] >= vocab)
        FI_FAIL(map.path() + ": /" + g.name + "/top_ids of layer " + std::to_string(layer) +
                (kind == sweep::kGroupMoe ? ", expert " + std::to_string(expert) : "") + ", neuron " +
                std::to_string(n) + " holds token id " + std::to_string(s.top[j]) + ", not in 0.." +
                std::to_string(vocab - 1));
    s.map_top_prob = p[size_t(n)];
    if (!e.empty()) s.map_entropy = e[size_t(n)];
    out.push_back(s);
  }
  return out;
}

// ---- the computation of one neuron ---------------------------------------------------------

// Log-softmax of logits [V] in double.
std::vector<double> log_softmax(const std::vector<float>& l) {
  const double mx = *std::max_element(l.begin(), l.end());
  double s = 0;
  for (float x : l) s += std::exp(double(x) - mx);
  const double lse = mx + std::log(s);
  std::vector<double> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = double(l[i]) - lse;
  return out;
}

int32_t argmax(const std::vector<float>& l) {  // the lower id on ties
  return int32_t(std::max_element(l.begin(), l.end()) - l.begin());
}

// This rank's place in the sweep: G pipelines of S stages (S = 1: each rank holds the whole
// model); pipeline g is world ranks g*S .. g*S+S-1, stage s holds layers [first, last).
struct Pipe {
  int stages = 1, pipelines = 1, pipeline = 0, stage = 0;
  int prev = -1, next = -1;  // world ranks of the stages before and after this one (-1: none)
  int64_t first = 0, last = 0;
};

struct PipeComm {  // frees the pipeline's communicator
  MPI_Comm comm = MPI_COMM_NULL;
  ~PipeComm() {
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

constexpr int kTagStates = 23;

// Hidden states between stages (world ranks, blocking: every stage walks the same neurons and
// prompts in the same order, so each send meets its receive).
void send_states(const Pipe& pp, const std::vector<float>& x) {
  MPI_Send(x.data(), int(x.size()), MPI_FLOAT, pp.next, kTagStates, MPI_COMM_WORLD);
}
void recv_states(const Pipe& pp, std::vector<float>& x) {
  MPI_Recv(x.data(), int(x.size()), MPI_FLOAT, pp.prev, kTagStates, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

// The hidden states entering `layer` (within this stage), per prompt: advanced layer by layer as
// the pipeline's neurons go up the model, from the unclamped states entering the stage (`in`),
// so each prompt's prefix is run once per pipeline.
struct Prefix {
  int64_t layer = -1;
  std::vector<std::vector<float>> in, x;  // [P][T_p * hidden]: entering pp.first, entering layer
  void advance(Forward& fwd, const Pipe& pp, const std::vector<std::vector<int32_t>>& prompts, int64_t to,
               ClampSite site) {
    if (layer < 0 || to < layer) {
      x = in;
      layer = pp.first;
    }
    if (to == layer) return;
    for (size_t p = 0; p < prompts.size(); ++p)
      fwd.run_layers(x[p].data(), int64_t(prompts[p].size()), layer, to, {}, site);
    layer = to;
  }
};

// The unclamped pass of every prompt through the pipeline: keeps the states entering this
// stage in pre.in; returns the log-probabilities of each prompt's next token [P][V] on the last
// stage (empty elsewhere).
std::vector<std::vector<double>> unclamped(Forward& fwd, const Pipe& pp, const SweepOptions& o, ClampSite site,
                                           Prefix& pre) {
  const int64_t H = fwd.config().hidden_size;
  std::vector<std::vector<double>> base;
  for (const auto& p : o.prompts) {
    std::vector<float> x(p.size() * size_t(H));
    if (pp.prev < 0) x = fwd.embed(p);
    else recv_states(pp, x);
    pre.in.push_back(x);
    const std::vector<float> l = fwd.run_layers(x.data(), int64_t(p.size()), pp.first, pp.last, {}, site);
    if (pp.next >= 0) send_states(pp, x);
    else base.push_back(log_softmax(l));
  }
  return base;
}

// This stage's part of one neuron: the stage holding its layer runs the clamped copies (one batch
// per prompt, the neuron at every value: one weight read for all on the CPU) from that layer,
// later stages continue them, the last applies the head and returns the result (true); stages
// below the neuron's layer do nothing.
bool sweep_neuron(Forward& fwd, const Pipe& pp, Prefix& pre, const SweepOptions& o, ClampSite site,
                  const std::vector<std::vector<double>>& base, const sweep::Neuron& n, sweep::Result& r) {
  if (n.layer >= pp.last) return false;
  const int64_t P = int64_t(o.prompts.size()), nv = int64_t(o.values.size()), H = fwd.config().hidden_size;
  const bool origin = n.layer >= pp.first;
  if (origin) pre.advance(fwd, pp, o.prompts, n.layer, site);
  std::vector<std::vector<Clamp>> clamps;
  // The clamp carries the neuron's expert: a routed expert's acts only at the positions the router
  // sends to it (unless --force-route), the shared expert's and a dense MLP's at every position.
  const int64_t expert = n.group == sweep::kGroupMoe ? n.expert : n.group == sweep::kGroupShared ? kSharedExpert : kDenseMlp;
  for (float v : o.values) {
    Clamp cl{n.layer, n.neuron, v, expert};
    cl.force_route = o.force_route && n.group == sweep::kGroupMoe;
    clamps.push_back({cl});
  }
  const bool head = pp.next < 0;
  if (head) {
    r.base_logp.resize(size_t(P));
    r.delta.resize(size_t(nv * P));
    r.delta_top5.resize(size_t(nv * P));
    r.top1.resize(size_t(nv * P));
  }
  std::vector<double> d(size_t(nv * P));
  const int32_t t = n.top[0];
  int tops = 0;
  while (tops < sweep::kTopN && n.top[tops] >= 0) ++tops;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t T = int64_t(o.prompts[size_t(p)].size());
    std::vector<float> xb(size_t(nv * T * H));  // [nV * T, hidden]: one copy per value
    if (origin) {
      for (int64_t v = 0; v < nv; ++v) std::copy(pre.x[size_t(p)].begin(), pre.x[size_t(p)].end(), xb.begin() + v * T * H);
    } else {
      recv_states(pp, xb);
    }
    fwd.batch_layers(xb.data(), nv, T, origin ? n.layer : pp.first, pp.last, clamps, site);
    if (!head) {
      send_states(pp, xb);
      continue;
    }
    std::vector<float> rows(size_t(nv * H));  // each copy's last position
    for (int64_t v = 0; v < nv; ++v) std::copy_n(xb.begin() + (v * T + T - 1) * H, H, rows.begin() + v * H);
    const std::vector<float> all = fwd.head(rows.data(), nv);
    const int64_t V = fwd.config().vocab_size;
    const std::vector<double>& b = base[size_t(p)];
    r.base_logp[size_t(p)] = float(b[size_t(t)]);
    for (int64_t v = 0; v < nv; ++v) {
      const std::vector<float> logits(all.begin() + v * V, all.begin() + (v + 1) * V);
      const std::vector<double> lp = log_softmax(logits);
      const size_t i = size_t(v * P + p);
      d[i] = lp[size_t(t)] - b[size_t(t)];
      double s = 0;
      for (int j = 0; j < tops; ++j) s += lp[size_t(n.top[j])] - b[size_t(n.top[j])];
      r.delta[i] = float(d[i]);
      r.delta_top5[i] = float(s / tops);
      r.top1[i] = argmax(logits) == t;
    }
  }
  if (!head) return false;
  r.score = float(sweep_slope(o.values, d, P));
  const int64_t vmax = int64_t(std::max_element(o.values.begin(), o.values.end()) - o.values.begin());
  int hits = 0;
  for (int64_t p = 0; p < P; ++p) hits += r.top1[size_t(vmax * P + p)];
  r.top1_share = float(double(hits) / double(P));
  return true;
}

// Work that sends and receives between the stages of a pipeline: an error on one rank would
// leave its neighbours waiting, so it ends the job with that rank's one error line. With one
// stage a rank waits on nobody and the usual agreement (collective) applies.
template <typename F>
void stage_work(const Pipe& pp, MPI_Comm world, F&& f) {
  if (pp.stages == 1) return collective(world, f);
  try {
    f();
  } catch (const std::bad_alloc&) {
    print_error_line("out of memory: an allocation failed (" + memory_report() + ")");
    MPI_Abort(world, 1);
  } catch (const std::exception& e) {
    print_error_line(e.what());
    MPI_Abort(world, 1);
  }
}

// The weights one stage holds with the model split into `stages` (split_layers, as Forward
// splits it): the heaviest stage's, in bytes as the CPU stage keeps them (the checkpoint's dtype).
double stage_bytes(const Model& m, int stages) {
  const ModelConfig& c = m.cfg;
  const double e = embedding_layer_equivalents(c);
  const std::vector<int64_t> b = split_layers(c.num_layers, stages, e, e);
  const double embed = double(model_tensor(m, Role::Embed).bytes()), head = double(model_tensor(m, Role::LmHead).bytes());
  double most = 0;
  for (int s = 0; s < stages; ++s) {
    double bytes = (s == 0 ? embed : 0) + (s == stages - 1 ? head : 0);
    for (int64_t l = b[size_t(s)]; l < b[size_t(s) + 1]; ++l)
      for (const ModelTensor& t : layer_tensors(m, l).tensors) bytes += double(t.bytes());
    most = std::max(most, bytes);
  }
  return most;
}

// Stages per pipeline: --stages, else the fewest (a divisor of the rank count, at most the layer
// count) whose heaviest stage fits every rank's memory as check_memory sees it, with every rank
// of the node holding one. Collective.
int choose_stages(const SweepOptions& o, const Model& m, const Comms& c) {
  const int64_t L = m.cfg.num_layers;
  if (o.stages > 0) {
    FI_CHECK(c.size % o.stages == 0, "--stages " + std::to_string(o.stages) + ": the " + std::to_string(c.size) +
                                         " ranks do not split into pipelines of that many");
    FI_CHECK(o.stages <= L, "--stages " + std::to_string(o.stages) + ": more stages than the model's " +
                                std::to_string(L) + " layers");
    return int(o.stages);
  }
  // For the tests: $FLASHINTERP_TEST_STAGE_MIB stands in for check_memory's limits (MiB a rank has).
  const char* test_mib = std::getenv("FLASHINTERP_TEST_STAGE_MIB");
  std::string why;
  for (int s = 1; s <= c.size && s <= L; ++s) {
    if (c.size % s) continue;
    int fits = 1, all = 0;
    try {
      const double b = stage_bytes(m, s) * 1.05 + 256.0 * 1048576;  // and activations, buffers
      const std::string what = "the sweep's stage of " + std::to_string(s) + " (weights)";
      if (test_mib && b > std::atof(test_mib) * 1048576)
        FI_FAIL(what + " needs " + std::to_string(int64_t(b / 1048576)) + " MiB, has " + test_mib +
                " (FLASHINTERP_TEST_STAGE_MIB)");
      if (!test_mib) check_memory(what, b, b * c.local_size);
    } catch (const Error& e) {
      fits = 0;
      why = e.what();
    }
    MPI_Allreduce(&fits, &all, 1, MPI_INT, MPI_LAND, c.world);
    if (all) return s;
  }
  FI_FAIL(why.empty() ? "the model does not fit the ranks' memory, split over all of them"
                      : why + " (split over as many ranks as it can be; more ranks split it further)");
}

// A Result as floats for MPI: [score, share, base[P], delta[nV P], delta_top5[nV P], top1[nV P]].
void pack(const sweep::Result& r, std::vector<float>& out) {
  out.push_back(r.score);
  out.push_back(r.top1_share);
  out.insert(out.end(), r.base_logp.begin(), r.base_logp.end());
  out.insert(out.end(), r.delta.begin(), r.delta.end());
  out.insert(out.end(), r.delta_top5.begin(), r.delta_top5.end());
  for (uint8_t b : r.top1) out.push_back(float(b));
}
sweep::Result unpack(const float* f, int64_t nv, int64_t P) {
  sweep::Result r;
  r.score = f[0], r.top1_share = f[1];
  f += 2;
  r.base_logp.assign(f, f + P);
  f += P;
  r.delta.assign(f, f + nv * P);
  f += nv * P;
  r.delta_top5.assign(f, f + nv * P);
  f += nv * P;
  for (int64_t i = 0; i < nv * P; ++i) r.top1.push_back(uint8_t(f[i]));
  return r;
}

// Rank 0 gathers a round's neurons (their indices in the file, then their packed results) and
// writes them, in runs of consecutive neurons (a rank's share; after a resume, with gaps).
// Returns the neurons of the round over all ranks.
int64_t gather_and_write(const Comms& c, const std::vector<int64_t>& idx, const std::vector<float>& buf,
                         int64_t rec, int64_t nv, int64_t P, int round, sweep::Writer* writer) {
  int n = int(idx.size());
  std::vector<int> counts(size_t(c.size)), displs(size_t(c.size)), fcounts(size_t(c.size)), fdispls(size_t(c.size));
  MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, c.world);
  int total = 0;
  for (int r = 0; r < c.size; ++r) {
    displs[size_t(r)] = total;
    fcounts[size_t(r)] = counts[size_t(r)] * int(rec);
    fdispls[size_t(r)] = total * int(rec);
    total += counts[size_t(r)];
  }
  std::vector<int64_t> all_idx(size_t(c.rank == 0 ? total : 0));
  std::vector<float> all_buf(size_t(c.rank == 0 ? total * rec : 0));
  MPI_Gatherv(idx.data(), n, MPI_INT64_T, all_idx.data(), counts.data(), displs.data(), MPI_INT64_T, 0, c.world);
  MPI_Gatherv(buf.data(), int(buf.size()), MPI_FLOAT, all_buf.data(), fcounts.data(), fdispls.data(),
              MPI_FLOAT, 0, c.world);
  collective(c.world, [&] {
    if (c.rank != 0) return;
    for (int a = 0; a < total;) {
      int b = a + 1;
      while (b < total && all_idx[size_t(b)] == all_idx[size_t(b - 1)] + 1) ++b;
      std::vector<sweep::Result> rs;
      for (int i = a; i < b; ++i) rs.push_back(unpack(&all_buf[size_t(i) * size_t(rec)], nv, P));
      writer->write(all_idx[size_t(a)], rs, nv, P, round);
      a = b;
    }
  });
  return total;
}

// ---- the job -------------------------------------------------------------------------------

std::string fingerprint_of(const SweepOptions& o, const Model& model, const std::string& map_fp,
                           const std::vector<sweep::Neuron>& ns, const char* backend) {
  std::ifstream cf(model.dir + "/config.json", std::ios::binary);
  std::stringstream cfg;
  cfg << cf.rdbuf();
  const std::string c = cfg.str();
  std::string fp = std::string(sweep::kFormat) + " " + std::to_string(sweep::kFormatVersion) +
                   ";map:" + hex(fnv1a(map_fp.data(), map_fp.size())) +
                   ";config.json:" + hex(fnv1a(c.data(), c.size())) + ";site:" + o.site +
                   ";backend:" + backend + ";values:";
  for (float v : o.values) {
    char b[32];
    std::snprintf(b, sizeof b, "%a,", double(v));
    fp += b;
  }
  uint64_t h = fnv1a(nullptr, 0);
  for (const auto& p : o.prompts) {
    const uint64_t n = p.size();
    h = fnv1a(&n, sizeof n, h);
    h = fnv1a(p.data(), p.size() * 4, h);
  }
  fp += ";prompts:" + hex(h);
  if (o.force_route) fp += ";force_route";
  h = fnv1a(nullptr, 0);
  for (const sweep::Neuron& n : ns) h = fnv1a(&n, sizeof n, h);  // POD, no padding
  return fp + ";neurons:" + std::to_string(ns.size()) + ":" + hex(h) + ";";
}

// What rank 0 found of OUT and OUT.partial: which neurons are done (all 0 for a fresh start).
struct Start {
  bool nothing_to_do = false, resume = false;
  std::vector<uint8_t> done;
};

Start resume_state(const SweepOptions& o, const std::string& partial, const std::string& fp, size_t K) {
  Start s;
  s.done.assign(K, 0);
  if (file_exists(o.out)) {
    const sweep::Contents c = sweep::read(o.out, false);  // throws unless it is a sweep file
    if (o.resume && c.fingerprint == fp && c.complete == 1) {
      s.nothing_to_do = true;
      return s;
    }
    if (!o.overwrite && !o.resume)
      FI_FAIL(o.out + ": exists; --overwrite replaces it, --resume continues " + partial);
    if (o.resume && !o.overwrite && c.fingerprint != fp)
      FI_FAIL(o.out + ": made with other inputs or options (map, model, values, prompts, site, "
              "backend or neurons); --overwrite replaces it");
  }
  if (!file_exists(partial)) return s;
  if (!o.resume) {
    if (!o.overwrite) FI_FAIL(partial + ": a sweep was stopped here; --resume continues it, --overwrite starts again");
    return s;
  }
  std::unique_ptr<sweep::Contents> c;
  try {
    c = std::make_unique<sweep::Contents>(sweep::read(partial, false));
  } catch (const Error& e) {  // cut off before its fingerprint: nothing in it is done
    return s;
  }
  if (c->fingerprint != fp)
    FI_FAIL(partial + ": made with other inputs or options (map, model, values, prompts, site, "
            "backend or neurons); --overwrite starts again");
  FI_CHECK(c->done.size() == K, partial + ": done has " + std::to_string(c->done.size()) + " entries, not " + std::to_string(K));
  s.done = c->done;
  s.resume = true;
  return s;
}

// Test only (FLASHINTERP_TEST_HOLD_ROUND): every rank waits until one of them has a stop signal.
void hold_for_stop_signal(MPI_Comm comm, int64_t* stop) {
  for (int i = 0; i < 12000; ++i) {
    int64_t mine = stop_signal() != 0;
    MPI_Allreduce(&mine, stop, 1, MPI_INT64_T, MPI_SUM, comm);
    if (*stop) return;
    usleep(50000);
  }
}

struct Progress {
  bool talk;
  int64_t total, done0;
  Clock::time_point t0 = Clock::now(), last = Clock::now();
  void update(int64_t done, bool force) {
    if (!talk || (!force && seconds_since(last) < 5)) return;
    last = Clock::now();
    const double s = seconds_since(t0), rate = double(done - done0) / std::max(s, 1e-9);
    const double eta = rate > 0 ? double(total - done) / rate : 0;
    std::fprintf(stderr, "flashinterp: sweep: %lld/%lld neurons, %.2f neurons/s, ETA %.0f s\n",
                 (long long)done, (long long)total, rate, eta);
  }
};

}  // namespace

std::vector<ListedNeuron> parse_neuron_list(const std::string& text, const std::string& path) {
  std::vector<ListedNeuron> out;
  std::stringstream ss(text);
  int line_no = 0;
  for (std::string line; std::getline(ss, line);) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    std::stringstream ws(line);
    std::vector<std::string> w;
    for (std::string x; ws >> x;) w.push_back(x);
    if (w.empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    ListedNeuron n;
    n.matrix = w[0];
    const bool moe = w[0] == "moe/up" || w[0] == "moe/gate" || w[0] == "moe/down";
    const bool dense = w[0] == "up" || w[0] == "gate" || w[0] == "down";
    const bool shared = w[0] == "shared/up" || w[0] == "shared/gate" || w[0] == "shared/down";
    if (!moe && !dense && !shared)
      FI_FAIL(where + "expected MATRIX LAYER NEURON (up|gate|down, moe/... LAYER EXPERT NEURON, "
              "shared/... LAYER NEURON), got '" + w[0] + "'");
    const size_t want = moe ? 4 : 3;
    bool ok = w.size() == want && parse_i64(w[1], n.layer) && parse_i64(w.back(), n.neuron);
    if (ok && moe) ok = parse_i64(w[2], n.expert);
    if (!ok)
      FI_FAIL(where + "expected " + (moe ? "MATRIX LAYER EXPERT NEURON" : "MATRIX LAYER NEURON") +
              " with non-negative integers, got '" + line + "'");
    out.push_back(n);
  }
  return out;
}

double sweep_slope(const std::vector<float>& values, const std::vector<double>& delta, int64_t np) {
  const size_t nv = values.size();
  double mv = 0, md = 0;
  std::vector<double> mean(nv, 0);
  for (size_t v = 0; v < nv; ++v) {
    for (int64_t p = 0; p < np; ++p) mean[v] += delta[v * size_t(np) + size_t(p)];
    mean[v] /= double(np);
    mv += values[v];
    md += mean[v];
  }
  mv /= double(nv), md /= double(nv);
  double sxy = 0, sxx = 0;
  for (size_t v = 0; v < nv; ++v) {
    sxy += (values[v] - mv) * (mean[v] - md);
    sxx += (values[v] - mv) * (values[v] - mv);
  }
  return sxx > 0 ? sxy / sxx : 0;
}

SweepCost sweep_run_cost(const ModelConfig& c, int64_t layer, int64_t tokens) {
  const double H = double(c.hidden_size), I = double(c.intermediate_size), T = double(tokens);
  const double q = double(c.num_heads * c.head_dim), kv = double(c.num_kv_heads * c.head_dim);
  const double attn = H * q * 2 + H * kv * 2;  // one layer's attention matrices
  const double head = double(c.vocab_size) * H;
  SweepCost s;
  for (int64_t l = layer; l < c.num_layers; ++l) {
    // A dense layer's MLP; an MoE layer's router and shared expert, with its routed experts:
    // those a token runs (experts_per_token) for the FLOPs, all of them for the weights read (a
    // prompt's tokens reach most experts).
    double mlp_run = 3 * H * I, mlp_read = mlp_run;
    if (c.is_moe_layer(l)) {
      const double e = double(c.moe.experts), es = double(c.moe.expert_size), sh = double(c.moe.shared_size);
      mlp_run = H * e + 3 * H * (double(c.moe.experts_per_token) * es + sh);
      mlp_read = H * e + 3 * H * (e * es + sh);
    }
    // Matrices on every position, attention scores and sums (T^2/2 per head).
    s.flops += 2 * (attn + mlp_run) * T + 2 * T * T * q;
    s.weight_bytes += 2 * (attn + mlp_read);
  }
  s.flops += 2 * head;  // the head on one position
  s.weight_bytes += 2 * head;
  return s;
}

int run_sweep(const SweepOptions& o, const Comms& c) {
  const auto t0 = Clock::now();
  install_stop_handlers();
  const bool talk = c.rank == 0 && !o.quiet;
  const std::string partial = o.out + ".partial";
  std::unique_ptr<Model> model;
  std::unique_ptr<MapView> map;
  std::vector<sweep::Neuron> neurons;
  ClampSite site{};
  std::unique_ptr<OutputLock> lock;
  collective(c.world, [&] {
    site = parse_clamp_site(o.site);
    FI_CHECK(!o.values.empty(), "--values: no values");
    FI_CHECK(*std::min_element(o.values.begin(), o.values.end()) <
                 *std::max_element(o.values.begin(), o.values.end()),
             "--values: at least two different values (the score is a slope over them)");
    FI_CHECK(!o.prompts.empty(), "--prompts: no prompts");
    FI_CHECK(o.round_neurons > 0, "--round-neurons: at least 1");
    FI_CHECK(!o.out.empty() && o.out.back() != '/', "--out: name the sweep file to write");
    model = std::make_unique<Model>(o.model_dir);
    for (const auto& p : o.prompts) check_token_ids(model->cfg, p);
    map = std::make_unique<MapView>(o.map, model->cfg);
    neurons = describe(select_keys(o, *map, model->cfg), *map, model->cfg.vocab_size);
    if (c.rank == 0) lock = std::make_unique<OutputLock>(o.out);
  });
  const auto tl = Clock::now();
  Pipe pp;
  collective(c.world, [&] { pp.stages = choose_stages(o, *model, c); });
  pp.pipelines = c.size / pp.stages;
  pp.pipeline = c.rank / pp.stages;
  pp.stage = c.rank % pp.stages;
  pp.prev = pp.stage > 0 ? c.rank - 1 : -1;
  pp.next = pp.stage + 1 < pp.stages ? c.rank + 1 : -1;
  PipeComm pc;  // the pipeline's ranks, for Forward's split and load
  if (pp.stages > 1) MPI_Comm_split(c.world, pp.pipeline, pp.stage, &pc.comm);
  std::unique_ptr<Forward> fwd_p;
  if (pp.stages == 1) {  // the whole model on every rank
    collective(c.world, [&] { fwd_p = std::make_unique<Forward>(*model, ForwardOptions{o.backend, MPI_COMM_NULL, c.node}); });
  } else {  // collective over the pipeline; then every pipeline learns whether one failed
    int bad = 0, any = 0;
    try {
      fwd_p = std::make_unique<Forward>(*model, ForwardOptions{o.backend, pc.comm, c.node});
    } catch (const JobFailed&) {
      bad = 1;
    }
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, c.world);
    if (any) throw JobFailed{};
  }
  Forward& fwd = *fwd_p;
  pp.first = fwd.span().first;
  pp.last = fwd.span().last;
  const int64_t K = int64_t(neurons.size()), P = int64_t(o.prompts.size()), nv = int64_t(o.values.size());
  const std::string fp = fingerprint_of(o, *model, map->fingerprint, neurons, fwd.backend());
  if (talk) {
    std::string layout;
    if (pp.stages > 1) {
      layout = ", " + std::to_string(pp.pipelines) + " pipeline" + (pp.pipelines > 1 ? "s" : "") + " of " +
               std::to_string(pp.stages) + " stages (layers";
      for (int s = 0; s < pp.stages; ++s)
        layout += (s ? " | " : " ") + std::to_string(fwd.bounds()[size_t(s)]) + "-" +
                  std::to_string(fwd.bounds()[size_t(s) + 1] - 1);
      layout += ")";
    }
    std::fprintf(stderr, "flashinterp: sweep: %lld neurons x %lld values x %lld prompts on %d ranks%s "
                 "(backend %s, model loaded in %.1f s)\n", (long long)K, (long long)nv, (long long)P,
                 c.size, layout.c_str(), fwd.backend(), seconds_since(tl));
  }

  Start st;
  collective(c.world, [&] {
    if (c.rank == 0) st = resume_state(o, partial, fp, size_t(K));
  });
  int64_t flags[2] = {st.nothing_to_do, st.resume};
  MPI_Bcast(flags, 2, MPI_INT64_T, 0, c.world);
  if (flags[0]) {
    if (talk) std::fprintf(stderr, "flashinterp: %s is complete; nothing to resume\n", o.out.c_str());
    return 0;
  }
  st.done.resize(size_t(K));
  MPI_Bcast(st.done.data(), int(K), MPI_UINT8_T, 0, c.world);

  std::unique_ptr<sweep::Writer> writer;
  collective(c.world, [&] {
    if (c.rank != 0) return;
    h5::silence_errors();
    if (flags[1]) {
      writer = std::make_unique<sweep::Writer>(partial);
    } else {
      std::remove(partial.c_str());
      nlohmann::json texts = o.prompt_texts;
      sweep::Meta m{o.model_dir, o.map, map->fingerprint, fp, o.site, fwd.backend(), o.command_line,
                    texts.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), c.size, pp.stages};
      writer = std::make_unique<sweep::Writer>(partial, m, neurons, o.values, o.prompts);
    }
  });

  // The unclamped log-probabilities of every prompt's next token, [P][V] (on each pipeline's
  // last stage), and the states entering each stage.
  std::vector<std::vector<double>> base;
  Prefix pre;
  stage_work(pp, c.world, [&] { base = unclamped(fwd, pp, o, site, pre); });
  const auto tw = Clock::now();  // the neuron loop from here (what tests/bench/sweep_bench.sh compares)

  std::vector<int64_t> todo;
  for (int64_t i = 0; i < K; ++i)
    if (!st.done[size_t(i)]) todo.push_back(i);
  const Range share = rank_share(todo.size(), pp.pipeline, pp.pipelines);
  int64_t most = 0, mine = int64_t(share.size());
  MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, c.world);
  const int64_t B = o.round_neurons, rounds = (most + B - 1) / B;
  const int64_t rec = 2 + P + 3 * nv * P;  // floats per packed result
  Progress progress{talk, K, K - int64_t(todo.size())};
  int64_t done = K - int64_t(todo.size());
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<int64_t> idx;
    std::vector<float> buf;
    collective(c.world, [&] {
      if (round == 1 && test_fail_rank() == c.rank)
        FI_FAIL("rank " + std::to_string(c.rank) + ": injected failure (FLASHINTERP_TEST_FAIL_RANK)");
    });
    stage_work(pp, c.world, [&] {
      for (int64_t j = round * B; j < std::min<int64_t>((round + 1) * B, mine); ++j) {
        const int64_t i = todo[share.begin + size_t(j)];
        sweep::Result r;  // computed on the pipeline's last stage
        if (!sweep_neuron(fwd, pp, pre, o, site, base, neurons[size_t(i)], r)) continue;
        idx.push_back(i);
        pack(r, buf);
      }
    });
    const int64_t total = gather_and_write(c, idx, buf, rec, nv, P, int(round), writer.get());
    done += total;
    MPI_Bcast(&done, 1, MPI_INT64_T, 0, c.world);
    progress.update(done, round + 1 == rounds);
    int64_t stop_mine = stop_signal() != 0, stop = 0;
    MPI_Allreduce(&stop_mine, &stop, 1, MPI_INT64_T, MPI_SUM, c.world);
    if (stop == 0 && !flags[1] && round == test_hold_round()) hold_for_stop_signal(c.world, &stop);
    if (stop > 0 && round + 1 < rounds) {
      if (c.rank == 0)
        std::fprintf(stderr, "flashinterp: stopped by a signal after %lld of %lld rounds; %s keeps the "
                     "work done, continue with --resume\n", (long long)round + 1, (long long)rounds, partial.c_str());
      writer.reset();
      MPI_Barrier(c.world);
      return kExitStopped;
    }
  }
  collective(c.world, [&] {
    if (c.rank != 0) return;
    writer->finish(seconds_since(t0));
    writer.reset();
    test_kill_point("sweep-rename");
    if (std::rename(partial.c_str(), o.out.c_str()) != 0)
      FI_FAIL(o.out + ": cannot rename " + partial + " into place (" + std::strerror(errno) + ")");
  });
  if (talk) {
    const double s = seconds_since(t0);
    const double w = seconds_since(tw);
    std::fprintf(stderr, "flashinterp: sweep done: %lld neurons in %.2f s (%.3g neurons/s; the neuron loop "
                 "%.2f s, %.3g neurons/s) -> %s\n", (long long)(int64_t(todo.size())), s,
                 double(todo.size()) / s, w, double(todo.size()) / w, o.out.c_str());
  }
  return 0;
}

}  // namespace fi
