// Vocabulary loading: the byte-level alphabet against GPT-2's own formulation, UTF-8 sanitising
// (maximal subparts), crafted tokenizer.json files, and the real Llama 3.1 tokenizer when present.
#include "model/vocab.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"

namespace fs = std::filesystem;
using fi::Vocab;

namespace {

const std::string R = "\xEF\xBF\xBD";  // U+FFFD

// One folder per process, removed at exit; one subfolder per test.
struct TempRoot {
  fs::path path = fs::temp_directory_path() / ("fi_test_vocab_" + std::to_string(::getpid()));
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
} temp_root;

fs::path temp_dir() {
  fs::path d = temp_root.path / ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string write_file(const std::string& text) {
  fs::path p = temp_dir() / "tokenizer.json";
  std::ofstream(p) << text;
  return p.string();
}

// Runs f, expects an fi::Error whose message contains every one of parts.
template <class F>
void expect_error(F f, std::vector<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const fi::Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "message: " << e.what() << "\nmissing: " << p;
  }
}

// GPT-2's bytes_to_unicode written as in the original encoder.py: the printable bytes first,
// then every other byte, in order, gets the next code point from 256.
std::vector<std::pair<int, uint32_t>> gpt2_table() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<uint32_t> cs(bs.begin(), bs.end());
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::vector<std::pair<int, uint32_t>> t;
  for (size_t i = 0; i < bs.size(); ++i) t.push_back({bs[i], cs[i]});
  return t;
}

// Independent UTF-8 validity: decode by the textbook formula, then reject overlongs,
// surrogates and values past U+10FFFF.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    uint8_t c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (int k = 1; k < n; ++k) {
      uint8_t d = s[i + k];
      if ((d & 0xC0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += n;
  }
  return true;
}

}  // namespace

TEST(ByteLevel, MatchesGpt2Formulation) {
  auto table = gpt2_table();
  ASSERT_EQ(table.size(), 256u);
  std::set<uint32_t> seen;
  for (auto [b, cp] : table) {
    EXPECT_EQ(fi::byte_level_encode_byte(uint8_t(b)), cp) << "byte " << b;
    EXPECT_EQ(fi::byte_level_decode_cp(cp), b) << "cp " << cp;
    seen.insert(cp);
  }
  // Every code point outside the alphabet decodes to -1.
  for (uint32_t cp = 0; cp < 0x800; ++cp)
    if (!seen.count(cp)) {
      EXPECT_EQ(fi::byte_level_decode_cp(cp), -1) << "cp " << cp;
    }
  EXPECT_EQ(fi::byte_level_decode_cp(0x10FFFF), -1);
  EXPECT_EQ(fi::byte_level_decode_cp(0xFFFFFFFFu), -1);
}

TEST(ByteLevel, KnownCodePoints) {
  EXPECT_EQ(fi::byte_level_decode_cp(0x0120), 0x20);  // Ġ
  EXPECT_EQ(fi::byte_level_decode_cp(0x010A), 0x0A);  // Ċ
  EXPECT_EQ(fi::byte_level_decode_cp(0x0109), 0x09);  // ĉ
  EXPECT_EQ(fi::byte_level_decode_cp(0x010D), 0x0D);  // č
  EXPECT_EQ(fi::byte_level_decode_cp('!'), 0x21);
  EXPECT_EQ(fi::byte_level_decode_cp(0x0100), 0x00);  // Ā
  EXPECT_EQ(fi::byte_level_decode_cp(0x0121), 0x7F);  // ġ
  EXPECT_EQ(fi::byte_level_decode_cp(0x0122), 0x80);  // Ģ
  EXPECT_EQ(fi::byte_level_decode_cp(0x0142), 0xA0);  // ł
  EXPECT_EQ(fi::byte_level_decode_cp(0x0143), 0xAD);  // Ń
  EXPECT_EQ(fi::byte_level_decode_cp(0x00E9), 0xE9);  // é stands for itself
  EXPECT_EQ(fi::byte_level_decode_cp(' '), -1);
  EXPECT_EQ(fi::byte_level_decode_cp(0x00AD), -1);
  EXPECT_EQ(fi::byte_level_decode_cp(0x0144), -1);
  EXPECT_EQ(fi::byte_level_encode_byte(' '), 0x0120u);
  EXPECT_EQ(fi::byte_level_encode_byte('\n'), 0x010Au);
  EXPECT_EQ(fi::byte_level_encode_byte(0xFF), 0xFFu);
}

