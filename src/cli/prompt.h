// Prompt and token-text helpers shared by the `clamp` and `generate` subcommands: --prompt TEXT
// (tokenized, BOS first unless --no-bos), --chat (Llama 3.1 Instruct format) or --prompt-ids.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace fi {

struct PromptArgs {
  std::string text, ids;
  bool chat = false, no_bos = false;
};

void add_prompt_options(CLI::App* cmd, PromptArgs& p);
// The prompt's token ids; throws on invalid UTF-8, an empty prompt or a bad id list.
std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const PromptArgs& p, int64_t vocab_size);
// Printable text of a token id (a placeholder for ids past the tokenizer's vocabulary).
std::string token_text(const Tokenizer& tok, int32_t id);
// text with quotes, newlines and other control characters escaped, between double quotes.
std::string quoted(const std::string& text);
// Writes logits rows [rows, V] as raw little-endian float32 (the hidden --dump-logits option).
void dump_f32(const std::string& path, const std::vector<float>& data);

}  // namespace fi
