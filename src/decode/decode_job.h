// `flashinterp decode`: the whole job on every rank — plan, LM-head replica, each rank's rows
// read by byte range, the backend, and the map written in collective rounds.
#pragma once
#include <string>
#include <vector>

#include "dist/mpi_env.h"

namespace fi {

struct DecodeOptions {
  std::string model_dir, out;
  std::vector<std::string> matrices{"up"};
  std::string layers;  // "A-B", "A", or "" for all
  int top_k = 20, bottom_k = 0, token_index = 0;
  std::string norm = "rms";
  int64_t chunk_rows = 0;  // 0: the backend's default
  std::string backend = "auto";
  bool overwrite = false, quiet = false, allow_tf32 = false;
  int threads = 0;  // CPU worker threads per rank; 0: cores per node / ranks per node
  std::string command_line;
};

// Runs the job; collective over comms.world. Throws JobFailed after a reported error.
void run_decode(const DecodeOptions& opt, const Comms& comms);

std::vector<int64_t> parse_layers(const std::string& spec, int64_t num_layers);

}  // namespace fi
