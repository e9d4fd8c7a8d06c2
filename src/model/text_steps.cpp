// Normalizers and pre-tokenizers of tokenizer.json (see text_steps.h). Splits follow HF
// tokenizers' NormalizedString::split: a pattern cuts a piece into matches and the text between
// them, and the behaviour says what the matches become.
#include "model/text_steps.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "model/vocab.h"

namespace fi {

using nlohmann::json;

namespace {

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_field(const std::string& path, const std::string& field, const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) FI_FAIL(path + ": " + field + "." + key + " must be true or false");
  return it->get<bool>();
}

// GPT-2's own pre-tokenizer regex (ByteLevel with use_regex).
const char* kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// (begin, end, is_match) covering a piece in order, as HF's Pattern::find_matches.
struct Cut {
  size_t begin, end;
  bool match;
};

std::vector<Cut> cuts_of(const std::vector<std::pair<size_t, size_t>>& matches, size_t size) {
  std::vector<Cut> cuts;
  size_t prev = 0;
  for (auto [a, b] : matches) {
    if (prev != a) cuts.push_back({prev, a, false});
    cuts.push_back({a, b, true});
    prev = b;
  }
  if (prev != size) cuts.push_back({prev, size, false});
  return cuts;
}

// Every character for which pred holds is a match of its own (HF's Pattern for Fn(char) -> bool).
template <class Pred>
std::vector<Cut> char_cuts(const std::string& s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> m;
  for (size_t i = 0; i < s.size();) {
    int n = 1;
    uint32_t cp = utf8_at(s, i, n);
    if (pred(cp)) m.push_back({i, i + n});
    i += n;
  }
  return cuts_of(m, s.size());
}

bool is_numeric(uint32_t cp) {  // Rust's char::is_numeric: Nd, Nl, No
  auto c = utf8proc_category(utf8proc_int32_t(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_punctuation(uint32_t cp) {  // ASCII punctuation or a Unicode P* category
  if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
                        (cp >= 0x7B && cp <= 0x7E);
  auto c = utf8proc_category(utf8proc_int32_t(cp));
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

}  // namespace

uint32_t utf8_at(const std::string& s, size_t i, int& n) {
  unsigned char c = s[i];
  n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
  for (int k = 1; k < n && i + k < s.size(); ++k) cp = cp << 6 | (uint8_t(s[i + k]) & 0x3F);
  return cp;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6);
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12);
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18);
    out += char(0x80 | (cp >> 12 & 0x3F));
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

bool is_unicode_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// ---- Pattern ---------------------------------------------------------------------------------

struct Pattern::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

Pattern::~Pattern() = default;

Pattern::Pattern(const std::string& path, const std::string& field, const json& spec) : path_(path) {
  std::string text;
  bool literal = false;
  if (spec.is_string()) {  // our own patterns (GPT-2's) come as a plain regex
    text = spec.get<std::string>();
  } else if (spec.is_object() && spec.size() == 1 && spec.contains("Regex") && spec["Regex"].is_string()) {
    text = spec["Regex"].get<std::string>();
  } else if (spec.is_object() && spec.size() == 1 && spec.contains("String") && spec["String"].is_string()) {
    text = spec["String"].get<std::string>();
    literal = true;
  } else {
    FI_FAIL(path + ": " + field + " must be {\"Regex\": ...} or {\"String\": ...}");
  }
  if (text.empty()) FI_FAIL(path + ": " + field + " is empty");
  int err = 0;
  PCRE2_SIZE offset = 0;
  code_ = std::make_unique<Code>();
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                              PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP), &err, &offset, nullptr);
  if (!code_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    FI_FAIL(path + ": " + field + " does not compile at offset " + std::to_string(offset) + ": " +
            reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);  // optional: the interpreter is the fallback
}

std::vector<std::pair<size_t, size_t>> Pattern::find_all(const std::string& s) const {
  std::vector<std::pair<size_t, size_t>> out;
  if (s.empty()) return out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  if (!md) FI_FAIL("out of memory for a regex match");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos <= s.size()) {
    int rc = pcre2_match(code_->code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      FI_FAIL(path_ + ": a pre_tokenizer/normalizer regex failed on the input: " + reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    out.push_back({ov[0], ov[1]});
    if (ov[1] > ov[0]) {
      pos = ov[1];
    } else {  // an empty match: step over one character
      pos = ov[0] + 1;
      while (pos < s.size() && (uint8_t(s[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  pcre2_match_data_free(md);
  return out;
}

// ---- Normalizer ------------------------------------------------------------------------------

Normalizer::Normalizer(const std::string& path, const json& spec) {
  if (!spec.is_null()) add(path, "normalizer", spec);
}

void Normalizer::add(const std::string& path, const std::string& field, const json& spec) {
  if (!spec.is_object()) FI_FAIL(path + ": " + field + " must be an object");
  const std::string type = str_field(spec, "type");
  Step s;
  if (type == "Sequence") {
    auto it = spec.find("normalizers");
    if (it == spec.end() || !it->is_array()) FI_FAIL(path + ": " + field + ".normalizers must be a list");
    for (size_t i = 0; i < it->size(); ++i) add(path, field + ".normalizers[" + std::to_string(i) + "]", (*it)[i]);
    return;
  } else if (type == "NFC") {
    s.utf8proc_options = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
  } else if (type == "NFKC") {
    s.utf8proc_options = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
  } else if (type == "NFD") {
    s.utf8proc_options = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
  } else if (type == "NFKD") {
    s.utf8proc_options = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
  } else if (type == "Prepend") {
    s.kind = Step::kPrepend;
    if (!spec.contains("prepend") || !spec["prepend"].is_string())
      FI_FAIL(path + ": " + field + ".prepend must be a string");
    s.text = spec["prepend"].get<std::string>();
  } else if (type == "Replace") {
    s.kind = Step::kReplace;
    if (!spec.contains("content") || !spec["content"].is_string())
      FI_FAIL(path + ": " + field + ".content must be a string");
    s.text = spec["content"].get<std::string>();
    s.pattern = std::make_shared<Pattern>(path, field + ".pattern", spec.value("pattern", json()));
  } else {
    FI_FAIL(path + ": " + field + ".type '" + type +
            "' is not supported (supported: NFC, NFKC, NFD, NFKD, Prepend, Replace, Sequence)");
  }
  steps_.push_back(std::move(s));
}

std::string Normalizer::apply(const std::string& in) const {
  std::string s = in;
  for (const Step& step : steps_) {
    if (step.kind == Step::kUnicode) {
      utf8proc_uint8_t* out = nullptr;
      utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                                        &out, utf8proc_option_t(step.utf8proc_options));
      if (n < 0) FI_FAIL(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
      s.assign(reinterpret_cast<char*>(out), size_t(n));
      std::free(out);
    } else if (step.kind == Step::kPrepend) {
      if (!s.empty()) s = step.text + s;
    } else {
      std::string r;
      size_t prev = 0;
      for (auto [a, b] : step.pattern->find_all(s)) {
        r.append(s, prev, a - prev);
        r += step.text;
        prev = b;
      }
      r.append(s, prev, std::string::npos);
      s = std::move(r);
    }
  }
  return s;
}

// ---- PreTokenizer ----------------------------------------------------------------------------

PreTokenizer::PreTokenizer(const std::string& path, const json& spec) {
  if (!spec.is_null()) add(path, "pre_tokenizer", spec);
}

void PreTokenizer::add(const std::string& path, const std::string& field, const json& spec) {
  if (!spec.is_object()) FI_FAIL(path + ": " + field + " must be an object");
  const std::string type = str_field(spec, "type");
  if (byte_level_ && type != "Sequence")  // later steps would see the mapped alphabet
    FI_FAIL(path + ": " + field + " comes after a ByteLevel pre-tokenizer (not supported)");
  auto behavior = [&](const char* dflt) {
    std::string b = spec.contains("behavior") ? str_field(spec, "behavior") : dflt;
    if (b == "Removed") return Behavior::kRemoved;
    if (b == "Isolated") return Behavior::kIsolated;
    if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
    if (b == "MergedWithNext") return Behavior::kMergedWithNext;
    if (b == "Contiguous") return Behavior::kContiguous;
    FI_FAIL(path + ": " + field + ".behavior '" + b + "' is not a split behaviour");
  };
  Step s;
  if (type == "Sequence") {
    auto it = spec.find("pretokenizers");
    if (it == spec.end() || !it->is_array()) FI_FAIL(path + ": " + field + ".pretokenizers must be a list");
    for (size_t i = 0; i < it->size(); ++i) add(path, field + ".pretokenizers[" + std::to_string(i) + "]", (*it)[i]);
    return;
  } else if (type == "Split") {
    s.pattern = std::make_shared<Pattern>(path, field + ".pattern", spec.value("pattern", json()));
    s.behavior = behavior("");
    s.invert = bool_field(path, field, spec, "invert", false);
  } else if (type == "ByteLevel") {
    s.kind = Step::kByteLevel;
    s.add_prefix_space = bool_field(path, field, spec, "add_prefix_space", true);
    if (bool_field(path, field, spec, "use_regex", true)) s.pattern = std::make_shared<Pattern>(path, field, json(kGpt2Regex));
    byte_level_ = true;
  } else if (type == "Digits") {
    s.kind = Step::kDigits;
    s.individual_digits = bool_field(path, field, spec, "individual_digits", false);
  } else if (type == "Punctuation") {
    s.kind = Step::kPunctuation;
    s.behavior = behavior("Isolated");
  } else if (type == "Metaspace") {
    s.kind = Step::kMetaspace;
    s.replacement = str_field(spec, "replacement");
    int n = 0;
    if (s.replacement.empty() || (utf8_at(s.replacement, 0, n), size_t(n) != s.replacement.size()))
      FI_FAIL(path + ": " + field + ".replacement must be one character");
    s.split = bool_field(path, field, spec, "split", true);
    if (spec.contains("prepend_scheme")) {
      std::string p = str_field(spec, "prepend_scheme");
      if (p != "never" && p != "first" && p != "always")
        FI_FAIL(path + ": " + field + ".prepend_scheme '" + p + "' is not never, first or always");
      s.prepend = p == "never" ? 0 : p == "first" ? 1 : 2;
    } else {  // files from before prepend_scheme
      s.prepend = bool_field(path, field, spec, "add_prefix_space", true) ? 2 : 0;
    }
    s.pattern = std::make_shared<Pattern>(path, field + ".replacement", json{{"String", s.replacement}});
  } else {
    FI_FAIL(path + ": " + field + ".type '" + type +
            "' is not supported (supported: Split, ByteLevel, Digits, Punctuation, Metaspace, Sequence)");
  }
  steps_.push_back(std::move(s));
}

void PreTokenizer::apply(const Step& step, const std::string& piece, bool at_start, std::vector<std::string>& out) const {
  std::string s = piece;
  std::vector<Cut> cuts;
  Behavior behavior = step.behavior;
  switch (step.kind) {
    case Step::kSplit:
      cuts = cuts_of(step.pattern->find_all(s), s.size());
      if (step.invert)
        for (Cut& c : cuts) c.match = !c.match;
      break;
    case Step::kByteLevel:
      if (step.add_prefix_space && (s.empty() || s[0] != ' ')) s = " " + s;
      if (step.pattern) cuts = cuts_of(step.pattern->find_all(s), s.size());
      else cuts = {{0, s.size(), false}};
      break;
    case Step::kDigits:
      cuts = char_cuts(s, is_numeric);
      behavior = step.individual_digits ? Behavior::kIsolated : Behavior::kContiguous;
      break;
    case Step::kPunctuation:
      cuts = char_cuts(s, is_punctuation);
      break;
    case Step::kMetaspace: {
      std::string r;
      for (char c : s) {
        if (c == ' ') r += step.replacement;
        else r += c;
      }
      if (r.compare(0, step.replacement.size(), step.replacement) != 0 && (step.prepend == 2 || (step.prepend == 1 && at_start)))
        r = step.replacement + r;
      s = std::move(r);
      if (step.split) cuts = cuts_of(step.pattern->find_all(s), s.size());
      else cuts = {{0, s.size(), false}};
      behavior = Behavior::kMergedWithNext;
      break;
    }
  }
  // The behaviour's fold (HF NormalizedString::split), then empty pieces dropped.
  std::vector<Cut> kept;
  if (behavior == Behavior::kMergedWithNext) {
    bool prev = false;
    for (size_t k = cuts.size(); k-- > 0;) {
      if (cuts[k].match && !prev && !kept.empty()) kept.back().begin = cuts[k].begin;
      else kept.push_back({cuts[k].begin, cuts[k].end, false});
      prev = cuts[k].match;
    }
    std::reverse(kept.begin(), kept.end());
  } else {
    bool prev = false;
    for (const Cut& c : cuts) {
      bool merge = behavior == Behavior::kContiguous ? c.match == prev
                   : behavior == Behavior::kMergedWithPrevious ? c.match && !prev : false;
      if (merge && !kept.empty()) kept.back().end = c.end;
      else kept.push_back({c.begin, c.end, behavior == Behavior::kRemoved && c.match});
      prev = c.match;
    }
  }
  for (const Cut& c : kept)
    if (!c.match && c.end > c.begin) out.push_back(s.substr(c.begin, c.end - c.begin));
}

void PreTokenizer::split(const std::string& section, bool at_start, std::vector<std::string>& out) const {
  std::vector<std::string> pieces{section}, next;
  for (const Step& step : steps_) {
    next.clear();
    for (size_t i = 0; i < pieces.size(); ++i) apply(step, pieces[i], at_start && i == 0, next);
    pieces.swap(next);
  }
  for (std::string& p : pieces) {
    if (byte_level_) {
      std::string mapped;
      for (unsigned char c : p) append_utf8(byte_level_encode_byte(c), mapped);
      p = std::move(mapped);
    }
    if (!p.empty()) out.push_back(std::move(p));
  }
}

}  // namespace fi
