// The CUDA device of this rank: whether one is usable, choosing it, and what it has free.
// Plain C++ (no CUDA header): the CPU code includes it too; a build without CUDA has
// cuda_available() (false) and select_device() (throws) from gpu/no_cuda.cpp.
#pragma once
#include <mpi.h>

#include <cstddef>

namespace fi {

bool cuda_available();  // a usable CUDA device is present (false when built without CUDA)

namespace gpu {

// The device of this rank: local rank (in node_comm; MPI_COMM_NULL = 0) modulo the device
// count; made current. Throws when no device is usable.
int select_device(MPI_Comm node_comm);

// CUDA builds only. The current device (-1 when unknown) and its free memory in bytes (0 when
// unknown); neither leaves a CUDA error behind.
int current_device();
size_t free_device_bytes();

}  // namespace gpu
}  // namespace fi
