// Helpers shared by the `clamp` and `generate` subcommands: --prompt TEXT (tokenized, BOS first
// unless --no-bos), --chat (the model's chat template) or --prompt-ids; token text; MPI set-up.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/mpi_env.h"
#include "forward/forward.h"
#include "model/tokenizer.h"

namespace fi {

struct PromptArgs {
  std::string text, ids;
  bool chat = false, no_bos = false;
};

void add_prompt_options(CLI::App* cmd, PromptArgs& p);
// --backend cpu | cuda | auto of the forward pass (checked when the command line is parsed).
void add_backend_option(CLI::App* cmd, std::string& backend);
// The prompt's token ids; throws on invalid UTF-8, an empty prompt or a bad id list.
std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const PromptArgs& p, int64_t vocab_size);
// Printable text of a token id (a placeholder for ids past the tokenizer's vocabulary).
std::string token_text(const Tokenizer& tok, int32_t id);
// text with quotes, newlines and other control characters escaped, between double quotes.
std::string quoted(const std::string& text);
// Writes logits rows [rows, V] as raw little-endian float32 (the hidden --dump-logits option).
void dump_f32(const std::string& path, const std::vector<float>& data);
// Runs f between MPI init and finalize; an error already reported collectively exits 1.
int with_mpi(int* argc, char*** argv, const std::function<int(const Comms&)>& f);
// One stderr line: backend, load time and the layers of each pipeline stage.
void print_stages(const Forward& fwd, double load_seconds);

}  // namespace fi