TEST(SanitizeUtf8, ValidTextUnchanged) {
  std::string s = "plain a\tb\x01\x7f\n";  // control characters stay
  EXPECT_EQ(fi::sanitize_utf8(s), s);
  s = "\xC3\xA9 \xE4\xBD\xA0 \xF0\x9F\x98\x80 \xEF\xBF\xBD \xF4\x8F\xBF\xBF \xED\x9F\xBF";
  EXPECT_EQ(fi::sanitize_utf8(s), s);
  EXPECT_EQ(fi::sanitize_utf8(""), "");
  EXPECT_EQ(fi::sanitize_utf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(SanitizeUtf8, Truncated) {
  EXPECT_EQ(fi::sanitize_utf8("\xC3"), R);
  EXPECT_EQ(fi::sanitize_utf8("\xE4\xBD"), R);
  EXPECT_EQ(fi::sanitize_utf8("\xE4\xBD" "a"), R + "a");
  EXPECT_EQ(fi::sanitize_utf8("\xF0\x9F\x98"), R);
  EXPECT_EQ(fi::sanitize_utf8("\xF0\x9F"), R);
  EXPECT_EQ(fi::sanitize_utf8(" \xE9"), " " + R);
  EXPECT_EQ(fi::sanitize_utf8("\xF0\x9F\x98\xF0\x9F\x98\x80"), R + "\xF0\x9F\x98\x80");
}

TEST(SanitizeUtf8, InvalidBytes) {
  EXPECT_EQ(fi::sanitize_utf8("\x80"), R);
  EXPECT_EQ(fi::sanitize_utf8("\x80\xBF"), R + R);
  EXPECT_EQ(fi::sanitize_utf8("\xC0\x80"), R + R);          // overlong NUL
  EXPECT_EQ(fi::sanitize_utf8("\xC1\xBF"), R + R);          // overlong
  EXPECT_EQ(fi::sanitize_utf8("\xE0\x80\x80"), R + R + R);  // overlong 3-byte
  EXPECT_EQ(fi::sanitize_utf8("\xF0\x80\x80\x80"), R + R + R + R);
  EXPECT_EQ(fi::sanitize_utf8("\xED\xA0\x80"), R + R + R);  // surrogate U+D800
  EXPECT_EQ(fi::sanitize_utf8("\xED\xBF\xBF"), R + R + R);  // surrogate U+DFFF
  EXPECT_EQ(fi::sanitize_utf8("\xF4\x90\x80\x80"), R + R + R + R);  // past U+10FFFF
  for (int b = 0xF5; b <= 0xFF; ++b) EXPECT_EQ(fi::sanitize_utf8(std::string(1, char(b))), R) << b;
  EXPECT_EQ(fi::sanitize_utf8("\xF5\x80\x80\x80"), R + R + R + R);
  EXPECT_EQ(fi::sanitize_utf8("\xFF" "a\xFE"), R + "a" + R);
}

// The Unicode Standard's worked example (chapter 3, "U+FFFD Substitution of Maximal Subparts").
TEST(SanitizeUtf8, UnicodeStandardExample) {
  std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  EXPECT_EQ(fi::sanitize_utf8(in), "a" + R + R + R + "b" + R + "c" + R + R + "d");
}

// Exhaustive over all 1- and 2-byte strings and all 3-byte strings with a 3-byte lead:
// valid input is unchanged, invalid input changes, and the output is always valid.
TEST(SanitizeUtf8, ExhaustiveAgainstIndependentValidator) {
  auto check = [](const std::string& s) {
    std::string out = fi::sanitize_utf8(s);
    bool ok = valid_utf8(s);
    if (ok != (out == s) || !valid_utf8(out)) {
      ADD_FAILURE() << "input bytes of length " << s.size() << " first " << int(uint8_t(s[0]));
      return false;
    }
    return true;
  };
  for (int a = 0; a < 256; ++a) {
    if (!check(std::string(1, char(a)))) return;
    for (int b = 0; b < 256; ++b) {
      if (!check(std::string{char(a), char(b)})) return;
      if (a >= 0xE0 && a <= 0xEF)
        for (int c = 0; c < 256; ++c)
          if (!check(std::string{char(a), char(b), char(c)})) return;
    }
  }
}

// ---- crafted tokenizer.json ---------------------------------------------------------------

const char* kSmall = R"({
  "added_tokens": [
    {"id": 6, "content": "<|bos|>", "special": true},
    {"id": 7, "content": "h\u00e9", "special": false}
  ],
  "model": {"type": "BPE", "vocab": {
    "!": 0, "\u0120a": 1, "\u010a": 2, "\u00c3\u00a9": 3, "\u00c3": 4, "\u0100\u0143\u0121": 5
  }}
})";

