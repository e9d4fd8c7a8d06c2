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

  // Reads that dequantise FP8 weights (io/safetensors.h) with the scale tensor beside them, in
  // fp32 as q * s (one rounding): <tensor>_scale_inv per block of weight-block rows x cols
  // (set_weight_block: quantization_config.weight_block_size; DeepSeek-V3, Qwen3 FP8), or
  // <tensor>_scale per row ([R, 1] or [R]) or per tensor ([] or [1]) (fbgemm_fp8 as in Llama 3.1
  // 405B FP8, compressed-tensors). Other dtypes are widened exactly, as SafetensorsFile reads
  // them. An FP8 tensor without its scale, or a scale of the wrong shape, is an error naming both.
  void set_weight_block(int64_t rows, int64_t cols);
  void read_rows_f32(const std::string& tensor, int64_t row0, int64_t nrows, float* dst) const;
  void read_cols_f32(const std::string& tensor, int64_t col0, int64_t ncols, float* dst) const;
  std::vector<float> read_f32(const std::string& tensor) const;

  // The scale of an FP8 tensor, widened, with how it applies to element (r, c) of the tensor:
  // scale(r, c) = s[(r / br) * sc + c / bc] (per row: br 1, bc = cols; per tensor: br = rows).
  struct Scale {
    std::vector<float> s;
    int64_t br = 1, bc = 1, sc = 1;
    float at(int64_t r, int64_t c) const { return s[size_t((r / br) * sc + c / bc)]; }
  };
  Scale scale_of(const std::string& tensor) const;  // throws when it is missing or misshapen

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> where_;  // tensor -> shard index
  int64_t block_rows_ = 128, block_cols_ = 128;
};

}  // namespace fi
