// The BPE tokenizer of a tokenizer.json, as Hugging Face tokenizers runs it: added tokens matched
// first, then per section the normalizer, the pre-tokenizer and BPE by merge rank (byte-level as
// Llama 3, Qwen, DeepSeek; SentencePiece style with byte fallback as Llama 2, Mistral, Gemma).
// tokenizer_config.json beside it, when present, names BOS/EOS and gives the chat template.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/chat_format.h"
#include "model/text_steps.h"
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
  // The concatenated bytes of the tokens (may be invalid UTF-8 when a character is cut), less the
  // leading spaces the decoder strips (Llama 2's Strip). Throws on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;
  // One user message with the generation prompt, as tokenizer_config.json's chat_template renders
  // it (chat_format.h). Without a tokenizer_config.json, a tokenizer with Llama 3's header tokens
  // gets the Llama 3 format with the message verbatim; otherwise, or for a template not
  // recognized, this throws.
  std::vector<int32_t> encode_chat(const std::string& user_message) const;
  const ChatFormat& chat_format() const;  // throws as encode_chat

  const Vocab& vocab() const { return vocab_; }
  // tokenizer_config.json's bos_token/eos_token when given, else the family's (<|begin_of_text|>,
  // <s>, <bos>, <｜begin▁of▁sentence｜>; <|eot_id|>, <|im_end|>, <end_of_turn>, </s>, ...); -1 when none.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }

 private:
  struct Merge {
    int32_t rank, id;
  };
  struct Added {
    std::string content;  // as matched: raw, or normalized for a "normalized": true token
    int32_t id;
    bool lstrip, rstrip;
  };
  struct Section {
    std::string text;
    int32_t id;     // -1: text to tokenize
    bool at_start;  // the text begins the input
  };
  void load(const std::string& path);
  void load_model(const nlohmann::json& model);
  void load_added(const nlohmann::json& added);
  void load_config(const std::string& config_path);
  // An added token's id, else (unless added_only) a model.vocab token's; -1 when absent.
  int32_t find_token(const std::string& content, bool added_only = false) const;
  void split_added(const std::vector<Added> (&table)[256], const std::string& s, bool at_start,
                   std::vector<Section>& out) const;
  void encode_section(const std::string& text, bool at_start, std::vector<int32_t>& out) const;
  void bpe(const std::string& word, std::vector<int32_t>& out) const;

  std::string path_;
  Vocab vocab_;
  TokenDecoding decoding_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unordered_map<std::string, int32_t> token_id_;  // model.vocab as spelled in the file -> id
  std::unordered_map<uint64_t, Merge> merges_;         // (left id << 32 | right id) -> rank, result
  int32_t byte_token_[256];                            // <0xNN> ids for byte_fallback; -1 absent
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  int32_t unk_id_ = -1;
  std::vector<Added> raw_added_[256], normalized_added_[256];  // by first byte, longest first
  int32_t bos_id_ = -1, eos_id_ = -1;
  std::unique_ptr<ChatFormat> chat_;
  std::string chat_error_;  // why there is no chat format
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // pre-token -> ids
};

}  // namespace fi
