// The vocabulary of tokenizer.json: each id's exact bytes (byte-level decoding of Ġ, Ċ, ...),
// its printable text (invalid UTF-8 -> U+FFFD) and whether it is an added/special token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fi {

struct Vocab {
  std::vector<std::string> bytes;  // [V] exact token bytes
  std::vector<std::string> text;   // [V] printable UTF-8
  std::vector<uint8_t> special;    // [V] 1 for added tokens
  int64_t size() const { return int64_t(bytes.size()); }
  int64_t find_bytes(const std::string& b) const;  // -1 when absent
};

// Loads tokenizer.json; ids missing up to vocab_size (padding rows) get empty bytes and text
// "<|unused_N|>"-style placeholders. vocab_size 0 means: exactly the ids in the file.
Vocab load_vocab(const std::string& tokenizer_json_path, int64_t vocab_size = 0);

// GPT-2 byte-level alphabet: code point -> byte (-1 when not in the alphabet).
int byte_level_decode_cp(uint32_t cp);
uint32_t byte_level_encode_byte(uint8_t b);
// Replace invalid UTF-8 sequences with U+FFFD (one per maximal invalid subpart).
std::string sanitize_utf8(const std::string& s);

}  // namespace fi
