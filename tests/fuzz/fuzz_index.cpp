// libFuzzer harness: model.safetensors.index.json through fi::Checkpoint, in a directory that
// also holds the two real shards of the demo model (--shards 2, linked from the companion data),
// so a mutated weight_map meets real shard headers. fi::Error is the expected refusal; anything
// else (another exception, a crash, a sanitizer report, an accepted index that does not map
// every tensor to a shard that holds it) is a finding.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "fuzz_common.h"
#include "io/checkpoint.h"

namespace {
const char* const kShards[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string src = fi_fuzz::data_dir() + "/sharded";
  for (const char* s : kShards) fi_fuzz::link_companion(fi_fuzz::scratch_dir(), src + "/" + s, s);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = fi_fuzz::scratch_dir();
  fi_fuzz::write_file(dir + "/model.safetensors.index.json", data, size);
  try {
    fi::Checkpoint ck(dir);
    for (const std::string& name : ck.tensor_names()) {
      const fi::SafetensorsFile& f = ck.file_of(name);
      if (!f.has(name) || &ck.info(name) != &f.info(name))
        fi_fuzz::finding("accepted index maps '" + name + "' to a shard without it");
    }
  } catch (const fi::Error&) {
    // The expected refusal of a malformed index.
  }
  return 0;
}
