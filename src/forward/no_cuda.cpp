// Built only without CUDA: the forward pass has no CUDA stage (forward.cpp never asks for one
// then: cuda_available() is false).
#include "common/error.h"
#include "forward/stage.h"

namespace fi {
std::unique_ptr<Stage> make_cuda_stage(const Model&, const StageSpan&) {
  FI_FAIL("flashinterp was built without CUDA");
}
}  // namespace fi
