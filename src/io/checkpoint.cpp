// A checkpoint directory's tensors: model.safetensors alone, or the shards named by
// model.safetensors.index.json, each opened once and checked against the index's weight_map.
#include "io/checkpoint.h"

#include <filesystem>
#include <set>

#include "common/error.h"
#include "io/json.h"

namespace fi {
namespace {

std::string quote(const std::string& s) { return "'" + s + "'"; }

// The index as JSON, refusing duplicate keys (a tensor listed twice) that nlohmann would merge.
nlohmann::json read_index(const std::string& path) {
  const std::string text = read_text_file(path);
  std::vector<std::pair<std::string, std::set<std::string>>> open;  // per open object: its key, its keys
  std::string last_key;
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if (ev == nlohmann::json::parse_event_t::object_start) open.push_back({last_key, {}});
    if (ev == nlohmann::json::parse_event_t::object_end) open.pop_back();
    if (ev != nlohmann::json::parse_event_t::key) return true;
    last_key = parsed.get<std::string>();
    if (!open.back().second.insert(last_key).second)
      FI_FAIL(path + ": " + (depth == 2 && open.back().first == "weight_map" ? "tensor " : "key ") +
              quote(last_key) + " is listed twice");
    return true;
  };
  try {
    return nlohmann::json::parse(text, cb);
  } catch (const nlohmann::json::exception& e) {
    FI_FAIL(path + ": not valid JSON: " + e.what());
  }
}

bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

}  // namespace

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();

  std::error_code ec;
  if (!fs::exists(index_path, ec)) {
    if (!fs::exists(single_path, ec)) FI_FAIL(dir + ": no model.safetensors or model.safetensors.index.json");
    shards_.push_back(std::make_unique<SafetensorsFile>(single_path));
    for (const auto& kv : shards_[0]->tensors()) where_[kv.first] = 0;
    return;
  }

  nlohmann::json index = read_index(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    FI_FAIL(index_path + ": no \"weight_map\" object");
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::map<std::string, size_t> shard_index;      // shard file name -> index in shards_
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) FI_FAIL(index_path + ": tensor " + quote(tensor) + ": shard name is not a string");
    const std::string name = shard.get<std::string>();
    if (!plain_file_name(name))
      FI_FAIL(index_path + ": tensor " + quote(tensor) + ": shard name " + quote(name) + " is not a plain file name");
    weight_map[tensor] = name;
    if (shard_index.count(name)) continue;
    shard_index[name] = shards_.size();
    shards_.push_back(std::make_unique<SafetensorsFile>((fs::path(dir) / name).string()));
  }

  // Every tensor of every shard exactly once, and exactly where the weight_map says.
  for (size_t s = 0; s < shards_.size(); ++s)
    for (const auto& kv : shards_[s]->tensors()) {
      auto [it, fresh] = where_.emplace(kv.first, s);
      if (!fresh)
        FI_FAIL(dir + ": tensor " + quote(kv.first) + " is in two shards: " + shards_[it->second]->path() +
                " and " + shards_[s]->path());
    }
  for (const auto& [tensor, name] : weight_map) {
    auto it = where_.find(tensor);
    if (it == where_.end() || it->second != shard_index[name])
      FI_FAIL(index_path + ": tensor " + quote(tensor) + " is not found in its shard " + quote(name));
  }
  for (const auto& kv : where_)
    if (!weight_map.count(kv.first))
      FI_FAIL(shards_[kv.second]->path() + ": tensor " + quote(kv.first) +
              " is not listed in the weight_map of model.safetensors.index.json");
}

bool Checkpoint::has(const std::string& tensor) const { return where_.count(tensor) != 0; }

const SafetensorsFile& Checkpoint::file_of(const std::string& tensor) const {
  auto it = where_.find(tensor);
  if (it == where_.end()) FI_FAIL(dir_ + ": missing tensor " + quote(tensor));
  return *shards_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& tensor) const { return file_of(tensor).info(tensor); }

void Checkpoint::set_weight_block(int64_t rows, int64_t cols) {
  FI_CHECK(rows > 0 && cols > 0, "weight block size must be positive");
  block_rows_ = rows;
  block_cols_ = cols;
}

