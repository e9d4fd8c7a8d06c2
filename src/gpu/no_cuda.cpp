// Built only without CUDA: no device is ever usable (see device.h).
#include "common/error.h"
#include "gpu/device.h"

namespace fi {
bool cuda_available() { return false; }
namespace gpu {
int select_device(MPI_Comm) { FI_FAIL("flashinterp was built without CUDA"); }
}  // namespace gpu
}  // namespace fi
