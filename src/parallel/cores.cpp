// affinity_cores / rank_workers: the rank's affinity mask, compared with those of its node.
#include "parallel/cores.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fi {
namespace {

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
  cpu_set_t mine;
  if (!own_mask(mine)) CPU_ZERO(&mine);
  std::vector<cpu_set_t> all(size_t(std::max(1, c.local_size)), mine);
  if (c.node != MPI_COMM_NULL)
    MPI_Allgather(&mine, int(sizeof mine), MPI_BYTE, all.data(), int(sizeof mine), MPI_BYTE, c.node);
  int sharing = 0;
  for (const cpu_set_t& s : all) sharing += CPU_EQUAL(&s, &mine) ? 1 : 0;
  return std::max(1, affinity_cores() / std::max(1, sharing));
}

}  // namespace fi
