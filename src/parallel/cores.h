// The cores a rank may run on: its affinity mask (mpirun binds each rank to one core when
// np <= 2, srun to its --cpus-per-task), never the machine's core count, so worker threads
// never pile up on the cores a rank was given.
#pragma once
#include "parallel/mpi_env.h"

namespace fi {

int affinity_cores();  // CPUs in this process's affinity mask (sched_getaffinity), at least 1
int machine_cores();   // CPUs online on this node

// Worker threads for this rank: the cores of its mask, shared evenly with the other ranks of
// its node that have the same mask (ranks left unbound share the whole node). Collective over
// c.node.
int rank_workers(const Comms& c);

}  // namespace fi
