// The vocabulary of tokenizer.json: each id's exact bytes (byte-level decoding of Ġ, Ċ, ...; or
// SentencePiece's ▁ -> space and <0xNN> -> byte NN), its printable text (invalid UTF-8 -> U+FFFD)
// and whether it is an added/special token.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace fi {

struct Vocab {
  std::vector<std::string> bytes;  // [V] exact token bytes
  std::vector<std::string> text;   // [V] printable UTF-8
  std::vector<uint8_t> special;    // [V] 1 for added tokens
  int64_t padding = 0;             // ids < vocab_size the tokenizer lacks (placeholders)
  int64_t beyond = 0;              // distinct tokenizer ids >= vocab_size: not in the LM-head, dropped
  int64_t tokenizer_max_id = -1;   // the largest id in the file
  int64_t size() const { return int64_t(bytes.size()); }
  int64_t find_bytes(const std::string& b) const;  // -1 when absent
};

// How a tokenizer.json's token strings become bytes, read from its decoder as HF tokenizers
// decodes: ByteLevel (GPT-2 alphabet), or SentencePiece style (Replace ▁ -> " " or Metaspace,
// ByteFallback, Fuse, Strip). No decoder at all means byte-level (Llama 3 / GPT-2 files).
// Any other decoder is refused naming the file and the field.
struct TokenDecoding {
  bool byte_level = true;
  std::string space_marker;    // SentencePiece: this string (U+2581) decodes to a space
  bool byte_fallback = false;  // SentencePiece: the token <0xNN> is the byte NN
  int strip_start = 0;         // spaces the decoder strips from the start of a whole decoded text
};
TokenDecoding token_decoding(const std::string& path, const nlohmann::json& tokenizer_json);

// Loads tokenizer.json; ids missing up to vocab_size (padding rows) get empty bytes and text
// "<|unused_N|>"-style placeholders. Ids >= vocab_size (e.g. Gemma 3's image token) are dropped
// and counted in `beyond`. vocab_size 0 means: exactly the ids in the file, contiguous.
// model.vocab entries are decoded per token_decoding; added tokens not in model.vocab are raw
// UTF-8, and so is a byte-level model.vocab entry outside the alphabet that is also an added
// token (DeepSeek's <｜begin▁of▁sentence｜>).
Vocab load_vocab(const std::string& tokenizer_json_path, int64_t vocab_size = 0);

// GPT-2 byte-level alphabet: code point -> byte (-1 when not in the alphabet).
int byte_level_decode_cp(uint32_t cp);
uint32_t byte_level_encode_byte(uint8_t b);
// Replace invalid UTF-8 sequences with U+FFFD (one per maximal invalid subpart).
std::string sanitize_utf8(const std::string& s);

}  // namespace fi
