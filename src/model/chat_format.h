// The prompt of one user message with add_generation_prompt, for the chat templates of
// tokenizer_config.json recognized by their markers: Llama 3 (<|start_header_id|>), ChatML/Qwen
// (<|im_start|>), Gemma (<start_of_turn>), Mistral/Llama 2 ([INST] ... [/INST]), DeepSeek V3
// (<｜User｜>). The Jinja template itself is not run; the pieces are read from its text.
#pragma once
#include <string>

namespace fi {

struct ChatFormat {
  std::string name;            // llama3, chatml, gemma, inst, deepseek
  std::string prefix, suffix;  // the text before and after the message (BOS included)
  bool trim = false;           // the template trims the message (Jinja's trim: Python str.strip())
  std::string render(const std::string& message) const;
};

// From the config's chat_template; bos is the config's bos_token ("" when null). Throws naming
// the file when there is no template or it is not one of the recognized kinds.
ChatFormat chat_format_from_template(const std::string& config_path, const std::string& chat_template,
                                     const std::string& bos);

// Llama 3's format with the message verbatim: the fallback for a Llama 3 tokenizer.json that has
// no tokenizer_config.json beside it (as the demo model).
ChatFormat llama3_chat_format(const std::string& bos);

// Python's str.strip(): leading and trailing characters for which str.isspace() is true.
std::string python_strip(const std::string& s);

}  // namespace fi
