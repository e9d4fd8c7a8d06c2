// Built only without the CUDA backend: no device is ever usable.
#include "common/error.h"
#include "decode/decoder.h"
#include "forward/stage.h"

namespace fi {
bool cuda_available() { return false; }
std::unique_ptr<Stage> make_cuda_stage(const Model&, const StageSpan&) {
  FI_FAIL("flashinterp was built without CUDA");
}
}  // namespace fi