Checkpoint::Scale Checkpoint::scale_of(const std::string& tensor) const {
  const TensorInfo& w = info(tensor);
  const std::string where = file_of(tensor).path() + ": FP8 tensor " + quote(tensor);
  FI_CHECK(w.shape.size() == 2, where + " is not 2-D");
  const int64_t R = w.shape[0], C = w.shape[1];
  auto shape_of = [](const TensorInfo& t) {
    std::string out = "[";
    for (size_t i = 0; i < t.shape.size(); ++i) out += (i ? "," : "") + std::to_string(t.shape[i]);
    return out + "]";
  };
  Scale sc;
  if (has(tensor + "_scale_inv")) {
    const std::string name = tensor + "_scale_inv";
    const TensorInfo& t = info(name);
    const int64_t nr = (R + block_rows_ - 1) / block_rows_, nc = (C + block_cols_ - 1) / block_cols_;
    if (t.shape != std::vector<int64_t>{nr, nc})
      FI_FAIL(where + ": its scale " + quote(name) + " has shape " + shape_of(t) + " but [" + std::to_string(R) +
              "," + std::to_string(C) + "] in blocks of weight_block_size [" + std::to_string(block_rows_) + "," +
              std::to_string(block_cols_) + "] needs [" + std::to_string(nr) + "," + std::to_string(nc) + "]");
    sc.s = file_of(name).read_f32(t);
    sc.br = block_rows_;
    sc.bc = block_cols_;
    sc.sc = nc;
    return sc;
  }
  if (has(tensor + "_scale")) {
    const std::string name = tensor + "_scale";
    const TensorInfo& t = info(name);
    const bool per_row = t.shape == std::vector<int64_t>{R, 1} || t.shape == std::vector<int64_t>{R};
    const bool per_tensor = t.numel() == 1 && t.shape.size() <= 1;
    if (!per_row && !per_tensor)
      FI_FAIL(where + ": its scale " + quote(name) + " has shape " + shape_of(t) + "; a per-row scale is [" +
              std::to_string(R) + ",1] or [" + std::to_string(R) + "], a per-tensor one [] or [1]");
    sc.s = file_of(name).read_f32(t);
    sc.br = per_row ? 1 : R;
    sc.bc = C;
    return sc;
  }
  FI_FAIL(where + " has no scale: neither " + quote(tensor + "_scale_inv") + " nor " + quote(tensor + "_scale") +
          " is in the checkpoint");
}

void Checkpoint::read_rows_f32(const std::string& tensor, int64_t row0, int64_t nrows, float* dst) const {
  const TensorInfo& t = info(tensor);
  file_of(tensor).read_rows_f32(t, row0, nrows, dst);
  if (!is_fp8(t.dtype)) return;
  const Scale sc = scale_of(tensor);
  const int64_t C = t.shape[1];
  for (int64_t r = 0; r < nrows; ++r) {
    const float* s = sc.s.data() + ((row0 + r) / sc.br) * sc.sc;
    float* row = dst + r * C;
    for (int64_t c = 0; c < C; ++c) row[c] *= s[c / sc.bc];
  }
}

void Checkpoint::read_cols_f32(const std::string& tensor, int64_t col0, int64_t ncols, float* dst) const {
  const TensorInfo& t = info(tensor);
  file_of(tensor).read_cols_f32(t, col0, ncols, dst);
  if (!is_fp8(t.dtype)) return;
  const Scale sc = scale_of(tensor);
  const int64_t R = t.shape[0];
  for (int64_t c = 0; c < ncols; ++c) {
    float* col = dst + c * R;  // dst is [ncols, R]
    for (int64_t r = 0; r < R; ++r) col[r] *= sc.s[size_t((r / sc.br) * sc.sc + (col0 + c) / sc.bc)];
  }
}

std::vector<float> Checkpoint::read_f32(const std::string& tensor) const {
  const TensorInfo& t = info(tensor);
  if (!is_fp8(t.dtype)) return file_of(tensor).read_f32(t);
  std::vector<float> out(t.numel());
  read_rows_f32(tensor, 0, t.shape.size() == 2 ? t.shape[0] : 0, out.data());
  return out;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& kv : where_) names.push_back(kv.first);
  return names;
}

}  // namespace fi
