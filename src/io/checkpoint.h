// A Hugging Face checkpoint directory: config.json, model.safetensors or sharded
// model-0000k-of-0000n.safetensors + model.safetensors.index.json, tokenizer.json.
// Maps each tensor name to the shard that holds it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace fi {

class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);  // opens and validates every shard's header
  const std::string& dir() const { return dir_; }
  bool has(const std::string& tensor) const;
  const SafetensorsFile& file_of(const std::string& tensor) const;  // throws naming the tensor
  const TensorInfo& info(const std::string& tensor) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  std::vector<std::string> tensor_names() const;  // sorted

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> where_;  // tensor -> shard index
};

}  // namespace fi
