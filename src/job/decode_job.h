// `flashinterp decode`: the whole job on every rank — plan, LM-head replica, each rank's rows
// read by byte range, the backend, and the map written in collective rounds.
#pragma once
#include <string>
#include <vector>

#include "parallel/mpi_env.h"

namespace fi {

struct DecodeOptions {
  std::string model_dir, out;
  std::vector<std::string> matrices{"up"};
  std::string layers;  // "A-B", "A", or "" for all
  std::string experts;  // routed experts "A-B", "A", or "" for all (a model with experts)
  int top_k = 20, bottom_k = 0, token_index = 32;
  std::string norm = "rms";
  int64_t chunk_rows = 0;  // 0: the backend's default
  std::string backend = "auto";
  bool overwrite = false, resume = false, quiet = false, allow_tf32 = false;
  std::string gemm = "auto";  // auto | exact | bf16 (decode/rescore.h)
  bool fast_gemm = false;     // the old --fast-gemm: now --gemm bf16
  int threads = 0;  // CPU worker threads per rank; 0: cores per node / ranks per node
  // The token index is merged and saved into OUT.partial at least this often (minutes), so a
  // run killed outright (no signal) redoes at most this much of the index's work; 0: only at the
  // end or on a stop signal.
  double save_index_minutes = 10;
  std::string command_line;
};

// Exit code of a decode stopped by SIGTERM/SIGINT/SIGUSR1 with its work so far kept in
// OUT.partial (EX_TEMPFAIL); slurm/*.sbatch requeue on it and the job goes on with --resume.
constexpr int kExitStopped = 75;

// Runs the job; collective over comms.world. Returns 0, or kExitStopped after a stop signal.
// Throws JobFailed after a reported error.
int run_decode(const DecodeOptions& opt, const Comms& comms);

// SIGTERM/SIGINT/SIGUSR1 ask the decode to stop after its current round (exit kExitStopped); a
// second signal exits at once. Installed first thing in `decode`, before MPI starts.
void install_stop_handlers();
// The first stop signal received since (0: none); `sweep` polls it between its rounds too.
int stop_signal();

std::vector<int64_t> parse_layers(const std::string& spec, int64_t num_layers);

}  // namespace fi
