// MpiEnv, Comms and the collective error agreement.
#include "parallel/mpi_env.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>

#include "common/error.h"
#include "parallel/memory.h"

namespace fi {

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
}

MpiEnv::~MpiEnv() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Comms::Comms() {
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank);
  // Test only: FLASHINTERP_TEST_NODE_SIZE=k groups each machine's ranks into nodes of k (in rank
  // order), so one machine runs the per-node parts (the LM-head window, NCCL's groups, device
  // choice) as several nodes would.
  if (const char* k = std::getenv("FLASHINTERP_TEST_NODE_SIZE"); k && std::atoi(k) > 0) {
    MPI_Comm virtual_node = MPI_COMM_NULL;
    MPI_Comm_split(node, local_rank / std::atoi(k), rank, &virtual_node);
    MPI_Comm_free(&node);
    node = virtual_node;
    MPI_Comm_rank(node, &local_rank);
  }
  MPI_Comm_size(node, &local_size);
  int leader = local_rank == 0 ? 1 : 0;
  MPI_Allreduce(&leader, &num_nodes, 1, MPI_INT, MPI_SUM, world);
}

Comms::~Comms() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && node != MPI_COMM_NULL) MPI_Comm_free(&node);
}

void print_error_line(const std::string& msg) {
  std::fprintf(stderr, "flashinterp: error: %s\n", msg.c_str());
  std::fflush(stderr);
}

void agree(MPI_Comm comm, const std::string& error) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int mine = error.empty() ? size : rank, first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == size) return;
  if (rank == first) print_error_line(error);
  throw JobFailed{};
}

void collective(MPI_Comm comm, const std::function<void()>& f) {
  std::string error;
  try {
    f();
  } catch (const std::bad_alloc&) {
    error = "out of memory: an allocation failed (" + memory_report() + ")";
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  agree(comm, error);
}

long peak_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace fi
