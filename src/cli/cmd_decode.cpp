// `flashinterp decode`: options -> DecodeOptions, MPI set up around the job.
#include <sstream>

#include "cli/commands.h"
#include "job/decode_job.h"

namespace fi {
namespace {

// An argument as a POSIX shell reads it back: as it is when plain, else in single quotes.
std::string shell_quoted(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                         "@%_+=:,./-") == std::string::npos)
    return a;
  std::string q = "'";
  for (char ch : a) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

}  // namespace


std::function<int(int*, char***)> add_decode(CLI::App& app) {
  auto opt = std::make_shared<DecodeOptions>();
  auto matrices = std::make_shared<std::string>("up");
  auto* cmd = app.add_subcommand("decode", "Decode neurons through the LM-head into an HDF5 map "
                                           "(run under mpirun/srun for several ranks)");
  cmd->add_option("--model", opt->model_dir, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--out", opt->out, "output map (.h5); written as OUT.partial, renamed when complete")
      ->required();
  cmd->add_option("--matrices", *matrices, "comma-separated: up,gate,down")->capture_default_str();
  cmd->add_option("--layers", opt->layers, "layer range A-B (inclusive) or A; default all");
  cmd->add_option("--experts", opt->experts,
                  "routed experts A-B (inclusive) or A of a mixture-of-experts model's /moe groups; default all");
  cmd->add_option("--top-k", opt->top_k, "top tokens kept per neuron")->capture_default_str();
  cmd->add_option("--bottom-k", opt->bottom_k, "bottom tokens kept per neuron")->capture_default_str();
  cmd->add_option("--norm", opt->norm, "rms (final RMSNorm) | gamma (x*gamma) | none")
      ->capture_default_str();
  cmd->add_option("--token-index", opt->token_index,
                  "for every token, the M neurons that give it the highest probability (0: off)")
      ->capture_default_str();
  cmd->add_option("--chunk-rows", opt->chunk_rows, "neurons per work item (default: cpu 512, cuda 4096)")
      ->check(CLI::Validator([](std::string& s) {
        return s.find_first_not_of("0123456789") == std::string::npos && s.find_first_not_of('0') != std::string::npos
                   ? std::string()
                   : "must be a positive whole number (leave it out for the backend's default)";
      }, "ROWS"));
  cmd->add_option("--backend", opt->backend, "auto | cpu | cuda")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU worker threads per rank (default 0: the cores of the rank's affinity mask, shared with the node's ranks bound alike)");
  cmd->add_flag("--overwrite", opt->overwrite, "replace an existing output map (the old one stays until the new one is complete)");
  cmd->add_option("--save-index-every", opt->save_index_minutes,
                  "minutes between saves of the token index into OUT.partial (a kill -9 redoes at "
                  "most that much of the index's work; 0: only at the end or on a stop signal)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--resume", opt->resume, "continue OUT.partial (same model and options); without one, start fresh");
  cmd->add_option("--gemm", opt->gemm,
                  "exact (cpu: fp32 sgemm; cuda: hi + lo 16-bit split) | bf16 (one 16-bit GEMM on the "
                  "row rounded to bf16, top/bottom candidates re-scored exactly, lse corrected; "
                  "README: Numerics) | auto (cuda: bf16 for 16-bit heads; cpu, and soft-capped models "
                  "such as Gemma 2: exact)")
      ->capture_default_str();
  cmd->add_flag("--fast-gemm", opt->fast_gemm, "the same as --gemm bf16 (kept for old scripts)");
  cmd->add_flag("--allow-tf32", opt->allow_tf32, "allow TF32 GEMMs for fp32 checkpoints (cuda)");
  cmd->add_flag("--quiet", opt->quiet, "no progress or summary on stderr");
  return [opt, matrices](int* argc, char*** argv) {
    std::ostringstream cl;
    for (int i = 0; i < *argc; ++i) cl << (i ? " " : "") << shell_quoted((*argv)[i]);
    opt->command_line = cl.str();
    opt->matrices.clear();
    std::stringstream ss(*matrices);
    for (std::string m; std::getline(ss, m, ',');) opt->matrices.push_back(m);
    install_stop_handlers();
    MpiEnv mpi(argc, argv);
    Comms comms;
    try {
      return run_decode(*opt, comms);
    } catch (const JobFailed&) {
      return 1;
    }
  };
}

}  // namespace fi
