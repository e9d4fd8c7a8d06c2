// Chat templates recognized by their markers (see chat_format.h). Each kind's prompt is what its
// template renders for messages = [{role: user, content: m}] with add_generation_prompt = true
// and no system message, tools or extra variables; a variant whose output would differ (a Llama
// 3.1 system block, ChatML's default system prompt kept, an [INST] layout not seen) is read from
// the template text or refused.
#include "model/chat_format.h"

#include <regex>

#include "common/error.h"
#include "model/text_steps.h"

namespace fi {
namespace {

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// A Jinja string literal's body -> its text (the escapes templates use: \n, \t, \\, \', \").
std::string unescape(const std::string& body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    char c = body[++i];
    out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
  }
  return out;
}

bool trims_content(const std::string& t) {
  static const std::regex re(R"(content'?\]?\s*\|\s*trim)");
  return std::regex_search(t, re);
}

// Whether the template writes bos_token itself ({{ bos_token }} or bos_token + ...).
bool writes_bos(const std::string& t) { return has(t, "bos_token"); }

}  // namespace

std::string python_strip(const std::string& s) {
  auto space = [](uint32_t cp) {  // str.isspace(): bidi class WS, B or S, or category Zs
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
  };
  size_t begin = 0, end = 0;  // the first and one past the last non-space character
  for (size_t i = 0; i < s.size();) {
    int n = 1;
    uint32_t cp = utf8_at(s, i, n);
    if (!space(cp)) {
      if (end == 0) begin = i;
      end = i + n;
    }
    i += n;
  }
  return end == 0 ? std::string() : s.substr(begin, end - begin);
}

std::string ChatFormat::render(const std::string& message) const {
  return prefix + (trim ? python_strip(message) : message) + suffix;
}

ChatFormat llama3_chat_format(const std::string& bos) {
  return {"llama3", bos + "<|start_header_id|>user<|end_header_id|>\n\n",
          "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", false};
}

ChatFormat chat_format_from_template(const std::string& path, const std::string& t, const std::string& bos) {
  if (t.empty()) FI_FAIL(path + ": no chat_template, so no --chat format");
  const std::string b = writes_bos(t) ? bos : "";
  if (has(t, "<|start_header_id|>")) {
    if (has(t, "Cutting Knowledge Date"))
      FI_FAIL(path + ": chat_template is Llama 3.1's with a dated system block, which is not supported yet");
    ChatFormat f = llama3_chat_format(b);
    f.trim = trims_content(t);
    return f;
  }
  if (has(t, "<|im_start|>")) {
    // A complete system turn written as one literal is the template's default system prompt
    // (Qwen 2.5: "You are Qwen, created by Alibaba Cloud. ..."), rendered when none is given.
    static const std::regex sys(R"('(<\|im_start\|>system\\n(?:[^'\\]|\\.)*<\|im_end\|>\\n)')");
    std::smatch m;
    std::string system = std::regex_search(t, m, sys) ? unescape(m[1].str()) : "";
    return {"chatml", b + system + "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", trims_content(t)};
  }
  if (has(t, "<start_of_turn>")) {
    return {"gemma", b + "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n", trims_content(t)};
  }
  if (has(t, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>")) {  // <｜User｜>
    return {"deepseek", b + "<\xEF\xBD\x9CUser\xEF\xBD\x9C>", "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>", trims_content(t)};
  }
  if (has(t, "[INST]")) {
    // '[INST] ' + message['content'] (| trim or .strip()) + ' [/INST]': the literals around it.
    static const std::regex inst(
        R"('(\[INST\](?:[^'\\]|\\.)*)'\s*\+\s*(?:message\['content'\]|message\.content|content)\s*(\|\s*trim|\.strip\(\))?\s*\+\s*'((?:[^'\\]|\\.)*\[/INST\](?:[^'\\]|\\.)*)')");
    std::smatch m;
    if (!std::regex_search(t, m, inst))
      FI_FAIL(path + ": chat_template has [INST] but not in the layout '[INST] ' + message['content'] + ' [/INST]'");
    return {"inst", b + unescape(m[1].str()), unescape(m[3].str()), m[2].matched};
  }
  FI_FAIL(path + ": chat_template is not one of the recognized kinds (markers <|start_header_id|>, <|im_start|>, "
          "<start_of_turn>, [INST], <\xEF\xBD\x9CUser\xEF\xBD\x9C>)");
}

}  // namespace fi
