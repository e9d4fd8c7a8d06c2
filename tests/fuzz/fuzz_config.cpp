// libFuzzer harness: config.json through fi::load_config and then fi::Model, in a directory
// that also holds the demo model's model.safetensors (linked from the companion data), so a
// mutated config meets real tensor shapes. fi::Error is the expected refusal; anything else
// (another exception, a crash, a sanitizer report, an accepted config with a non-positive size)
// is a finding.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "fuzz_common.h"
#include "model/config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fi_fuzz::link_companion(fi_fuzz::scratch_dir(), fi_fuzz::data_dir() + "/model/model.safetensors",
                          "model.safetensors");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = fi_fuzz::scratch_dir();
  fi_fuzz::write_file(dir + "/config.json", data, size);
  try {
    fi::ModelConfig c = fi::load_config(dir + "/config.json");
    if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 ||
        c.num_kv_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0 || !(c.rms_norm_eps > 0) ||
        c.num_heads % c.num_kv_heads != 0)
      fi_fuzz::finding("load_config accepted a config with an invalid size");
    fi::Model m(dir);
    // An accepted model has every decode tensor with the config's shape.
    m.expect(m.lm_head_name(), {c.vocab_size, c.hidden_size}, "vocab_size,hidden_size");
    for (fi::Matrix mat : {fi::Matrix::Up, fi::Matrix::Gate, fi::Matrix::Down})
      m.ckpt.info(m.names.matrix(mat, c.num_layers - 1));
  } catch (const fi::Error&) {
    // The expected refusal of a malformed config (or one that does not fit the checkpoint).
  }
  return 0;
}
