// BPE encoding as Hugging Face tokenizers does it (tokenizer.json): added tokens -> normalizer ->
// pre-tokenizer (text_steps.h) -> BPE by merge rank over the model's own spelling (GPT-2 alphabet
// or SentencePiece ▁), with byte fallback and unknown tokens; decoding = the tokens' bytes.
#include "model/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <queue>
#include <string_view>

#include "common/error.h"
#include "io/json.h"

namespace fi {
namespace {

using nlohmann::json;

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_field(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
}

// A config token: "<s>", {"content": "<s>", ...} or null.
std::string config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return "";
}

}  // namespace

Tokenizer::~Tokenizer() = default;

Tokenizer::Tokenizer(const std::string& path) : path_(path) {
  try {
    load(path);
  } catch (const json::exception& e) {  // a field of the wrong type somewhere
    FI_FAIL(path + ": " + e.what());
  }
}

void Tokenizer::load(const std::string& path) {
  vocab_ = load_vocab(path);  // checks ids and added tokens, and decodes every token's bytes
  json j = read_json_file(path);
  decoding_ = token_decoding(path, j);
  load_model(j["model"]);
  normalizer_ = std::make_unique<Normalizer>(path, j.value("normalizer", json()));
  pre_tokenizer_ = std::make_unique<PreTokenizer>(path, j.value("pre_tokenizer", json()));
  if (pre_tokenizer_->byte_level() != decoding_.byte_level)
    FI_FAIL(path + ": the pre_tokenizer is " + (pre_tokenizer_->byte_level() ? "" : "not ") +
            "byte-level but the decoder is " + (decoding_.byte_level ? "" : "not") + " (not supported)");
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) load_added(j["added_tokens"]);

  // BOS/EOS: the family's own added tokens (a plain vocabulary entry "<s>", as Qwen has, is no
  // BOS), unless tokenizer_config.json beside the file names them.
  for (const char* t : {"<|begin_of_text|>", "<s>", "<bos>", "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"})
    if (bos_id_ < 0) bos_id_ = find_token(t, true);
  for (const char* t : {"<|eot_id|>", "<|im_end|>", "<end_of_turn>", "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>",
                        "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"})
    if (eos_id_ < 0) eos_id_ = find_token(t, true);
  const std::string config = (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
  if (std::filesystem::exists(config)) {
    load_config(config);
  } else {
    bool llama3 = true;
    for (const char* t : {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"})
      llama3 = llama3 && find_token(t, true) >= 0;
    if (llama3) chat_ = std::make_unique<ChatFormat>(llama3_chat_format("<|begin_of_text|>"));
    else chat_error_ = path + ": no tokenizer_config.json beside it, so no chat template for --chat";
  }
}

void Tokenizer::load_model(const json& model) {
  const std::string type = str_field(model, "type");
  if (model.contains("type") && type != "BPE") FI_FAIL(path_ + ": model.type '" + type + "' is not BPE");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!str_field(model, k).empty()) FI_FAIL(path_ + ": model." + k + " is not supported");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0)
    FI_FAIL(path_ + ": model.dropout is not supported (encoding would be random)");
  ignore_merges_ = bool_field(model, "ignore_merges", false);
  byte_fallback_ = bool_field(model, "byte_fallback", false);
  fuse_unk_ = bool_field(model, "fuse_unk", false);

  token_id_.reserve(model["vocab"].size());
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it)
    token_id_.emplace(it.key(), int32_t(it.value().get<int64_t>()));
  const std::string unk = str_field(model, "unk_token");
  if (!unk.empty()) {
    auto it = token_id_.find(unk);
    if (it == token_id_.end()) FI_FAIL(path_ + ": model.unk_token '" + unk + "' is not in model.vocab");
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = token_id_.find(name);
    byte_token_[b] = it == token_id_.end() ? -1 : it->second;
  }

  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) FI_FAIL(path_ + ": field 'model.merges' is missing or not a list");
  merges_.reserve(merges->size());
  for (size_t r = 0; r < merges->size(); ++r) {
    const json& m = (*merges)[r];
    auto where = [&] { return path_ + ": model.merges[" + std::to_string(r) + "]"; };
    std::string parts[2];
    if (m.is_string()) {  // "a b"
      std::string_view s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == s.npos || s.find(' ', sp + 1) != s.npos) FI_FAIL(where() + " is not 'a b'");
      parts[0] = s.substr(0, sp);
      parts[1] = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
      parts[0] = m[0].get<std::string>();
      parts[1] = m[1].get<std::string>();
    } else {
      FI_FAIL(where() + " must be 'a b' or [a, b]");
    }
    int32_t ids[3];
    for (int k = 0; k < 3; ++k) {
      const std::string tok = k == 2 ? parts[0] + parts[1] : parts[k];
      auto it = token_id_.find(tok);
      if (it == token_id_.end()) FI_FAIL(where() + ": '" + tok + "' is not in model.vocab");
      ids[k] = it->second;
    }
    // A repeated pair keeps its last rank, as in HF's map built in file order.
    merges_[uint64_t(uint32_t(ids[0])) << 32 | uint32_t(ids[1])] = Merge{int32_t(r), ids[2]};
  }
}