TEST(LoadVocab, Crafted) {
  std::string path = write_file(kSmall);
  Vocab v = fi::load_vocab(path);
  ASSERT_EQ(v.size(), 8);
  ASSERT_EQ(v.text.size(), 8u);
  ASSERT_EQ(v.special.size(), 8u);
  EXPECT_EQ(v.bytes[0], "!");
  EXPECT_EQ(v.bytes[1], " a");
  EXPECT_EQ(v.bytes[2], "\n");
  EXPECT_EQ(v.bytes[3], "\xC3\xA9");
  EXPECT_EQ(v.bytes[4], "\xC3");
  EXPECT_EQ(v.bytes[5], std::string("\x00\xAD\x7F", 3));
  EXPECT_EQ(v.bytes[6], "<|bos|>");
  EXPECT_EQ(v.bytes[7], "h\xC3\xA9");  // added tokens are raw UTF-8, not byte-level
  EXPECT_EQ(v.text[1], " a");
  EXPECT_EQ(v.text[2], "\n");
  EXPECT_EQ(v.text[3], "\xC3\xA9");
  EXPECT_EQ(v.text[4], R);
  EXPECT_EQ(v.text[5], std::string("\x00", 1) + R + "\x7F");
  EXPECT_EQ(v.text[6], "<|bos|>");
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v.special[i], 0) << i;
  EXPECT_EQ(v.special[6], 1);
  EXPECT_EQ(v.special[7], 1);  // every added token counts as special
  EXPECT_EQ(v.find_bytes(" a"), 1);
  EXPECT_EQ(v.find_bytes("<|bos|>"), 6);
  EXPECT_EQ(v.find_bytes("zz"), -1);
}

TEST(LoadVocab, PaddingRows) {
  std::string path = write_file(kSmall);
  Vocab v = fi::load_vocab(path, 10);
  ASSERT_EQ(v.size(), 10);
  ASSERT_EQ(v.text.size(), 10u);
  EXPECT_EQ(v.bytes[8], "");
  EXPECT_EQ(v.text[8], "<|unused_8|>");
  EXPECT_EQ(v.text[9], "<|unused_9|>");
  EXPECT_EQ(v.special[9], 1);
  EXPECT_EQ(v.bytes[1], " a");
  EXPECT_EQ(fi::load_vocab(path, 8).size(), 8);
}

// Ids past the LM-head (Gemma 3's image token) are dropped and counted, not fatal.
TEST(LoadVocab, IdBeyondVocabSizeIsDroppedAndCounted) {
  std::string path = write_file(kSmall);
  Vocab v = fi::load_vocab(path, 7);
  ASSERT_EQ(v.size(), 7);
  EXPECT_EQ(v.beyond, 1);
  EXPECT_EQ(v.padding, 0);
  EXPECT_EQ(v.tokenizer_max_id, 7);
  EXPECT_EQ(v.bytes[6], "<|bos|>");
  Vocab w = fi::load_vocab(path, 5);
  EXPECT_EQ(w.beyond, 3);
  EXPECT_EQ(w.size(), 5);
  Vocab exact = fi::load_vocab(path);
  EXPECT_EQ(exact.beyond, 0);
  EXPECT_EQ(exact.padding, 0);
  EXPECT_EQ(exact.tokenizer_max_id, 7);
  EXPECT_EQ(fi::load_vocab(path, 10).padding, 2);
  expect_error([&] { fi::load_vocab(path, -1); }, {path, "negative"});
}

