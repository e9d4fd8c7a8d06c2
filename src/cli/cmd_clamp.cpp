// `flashinterp clamp`: the causal check of one neuron — the next-token probabilities of watched
// tokens (and the top-5 tokens) with the neuron unclamped, then clamped to each given value.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/prompt.h"
#include "common/error.h"
#include "forward/forward.h"
#include "map/map_reader.h"

namespace fi {
namespace {

struct ClampArgs {
  std::string model, matrix = "up", site = "act", values, map, dump_logits, backend = "auto", expert;
  int64_t layer = -1, neuron = -1;
  // The neuron as a clamp of value v (--expert E or s: an MoE layer's).
  Clamp at(float v) const { return {layer, neuron, v, expert.empty() ? kDenseMlp : parse_expert(expert), force_route}; }
  PromptArgs prompt;
  std::vector<std::string> watch;
  bool json = false, force_route = false;
};

struct Row {
  bool clamped = false;
  float value = 0;
  std::vector<float> probs;  // [V]
};

// The neuron's top token in a complete flashinterp map: a dense layer's in /<matrix>, a routed
// expert's in /moe/<matrix>, a shared expert's in /shared/<matrix> (format version 2).
int32_t map_top_token(const std::string& path, const std::string& matrix, const Clamp& k) {
  MapReader map(path);
  map.require_map(true);
  const std::string group = k.expert == kSharedExpert ? "shared/" + matrix : k.expert >= 0 ? "moe/" + matrix : matrix;
  return map.top_token(group, k.layer, k.neuron, k.expert);
}

// A watched word's token: its only token, or its first with a notice on stderr.
int32_t watch_token(const Tokenizer& tok, const std::string& word, bool notice) {
  if (word.empty() || sanitize_utf8(word) != word) FI_FAIL("--watch: " + quoted(word) + " is empty or not valid UTF-8");
  std::vector<int32_t> ids = tok.encode(word, false);
  FI_CHECK(!ids.empty(), "--watch: " + quoted(word) + " has no tokens");
  if (ids.size() > 1 && notice)
    std::fprintf(stderr, "flashinterp: note: --watch %s is %zu tokens; watching its first, %s (id %d)\n",
                 quoted(word).c_str(), ids.size(), quoted(token_text(tok, ids[0])).c_str(), ids[0]);
  return ids[0];
}

std::vector<int32_t> top5(const std::vector<float>& p) {
  std::vector<int32_t> idx(p.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int32_t(i);
  const size_t k = std::min<size_t>(5, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  idx.resize(k);
  return idx;
}

void print_json(const ClampArgs& a, const Tokenizer& tok, const std::vector<int32_t>& ids,
                const std::vector<std::string>& words, const std::vector<int32_t>& watch,
                const std::vector<Row>& rows) {
  nlohmann::ordered_json j = {{"prompt_ids", ids}, {"layer", a.layer}, {"neuron", a.neuron},
                      {"matrix", a.matrix}, {"site", a.site}};
  if (!a.expert.empty()) j["expert"] = a.expert == "s" ? nlohmann::ordered_json("shared") : nlohmann::ordered_json(parse_expert(a.expert));
  if (a.force_route) j["force_route"] = true;
  j["watch"] = nlohmann::ordered_json::array();
  for (size_t w = 0; w < watch.size(); ++w) j["watch"].push_back({{"text", words[w]}, {"id", watch[w]}});
  j["rows"] = nlohmann::ordered_json::array();
  for (const Row& r : rows) {
    nlohmann::ordered_json row = {{"value", r.clamped ? nlohmann::ordered_json(r.value) : nlohmann::ordered_json(nullptr)}};
    row["probs"] = nlohmann::ordered_json::array();
    for (int32_t id : watch) row["probs"].push_back(r.probs[size_t(id)]);
    row["top"] = nlohmann::ordered_json::array();
    for (int32_t id : top5(r.probs))
      row["top"].push_back({{"id", id}, {"text", token_text(tok, id)}, {"prob", r.probs[size_t(id)]}});
    j["rows"].push_back(row);
  }
  std::cout << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
}

void print_table(const ClampArgs& a, const Tokenizer& tok, const std::vector<int32_t>& ids,
                 const std::vector<std::string>& words, const std::vector<int32_t>& watch,
                 const std::vector<Row>& rows) {
  const std::string expert = a.expert.empty() ? "" : a.expert == "s" ? ", shared expert" : ", expert " + a.expert + (a.force_route ? " (force-routed)" : "");
  std::printf("prompt: %zu tokens | layer %lld%s, neuron %lld (%s) | clamp site %s\n", ids.size(),
              (long long)a.layer, expert.c_str(), (long long)a.neuron, a.matrix.c_str(), a.site.c_str());
  std::printf("%-10s", "value");
  for (size_t w = 0; w < watch.size(); ++w) std::printf(" %14s", quoted(words[w]).c_str());
  std::printf("  top-5 next tokens\n");
  for (const Row& r : rows) {
    char v[32];
    std::snprintf(v, sizeof v, "%g", r.value);
    std::printf("%-10s", r.clamped ? v : "(none)");
    for (int32_t id : watch) std::printf(" %14.6g", r.probs[size_t(id)]);
    std::printf(" ");
    for (int32_t id : top5(r.probs))
      std::printf(" %s %.3g", quoted(token_text(tok, id)).c_str(), r.probs[size_t(id)]);
    std::printf("\n");
  }
}

// Every rank runs this (a pipeline when launched with mpirun -np N); rank 0 prints.
int run_clamp(ClampArgs& a, const Comms& comms) {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  ClampSite site{};
  std::vector<float> values;
  std::vector<int32_t> ids, watch;
  std::vector<std::string> words = a.watch;
  collective(comms.world, [&] {  // every check before the weights load
    model = std::make_unique<Model>(a.model);
    const ModelConfig& c = model->cfg;
    parse_matrix(a.matrix);
    site = parse_clamp_site(a.site);
    values = parse_values(a.values, "--values");
    check_clamps(c, {a.at(0.f)});
    tok = std::make_unique<Tokenizer>(a.model + "/tokenizer.json");
    ids = prompt_tokens(*tok, a.prompt, c.vocab_size);
    // Notices (multi-token watch words) once, from rank 0.
    for (const std::string& w : words) watch.push_back(watch_token(*tok, w, comms.rank == 0));
    if (!a.map.empty()) {
      const int32_t id = map_top_token(a.map, a.matrix, a.at(0.f));
      FI_CHECK(id >= 0 && id < c.vocab_size, a.map + ": top token id " + std::to_string(id) + " is out of range");
      words.push_back(token_text(*tok, id));
      watch.push_back(id);
    }
    for (int32_t id : watch)
      FI_CHECK(id < c.vocab_size, "--watch: token id " + std::to_string(id) + " is past the model's vocab_size");
  });
  if (a.at(0.f).expert >= 0 && comms.rank == 0)  // once every check has passed
    std::fprintf(stderr, "flashinterp: notice: %s\n", route_notice(a.at(0.f)).c_str());
  const Tokenizer& t = *tok;
  Forward fwd(*model, {a.backend, comms.world, comms.node});
  // Row 0 unclamped, then one row per value: independent prompts, pipelined over the ranks.
  std::vector<std::vector<Clamp>> clamps = {{}};
  for (float v : values) clamps.push_back({a.at(v)});
  const std::vector<std::vector<float>> logits =
      fwd.forward_each(std::vector<std::vector<int32_t>>(clamps.size(), ids), clamps, site);
  std::vector<Row> rows;
  std::vector<float> dump;
  for (size_t i = 0; i < clamps.size(); ++i) {
    Row r;
    r.clamped = i > 0;
    r.value = i > 0 ? values[i - 1] : 0.f;
    if (!a.dump_logits.empty()) dump.insert(dump.end(), logits[i].begin(), logits[i].end());
    r.probs = softmax(logits[i]);
    rows.push_back(std::move(r));
  }
  if (comms.rank != 0) return 0;
  if (!a.dump_logits.empty()) dump_f32(a.dump_logits, dump);
  if (a.json) {
    print_json(a, t, ids, words, watch, rows);
  } else {
    print_table(a, t, ids, words, watch, rows);
  }
  return 0;
}

}  // namespace

std::function<int(int*, char***)> add_clamp(CLI::App& app) {
  auto a = std::make_shared<ClampArgs>();
  auto* cmd = app.add_subcommand(
      "clamp", "Next-token probabilities with one MLP neuron clamped to each of several values");
  cmd->add_option("--model", a->model, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--layer", a->layer, "layer of the neuron")->required();
  cmd->add_option("--neuron", a->neuron, "neuron index (row of up/gate, column of down)")->required();
  cmd->add_option("--expert", a->expert, "an MoE layer's neuron: E for routed expert E (acting where the router "
                  "sends a position to it), s for the shared expert");
  cmd->add_flag("--force-route", a->force_route, "with --expert E: route every position to expert E (in place of "
                "the router's last choice where it did not choose it), so the clamp acts everywhere");
  cmd->add_option("--matrix", a->matrix, "the map the neuron comes from: up | gate | down "
                                         "(a label, and where --map looks)")->capture_default_str();
  cmd->add_option("--clamp-site", a->site,
                  "act: set the down_proj input act(gate)*up to the value (the neuron writes "
                  "value*down[:,n]); up: set the up_proj output before the multiply (the neuron "
                  "writes act(gate)*value*down[:,n])")->capture_default_str();
  cmd->add_option("--values", a->values, "comma-separated clamp values, e.g. 0,5,10,20")->required();
  add_prompt_options(cmd, a->prompt);
  cmd->add_option("--watch", a->watch, "tokens to watch, e.g. \" dog\" \" cat\" (a word of several "
                                       "tokens is watched by its first, with a notice)");
  cmd->add_option("--map", a->map, "a flashinterp map (.h5): also watch the neuron's top token there");
  add_backend_option(cmd, a->backend);
  cmd->add_flag("--json", a->json, "print one JSON object instead of a table");
  cmd->add_option("--dump-logits", a->dump_logits, "write the logits [rows, V] as raw float32")->group("");
  return [a](int* argc, char*** argv) {
    return with_mpi(argc, argv, [&](const Comms& c) { return run_clamp(*a, c); });
  };
}

}  // namespace fi
