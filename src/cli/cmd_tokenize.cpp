// `flashinterp tokenize --model DIR [--chat] (TEXT | --file F)`: token ids of DIR/tokenizer.json,
// space-separated; with --file one output line per input line (raw bytes, newline excluded).
// --chat: the chat template of DIR/tokenizer_config.json (see model/chat_format.h).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include "cli/commands.h"
#include "common/error.h"
#include "model/tokenizer.h"

namespace fi {
namespace {

struct TokenizeOptions {
  std::string model, text, file;
  bool chat = false, null_data = false;
};

std::string read_all(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  std::ifstream in(path, std::ios::binary);
  if (!in) FI_FAIL(path + ": cannot open");
  std::string s(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) FI_FAIL(path + ": read failed");
  return s;
}

void append_ids(const std::vector<int32_t>& ids, std::string& out) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  out += '\n';
}

int run_tokenize(const TokenizeOptions& o) {
  Tokenizer tok(o.model + "/tokenizer.json");  // only the tokenizer: no weights needed
  auto ids_of = [&](const std::string& t) { return o.chat ? tok.encode_chat(t) : tok.encode(t); };
  std::string out;
  if (o.file.empty()) {
    append_ids(ids_of(o.text), out);
  } else {
    const std::string data = read_all(o.file);
    const char sep = o.null_data ? '\0' : '\n';
    size_t start = 0;
    while (start < data.size()) {  // a final record without its separator still counts
      size_t end = data.find(sep, start);
      if (end == std::string::npos) end = data.size();
      append_ids(ids_of(data.substr(start, end - start)), out);
      start = end + 1;
    }
  }
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0)
    FI_FAIL("writing the token ids to stdout failed");
  return 0;
}

}  // namespace

std::function<int()> add_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand(
      "tokenize", "Print the token ids of a text (no BOS; --chat renders it as one user message of the "
                  "chat template in tokenizer_config.json, BOS included when the template writes it). "
                  "Invalid UTF-8 becomes U+FFFD.");
  cmd->add_option("--model", o->model, "model directory (only its tokenizer.json and tokenizer_config.json are read)")->required();
  cmd->add_flag("--chat", o->chat, "render each text as one user message of the model's chat template (Llama 3, ChatML/Qwen, Gemma, [INST], DeepSeek)");
  auto* text = cmd->add_option("text", o->text, "the text to tokenize");
  auto* file = cmd->add_option("--file", o->file, "tokenize each line of this file ('-' for stdin)");
  cmd->add_flag("-z,--null-data", o->null_data, "with --file: records end with a NUL byte, not a newline")
      ->needs(file);
  text->excludes(file);
  cmd->callback([text, file] {
    if (text->count() == 0 && file->count() == 0) throw CLI::RequiredError("TEXT or --file");
  });
  return [o] { return run_tokenize(*o); };
}

}  // namespace fi
