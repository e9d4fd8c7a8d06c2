// `flashinterp demo-model`: writes the demo checkpoint (model/demo_model).
#include <cstdio>

#include "cli/commands.h"
#include "model/demo_model.h"

namespace fi {

std::function<int()> add_demo_model(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand("demo-model", "Write a small Llama-format checkpoint with planted "
                                               "concept neurons (planted.json lists them)");
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--dtype", o->dtype, "bf16 | f16 | f32")->capture_default_str();
  cmd->add_option("--layers", o->layers, "number of layers")->capture_default_str();
  cmd->add_option("--hidden", o->hidden, "hidden size")->capture_default_str();
  cmd->add_option("--intermediate", o->intermediate, "intermediate (MLP) size")->capture_default_str();
  cmd->add_option("--heads", o->heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", o->kv_heads, "key/value heads")->capture_default_str();
  cmd->add_option("--shards", o->shards, "number of safetensors shards (>1 writes an index)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->add_option("--variant", o->variant,
                  "base | instruct: the base model of the same seed changed like a fine-tune "
                  "(noise on every MLP weight, a per-layer fraction of neurons retargeted to other "
                  "tokens, the ' dog' neuron to ' puppy'; planted.json lists the changes)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json to use (default: $FLASHINTERP_TOKENIZER, then "
                  "../share/flashinterp/tokenizer/tokenizer.json beside the binary)");
  cmd->add_flag("--tied", o->tied, "tie the LM-head to the embedding");
  cmd->add_flag("--overwrite", o->overwrite, "replace a model already in --out");
  return [o] {
    write_demo_model(*o);
    std::printf("demo model written to %s (planted neurons in %s/planted.json)\n", o->out.c_str(),
                o->out.c_str());
    return 0;
  };
}

}  // namespace fi