// SentencePiece style, as Llama 2 / Mistral / Gemma: the decoder says ▁ is a space and <0xNN> a byte.
TEST(LoadVocab, SentencePieceDecoder) {
  std::string path = write_file(R"({"added_tokens": [{"id": 0, "content": "<s>"}, {"id": 6, "content": "\u2581raw\u2581"}],
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "byte_fallback": true,
      "vocab": {"<s>": 0, "\u2581the": 1, "<0x0A>": 2, "<0xE9>": 3, "a\u2581\u2581b": 4, "<0x0a>x": 5}, "merges": []}})");
  Vocab v = fi::load_vocab(path);
  ASSERT_EQ(v.size(), 7);
  EXPECT_EQ(v.bytes[0], "<s>");
  EXPECT_EQ(v.bytes[1], " the");
  EXPECT_EQ(v.bytes[2], "\n");
  EXPECT_EQ(v.bytes[3], "\xE9");
  EXPECT_EQ(v.text[3], R);
  EXPECT_EQ(v.bytes[4], "a  b");
  EXPECT_EQ(v.bytes[5], "<0x0a>x");  // not a byte token
  EXPECT_EQ(v.bytes[6], "\xE2\x96\x81raw\xE2\x96\x81");  // an added token not in model.vocab: raw
  EXPECT_EQ(v.special[0], 1);
  EXPECT_EQ(v.special[1], 0);
  fi::TokenDecoding d = fi::token_decoding(path, nlohmann::json::parse(std::ifstream(path)));
  EXPECT_FALSE(d.byte_level);
  EXPECT_TRUE(d.byte_fallback);
  EXPECT_EQ(d.strip_start, 1);
  // Metaspace decoder (Mistral-style files), no ByteFallback: <0x0A> stays text.
  path = write_file(R"({"decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"},
    "model": {"vocab": {"\u2581a": 0, "<0x0A>": 1}}})");
  v = fi::load_vocab(path);
  EXPECT_EQ(v.bytes[0], " a");
  EXPECT_EQ(v.bytes[1], "<0x0A>");
}

TEST(LoadVocab, ByteLevelEntryOutsideTheAlphabetThatIsAnAddedTokenIsRaw) {  // DeepSeek V3's specials
  std::string path = write_file(R"({"added_tokens": [{"id": 1, "content": "<\uff5cbegin\u2581of\uff5c>"}],
    "decoder": {"type": "ByteLevel"}, "model": {"vocab": {"\u0120a": 0, "<\uff5cbegin\u2581of\uff5c>": 1}}})");
  Vocab v = fi::load_vocab(path);
  EXPECT_EQ(v.bytes[0], " a");
  EXPECT_EQ(v.bytes[1], "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xEF\xBD\x9C>");
  EXPECT_EQ(v.special[1], 1);
}

TEST(LoadVocab, UnsupportedDecoderNamesTheField) {
  std::string p = write_file(R"({"decoder": {"type": "WordPiece"}, "model": {"vocab": {"a": 0}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "decoder.type", "WordPiece"});
  p = write_file(R"({"decoder": {"type": "Sequence", "decoders": [{"type": "CTC"}]}, "model": {"vocab": {"a": 0}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "decoder.decoders[0].type", "CTC"});
  p = write_file(R"({"decoder": {"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Strip", "content": " ",
    "start": 0, "stop": 1}]}, "model": {"vocab": {"a": 0}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "decoder.decoders[1]", "start only"});
}

TEST(LoadVocab, AddedTokenRestatingVocabEntry) {
  std::string path = write_file(R"({"added_tokens": [{"id": 1, "content": "<s>"}],
                                    "model": {"vocab": {"a": 0, "<s>": 1}}})");
  Vocab v = fi::load_vocab(path);
  ASSERT_EQ(v.size(), 2);
  EXPECT_EQ(v.bytes[1], "<s>");
  EXPECT_EQ(v.special[1], 1);
  EXPECT_EQ(v.special[0], 0);
}

