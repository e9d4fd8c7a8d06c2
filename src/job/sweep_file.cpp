// The sweep file (sweep_file.h, docs/SWEEP_FORMAT.md): rank 0 writes it, serially.
#include "job/sweep_file.h"

#include <algorithm>
#include <ctime>

#include "common/build_info.h"
#include "common/error.h"

namespace fi::sweep {
namespace {

using dims = std::vector<hsize_t>;

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// A dataset of the given dims, chunked by up to 1024 neurons on its first axis.
void make(hid_t f, const char* name, hid_t type, const dims& d) {
  dims chunk = d;
  chunk[0] = std::min<hsize_t>(d[0], 1024);
  for (hsize_t& c : chunk) c = std::max<hsize_t>(c, 1);
  h5::create_dataset(f, name, type, d, chunk, false);
}

template <class T>
void put(hid_t f, const char* name, hid_t type, const dims& start, const dims& count, const std::vector<T>& v) {
  h5::Handle d = h5::open_dataset(f, name);
  h5::write_slab(d, type, start, count, v.data());
}

template <class T>
std::vector<T> get(hid_t f, const char* name, hid_t type) {
  h5::Handle d = h5::open_dataset(f, name);
  size_t n = 1;
  for (hsize_t x : h5::dataset_dims(d)) n *= size_t(x);
  std::vector<T> v(n);
  if (n) h5::read_slab(d, type, {}, {}, v.data());
  return v;
}

}  // namespace

Writer::Writer(const std::string& path, const Meta& m, const std::vector<Neuron>& neurons,
               const std::vector<float>& values, const std::vector<std::vector<int32_t>>& prompts)
    : path_(path), f_(h5::create_file(path)) {
  const hsize_t K = neurons.size(), nv = values.size(), np = prompts.size();
  FI_CHECK(K > 0 && nv > 0 && np > 0, path + ": a sweep of no neurons, values or prompts");
  h5::attr_string(f_, "format", kFormat);
  h5::attr_int(f_, "format_version", kFormatVersion);
  h5::attr_string(f_, "tool_version", FI_VERSION);
  h5::attr_string(f_, "build", build_line());
  h5::attr_string(f_, "model_dir", m.model_dir);
  h5::attr_string(f_, "map", m.map_path);
  h5::attr_string(f_, "map_fingerprint", m.map_fingerprint);
  h5::attr_string(f_, "clamp_site", m.site);
  h5::attr_string(f_, "backend", m.backend);
  h5::attr_string(f_, "prompts", m.prompts_json);
  h5::attr_string(f_, "matrix_names", "up,gate,down");
  h5::attr_string(f_, "group_names", "dense,moe,shared");
  h5::attr_int(f_, "world_size", m.world_size);
  h5::attr_int(f_, "stages", m.stages);
  h5::attr_string(f_, "command_line", m.command_line);
  h5::attr_string(f_, "created_utc", utc_now());
  h5::attr_double(f_, "elapsed_s", 0);
  h5::attr_int(f_, "complete", 0);

  std::vector<int32_t> mat(K), group(K), layer(K), expert(K), neuron(K), top(K * kTopN);
  std::vector<float> prob(K), ent(K);
  for (size_t i = 0; i < K; ++i) {
    const Neuron& n = neurons[i];
    mat[i] = n.matrix, group[i] = n.group, layer[i] = n.layer, expert[i] = n.expert, neuron[i] = n.neuron;
    std::copy(n.top, n.top + kTopN, &top[i * kTopN]);
    prob[i] = n.map_top_prob, ent[i] = n.map_entropy;
  }
  size_t tmax = 0;
  for (const auto& p : prompts) tmax = std::max(tmax, p.size());
  std::vector<int32_t> ids(np * tmax, -1), len(np);
  for (size_t p = 0; p < np; ++p) {
    std::copy(prompts[p].begin(), prompts[p].end(), &ids[p * tmax]);
    len[p] = int32_t(prompts[p].size());
  }
  const hid_t I32 = H5T_NATIVE_INT32, F32 = H5T_NATIVE_FLOAT, U8 = H5T_NATIVE_UINT8;
  for (const char* n : {"matrix", "group", "layer", "expert", "neuron"}) make(f_, n, I32, {K});
  make(f_, "top_tokens", I32, {K, kTopN});
  for (const char* n : {"map_top_prob", "map_entropy", "score", "top1_share"}) make(f_, n, F32, {K});
  make(f_, "base_logp", F32, {K, np});
  make(f_, "delta", F32, {K, nv, np});
  make(f_, "delta_top5", F32, {K, nv, np});
  make(f_, "top1", U8, {K, nv, np});
  make(f_, "done", U8, {K});
  make(f_, "values", F32, {nv});
  make(f_, "prompt_ids", I32, {np, tmax});
  make(f_, "prompt_len", I32, {np});
  put(f_, "matrix", I32, {0}, {K}, mat);
  put(f_, "group", I32, {0}, {K}, group);
  put(f_, "layer", I32, {0}, {K}, layer);
  put(f_, "expert", I32, {0}, {K}, expert);
  put(f_, "neuron", I32, {0}, {K}, neuron);
  put(f_, "top_tokens", I32, {0, 0}, {K, kTopN}, top);
  put(f_, "map_top_prob", F32, {0}, {K}, prob);
  put(f_, "map_entropy", F32, {0}, {K}, ent);
  put(f_, "values", F32, {0}, {nv}, values);
  put(f_, "prompt_ids", I32, {0, 0}, {np, tmax}, ids);
  put(f_, "prompt_len", I32, {0}, {np}, len);
  h5::attr_string(f_, "fingerprint", m.fingerprint);  // last: a file without it was cut off
  h5::check(H5Fflush(f_, H5F_SCOPE_GLOBAL), path + ": flush");
}

Writer::Writer(const std::string& path) : path_(path), f_(h5::open_file(path, true)) {}

void Writer::write(int64_t first, const std::vector<Result>& rs, int64_t nv, int64_t np, int round) {
  if (rs.empty()) return;
  const hsize_t n = rs.size(), a = hsize_t(first), V = hsize_t(nv), P = hsize_t(np);
  std::vector<float> score(n), share(n), base, delta, delta5;
  std::vector<uint8_t> top1, done(n, 1);
  for (size_t i = 0; i < n; ++i) {
    score[i] = rs[i].score, share[i] = rs[i].top1_share;
    base.insert(base.end(), rs[i].base_logp.begin(), rs[i].base_logp.end());
    delta.insert(delta.end(), rs[i].delta.begin(), rs[i].delta.end());
    delta5.insert(delta5.end(), rs[i].delta_top5.begin(), rs[i].delta_top5.end());
    top1.insert(top1.end(), rs[i].top1.begin(), rs[i].top1.end());
  }
  const hid_t F32 = H5T_NATIVE_FLOAT, U8 = H5T_NATIVE_UINT8;
  put(f_, "score", F32, {a}, {n}, score);
  put(f_, "top1_share", F32, {a}, {n}, share);
  put(f_, "base_logp", F32, {a, 0}, {n, P}, base);
  put(f_, "delta", F32, {a, 0, 0}, {n, V, P}, delta);
  put(f_, "delta_top5", F32, {a, 0, 0}, {n, V, P}, delta5);
  put(f_, "top1", U8, {a, 0, 0}, {n, V, P}, top1);
  h5::check(H5Fflush(f_, H5F_SCOPE_GLOBAL), path_ + ": flush");
  test_kill_point("sweep-data:" + std::to_string(round));
  put(f_, "done", U8, {a}, {n}, done);
  h5::check(H5Fflush(f_, H5F_SCOPE_GLOBAL), path_ + ": flush");
  test_kill_point("sweep-done:" + std::to_string(round));
}

void Writer::finish(double elapsed_s) {
  h5::set_attr_double(f_, "elapsed_s", elapsed_s);
  h5::set_attr_int(f_, "complete", 1);
  h5::check(H5Fflush(f_, H5F_SCOPE_GLOBAL), path_ + ": flush");
  f_.reset();
}

Contents read(const std::string& path, bool with_results) {
  h5::silence_errors();
  h5::Handle f = h5::open_file(path, false);
  Contents c;
  c.format = h5::has_attr(f, "format") ? h5::read_attr_string(f, "format") : "";
  if (c.format != kFormat) FI_FAIL(path + ": not a flashinterp sweep file");
  const int64_t v = h5::read_attr_int(f, "format_version");
  if (v != kFormatVersion)
    FI_FAIL(path + ": sweep format_version " + std::to_string(v) + ", this flashinterp reads " +
            std::to_string(kFormatVersion));
  if (!h5::has_attr(f, "fingerprint")) FI_FAIL(path + ": cut off while it was being created");
  c.fingerprint = h5::read_attr_string(f, "fingerprint");
  c.map_fingerprint = h5::read_attr_string(f, "map_fingerprint");
  c.complete = h5::read_attr_int(f, "complete");
  c.done = h5::read_u8(f, "done");
  if (!with_results) return c;
  const hid_t I32 = H5T_NATIVE_INT32, F32 = H5T_NATIVE_FLOAT;
  c.matrix = get<int32_t>(f, "matrix", I32);
  // A file from before MoE sweeps has no group dataset: every neuron is dense.
  c.group = h5::exists(f, "group") ? get<int32_t>(f, "group", I32) : std::vector<int32_t>(c.matrix.size(), kGroupDense);
  c.layer = get<int32_t>(f, "layer", I32);
  c.expert = get<int32_t>(f, "expert", I32);
  c.neuron = get<int32_t>(f, "neuron", I32);
  std::vector<int32_t> top = get<int32_t>(f, "top_tokens", I32);
  for (size_t i = 0; i < c.neuron.size(); ++i) c.token.push_back(top[i * kTopN]);
  c.score = get<float>(f, "score", F32);
  c.top1_share = get<float>(f, "top1_share", F32);
  c.values = get<float>(f, "values", F32);
  c.delta = get<float>(f, "delta", F32);
  c.prompts = int64_t(get<int32_t>(f, "prompt_len", I32).size());
  return c;
}

}  // namespace fi::sweep
