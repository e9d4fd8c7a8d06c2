// ChunkResult: sizing and the field table's access to the named members.
#include "decode/chunk_result.h"

namespace fi {

void* ChunkResult::data(int i) {
  switch (i) {
    case 0: return top_ids.data();
    case 1: return top_logits.data();
    case 2: return top_probs.data();
    case 3: return lse.data();
    case 4: return bottom_ids.data();
    case 5: return bottom_logits.data();
    case 6: return entropy.data();
    default: return margin.data();
  }
}

void ChunkResult::resize(int64_t r, int k, int b) {
  rows = r;
  top_k = k;
  bottom_k = b;
  top_ids.assign(size_t(r * k), -1);
  top_logits.assign(size_t(r * k), 0.f);
  top_probs.assign(size_t(r * k), 0.f);
  lse.assign(size_t(r), 0.f);
  bottom_ids.assign(size_t(r * b), -1);
  bottom_logits.assign(size_t(r * b), 0.f);
  entropy.assign(size_t(r), 0.f);
  margin.assign(size_t(r), 0.f);
}

}  // namespace fi
