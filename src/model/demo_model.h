// `flashinterp demo-model`: a small checkpoint in the real Hugging Face Llama layout with the
// real Llama 3.1 tokenizer and planted concept neurons (listed in planted.json), seeded.
// `--variant instruct` writes the same model changed the way a fine-tune changes one (see
// write_demo_model); the base variant's bytes do not depend on that option's existence.
#pragma once
#include <cstdint>
#include <string>

namespace fi {

struct DemoOptions {
  std::string out, dtype = "bf16", tokenizer;
  int64_t layers = 4, hidden = 256, intermediate = 1024, heads = 4, kv_heads = 2;
  bool tied = false, overwrite = false;
  int shards = 1;
  uint64_t seed = 1234;
  std::string variant = "base";  // base | instruct
};

// The tokenizer.json to use: the option, else $FLASHINTERP_TOKENIZER, else the one beside the
// binary, <exe>/../share/flashinterp/tokenizer/tokenizer.json (installed by cmake --install; in a
// build tree the build's copy of the set-up cache). The path may not exist.
std::string default_tokenizer_path(const std::string& option);
// variant "instruct": the base model of the same seed (every base random draw is made, in the
// same order), then, from a second generator, (1) every up/gate/down weight gets noise of sd
// kTuneNoise (1% of the weights' sd), (2) in each layer and MLP matrix a fraction
// 0.05 + 0.25 * l / (L - 1) of the neurons (rounded; planted ones excluded) is replaced by the
// LM-head direction of a random non-special token, (3) the planted " dog" neuron is retargeted
// to " puppy". planted.json lists the planted neurons of the variant and every changed neuron.
void write_demo_model(const DemoOptions& o);

}  // namespace fi
