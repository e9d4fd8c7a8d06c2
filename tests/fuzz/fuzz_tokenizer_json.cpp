// libFuzzer harness: tokenizer.json through fi::load_vocab (with vocab_size 0: exactly the ids in
// the file, and with a padded vocab_size), through the BPE fi::Tokenizer when it is built in
// (FI_FUZZ_WITH_TOKENIZER: constructed, then encoding fixed text and the input's own bytes), and
// fi::sanitize_utf8 on the raw bytes. fi::Error is the expected refusal; anything else is a
// finding, and so is an accepted vocabulary whose arrays disagree in length or whose printable
// text is not valid UTF-8, or an encoding with an id outside the vocabulary.
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "fuzz_common.h"
#include "model/vocab.h"
#ifdef FI_FUZZ_WITH_TOKENIZER
#include "model/tokenizer.h"
#endif

namespace {

void check(const fi::Vocab& v, int64_t vocab_size) {
  if (v.text.size() != v.bytes.size() || v.special.size() != v.bytes.size())
    fi_fuzz::finding("vocab arrays differ in length");
  if (vocab_size > 0 && v.size() != vocab_size) fi_fuzz::finding("vocab size differs from vocab_size");
  for (const std::string& t : v.text)
    if (fi::sanitize_utf8(t) != t) fi_fuzz::finding("vocab text is not valid UTF-8");
}

#ifdef FI_FUZZ_WITH_TOKENIZER
void tokenize(const std::string& path, const std::string& raw) {
  fi::Tokenizer tk(path);
  const std::string texts[] = {"Hello world! <|eot_id|> 1234 \xC3\xBCn\xC3\xAF \xF0\x9F\x98\x80\n\n  x",
                               "\xFF\xC0 broken \xE2\x82", raw.substr(0, 64)};
  for (const std::string& t : texts) {
    std::vector<int32_t> ids = tk.encode(t, true);
    for (int32_t id : ids)
      if (id < 0 || id >= tk.vocab().size()) fi_fuzz::finding("encode gave id " + std::to_string(id) + " outside the vocabulary");
    tk.decode(ids);
  }
  tk.encode_chat("hi");
}
#endif

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string raw(reinterpret_cast<const char*>(data), size);
  const std::string clean = fi::sanitize_utf8(raw);
  if (fi::sanitize_utf8(clean) != clean) fi_fuzz::finding("sanitize_utf8 is not idempotent");

  const std::string path = fi_fuzz::scratch_dir() + "/tokenizer.json";
  fi_fuzz::write_file(path, data, size);
  int64_t exact = -1;
  try {
    fi::Vocab v = fi::load_vocab(path, 0);
    check(v, 0);
    exact = v.size();
  } catch (const fi::Error&) {
    // The expected refusal of a malformed tokenizer.json.
  }
  // The same file as the vocabulary of an LM-head with padding rows (as real models have).
  try {
    const int64_t padded = exact >= 0 ? exact + 3 : 512;
    check(fi::load_vocab(path, padded), padded);
  } catch (const fi::Error&) {
  }
#ifdef FI_FUZZ_WITH_TOKENIZER
  try {
    tokenize(path, raw);
  } catch (const fi::Error&) {
  }
#endif
  return 0;
}
