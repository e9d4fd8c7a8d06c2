// MPI for the job: RAII init/finalize, the node communicator (ranks sharing memory; its rank
// is the local rank = GPU index), and the collective error agreement that keeps a failure on
// one rank from hanging the others.
#pragma once
#include <mpi.h>

#include <functional>
#include <string>

namespace fi {

class MpiEnv {
 public:
  MpiEnv(int* argc, char*** argv);
  ~MpiEnv();
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;
};

struct Comms {
  MPI_Comm world = MPI_COMM_WORLD;
  MPI_Comm node = MPI_COMM_NULL;
  int rank = 0, size = 1, local_rank = 0, local_size = 1, num_nodes = 1;
  Comms();  // splits MPI_COMM_WORLD by shared memory (FLASHINTERP_TEST_NODE_SIZE: see mpi_env.cpp)
  ~Comms();
  Comms(const Comms&) = delete;
  Comms& operator=(const Comms&) = delete;
};

// Thrown on every rank after a collective check found a failure; the message was already
// printed once (by the lowest failing rank), so main only exits non-zero.
struct JobFailed {};

// Runs f on every rank; if it throws on any rank, the lowest failing rank prints its message
// as one line ("flashinterp: error: ...") and every rank throws JobFailed. Collective.
void collective(MPI_Comm comm, const std::function<void()>& f);
// The same agreement for an error caught elsewhere (empty = no error on this rank).
void agree(MPI_Comm comm, const std::string& error);

void print_error_line(const std::string& msg);
long peak_rss_kb();

}  // namespace fi
