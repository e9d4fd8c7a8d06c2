// affinity_cores / rank_workers: the rank's affinity mask, compared over the node.
#include "parallel/cores.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fi {
namespace {

// FNV-1a of the mask's bytes: ranks with equal masks share its cores.
uint64_t mask_hash(const cpu_set_t& set) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(&set);
  for (size_t i = 0; i < sizeof set; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

bool own_mask(cpu_set_t& set) {
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof set, &set) == 0;
}

}  // namespace

int affinity_cores() {
  cpu_set_t set;
  if (!own_mask(set)) return machine_cores();
  return std::max(1, CPU_COUNT(&set));
}

int machine_cores() { return int(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN))); }

int rank_workers(const Comms& c) {
  cpu_set_t set;
  const bool have = own_mask(set);
  const uint64_t mine = have ? mask_hash(set) : 0;
  std::vector<uint64_t> all(size_t(std::max(1, c.local_size)), mine);
  if (c.node != MPI_COMM_NULL)
    MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, c.node);
  const int sharing = int(std::count(all.begin(), all.end(), mine));
  return std::max(1, affinity_cores() / std::max(1, sharing));
}

}  // namespace fi
