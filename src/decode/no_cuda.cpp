// Built only without CUDA: the decode has no CUDA backend (decode/cuda/cuda_decoder.h is plain
// C++, so its entry point exists in every build and throws here).
#include "common/error.h"
#include "decode/cuda/cuda_decoder.h"

namespace fi {
std::unique_ptr<Decoder> make_cuda_decoder(const Model&, const std::vector<float>&,
                                           const DecodeParams&, CudaSetup&) {
  FI_FAIL("flashinterp was built without CUDA");
}
}  // namespace fi
