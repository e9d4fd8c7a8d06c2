// Greedy and temperature sampling over Forward (see generate.h); the KV cache makes each new
// token one single-position forward.
#include "forward/generate.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"

namespace fi {
namespace {

int32_t sample(const std::vector<float>& logits, double temperature, std::mt19937_64& rng) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> w(logits.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::exp((double(logits[i]) - mx) / temperature);
  std::discrete_distribution<int32_t> d(w.begin(), w.end());
  return d(rng);
}

}  // namespace

int32_t argmax(const std::vector<float>& logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::vector<int32_t> generate(Forward& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& opt, const TokenCallback& on_token) {
  FI_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  FI_CHECK(opt.temperature >= 0 && std::isfinite(opt.temperature),
           "--temperature must be a finite number >= 0");
  std::mt19937_64 rng(opt.seed);
  model.reset();
  std::vector<float> logits = model.forward(prompt);
  std::vector<int32_t> out;
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    const int32_t id = opt.temperature == 0 ? argmax(logits) : sample(logits, opt.temperature, rng);
    if (on_token) on_token(id, logits);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), id) != opt.stop_ids.end()) break;
    out.push_back(id);
    if (step + 1 < opt.max_new_tokens) logits = model.forward({id});
  }
  return out;
}

std::vector<int32_t> default_stop_ids(const std::string& config_json_path, int32_t tokenizer_eos,
                                      const std::vector<std::string>& vocab_text) {
  std::vector<int32_t> ids;
  if (tokenizer_eos >= 0) ids.push_back(tokenizer_eos);
  std::ifstream in(config_json_path, std::ios::binary);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("eos_token_id")) {
    const auto& e = j["eos_token_id"];
    if (e.is_number_integer()) ids.push_back(e.get<int32_t>());
    if (e.is_array())
      for (const auto& x : e)
        if (x.is_number_integer()) ids.push_back(x.get<int32_t>());
  }
  for (size_t i = 0; i < vocab_text.size(); ++i)
    if (vocab_text[i] == "<|eot_id|>" || vocab_text[i] == "<|end_of_text|>") ids.push_back(int32_t(i));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace fi
