// Built only without the CUDA backend: no device is ever usable.
#include "common/error.h"
#include "decode/cuda/cuda_decoder.h"
#include "forward/stage.h"

namespace fi {
bool cuda_available() { return false; }
std::unique_ptr<Decoder> make_cuda_decoder(const Model&, const std::vector<float>&, const DecodeParams&,
                                           CudaSetup&) {
  FI_FAIL("flashinterp was built without CUDA");
}
std::unique_ptr<Stage> make_cuda_stage(const Model&, const StageSpan&) {
  FI_FAIL("flashinterp was built without CUDA");
}
}  // namespace fi
