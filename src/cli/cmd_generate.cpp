// `flashinterp generate`: a continuation of the prompt, greedy unless --temperature > 0, with any
// number of neuron clamps applied at every position; tokens are printed as they are chosen.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/prompt.h"
#include "common/error.h"
#include "parallel/mpi_env.h"
#include "forward/generate.h"

namespace fi {
namespace {

struct GenerateArgs {
  std::string model, site = "act", dump_logits, backend = "auto";
  PromptArgs prompt;
  std::vector<std::string> clamps;
  GenerateOptions opt;
  bool print_ids = false, stats = false, force_route = false;
};

// Every rank runs this (a pipeline when launched with mpirun -np N); rank 0 prints.
int run_generate(GenerateArgs& a, const Comms& comms) {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  ClampSite site{};
  std::vector<Clamp> clamps;
  std::vector<int32_t> ids;
  collective(comms.world, [&] {  // every check before the weights load
    model = std::make_unique<Model>(a.model);
    site = parse_clamp_site(a.site);
    for (const std::string& s : a.clamps) clamps.push_back(parse_clamp(s));
    bool routed = false;
    for (Clamp& k : clamps) routed |= (k.force_route = a.force_route && k.expert >= 0);
    FI_CHECK(routed || !a.force_route, "--force-route: no --clamp names a routed expert's neuron (LAYER:eEXPERT:NEURON=VALUE)");
    check_clamps(model->cfg, clamps);
    for (const Clamp& k : clamps)
      if (k.expert >= 0 && comms.rank == 0) std::fprintf(stderr, "flashinterp: notice: %s\n", route_notice(k).c_str());
    FI_CHECK(a.opt.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
    FI_CHECK(a.opt.temperature >= 0 && std::isfinite(a.opt.temperature),
             "--temperature must be a finite number >= 0");
    tok = std::make_unique<Tokenizer>(a.model + "/tokenizer.json");
    ids = prompt_tokens(*tok, a.prompt, model->cfg.vocab_size);
    const int64_t most = model->cfg.max_position_embeddings;
    if (most > 0 && int64_t(ids.size()) + a.opt.max_new_tokens > most)
      FI_FAIL("the prompt's " + std::to_string(ids.size()) + " tokens and --max-new-tokens " +
              std::to_string(a.opt.max_new_tokens) + " pass the model's max_position_embeddings (" +
              std::to_string(most) + ")");
    a.opt.stop_ids = default_stop_ids(model->cfg.path, tok->eos_id(), tok->vocab().text);
  });
  const bool root = comms.rank == 0;
  const auto t_load = std::chrono::steady_clock::now();
  Forward fwd(*model, {a.backend, comms.world, comms.node});
  fwd.set_clamps(clamps, site);
  if (a.stats && root) print_stages(fwd, std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());

  std::vector<float> dump;
  int64_t n = 0;
  auto on_token = [&](int32_t id, const std::vector<float>& logits) {
    if (!a.dump_logits.empty()) dump.insert(dump.end(), logits.begin(), logits.end());
    if (!root || std::find(a.opt.stop_ids.begin(), a.opt.stop_ids.end(), id) != a.opt.stop_ids.end())
      return;
    if (a.print_ids) {
      std::printf("%s%d", n ? " " : "", id);
    } else if (id < tok->vocab().size()) {
      const std::string& b = tok->vocab().bytes[size_t(id)];  // exact bytes; UTF-8 joins up on screen
      std::fwrite(b.data(), 1, b.size(), stdout);
    }
    ++n;
    std::fflush(stdout);
  };
  const auto t0 = std::chrono::steady_clock::now();
  generate(fwd, ids, a.opt, on_token);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!root) return 0;
  std::printf("\n");
  if (!a.dump_logits.empty()) dump_f32(a.dump_logits, dump);
  if (a.stats)
    std::fprintf(stderr, "flashinterp: %zu prompt + %lld new tokens in %.3f s (%.1f new tokens/s)\n",
                 ids.size(), (long long)n, s, s > 0 ? double(n) / s : 0.0);
  return 0;
}

}  // namespace

std::function<int(int*, char***)> add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Continue a prompt (greedy by default), optionally "
                                             "with MLP neurons clamped");
  cmd->add_option("--model", a->model, "Hugging Face checkpoint directory")->required();
  add_prompt_options(cmd, a->prompt);
  add_backend_option(cmd, a->backend);
  cmd->add_option("--clamp", a->clamps, "LAYER:NEURON=VALUE (an MoE layer: LAYER:eEXPERT:NEURON=VALUE or LAYER:s:NEURON=VALUE), repeatable: clamp that neuron at "
                                        "every position");
  cmd->add_flag("--force-route", a->force_route, "route every position to the experts that --clamp names "
                "(LAYER:eEXPERT:...), in place of the router's last choice where it did not choose them");
  cmd->add_option("--clamp-site", a->site,
                  "act: set the down_proj input act(gate)*up; up: set the up_proj output before "
                  "the multiply (still gated by act(gate))")->capture_default_str();
  cmd->add_option("--max-new-tokens", a->opt.max_new_tokens, "most tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->opt.temperature, "0: greedy; > 0: sample from softmax(logits/T)")
      ->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "seed of the sampler")->capture_default_str();
  cmd->add_flag("--print-ids", a->print_ids, "print the new token ids instead of text");
  cmd->add_flag("--stats", a->stats, "print tokens per second on stderr");
  cmd->add_option("--dump-logits", a->dump_logits, "write each step's logits [steps, V] as raw float32")
      ->group("");
  return [a](int* argc, char*** argv) { return with_mpi(argc, argv, [&](const Comms& c) { return run_generate(*a, c); }); };
}

}  // namespace fi
