// The CUDA device of this rank (see device.h): the device count, the choice by local rank,
// the current device and its free memory.
#include "gpu/device.h"

#include <cuda_runtime_api.h>

#include <string>

#include "gpu/check.h"

namespace fi {

bool cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // leave no error behind for later calls
    return false;
  }
  return n >= 1;
}

namespace gpu {

int select_device(MPI_Comm node_comm) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n < 1) {
    cudaGetLastError();
    FI_FAIL(std::string("CUDA backend: no usable CUDA device (") +
            (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + ")");
  }
  int local = 0;
  if (node_comm != MPI_COMM_NULL) MPI_Comm_rank(node_comm, &local);
  const int dev = local % n;
  FI_CUDA_CHECK(cudaSetDevice(dev));
  return dev;
}

int current_device() {
  int d = -1;
  if (cudaGetDevice(&d) != cudaSuccess) cudaGetLastError();
  return d;
}

size_t free_device_bytes() {
  size_t f = 0, t = 0;
  if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return f;
}

}  // namespace gpu
}  // namespace fi
