// Byte-level BPE encoding as Hugging Face tokenizers does it for Llama 3 (tokenizer.json):
// added tokens -> Split regex pre-tokens (PCRE2) -> bytes -> BPE by merge rank; decoding = bytes.
#include "model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstring>
#include <queue>
#include <string_view>

#include "common/error.h"
#include "io/json.h"

namespace fi {

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

namespace {

using nlohmann::json;

// A byte-level vocabulary string (one code point per byte, valid UTF-8) -> its bytes; false when
// a code point is outside the GPT-2 alphabet.
bool byte_level_to_bytes(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < n && i + k < s.size(); ++k) cp = cp << 6 | (uint8_t(s[i + k]) & 0x3F);
    int b = byte_level_decode_cp(cp);
    if (b < 0) return false;
    out += char(b);
    i += n;
  }
  return true;
}

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_field(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
}

// The Split regex of the pre-tokenizer. Accepted shapes: Split (behavior Isolated, not inverted)
// and ByteLevel (no prefix space, no regex of its own), alone or in a Sequence.
std::string split_pattern(const std::string& path, const json& pre, bool& literal) {
  std::vector<const json*> steps;
  if (pre.is_object() && str_field(pre, "type") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array()) {
    for (const json& p : pre["pretokenizers"]) steps.push_back(&p);
  } else if (pre.is_object()) {
    steps.push_back(&pre);
  }
  std::string pattern;
  bool have_split = false, have_byte_level = false;
  for (const json* p : steps) {
    std::string type = p->is_object() ? str_field(*p, "type") : "";
    if (type == "Split" && !have_split) {
      const json pat = p->value("pattern", json());
      if (str_field(*p, "behavior") != "Isolated" || bool_field(*p, "invert", false) || !pat.is_object())
        FI_FAIL(path + ": pre_tokenizer Split must have behavior Isolated, invert false and a pattern");
      literal = !pat.contains("Regex");
      pattern = str_field(pat, literal ? "String" : "Regex");
      if (pattern.empty()) FI_FAIL(path + ": pre_tokenizer Split has an empty pattern");
      have_split = true;
    } else if (type == "ByteLevel" && !have_byte_level) {
      if (bool_field(*p, "add_prefix_space", false) || bool_field(*p, "use_regex", true))
        FI_FAIL(path + ": pre_tokenizer ByteLevel with add_prefix_space or use_regex is not supported");
      have_byte_level = true;
    } else {
      FI_FAIL(path + ": unsupported pre_tokenizer step '" + type + "' (expected Split then ByteLevel)");
    }
  }
  if (!have_split || !have_byte_level)
    FI_FAIL(path + ": pre_tokenizer must be a Split regex followed by ByteLevel (as in Llama 3)");
  return pattern;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

Tokenizer::Tokenizer(const std::string& path) : path_(path) {
  vocab_ = load_vocab(path);  // checks ids, added tokens and the byte-level alphabet
  json j = read_json_file(path);
  const json& model = j["model"];
  if (model.contains("type") && str_field(model, "type") != "BPE")
    FI_FAIL(path + ": model.type '" + str_field(model, "type") + "' is not BPE");
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    FI_FAIL(path + ": a normalizer is not supported (Llama 3 has none)");
  ignore_merges_ = bool_field(model, "ignore_merges", false);

  token_id_.reserve(model["vocab"].size());
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    int32_t id = int32_t(it.value().get<int64_t>());
    token_id_.emplace(vocab_.bytes[id], id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = token_id_.find(std::string(1, char(b)));
    if (it == token_id_.end()) FI_FAIL(path + ": model.vocab lacks the token of byte " + std::to_string(b));
    byte_id_[b] = it->second;
  }

  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) FI_FAIL(path + ": field 'model.merges' is missing or not a list");
  merges_.reserve(merges->size());
  std::string bytes[3];
  for (size_t r = 0; r < merges->size(); ++r) {
    const json& m = (*merges)[r];
    auto where = [&] { return path + ": model.merges[" + std::to_string(r) + "]"; };
    std::string_view parts[2];
    if (m.is_string()) {  // "a b"
      std::string_view s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == s.npos || s.find(' ', sp + 1) != s.npos) FI_FAIL(where() + " is not 'a b'");
      parts[0] = s.substr(0, sp);
      parts[1] = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
      parts[0] = m[0].get_ref<const std::string&>();
      parts[1] = m[1].get_ref<const std::string&>();
    } else {
      FI_FAIL(where() + " must be 'a b' or [a, b]");
    }
    for (int k = 0; k < 2; ++k)
      if (!byte_level_to_bytes(parts[k], bytes[k])) FI_FAIL(where() + " has a code point outside the byte-level alphabet");
    bytes[2] = bytes[0];
    bytes[2] += bytes[1];
    int32_t ids[3];
    for (int k = 0; k < 3; ++k) {
      auto it = token_id_.find(bytes[k]);
      if (it == token_id_.end())
        FI_FAIL(where() + ": '" + (k == 2 ? std::string(parts[0]) + std::string(parts[1]) : std::string(parts[k])) +
                "' is not in model.vocab");
      ids[k] = it->second;
    }
    merges_.emplace(uint64_t(uint32_t(ids[0])) << 32 | uint32_t(ids[1]), Merge{int32_t(r), ids[2]});
  }

  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& a : j["added_tokens"]) {
      std::string content = a["content"].get<std::string>();
      int32_t id = int32_t(a["id"].get<int64_t>());
      if (!content.empty()) added_[uint8_t(content[0])].emplace_back(content, id);
      if (content == "<|begin_of_text|>") bos_id_ = id;
      if (content == "<|eot_id|>" || (content == "<|end_of_text|>" && eos_id_ < 0)) eos_id_ = id;
    }
  }
  for (auto& bucket : added_)  // longest first, so the first hit at a position is the longest match
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  bool literal = false;
  std::string pattern = split_pattern(path, j.value("pre_tokenizer", json()), literal);
  int err = 0;
  PCRE2_SIZE offset = 0;
  regex_ = std::make_unique<Regex>();
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0), &err, &offset, nullptr);
  if (!regex_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    FI_FAIL(path + ": pre_tokenizer regex does not compile at offset " + std::to_string(offset) + ": " +
            reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE);  // optional: the interpreter is the fallback
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  // HF tokenizers and the JS reference only see valid strings, so invalid bytes are U+FFFD first.
  const std::string s = sanitize_utf8(text);
  std::vector<int32_t> out;
  if (add_bos) {
    if (bos_id_ < 0) FI_FAIL(path_ + ": no <|begin_of_text|> token for the BOS");
    out.push_back(bos_id_);
  }
  size_t start = 0;  // the text before an added token goes through the pre-tokenizer and BPE
  for (size_t i = 0; i < s.size();) {
    int32_t hit = -1;
    size_t len = 0;
    for (const auto& [content, id] : added_[uint8_t(s[i])]) {
      if (content.size() <= s.size() - i && std::memcmp(s.data() + i, content.data(), content.size()) == 0) {
        hit = id;
        len = content.size();
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    encode_piece(s.substr(start, i - start), out);
    out.push_back(hit);
    i += len;
    start = i;
  }
  encode_piece(s.substr(start), out);
  return out;
}

// Split behaviour "Isolated": every match is a pre-token, and so is any text between matches.
void Tokenizer::encode_piece(const std::string& piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  if (!md) FI_FAIL("out of memory for a regex match");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t pos = 0, done = 0;  // pos: where the next search starts; done: end of the last pre-token
  while (pos < piece.size()) {
    int rc = pcre2_match(regex_->code, subject, piece.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      FI_FAIL(path_ + ": pre_tokenizer regex failed on the input: " + reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t a = ov[0], b = ov[1];
    if (a > done) bpe(piece.substr(done, a - done), out);
    if (b > a) {
      bpe(piece.substr(a, b - a), out);
      done = b;
      pos = b;
    } else {  // an empty match: step over one character
      pos = a + 1;
      while (pos < piece.size() && (uint8_t(piece[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  pcre2_match_data_free(md);
  if (done < piece.size()) bpe(piece.substr(done), out);
}

// BPE as HF's Word::merge_all: always apply the lowest-rank merge among adjacent symbols, the
// leftmost first on ties, until none applies. A linked list and a heap keep it O(n log n).
void Tokenizer::bpe(const std::string& pretoken, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    auto it = token_id_.find(pretoken);
    if (it != token_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = pretoken.size() <= 256;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(pretoken);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const int n = int(pretoken.size());
  struct Sym {
    int32_t id;
    int prev, next;  // -1 at the ends
  };
  std::vector<Sym> sym(n);
  for (int i = 0; i < n; ++i) sym[i] = {byte_id_[uint8_t(pretoken[i])], i - 1, i + 1 < n ? i + 1 : -1};
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
  for (int i = 0; i + 1 < n; ++i) push(i);
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
  for (int i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= (1u << 17)) cache_.clear();  // bounded memory on endless novel input
    cache_.emplace(pretoken, std::move(ids));
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
  return out;
}

std::vector<int32_t> Tokenizer::encode_chat(const std::string& user_message) const {
  for (const char* t : {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}) {
    const auto& bucket = added_[uint8_t(t[0])];
    if (std::none_of(bucket.begin(), bucket.end(), [&](const auto& a) { return a.first == t; }))
      FI_FAIL(path_ + ": no " + t + " token, so no Llama 3 chat format");
  }
  return encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + user_message +
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

}  // namespace fi
