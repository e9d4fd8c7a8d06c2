// `flashinterp demo-model`: a small checkpoint in the real Hugging Face Llama layout with the
// real Llama 3.1 tokenizer and planted concept neurons (listed in planted.json), seeded.
#pragma once
#include <cstdint>
#include <string>

namespace fi {

struct DemoOptions {
  std::string out, dtype = "bf16", tokenizer;
  int64_t layers = 4, hidden = 256, intermediate = 1024, heads = 4, kv_heads = 2;
  bool tied = false, overwrite = false;
  int shards = 1;
  uint64_t seed = 1234;
  std::string variant = "base";  // reserved for a fine-tune-like variant
};

// The tokenizer.json to use: the option, else $FLASHINTERP_TOKENIZER, else the set-up cache.
std::string default_tokenizer_path(const std::string& option);
void write_demo_model(const DemoOptions& o);

}  // namespace fi
