// libFuzzer harness: a whole .safetensors file (8-byte length, JSON header, data) through
// fi::SafetensorsFile, then every read path on what it accepted. A fi::Error is the expected
// refusal; any other exception, crash, leak or sanitizer report is a finding, and so is an
// accepted file whose tensors break the invariants the readers rely on.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "fuzz_common.h"
#include "io/safetensors.h"

namespace {

void check_and_read(const fi::SafetensorsFile& f) {
  const uint64_t data_len = f.file_size() - f.header_bytes();
  for (const auto& [name, t] : f.tensors()) {
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(t.numel(), uint64_t(fi::dtype_size(t.dtype)), &bytes) ||
        bytes != t.end - t.begin || t.begin > t.end || t.end > data_len)
      fi_fuzz::finding("accepted tensor '" + name + "' whose offsets do not match its shape or the file");
    // Whole-tensor, row and column reads; each is bounded by the file, which the fuzzer keeps small.
    std::vector<float> all = f.read_f32(t);
    if (t.shape.size() != 2) continue;
    const int64_t rows = t.shape[0], cols = t.shape[1];
    if (rows > 0 && cols > 0) {
      const int64_t r0 = rows / 2, nr = std::min<int64_t>(2, rows - r0);
      const int64_t c0 = cols / 2, nc = std::min<int64_t>(2, cols - c0);
      std::vector<float> by_rows(size_t(nr * cols)), by_cols(size_t(nc * rows));  // [nr, cols], [nc, rows]
      f.read_rows_f32(t, r0, nr, by_rows.data());
      f.read_cols_f32(t, c0, nc, by_cols.data());
      auto same = [](float a, float b) { return a == b || (a != a && b != b); };  // NaN == NaN here
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t c = 0; c < cols; ++c)
          if (!same(by_rows[size_t(r * cols + c)], all[size_t((r0 + r) * cols + c)]))
            fi_fuzz::finding("read_rows_f32 disagrees with read_f32 in tensor '" + name + "'");
      for (int64_t c = 0; c < nc; ++c)
        for (int64_t r = 0; r < rows; ++r)
          if (!same(by_cols[size_t(c * rows + r)], all[size_t(r * cols + c0 + c)]))
            fi_fuzz::finding("read_cols_f32 disagrees with read_f32 in tensor '" + name + "'");
    }
    // Out-of-range requests must be refused, never read.
    try {
      float x;
      f.read_rows_f32(t, rows, 1, &x);
      fi_fuzz::finding("read_rows_f32 past the last row was accepted");
    } catch (const fi::Error&) {
    }
  }
  try {
    f.info("\x01no such tensor");
    fi_fuzz::finding("info() of a missing tensor did not throw");
  } catch (const fi::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fi_fuzz::scratch_dir() + "/input.safetensors";
  fi_fuzz::write_file(path, data, size);
  try {
    fi::SafetensorsFile f(path);
    check_and_read(f);
  } catch (const fi::Error&) {
    // The expected refusal of a malformed file.
  }
  return 0;
}
