// safetensors files: complete header validation and reads by byte range (pread), never the
// whole file when a slice is asked for. Format: u64 LE header length N, N bytes of JSON, data.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fi {

// F8_E4M3 (the "fn" variant: no infinities) and F8_E5M2 are FP8 weights; read through
// Checkpoint, which applies their scale tensors (io/checkpoint.h). Widened alone they are the
// raw 8-bit values.
enum class DType { BF16, F16, F32, F8_E4M3, F8_E5M2 };
size_t dtype_size(DType d);
const char* dtype_name(DType d);
inline bool is_fp8(DType d) { return d == DType::F8_E4M3 || d == DType::F8_E5M2; }
float fp8_to_f32(DType d, uint8_t code);  // exact

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data area
  uint64_t numel() const;
};

class SafetensorsFile {
 public:
  // Opens and validates the whole header; throws fi::Error naming the file and the fault.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming file and tensor
  uint64_t header_bytes() const { return 8 + header_len_; }
  uint64_t file_size() const { return file_size_; }

  // Raw bytes [offset, offset+n) of a tensor's data (offset relative to the tensor start).
  void read_bytes(const TensorInfo& t, uint64_t offset, uint64_t n, void* dst) const;
  // Rows [row0, row0+nrows) of a 2-D tensor widened to fp32: dst is [nrows, cols].
  void read_rows_f32(const TensorInfo& t, int64_t row0, int64_t nrows, float* dst) const;
  // Columns [col0, col0+ncols) of a 2-D tensor, transposed, widened: dst is [ncols, rows].
  void read_cols_f32(const TensorInfo& t, int64_t col0, int64_t ncols, float* dst) const;
  // A whole tensor widened to fp32.
  std::vector<float> read_f32(const TensorInfo& t) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t header_len_ = 0, file_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Widen n values of dtype d at src into dst.
void widen_to_f32(DType d, const void* src, size_t n, float* dst);

// Writer for tests and the demo model: tensors in the given order, data contiguous.
struct TensorData {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // already in dtype, little-endian
};
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace fi
