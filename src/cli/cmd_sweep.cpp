// `flashinterp sweep`: the causal score of many decoded neurons (job/sweep_job.h): clamp each at
// several values over a few neutral prompts and measure how its decoded top token's
// log-probability moves. This file: options, the prompts (the shipped neutral ones or --prompts
// FILE) as token ids, and --json from the finished file.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/prompt.h"
#include "common/error.h"
#include "job/decode_job.h"
#include "job/sweep_job.h"

namespace fi {
namespace {

// Prompts without a topic of their own, so a neuron's effect is not one the prompt already makes
// likely; each is followed by the position whose next token is measured.
const char* const kNeutralPrompts[] = {
    "The",
    "I think that the",
    "Here is a short story about",
    "When I woke up this morning, I saw a",
    "She told me that her favourite thing is",
    "The word of the day is",
    "In the middle of the room there was a",
    "He opened the box and found",
};

struct SweepArgs {
  SweepOptions o;
  std::string prompts_file, values = "0,2,5,10", stages = "auto";
  bool json = false, no_bos = false;
};

std::vector<std::string> read_prompts(const std::string& path) {
  std::vector<std::string> out;
  if (path.empty()) return {std::begin(kNeutralPrompts), std::end(kNeutralPrompts)};
  std::ifstream in(path);
  if (!in) FI_FAIL("--prompts " + path + ": cannot read the file");
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
  if (out.empty()) FI_FAIL("--prompts " + path + ": no prompts (one a line, blank lines skipped)");
  return out;
}

// One JSON object per neuron: what the map says it means and what the clamp did.
void print_json(const std::string& out, const Tokenizer& tok) {
  const sweep::Contents s = sweep::read(out, true);
  const char* names[] = {"up", "gate", "down"};
  const char* groups[] = {"dense", "moe", "shared"};
  const size_t nv = s.values.size(), P = size_t(s.prompts);
  for (size_t i = 0; i < s.neuron.size(); ++i) {
    nlohmann::ordered_json j = {{"matrix", names[s.matrix[i]]}, {"group", groups[s.group[i]]}, {"layer", s.layer[i]},
                                {"expert", s.expert[i] < 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s.expert[i])},
                                {"neuron", s.neuron[i]}, {"token_id", s.token[i]},
                                {"token", token_text(tok, s.token[i])}, {"score", s.score[i]},
                                {"top1_share", s.top1_share[i]}};
    j["delta"] = nlohmann::ordered_json::array();  // per value: the mean over prompts
    for (size_t v = 0; v < nv; ++v) {
      double m = 0;
      for (size_t p = 0; p < P; ++p) m += s.delta[(i * nv + v) * P + p];
      j["delta"].push_back({{"value", s.values[v]}, {"dlogp", m / double(P)}});
    }
    std::cout << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
  }
}

int run(SweepArgs& a, const Comms& c) {
  std::unique_ptr<Tokenizer> tok;
  collective(c.world, [&] {
    a.o.values = parse_values(a.values, "--values");
    if (a.stages != "auto") {
      char* end = nullptr;
      a.o.stages = std::strtoll(a.stages.c_str(), &end, 10);
      if (a.stages.empty() || *end || a.o.stages <= 0)
        FI_FAIL("--stages: expected auto or a positive number of ranks per pipeline, got '" + a.stages + "'");
    }
    tok = std::make_unique<Tokenizer>(a.o.model_dir + "/tokenizer.json");
    a.o.prompt_texts = read_prompts(a.prompts_file);
    for (const std::string& p : a.o.prompt_texts) {
      PromptArgs pa;
      pa.text = p;
      pa.no_bos = a.no_bos;
      a.o.prompts.push_back(prompt_tokens(*tok, pa, INT64_MAX));  // ids checked by the job
    }
  });
  const int rc = run_sweep(a.o, c);
  if (rc == 0 && a.json && c.rank == 0) print_json(a.o.out, *tok);
  return rc;
}

}  // namespace

std::function<int(int*, char***)> add_sweep(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  SweepOptions& o = a->o;
  auto* cmd = app.add_subcommand(
      "sweep", "Causal score of many decoded neurons: clamp each at several values over neutral "
               "prompts and measure the change in log p of its decoded top token (docs/SWEEP_FORMAT.md)");
  cmd->add_option("--model", o.model_dir, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--map", o.map, "the complete map of that model (flashinterp decode)")->required();
  cmd->add_option("--out", o.out, "the sweep file to write (.h5)")->required();
  cmd->add_option("--select", o.select,
                  "top:K (the K most specialised neurons: lowest entropy, else highest top-1 "
                  "probability) | layer:L (every neuron of layer L) | list:FILE (one neuron a line: "
                  "'up 20 1234', 'moe/up 20 EXPERT 1234', 'shared/up 20 1234'; '#' comments)")->required();
  cmd->add_option("--matrices", o.matrices, "for top: and layer:, comma-separated up,gate,down, each "
                                            "that matrix in every group of the map (dense, moe, shared; "
                                            "default: every group)");
  cmd->add_option("--prompts", a->prompts_file, "prompts, one a line (default: 8 neutral prompts "
                                                "shipped with flashinterp)");
  cmd->add_flag("--no-bos", a->no_bos, "do not put the BOS token before each prompt");
  cmd->add_option("--values", a->values, "comma-separated clamp values")->capture_default_str();
  cmd->add_option("--clamp-site", o.site, "act | up (as in clamp)")->capture_default_str();
  cmd->add_flag("--force-route", o.force_route,
                "a routed expert's clamp also routes every position to that expert (as clamp --force-route); "
                "without it the clamp acts only where the router sends a position to the expert");
  add_backend_option(cmd, o.backend);
  cmd->add_option("--round-neurons", o.round_neurons,
                  "neurons per pipeline between two writes (what a kill can lose)")->capture_default_str();
  cmd->add_option("--stages", a->stages,
                  "ranks per pipeline, each holding a share of the layers (the neurons are split over the "
                  "pipelines); auto: 1 (every rank holds the whole model) unless the model does not fit a "
                  "rank's memory, then the fewest that fit")->capture_default_str();
  cmd->add_flag("--json", a->json, "also print one JSON object per neuron on stdout");
  cmd->add_flag("--overwrite", o.overwrite, "replace an existing sweep file (or its .partial)");
  cmd->add_flag("--resume", o.resume, "continue OUT.partial (same inputs and options)");
  cmd->add_flag("--quiet", o.quiet, "no progress or summary on stderr");
  return [a](int* argc, char*** argv) {
    std::string cl;
    for (int i = 0; i < *argc; ++i) cl += (i ? " " : "") + std::string((*argv)[i]);
    a->o.command_line = cl;
    install_stop_handlers();
    return with_mpi(argc, argv, [&](const Comms& c) { return run(*a, c); });
  };
}

}  // namespace fi
