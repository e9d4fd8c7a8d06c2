// Chat templates recognized by their markers (see chat_format.h). Each kind's prompt is what its
// template renders for messages = [{role: user, content: m}] with add_generation_prompt = true
// and no system message, tools or extra variables; a variant whose output would differ (a Llama
// 3.1 system block, ChatML's default system prompt kept, an [INST] layout not seen) is read from
// the template text or refused.
#include "model/chat_format.h"

#include <cstring>
#include <vector>


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

// The body of the Jinja string literal that opens at t[q] (a quote), and the index past its
// closing quote; npos when it does not close.
size_t literal_end(const std::string& t, size_t q, std::string& body) {
  const char quote = t[q];
  for (size_t i = q + 1; i < t.size(); ++i) {
    if (t[i] == '\\') {
      ++i;
    } else if (t[i] == quote) {
      body = t.substr(q + 1, i - q - 1);
      return i + 1;
    }
  }
  return std::string::npos;
}

size_t skip_space(const std::string& t, size_t i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\t')) ++i;
  return i;
}

// Whether t at i starts with word (then i moves past it).
bool eat(const std::string& t, size_t& i, const char* word) {
  size_t n = std::strlen(word);
  if (t.compare(i, n, word) != 0) return false;
  i += n;
  return true;
}

const char* const kContent[] = {"message['content']", "message[\"content\"]", "message.content", "content"};

// The message content is filtered through trim: "content'] | trim", "message.content|trim", ...
bool trims_content(const std::string& t) {
  for (const char* c : kContent) {
    for (size_t at = t.find(c); at != std::string::npos; at = t.find(c, at + 1)) {
      size_t i = skip_space(t, at + std::strlen(c));
      if (eat(t, i, "|") && (i = skip_space(t, i), eat(t, i, "trim"))) return true;
    }
  }
  return false;
}

// Every complete string literal of t whose body starts with `start`, in order.
std::vector<std::string> literals_starting(const std::string& t, const std::string& start) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 1 < t.size(); ++i) {
    if ((t[i] != '\'' && t[i] != '"') || t.compare(i + 1, start.size(), start) != 0) continue;
    std::string body;
    size_t end = literal_end(t, i, body);
    if (end == std::string::npos) break;
    out.push_back(body);
    i = end - 1;
  }
  return out;
}

// '[INST] ' + <content> [| trim | .strip()] + ' [/INST]': the literals around the content.
bool inst_layout(const std::string& t, std::string& before, std::string& after, bool& trim) {
  for (size_t q = t.find("[INST]"); q != std::string::npos; q = t.find("[INST]", q + 1)) {
    if (q == 0 || (t[q - 1] != '\'' && t[q - 1] != '"')) continue;
    size_t i = literal_end(t, q - 1, before);
    if (i == std::string::npos) return false;
    i = skip_space(t, i);
    if (!eat(t, i, "+")) continue;
    i = skip_space(t, i);
    bool content = false;
    for (const char* c : kContent) content = content || eat(t, i, c);
    if (!content) continue;
    i = skip_space(t, i);
    trim = eat(t, i, ".strip()");
    if (!trim && eat(t, i, "|")) {
      i = skip_space(t, i);
      if (!eat(t, i, "trim")) continue;
      trim = true;
    }
    i = skip_space(t, i);
    if (!eat(t, i, "+")) continue;
    i = skip_space(t, i);
    if (i >= t.size() || (t[i] != '\'' && t[i] != '"') || literal_end(t, i, after) == std::string::npos ||
        after.find("[/INST]") == std::string::npos)
      continue;
    return true;
  }
  return false;
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
    std::string system;
    for (const std::string& body : literals_starting(t, "<|im_start|>system")) {
      const std::string text = unescape(body);
      if (text.compare(0, 19, "<|im_start|>system\n") == 0 && text.size() > 31 &&
          text.compare(text.size() - 11, 11, "<|im_end|>\n") == 0) {
        system = text;
        break;
      }
    }
    return {"chatml", b + system + "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", trims_content(t)};
  }
  if (has(t, "<start_of_turn>")) {
    return {"gemma", b + "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n", trims_content(t)};
  }
  if (has(t, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>")) {  // <｜User｜>
    return {"deepseek", b + "<\xEF\xBD\x9CUser\xEF\xBD\x9C>", "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>", trims_content(t)};
  }
  if (has(t, "[INST]")) {
    std::string before, after;
    bool trim = false;
    if (!inst_layout(t, before, after, trim))
      FI_FAIL(path + ": chat_template has [INST] but not in the layout '[INST] ' + message['content'] + ' [/INST]'");
    return {"inst", b + unescape(before), unescape(after), trim};
  }
  FI_FAIL(path + ": chat_template is not one of the recognized kinds (markers <|start_header_id|>, <|im_start|>, "
          "<start_of_turn>, [INST], <\xEF\xBD\x9CUser\xEF\xBD\x9C>)");
}

}  // namespace fi
