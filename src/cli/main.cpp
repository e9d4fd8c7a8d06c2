// flashinterp: the one binary; subcommands decode, inspect, demo-model, tokenize, clamp,
// generate, map-format and sweep; --version. Every error ends as one line on stderr ("flashinterp: error: ...")
// and a non-zero exit, never a core dump.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "cli/commands.h"
#include "common/build_info.h"
#include "parallel/mpi_env.h"

namespace {
// This process's rank as mpirun or srun told it (0 when started alone).
int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* r = std::getenv(v)) return std::atoi(r);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flashinterp: decode every MLP neuron of a Llama-class model through its LM-head"};
  app.require_subcommand(1);
  app.set_version_flag("--version", fi::version_text(),
                       "Print the version, the git revision and the backends built in, and exit");
  auto inspect = fi::add_inspect(app);
  auto demo = fi::add_demo_model(app);
  auto decode = fi::add_decode(app);
  auto tokenize = fi::add_tokenize(app);
  auto clamp = fi::add_clamp(app);
  auto generate = fi::add_generate(app);
  auto map_format = fi::add_map_format(app);
  auto sweep = fi::add_sweep(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Before MPI starts every rank parses the same line: only the first of them says so.
    if (launcher_rank() == 0) fi::print_error_line(std::string(e.what()) + " (see flashinterp --help)");
    return 2;
  }
  try {
    if (app.got_subcommand("inspect")) return inspect();
    if (app.got_subcommand("demo-model")) return demo();
    if (app.got_subcommand("decode")) return decode(&argc, &argv);
    if (app.got_subcommand("tokenize")) return tokenize();
    if (app.got_subcommand("clamp")) return clamp(&argc, &argv);
    if (app.got_subcommand("generate")) return generate(&argc, &argv);
    if (app.got_subcommand("map-format")) return map_format();
    if (app.got_subcommand("sweep")) return sweep(&argc, &argv);
  } catch (const fi::JobFailed&) {
    return 1;  // already reported by the rank that failed
  } catch (const std::exception& e) {
    fi::print_error_line(e.what());
    return 1;
  }
  return 1;
}
