// The Llama 3 byte-level BPE tokenizer of a tokenizer.json: added tokens matched first, the Split
// pre-tokenizer regex (PCRE2, UTF + UCP), GPT-2 byte mapping, BPE by merge rank with ignore_merges.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/vocab.h"

namespace fi {

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& tokenizer_json_path);  // throws fi::Error naming the file
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Raw bytes in. Invalid UTF-8 is first replaced by U+FFFD (one per maximal invalid subpart, as
  // TextDecoder and Rust's from_utf8_lossy do), since HF tokenizers only ever see valid strings.
  // Added/special tokens written in the text (e.g. "<|eot_id|>") become their ids. No BOS unless
  // add_bos (the JS reference with add_special_tokens: false gives none).
  std::vector<int32_t> encode(const std::string& text, bool add_bos = false) const;
  // The concatenated bytes of the tokens (may be invalid UTF-8 when a character is cut). Throws on
  // an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;
  // Llama 3.1 Instruct, message verbatim (not trimmed):
  // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{msg}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
  std::vector<int32_t> encode_chat(const std::string& user_message) const;

  const Vocab& vocab() const { return vocab_; }
  int32_t bos_id() const { return bos_id_; }  // <|begin_of_text|> (128000); -1 when absent
  // <|eot_id|> (end of an Instruct turn) when present, else <|end_of_text|>; -1 when neither.
  int32_t eos_id() const { return eos_id_; }

 private:
  struct Regex;  // the compiled PCRE2 pattern
  struct Merge {
    int32_t rank, id;
  };
  void encode_piece(const std::string& piece, std::vector<int32_t>& out) const;  // no added tokens
  void bpe(const std::string& pretoken, std::vector<int32_t>& out) const;

  std::string path_;
  Vocab vocab_;
  std::unordered_map<std::string, int32_t> token_id_;  // model vocabulary: exact bytes -> id
  std::unordered_map<uint64_t, Merge> merges_;         // (left id << 32 | right id) -> rank, result
  int32_t byte_id_[256];                               // the one-byte tokens
  std::vector<std::pair<std::string, int32_t>> added_[256];  // by first byte, longest first
  bool ignore_merges_ = false;
  std::unique_ptr<Regex> regex_;
  int32_t bos_id_ = -1, eos_id_ = -1;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // pre-token -> ids
};

}  // namespace fi
