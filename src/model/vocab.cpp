// tokenizer.json (Hugging Face BPE) -> per-id exact bytes, printable text, special flag.
// Vocab strings are GPT-2 byte-level encoded (one code point per byte) or SentencePiece style
// (▁ for a space, <0xNN> byte tokens), as the decoder says; added tokens are raw UTF-8.
#include "model/vocab.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <unordered_set>

#include "common/error.h"
#include "io/json.h"

namespace fi {
namespace {

using nlohmann::json;

// The GPT-2 alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes take
// code points 256, 257, ... in byte order.
bool byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

const std::array<uint32_t, 256>& byte_to_cp() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) t[b] = byte_is_printable(b) ? uint32_t(b) : next++;
    return t;
  }();
  return table;
}

// Decodes valid UTF-8 (the JSON parser has checked it) into code points.
std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < n && i + k < s.size(); ++k) cp = cp << 6 | (uint8_t(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

std::string hex_cp(uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", cp);
  return buf;
}

int64_t read_id(const std::string& path, const json& v, const std::string& where) {
  if (!v.is_number_integer()) FI_FAIL(path + ": " + where + " must be an integer id");
  if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(INT64_MAX) : v.get<int64_t>() < 0)
    FI_FAIL(path + ": " + where + " is not a valid id");
  return v.get<int64_t>();
}

// A byte-level model.vocab string -> its bytes. A code point outside the alphabet is an error,
// unless the string is also an added token: HF's ByteLevel decoder then keeps its raw UTF-8.
std::string byte_level_token_bytes(const std::string& path, const std::string& tok, int64_t id, bool added);

// A SentencePiece-style token: <0xNN> -> byte NN (with ByteFallback), else ▁ -> space.
std::string sentencepiece_token_bytes(const TokenDecoding& d, const std::string& tok) {
  if (d.byte_fallback && tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>' &&
      std::isxdigit(uint8_t(tok[3])) && std::isxdigit(uint8_t(tok[4])))
    return std::string(1, char(std::stoi(tok.substr(3, 2), nullptr, 16)));
  std::string out;
  for (size_t i = 0; i < tok.size();) {
    if (tok.compare(i, d.space_marker.size(), d.space_marker) == 0) {
      out += ' ';
      i += d.space_marker.size();
    } else {
      out += tok[i++];
    }
  }
  return out;
}

}  // namespace

namespace {
std::string byte_level_token_bytes(const std::string& path, const std::string& tok, int64_t id, bool added) {
  std::string b;
  for (uint32_t cp : code_points(tok)) {
    int byte = byte_level_decode_cp(cp);
    if (byte < 0) {
      if (added) return tok;
      FI_FAIL(path + ": token '" + tok + "' (id " + std::to_string(id) + ") has code point " + hex_cp(cp) +
              " outside the byte-level alphabet (the file's decoder is byte-level)");
    }
    b += char(byte);
  }
  return b;
}
}  // namespace

int byte_level_decode_cp(uint32_t cp) {
  static const std::array<int16_t, 512> inverse = [] {
    std::array<int16_t, 512> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_cp()[b]] = int16_t(b);
    return t;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

uint32_t byte_level_encode_byte(uint8_t b) { return byte_to_cp()[b]; }

// Unicode "substitution of maximal subparts": a well-formed prefix of a sequence that then
// breaks becomes one U+FFFD; a byte that cannot start a sequence becomes one U+FFFD.
std::string sanitize_utf8(const std::string& s) {
  static const char kFFFD[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    uint8_t c = s[i];
    if (c < 0x80) {
      out += char(c);
      ++i;
      continue;
    }
    int n = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;
    else if (c == 0xED) n = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) n = 4, lo = 0x90;
    else if (c == 0xF4) n = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    int k = 1;  // bytes of the sequence accepted so far
    if (n) {
      for (; k < n && i + k < s.size(); ++k) {
        uint8_t d = s[i + k];
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) break;
      }
    }
    if (n && k == n) out.append(s, i, n);
    else out += kFFFD;
    i += k;
  }
  return out;
}