void Tokenizer::load_added(const json& added) {
  for (size_t k = 0; k < added.size(); ++k) {
    const json& a = added[k];
    const std::string where = path_ + ": added_tokens[" + std::to_string(k) + "]";
    if (bool_field(a, "single_word", false)) FI_FAIL(where + ".single_word is not supported");
    Added t{a["content"].get<std::string>(), int32_t(a["id"].get<int64_t>()), bool_field(a, "lstrip", false),
            bool_field(a, "rstrip", false)};
    if (t.content.empty()) continue;
    // HF matches a "normalized" token in the normalized text, spelled as the normalizer makes it.
    const bool normalized = bool_field(a, "normalized", !bool_field(a, "special", false));
    if (normalized && !normalizer_->empty()) t.content = normalizer_->apply(t.content);
    if (t.content.empty()) continue;
    auto& table = normalized && !normalizer_->empty() ? normalized_added_ : raw_added_;
    table[uint8_t(t.content[0])].push_back(t);
  }
  for (auto* tables : {&raw_added_, &normalized_added_})
    for (auto& bucket : *tables)  // longest first, so the first hit at a position is the longest match
      std::stable_sort(bucket.begin(), bucket.end(),
                       [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
}

void Tokenizer::load_config(const std::string& config_path) {
  json c = read_json_file(config_path);
  if (!c.is_object()) FI_FAIL(config_path + ": expected a JSON object at the top level");
  const std::string bos = config_token(c, "bos_token"), eos = config_token(c, "eos_token");
  if (c.contains("bos_token")) bos_id_ = -1;  // null: the family has none (Qwen)
  if (!bos.empty() && (bos_id_ = find_token(bos)) < 0)
    FI_FAIL(config_path + ": bos_token '" + bos + "' is not a token of " + path_);
  if (!eos.empty() && (eos_id_ = find_token(eos)) < 0)
    FI_FAIL(config_path + ": eos_token '" + eos + "' is not a token of " + path_);
  auto t = c.find("chat_template");
  if (t == c.end() || t->is_null()) {
    chat_error_ = config_path + ": no chat_template, so no --chat format";
  } else if (!t->is_string()) {
    chat_error_ = config_path + ": chat_template is not a string (named templates are not supported)";
  } else {
    try {
      chat_ = std::make_unique<ChatFormat>(chat_format_from_template(config_path, t->get<std::string>(), bos));
    } catch (const Error& e) {
      chat_error_ = e.what();
    }
  }
}

int32_t Tokenizer::find_token(const std::string& content, bool added_only) const {
  for (const auto* tables : {&raw_added_, &normalized_added_})
    for (const Added& a : (*tables)[uint8_t(content.empty() ? 0 : content[0])])
      if (a.content == content) return a.id;
  if (added_only) return -1;
  auto it = token_id_.find(content);
  return it == token_id_.end() ? -1 : it->second;
}

// The added tokens of one table in s (leftmost, then longest), with lstrip/rstrip taking the
// whitespace beside them; the text between becomes sections to tokenize.
void Tokenizer::split_added(const std::vector<Added> (&table)[256], const std::string& s, bool at_start,
                            std::vector<Section>& out) const {
  size_t start = 0;
  auto text = [&](size_t end) {
    if (end > start) out.push_back({s.substr(start, end - start), -1, at_start && start == 0});
  };
  for (size_t i = 0; i < s.size();) {
    const Added* hit = nullptr;
    for (const Added& a : table[uint8_t(s[i])]) {
      if (a.content.size() <= s.size() - i && std::memcmp(s.data() + i, a.content.data(), a.content.size()) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t begin = i, end = i + hit->content.size();
    if (hit->lstrip) {
      size_t k = begin;  // back over whitespace, not into the previous match
      while (k > start) {
        size_t p = k - 1;
        while (p > start && (uint8_t(s[p]) & 0xC0) == 0x80) --p;
        int n = 1;
        if (!is_unicode_whitespace(utf8_at(s, p, n))) break;
        k = p;
      }
      begin = k;
    }
    if (hit->rstrip) {
      int n = 1;
      while (end < s.size() && is_unicode_whitespace(utf8_at(s, end, n))) end += n;
    }
    text(begin);
    out.push_back({"", hit->id, false});
    i = start = end;
  }
  text(s.size());
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  // HF tokenizers and the JS reference only see valid strings, so invalid bytes are U+FFFD first.
  const std::string s = sanitize_utf8(text);
  std::vector<int32_t> out;
  if (add_bos) {
    if (bos_id_ < 0) FI_FAIL(path_ + ": no BOS token (no bos_token and none of the families' own)");
    out.push_back(bos_id_);
  }
  std::vector<Section> raw;
  split_added(raw_added_, s, true, raw);
  for (const Section& r : raw) {
    if (r.id >= 0) {
      out.push_back(r.id);
      continue;
    }
    const std::string normalized = normalizer_->apply(r.text);
    std::vector<Section> parts;
    split_added(normalized_added_, normalized, r.at_start, parts);
    for (const Section& p : parts) {
      if (p.id >= 0) out.push_back(p.id);
      else encode_section(p.text, p.at_start, out);
    }
  }
  return out;
}

void Tokenizer::encode_section(const std::string& text, bool at_start, std::vector<int32_t>& out) const {
  std::vector<std::string> words;
  pre_tokenizer_->split(text, at_start, words);
  for (const std::string& w : words) bpe(w, out);
}

// BPE as HF's BPE::merge_word + Word::merge_all: the word's characters as symbols (a character
// not in the vocabulary: its <0xNN> byte tokens with byte_fallback, else the unknown token,
// fused with its neighbours under fuse_unk, else dropped), then always the lowest-rank merge among
// adjacent symbols, the leftmost first on ties. A linked list and a heap keep it O(n log n).
void Tokenizer::bpe(const std::string& word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = token_id_.find(word);
    if (it != token_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= 256;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  struct Sym {
    int32_t id;
    int prev, next;  // -1 at the ends
  };
  std::vector<Sym> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id) { sym.push_back({id, int(sym.size()) - 1, -1}); };
  bool unk_pending = false;  // HF keeps an unknown run open until a known character comes
  for (size_t i = 0; i < word.size();) {
    int n = 1;
    utf8_at(word, i, n);
    auto it = token_id_.find(word.substr(i, size_t(n)));
    if (it != token_id_.end()) {
      if (unk_pending) add(unk_id_), unk_pending = false;
      add(it->second);
    } else if (byte_fallback_ && std::all_of(word.begin() + i, word.begin() + i + n,
                                             [&](char c) { return byte_token_[uint8_t(c)] >= 0; })) {
      for (int k = 0; k < n; ++k) add(byte_token_[uint8_t(word[i + k])]);
    } else if (unk_id_ >= 0) {
      if (unk_pending && !fuse_unk_) add(unk_id_);
      unk_pending = true;
    }
    i += size_t(n);
  }
  if (unk_pending) add(unk_id_);
  const int count = int(sym.size());
  for (int i = 0; i + 1 < count; ++i) sym[i].next = i + 1;

  struct Cand {
    int32_t rank;
    int pos;  // the left symbol
    int32_t left, right, id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int left) {
    if (left < 0 || sym[left].next < 0) return;
    int32_t l = sym[left].id, r = sym[sym[left].next].id;
    auto it = merges_.find(uint64_t(uint32_t(l)) << 32 | uint32_t(r));
    if (it != merges_.end()) heap.push({it->second.rank, left, l, r, it->second.id});
  };
  for (int i = 0; i + 1 < count; ++i) push(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& s = sym[c.pos];
    if (s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;  // stale
    int gone = s.next;
    s.id = c.id;
    s.next = sym[gone].next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    sym[gone].id = -1;
    push(s.prev);
    push(c.pos);
  }
  std::vector<int32_t> ids;
  for (int i = count > 0 ? 0 : -1; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= (1u << 17)) cache_.clear();  // bounded memory on endless novel input
    cache_.emplace(word, std::move(ids));
  }
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_.size())
      FI_FAIL("token id " + std::to_string(id) + " is outside the vocabulary of " + path_ + " (" +
              std::to_string(vocab_.size()) + " tokens)");
    out += vocab_.bytes[id];
  }
  size_t strip = 0;
  while (strip < size_t(decoding_.strip_start) && strip < out.size() && out[strip] == ' ') ++strip;
  return out.substr(strip);
}

const ChatFormat& Tokenizer::chat_format() const {
  if (!chat_) FI_FAIL(chat_error_);
  return *chat_;
}

std::vector<int32_t> Tokenizer::encode_chat(const std::string& user_message) const {
  return encode(chat_format().render(sanitize_utf8(user_message)));
}

}  // namespace fi
