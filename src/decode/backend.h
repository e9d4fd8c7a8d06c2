// The decode backend of this rank, chosen and built in one place: the CPU decoder over one
// fp32 LM-head per node (an MPI shared-memory window), or the CUDA decoder over a device replica.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "decode/decoder.h"
#include "model/config.h"
#include "parallel/mpi_env.h"

namespace fi {

enum class BackendKind { Cpu, Cuda };
// auto | cpu | cuda -> the backend; auto takes cuda when a device is usable. Throws on an
// unknown name, or cuda without a usable device.
BackendKind choose_backend(const std::string& name);

class SharedLmHead;

struct DecodeBackend {
  std::unique_ptr<SharedLmHead> head;  // the CPU decoder's LM-head (outlives dec)
  std::unique_ptr<Decoder> dec;
  double replicate_s = 0;              // time to build the LM-head replica
  int threads = 0;                     // cpu: worker threads of this rank
  DecodeBackend();
  DecodeBackend(DecodeBackend&&) noexcept;
  DecodeBackend& operator=(DecodeBackend&&) noexcept;
  ~DecodeBackend();
};

struct BackendOptions {
  int threads = 0;          // cpu: worker threads; 0 = the cores of the rank's affinity mask
                            // (shared with the node's ranks of the same mask; parallel/cores.h)
};

// Collective over c.world (every step that can fail is agreed on). gamma: [hidden] final norm.
DecodeBackend make_decoder(BackendKind kind, const Model& model, const std::vector<float>& gamma,
                           const DecodeParams& p, const BackendOptions& o, const Comms& c);

}  // namespace fi
