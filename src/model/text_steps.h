// The normalizer and pre-tokenizer of a tokenizer.json, as Hugging Face tokenizers defines them:
// text (valid UTF-8) -> normalized text -> pre-tokens that the BPE model encodes one by one.
// Every step type or field value not implemented here is refused naming the file and the field.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace fi {

// A PCRE2 pattern (UTF + UCP; literal for tokenizer.json's {"String": ...}), its matches.
class Pattern {
 public:
  Pattern(const std::string& path, const std::string& field, const nlohmann::json& spec);
  ~Pattern();
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;
  // Non-overlapping matches [begin, end) left to right; an empty match steps one character on.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& s) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string path_;
};

// Normalizers: NFC, NFKC, NFD, NFKD (utf8proc), Prepend, Replace, and Sequences of them.
class Normalizer {
 public:
  Normalizer(const std::string& path, const nlohmann::json& spec);  // null: none
  std::string apply(const std::string& s) const;
  bool empty() const { return steps_.empty(); }

 private:
  struct Step {
    enum Kind { kUnicode, kPrepend, kReplace } kind = kUnicode;
    int utf8proc_options = 0;           // kUnicode
    std::string text;                   // kPrepend: the prefix; kReplace: the content
    std::shared_ptr<Pattern> pattern;   // kReplace
  };
  void add(const std::string& path, const std::string& field, const nlohmann::json& spec);
  std::vector<Step> steps_;
};

// Pre-tokenizers: Split, ByteLevel, Digits, Punctuation, Metaspace, and Sequences of them.
class PreTokenizer {
 public:
  PreTokenizer(const std::string& path, const nlohmann::json& spec);  // null: the whole text
  // Appends the pre-tokens of one normalized section of the input; at_start: the section begins
  // the input (Metaspace's prepend_scheme "first"). Byte-level pre-tokens come out mapped to the
  // GPT-2 alphabet (one code point per byte), as the model's vocabulary spells them.
  void split(const std::string& section, bool at_start, std::vector<std::string>& out) const;
  bool byte_level() const { return byte_level_; }

 private:
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  struct Step {
    enum Kind { kSplit, kByteLevel, kDigits, kPunctuation, kMetaspace } kind = kSplit;
    std::shared_ptr<Pattern> pattern;  // kSplit; kByteLevel with use_regex
    Behavior behavior = Behavior::kIsolated;
    bool invert = false, individual_digits = false, add_prefix_space = false, split = true;
    std::string replacement;           // kMetaspace
    int prepend = 0;                   // kMetaspace: 0 never, 1 first, 2 always
  };
  void add(const std::string& path, const std::string& field, const nlohmann::json& spec);
  void apply(const Step& step, const std::string& piece, bool at_start, std::vector<std::string>& out) const;
  std::vector<Step> steps_;
  bool byte_level_ = false;
};

// Decodes one UTF-8 code point at s[i] (valid UTF-8 assumed); n: its length in bytes.
uint32_t utf8_at(const std::string& s, size_t i, int& n);
void append_utf8(uint32_t cp, std::string& out);
// Unicode White_Space (Rust's char::is_whitespace, which HF tokenizers uses).
bool is_unicode_whitespace(uint32_t cp);

}  // namespace fi
