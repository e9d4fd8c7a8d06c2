// GoogleTest main for MPI tests: every rank runs the tests; the exit code is the
// Allreduce(MAX) of all ranks' results, so one failing rank fails the job.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // one rank's report is enough unless something fails
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int local = RUN_ALL_TESTS() != 0 ? 1 : 0, global = 0;
  MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (local && rank != 0) fprintf(stderr, "rank %d: tests FAILED\n", rank);
  MPI_Finalize();
  return global;
}