int64_t Vocab::find_bytes(const std::string& b) const {
  for (size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] == b) return int64_t(i);
  return -1;
}

namespace {
TokenDecoding read_decoder(const std::string& path, const json& j) {
  TokenDecoding d;
  auto it = j.find("decoder");
  if (it == j.end() || it->is_null()) return d;
  auto type_of = [&](const json& step, const std::string& field) {
    if (!step.is_object() || !step.contains("type") || !step["type"].is_string())
      FI_FAIL(path + ": " + field + " needs a string 'type'");
    return step["type"].get<std::string>();
  };
  auto metaspace = [&](const json& step, const std::string& field) {
    d.byte_level = false;
    d.space_marker = step.value("replacement", std::string());
    if (d.space_marker.empty()) FI_FAIL(path + ": " + field + ".replacement must be a string");
    const std::string scheme = step.contains("prepend_scheme") ? step.value("prepend_scheme", std::string())
                               : step.value("add_prefix_space", true) ? "always" : "never";
    d.strip_start = scheme == "never" ? 0 : 1;
  };
  const std::string type = type_of(*it, "decoder");
  if (type == "ByteLevel") return d;
  if (type == "Metaspace") {
    metaspace(*it, "decoder");
    return d;
  }
  if (type != "Sequence" || !it->contains("decoders") || !(*it)["decoders"].is_array())
    FI_FAIL(path + ": decoder.type '" + type + "' is not supported (supported: ByteLevel, Metaspace, and a "
            "Sequence of Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel)");
  const json& steps = (*it)["decoders"];
  bool byte_level = false;
  d.byte_level = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string field = "decoder.decoders[" + std::to_string(i) + "]";
    const json& step = steps[i];
    const std::string t = type_of(step, field);
    if (t == "ByteLevel") {
      byte_level = true;
    } else if (t == "Metaspace") {
      metaspace(step, field);
    } else if (t == "ByteFallback") {
      d.byte_fallback = true;
    } else if (t == "Fuse") {
      // joins the tokens' strings: nothing to do per token
    } else if (t == "Replace") {
      const json pat = step.value("pattern", json());
      if (!pat.is_object() || !pat.contains("String") || !pat["String"].is_string() ||
          step.value("content", std::string("x")) != " ")
        FI_FAIL(path + ": " + field + " must replace a String pattern with \" \" (SentencePiece's ▁)");
      d.space_marker = pat["String"].get<std::string>();
    } else if (t == "Strip") {
      if (step.value("content", std::string()) != " " || step.value("stop", -1) != 0 || step.value("start", -1) < 0)
        FI_FAIL(path + ": " + field + " must strip spaces from the start only (content \" \", stop 0)");
      d.strip_start = step.value("start", 0);
    } else {
      FI_FAIL(path + ": " + field + ".type '" + t + "' is not supported");
    }
  }
  if (byte_level && (!d.space_marker.empty() || d.byte_fallback))
    FI_FAIL(path + ": decoder mixes ByteLevel with SentencePiece steps (not supported)");
  if (byte_level) return TokenDecoding{};
  if (d.space_marker.empty()) FI_FAIL(path + ": decoder has neither ByteLevel nor a ▁ -> space step");
  return d;
}
}  // namespace

TokenDecoding token_decoding(const std::string& path, const json& j) {
  try {
    return read_decoder(path, j);
  } catch (const json::exception& e) {  // a field of the wrong type
    FI_FAIL(path + ": decoder: " + e.what());
  }
}

