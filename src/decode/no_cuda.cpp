// Built only without the CUDA backend: no device is ever usable.
#include "decode/decoder.h"

namespace fi {
bool cuda_available() { return false; }
}  // namespace fi