TEST(LoadVocab, Errors) {
  std::string p;
  p = write_file(R"({"model": {"vocab": {"a": 0, "b": 0}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "id 0", "given twice"});
  p = write_file(R"({"added_tokens": [{"id": 1, "content": "<x>"}], "model": {"vocab": {"a": 0, "b": 1}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "id 1", "'b'", "'<x>'"});
  p = write_file(R"({"added_tokens": [{"id": 1, "content": "<x>"}, {"id": 1, "content": "<x>"}],
                     "model": {"vocab": {"a": 0}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "id 1", "given twice"});
  p = write_file(R"({"model": {"vocab": {"a": 0, "b": 2}}})");  // a gap without vocab_size
  expect_error([&] { fi::load_vocab(p); }, {p, "contiguous"});
  p = write_file(R"({"added_tokens": [{"id": 1, "content": "<s>"}, {"id": 3, "content": "<t>"}],
                     "model": {"vocab": {"a": 0, "<s>": 1}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "id 2 has no token", "contiguous"});
  p = write_file(R"({"model": {"vocab": {"a": 0, "\u2581b": 1}}})");  // SentencePiece, not byte-level
  expect_error([&] { fi::load_vocab(p); }, {p, "token '\xE2\x96\x81" "b'", "U+2581", "byte-level"});
  p = write_file(R"({"model": {"vocab": {"a b": 0}}})");  // a raw space is not in the alphabet
  expect_error([&] { fi::load_vocab(p); }, {p, "'a b'", "U+0020"});
  p = write_file(R"({"model": {"vocab": {"a": -1}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "not a valid id"});
  p = write_file(R"({"model": {"vocab": {"a": "0"}}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "model.vocab['a']", "integer"});
  p = write_file(R"({"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": 1}]})");
  expect_error([&] { fi::load_vocab(p); }, {p, "added_tokens[0]", "content"});
  p = write_file(R"({"model": {"vocab": {"a": 0}}, "added_tokens": {}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "added_tokens"});
  p = write_file(R"({"model": {"vocab": {"a": 0})");
  expect_error([&] { fi::load_vocab(p); }, {p, "invalid JSON"});
  p = write_file(R"({"version": "1.0"})");
  expect_error([&] { fi::load_vocab(p); }, {p, "'model'"});
  p = write_file(R"({"model": {"type": "BPE"}})");
  expect_error([&] { fi::load_vocab(p); }, {p, "'model.vocab'"});
  p = write_file(R"({"model": {"vocab": [["a", 0.0]]}})");  // Unigram-style list
  expect_error([&] { fi::load_vocab(p); }, {p, "'model.vocab'"});
  expect_error([&] { fi::load_vocab("/nonexistent/tokenizer.json"); }, {"/nonexistent/tokenizer.json"});
}

// ---- the real Llama 3.1 tokenizer ------------------------------------------------------

std::string real_tokenizer() {
  std::vector<std::string> candidates;
  if (const char* d = std::getenv("FI_TOKENIZER_DIR")) candidates.push_back(std::string(d) + "/tokenizer.json");
  candidates.push_back("/work/main/.cache/tokenizer/tokenizer.json");
  for (const auto& c : candidates)
    if (fs::exists(c)) return c;
  return "";
}

TEST(RealLlama31, KnownTokens) {
  std::string path = real_tokenizer();
  if (path.empty()) GTEST_SKIP() << "no Llama 3.1 tokenizer.json (set FI_TOKENIZER_DIR)";
  Vocab v = fi::load_vocab(path, 128256);
  ASSERT_EQ(v.size(), 128256);
  ASSERT_EQ(v.text.size(), 128256u);
  ASSERT_EQ(v.special.size(), 128256u);

  // Expected bytes derived by hand from the token strings (Ġ=20, Ċ=0A, ĉ=09, č=0D, Ģ=80,
  // Ķ=94, Ļ=99, ł=A0, Ł=9F, ĺ=98, Ń=AD, ġ=7F, Ā=00; Latin-1 letters stand for themselves).
  struct Known { int id; const char* token; std::string bytes; };
  const std::vector<Known> known = {
      {0, "!", "!"},
      {198, "\xC4\x8A", "\n"},
      {197, "\xC4\x89", "\t"},
      {201, "\xC4\x8D", "\r"},
      {319, "\xC4\x8D\xC4\x8A", "\r\n"},
      {220, "\xC4\xA0", " "},
      {262, "\xC4\xA0\xC4\xA0\xC4\xA0", "   "},
      {271, "\xC4\x8A\xC4\x8A", "\n\n"},
      {279, "\xC4\xA0the", " the"},
      {320, "\xC4\xA0(", " ("},
      {330, "\xC4\xA0\"", " \""},
      {341, "\xC4\xA0{\xC4\x8A", " {\n"},
      {5679, "\xC4\xA0" "dog", " dog"},
      {7188, "\xC4\xA0" "California", " California"},
      {9906, "Hello", "Hello"},
      {2536, "\xC4\xA0non", " non"},
      {978, "\xC3\x83\xC2\xA9", "\xC3\xA9"},            // é
      {4046, "\xC4\xA0\xC3\x83\xC2\xA9", " \xC3\xA9"},  // " é"
      {2483, "\xC3\x83\xC5\x83", "\xC3\xAD"},            // í (soft-hyphen byte AD)
      {2001, "\xC4\xA0\xC3\xA2\xC4\xA2\xC4\xB6", " \xE2\x80\x94"},  // " —"
      {529, "\xC3\xA2\xC4\xA2\xC4\xBB", "\xE2\x80\x99"},          // ’
      {57668, "\xC3\xA4\xC2\xBD\xC5\x82", "\xE4\xBD\xA0"},        // 你
      {9421, "\xC3\x82\xC5\x82\xC3\x82\xC5\x82", "\xC2\xA0\xC2\xA0"},  // two NBSP
      {127, "\xC3\x83", "\xC3"},            // half a character
      {163, "\xC3\xA7", "\xE7"},
      {18630, "\xC4\xA0\xC3\xA9", " \xE9"},
      {9468, "\xC3\xB0\xC5\x81", "\xF0\x9F"},               // first half of an emoji
      {76460, "\xC3\xB0\xC5\x81\xC4\xBA", "\xF0\x9F\x98"},  // three quarters of one
      {255, "\xC5\x83", "\xAD"},
      {221, "\xC4\xA1", "\x7F"},
      {188, "\xC4\x80", std::string(1, '\0')},
  };
  for (const auto& k : known) {
    EXPECT_EQ(v.bytes[k.id], k.bytes) << "id " << k.id;
    EXPECT_EQ(v.special[k.id], 0) << "id " << k.id;
    EXPECT_EQ(v.text[k.id], fi::sanitize_utf8(k.bytes)) << "id " << k.id;
  }
  EXPECT_EQ(v.text[127], R);
  EXPECT_EQ(v.text[9468], R);   // F0 9F: one maximal subpart
  EXPECT_EQ(v.text[76460], R);  // F0 9F 98: still one
  EXPECT_EQ(v.text[18630], " " + R);
  EXPECT_EQ(v.find_bytes(" dog"), 5679);
  EXPECT_EQ(v.find_bytes("\n"), 198);

  EXPECT_EQ(v.bytes[128000], "<|begin_of_text|>");
  EXPECT_EQ(v.text[128000], "<|begin_of_text|>");
  EXPECT_EQ(v.bytes[128001], "<|end_of_text|>");
  EXPECT_EQ(v.bytes[128006], "<|start_header_id|>");
  EXPECT_EQ(v.bytes[128007], "<|end_header_id|>");
  EXPECT_EQ(v.bytes[128009], "<|eot_id|>");
  EXPECT_EQ(v.bytes[128255], "<|reserved_special_token_250|>");
  int specials = 0;
  for (int64_t i = 0; i < v.size(); ++i) {
    specials += v.special[i];
    if (i < 128000) {
      ASSERT_FALSE(v.bytes[i].empty()) << i;
    }
  }
  EXPECT_EQ(specials, 256);
  for (int64_t i = 128000; i < 128256; ++i) EXPECT_EQ(v.special[i], 1) << i;
}

TEST(RealLlama31, SizesFromFileAndPadding) {
  std::string path = real_tokenizer();
  if (path.empty()) GTEST_SKIP() << "no Llama 3.1 tokenizer.json (set FI_TOKENIZER_DIR)";
  Vocab v = fi::load_vocab(path);
  EXPECT_EQ(v.size(), 128256);
  // All 128,000 byte-level tokens have distinct bytes.
  std::set<std::string> distinct(v.bytes.begin(), v.bytes.begin() + 128000);
  EXPECT_EQ(distinct.size(), 128000u);
  Vocab padded = fi::load_vocab(path, 128512);
  ASSERT_EQ(padded.size(), 128512);
  EXPECT_EQ(padded.bytes[128300], "");
  EXPECT_EQ(padded.text[128300], "<|unused_128300|>");
  EXPECT_EQ(padded.special[128300], 1);
  EXPECT_EQ(padded.bytes[128000], "<|begin_of_text|>");
  EXPECT_EQ(padded.padding, 128512 - 128256);
  EXPECT_EQ(padded.beyond, 0);
  Vocab cut = fi::load_vocab(path, 128000);  // the 256 special tokens are past this LM-head
  EXPECT_EQ(cut.size(), 128000);
  EXPECT_EQ(cut.beyond, 256);
  EXPECT_EQ(cut.tokenizer_max_id, 128255);
}

// ---- the other families' real tokenizers (.cache/tokenizers/<name>, from launch/setup-deps.sh) --

std::string family_tokenizer(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* d = std::getenv("FI_TOKENIZERS_DIR")) dirs.push_back(d);
  if (const char* d = std::getenv("FI_TOKENIZER_DIR")) dirs.push_back(std::string(d) + "/../tokenizers");
  for (const auto& d : dirs)
    if (fs::exists(d + "/" + name + "/tokenizer.json")) return d + "/" + name + "/tokenizer.json";
  return "";
}

TEST(RealFamilies, SentencePieceBytes) {
  std::string path = family_tokenizer("llama2");
  if (path.empty()) GTEST_SKIP() << "no .cache/tokenizers/llama2 (run launch/setup-deps.sh)";
  Vocab v = fi::load_vocab(path, 32000);
  EXPECT_EQ(v.padding, 0);
  EXPECT_EQ(v.beyond, 0);
  EXPECT_EQ(v.bytes[1], "<s>");
  EXPECT_EQ(v.bytes[13], "\n");      // <0x0A>
  EXPECT_EQ(v.bytes[3 + 0xE9], "\xE9");
  EXPECT_EQ(v.find_bytes(" the"), 272);  // ▁the
}

TEST(RealFamilies, GemmaImageTokenBeyondTheLmHead) {
  std::string path = family_tokenizer("gemma3");
  if (path.empty()) GTEST_SKIP() << "no .cache/tokenizers/gemma3 (run launch/setup-deps.sh)";
  Vocab v = fi::load_vocab(path, 262144);  // Gemma 3 1B's vocab_size; <image_soft_token> is id 262144
  EXPECT_EQ(v.size(), 262144);
  EXPECT_EQ(v.beyond, 1);
  EXPECT_EQ(v.padding, 0);
  EXPECT_EQ(v.tokenizer_max_id, 262144);
  EXPECT_EQ(v.bytes[2], "<bos>");
  EXPECT_EQ(v.bytes[107], "\n");
  EXPECT_EQ(v.bytes[138], "  ");  // ▁▁, also an added token
  EXPECT_EQ(v.special[138], 1);
}

TEST(RealFamilies, DeepSeekRawSpecials) {
  std::string path = family_tokenizer("deepseek_v3");
  if (path.empty()) GTEST_SKIP() << "no .cache/tokenizers/deepseek_v3 (run launch/setup-deps.sh)";
  Vocab v = fi::load_vocab(path, 129280);  // DeepSeek V3's vocab_size: 818 added ids, then padding
  EXPECT_EQ(v.bytes[0], "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  EXPECT_EQ(v.padding, 129280 - 128815);
  EXPECT_EQ(v.beyond, 0);
  EXPECT_EQ(v.bytes[223], " ");
}