Vocab load_vocab(const std::string& path, int64_t vocab_size) {
  if (vocab_size < 0) FI_FAIL(path + ": vocab_size " + std::to_string(vocab_size) + " is negative");
  json j = read_json_file(path);
  if (!j.is_object()) FI_FAIL(path + ": expected a JSON object at the top level");
  auto model = j.find("model");
  if (model == j.end() || !model->is_object()) FI_FAIL(path + ": field 'model' is missing or not an object");
  auto vocab = model->find("vocab");
  if (vocab == model->end() || !vocab->is_object())
    FI_FAIL(path + ": field 'model.vocab' is missing or not an object (a byte-level BPE vocabulary)");
  const json empty = json::array();
  auto added_it = j.find("added_tokens");
  const json& added = added_it == j.end() || added_it->is_null() ? empty : *added_it;
  if (!added.is_array()) FI_FAIL(path + ": field 'added_tokens' must be a list");
  const TokenDecoding dec = token_decoding(path, j);
  std::unordered_set<std::string> added_content;  // for the raw byte-level entries (DeepSeek)
  for (const json& a : added)
    if (a.is_object() && a.contains("content") && a["content"].is_string()) added_content.insert(a["content"].get<std::string>());

  // Without vocab_size, ids must be exactly 0..n-1, so any id >= the number of entries is a gap.
  int64_t limit = vocab_size > 0 ? vocab_size : int64_t(vocab->size() + added.size());
  std::vector<std::string> token(limit);  // the token string as written in the file
  std::vector<uint8_t> from(limit, 0);    // 0 unseen, 1 model.vocab, 2 added_tokens
  Vocab v;
  v.bytes.resize(limit);
  v.special.assign(limit, 0);
  int64_t max_id = -1;
  std::unordered_set<int64_t> beyond;  // ids >= vocab_size: not rows of the LM-head
  // false: the id is beyond vocab_size and dropped.
  auto claim = [&](int64_t id, const std::string& tok, uint8_t src) {
    v.tokenizer_max_id = std::max(v.tokenizer_max_id, id);
    if (id >= limit) {
      if (vocab_size > 0) {
        beyond.insert(id);
        return false;
      }
      FI_FAIL(path + ": token '" + tok + "' has id " + std::to_string(id) + " but there are only " +
              std::to_string(limit) + " tokens (ids must be contiguous)");
    }
    // An added token may restate a vocabulary entry (same id, same string); anything else clashes.
    if (from[id] && !(from[id] == 1 && src == 2 && token[id] == tok))
      FI_FAIL(path + ": id " + std::to_string(id) + " is given twice ('" + token[id] + "' and '" + tok + "')");
    token[id] = tok;
    from[id] = src;
    max_id = std::max(max_id, id);
    return true;
  };

  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    int64_t id = read_id(path, it.value(), "model.vocab['" + it.key() + "']");
    if (!claim(id, it.key(), 1)) continue;
    v.bytes[id] = dec.byte_level ? byte_level_token_bytes(path, it.key(), id, added_content.count(it.key()) > 0)
                                 : sentencepiece_token_bytes(dec, it.key());
  }
  for (size_t k = 0; k < added.size(); ++k) {
    const json& a = added[k];
    std::string where = "added_tokens[" + std::to_string(k) + "]";
    if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string())
      FI_FAIL(path + ": " + where + " needs an integer 'id' and a string 'content'");
    int64_t id = read_id(path, a["id"], where + ".id");
    std::string content = a["content"].get<std::string>();
    const bool restates = id < limit && from[id] == 1;  // keeps model.vocab's decoded bytes
    if (!claim(id, content, 2)) continue;
    if (!restates) v.bytes[id] = content;
    v.special[id] = 1;
  }

  int64_t n = vocab_size > 0 ? vocab_size : max_id + 1;
  v.bytes.resize(n);
  v.special.resize(n);
  v.text.resize(n);
  for (int64_t id = 0; id < n; ++id) {
    if (from[id]) {
      v.text[id] = sanitize_utf8(v.bytes[id]);
    } else if (vocab_size > 0) {  // a padding row of the LM-head
      v.text[id] = "<|unused_" + std::to_string(id) + "|>";
      v.special[id] = 1;
      ++v.padding;
    } else {
      FI_FAIL(path + ": id " + std::to_string(id) + " has no token (ids must be contiguous)");
    }
  }
  v.beyond = int64_t(beyond.size());
  return v;
}

}  // namespace fi
