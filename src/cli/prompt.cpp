// Prompt tokenization and token display for `clamp` and `generate` (see prompt.h).
#include "cli/prompt.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "model/vocab.h"

namespace fi {

void add_prompt_options(CLI::App* cmd, PromptArgs& p) {
  cmd->add_option("--prompt", p.text, "prompt text (UTF-8); BOS is put first unless --no-bos");
  cmd->add_flag("--chat", p.chat, "render the prompt as one user message of the model's chat template (tokenizer_config.json)");
  cmd->add_flag("--no-bos", p.no_bos, "do not put the BOS token (e.g. <|begin_of_text|>) before a plain prompt");
  cmd->add_option("--prompt-ids", p.ids, "the prompt as comma-separated token ids instead of text");
}

void add_backend_option(CLI::App* cmd, std::string& backend) {
  cmd->add_option("--backend", backend, "cpu | cuda | auto (cuda when a GPU is usable); under "
                  "mpirun -np N the layers are split over the N ranks (a pipeline)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
}

std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const PromptArgs& p, int64_t vocab_size) {
  FI_CHECK(p.text.empty() != p.ids.empty(), "give exactly one of --prompt TEXT and --prompt-ids");
  std::vector<int32_t> ids;
  if (!p.ids.empty()) {
    FI_CHECK(!p.chat, "--chat needs --prompt TEXT, not --prompt-ids");
    std::stringstream ss(p.ids);
    for (std::string item; std::getline(ss, item, ',');) {
      char* end = nullptr;
      long v = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end || v < 0 || v >= vocab_size)
        FI_FAIL("--prompt-ids: '" + item + "' is not a token id in 0.." + std::to_string(vocab_size - 1));
      ids.push_back(int32_t(v));
    }
    return ids;
  }
  if (sanitize_utf8(p.text) != p.text) FI_FAIL("--prompt: the text is not valid UTF-8");
  ids = p.chat ? tok.encode_chat(p.text) : tok.encode(p.text, !p.no_bos && tok.bos_id() >= 0);
  FI_CHECK(!ids.empty(), "--prompt: the prompt has no tokens");
  for (int32_t id : ids)  // a tokenizer id past the LM-head (Gemma 3's <image_soft_token>)
    if (id >= vocab_size)
      FI_FAIL("--prompt: token '" + tok.vocab().text[size_t(id)] + "' (id " + std::to_string(id) +
              ") is past the model's vocab_size " + std::to_string(vocab_size));
  return ids;
}

std::string token_text(const Tokenizer& tok, int32_t id) {
  const Vocab& v = tok.vocab();
  if (id >= 0 && id < v.size()) return v.text[size_t(id)];
  return "<|id " + std::to_string(id) + "|>";
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

void dump_f32(const std::string& path, const std::vector<float>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * sizeof(float)));
  if (!out.good()) FI_FAIL(path + ": cannot write the logits");
}

int with_mpi(int* argc, char*** argv, const std::function<int(const Comms&)>& f) {
  MpiEnv mpi(argc, argv);
  Comms comms;
  try {
    return f(comms);
  } catch (const JobFailed&) {
    return 1;
  }
}

void print_stages(const Forward& fwd, double load_seconds) {
  std::string s;
  const std::vector<int64_t>& b = fwd.bounds();
  for (size_t i = 0; i + 1 < b.size(); ++i)
    s += (i ? " | " : "") + std::to_string(b[i]) + "-" + std::to_string(b[i + 1] - 1);
  std::fprintf(stderr, "flashinterp: forward on %s, %d stage%s (layers %s), loaded in %.2f s\n",
               fwd.backend(), fwd.stages(), fwd.stages() > 1 ? "s" : "", s.c_str(), load_seconds);
}

}  // namespace fi
