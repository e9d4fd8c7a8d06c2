// Token-by-token generation over the forward pass (one stage or a pipeline; collective when it is): greedy (temperature 0) or sampled with a
// seeded generator, stopping at any stop id or after max_new_tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "forward/forward.h"

namespace fi {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0;  // 0: greedy (ties: the lower id)
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;  // generation ends before emitting one of these
};

// Called for each chosen token with the logits [V] it was chosen from. A chosen stop id is
// reported too (then generation ends), so callers see why it stopped.
using TokenCallback = std::function<void(int32_t id, const std::vector<float>& logits)>;

// Runs the prompt (the model's cache is reset first) and generates; returns the new ids,
// without a final stop id.
std::vector<int32_t> generate(Forward& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& opt, const TokenCallback& on_token = {});

// Index of the largest logit, the lower id on ties.
int32_t argmax(const std::vector<float>& logits);

// The stop ids of a checkpoint: config.json's eos_token_id (int or list) plus the tokenizer's
// <|eot_id|> / <|end_of_text|> when present.
std::vector<int32_t> default_stop_ids(const std::string& config_json_path, int32_t tokenizer_eos,
                                      const std::vector<std::string>& vocab_text);

}  // namespace fi
