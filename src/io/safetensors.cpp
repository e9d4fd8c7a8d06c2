// safetensors reader and writer: complete header validation (the reference loader's rules, plus
// duplicate names) and reads by byte range with pread, so a slice never reads the whole file.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/half.h"

namespace fi {
namespace {

constexpr uint64_t kMaxHeaderLen = 100'000'000;  // the reference loader's limit

std::string quote(const std::string& s) { return "'" + s + "'"; }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

bool parse_dtype(const std::string& s, DType* d) {
  if (s == "BF16") *d = DType::BF16;
  else if (s == "F16") *d = DType::F16;
  else if (s == "F32") *d = DType::F32;
  else if (s == "F8_E4M3") *d = DType::F8_E4M3;
  else if (s == "F8_E5M2") *d = DType::F8_E5M2;
  else return false;
  return true;
}

// All n bytes at file offset off, or an error naming the file (short read, EOF, I/O error).
void pread_all(int fd, const std::string& path, void* dst, uint64_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, std::min<uint64_t>(n, 1u << 30), off_t(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) FI_FAIL(path + ": read failed at byte " + std::to_string(off) + ": " + std::strerror(errno));
    if (r == 0) FI_FAIL(path + ": unexpected end of file at byte " + std::to_string(off));
    p += r, n -= uint64_t(r), off += uint64_t(r);
  }
}

// JSON parse that rejects duplicate keys in any object (nlohmann would silently keep one).
nlohmann::json parse_header_json(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> keys;  // one key set per open object
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if (ev == nlohmann::json::parse_event_t::object_start) keys.emplace_back();
    if (ev == nlohmann::json::parse_event_t::object_end) keys.pop_back();
    if (ev == nlohmann::json::parse_event_t::key && !keys.back().insert(parsed.get<std::string>()).second)
      FI_FAIL(path + ": duplicate " + (depth == 1 ? "tensor name " : "key ") + quote(parsed.get<std::string>()) +
              " in the header");
    return true;
  };
  try {
    return nlohmann::json::parse(text, cb);
  } catch (const nlohmann::json::exception& e) {
    FI_FAIL(path + ": header is not valid JSON: " + e.what());
  }
}

// One tensor entry: {"dtype", "shape", "data_offsets"}, sizes checked for overflow and agreement.
TensorInfo parse_entry(const std::string& path, const std::string& name, const nlohmann::json& v) {
  const std::string where = path + ": tensor " + quote(name) + ": ";
  if (!v.is_object()) FI_FAIL(where + "entry is not an object");
  TensorInfo t;
  t.name = name;

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) FI_FAIL(where + "missing or non-string field 'dtype'");
  if (!parse_dtype(dt->get<std::string>(), &t.dtype))
    FI_FAIL(where + "unsupported dtype " + quote(dt->get<std::string>()) + " (supported: BF16, F16, F32)");

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) FI_FAIL(where + "field 'shape' is missing or not an array");
  for (const auto& d : *sh) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      FI_FAIL(where + "shape has a negative dimension " + d.dump());
    if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX))
      FI_FAIL(where + "shape dimension " + d.dump() + " is not a non-negative 64-bit integer");
    t.shape.push_back(d.get<int64_t>());
  }

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    FI_FAIL(where + "field 'data_offsets' must be [begin, end] of non-negative integers");
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.begin > t.end)
    FI_FAIL(where + "data_offsets [" + std::to_string(t.begin) + "," + std::to_string(t.end) + "] have begin > end");

  uint64_t bytes = dtype_size(t.dtype);
  for (int64_t d : t.shape)
    if (__builtin_mul_overflow(bytes, uint64_t(d), &bytes))
      FI_FAIL(where + "shape " + shape_str(t.shape) + " overflows 64 bits in bytes");
  if (bytes != t.end - t.begin)
    FI_FAIL(where + "shape " + shape_str(t.shape) + " needs " + std::to_string(bytes) +
            " bytes but data_offsets span " + std::to_string(t.end - t.begin));
  return t;
}

// Sorted by begin, the tensors must tile the data area [0, data_len) exactly.
void check_coverage(const std::string& path, const std::map<std::string, TensorInfo>& tensors,
                    uint64_t data_len) {
  std::vector<const TensorInfo*> order;
  for (const auto& kv : tensors) order.push_back(&kv.second);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    const std::string where = path + ": tensor " + quote(t->name) + ": data_offsets [" +
                              std::to_string(t->begin) + "," + std::to_string(t->end) + "] ";
    if (t->begin > expected && !prev) FI_FAIL(where + "do not start at 0 (hole before the first tensor)");
    if (t->begin > expected)
      FI_FAIL(where + "leave a hole after tensor " + quote(prev->name) + " which ends at " + std::to_string(expected));
    if (t->begin < expected)
      FI_FAIL(where + "overlap tensor " + quote(prev->name) + " which ends at " + std::to_string(expected));
    if (t->end > data_len)
      FI_FAIL(where + "reach beyond the end of the file (data area is " + std::to_string(data_len) + " bytes)");
    expected = t->end;
    prev = t;
  }
  if (expected != data_len)
    FI_FAIL(path + ": data area is " + std::to_string(data_len) + " bytes but tensors cover only " +
            std::to_string(expected) + " (trailing bytes)");
}

void check_2d(const std::string& path, const TensorInfo& t) {
  if (t.shape.size() != 2)
    FI_FAIL(path + ": tensor " + quote(t.name) + ": shape " + shape_str(t.shape) + " is not 2-D");
}

void check_range(const std::string& path, const TensorInfo& t, const char* what, int64_t first, int64_t n,
                 int64_t limit) {
  if (first < 0 || n < 0 || first > limit || n > limit - first)
    FI_FAIL(path + ": tensor " + quote(t.name) + ": " + what + " [" + std::to_string(first) + ", " +
            std::to_string(first) + "+" + std::to_string(n) + ") outside [0, " + std::to_string(limit) + ")");
}

}  // namespace

size_t dtype_size(DType d) { return d == DType::F32 ? 4 : is_fp8(d) ? 1 : 2; }

const char* dtype_name(DType d) {
  switch (d) {
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F32: return "F32";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_E5M2: return "F8_E5M2";
  }
  return "?";
}

// The 8-bit floats from their bit layout: sign, exponent (E4M3: 4 bits, bias 7; E5M2: 5, bias
// 15), mantissa. E4M3 has no infinities (S.1111.111 is NaN); E5M2 has IEEE's.
float fp8_to_f32(DType d, uint8_t code) {
  const bool e4 = d == DType::F8_E4M3;
  const int man_bits = e4 ? 3 : 2, bias = e4 ? 7 : 15, top = e4 ? 15 : 31;
  const int e = (code >> man_bits) & top, m = code & ((1 << man_bits) - 1);
  const float sign = code & 0x80 ? -1.f : 1.f;
  if (e4 && e == top && m == 7) return NAN;
  if (!e4 && e == top) return m == 0 ? sign * INFINITY : NAN;
  if (e == 0) return sign * std::ldexp(float(m), 1 - bias - man_bits);
  return sign * std::ldexp(float((1 << man_bits) | m), e - bias - man_bits);
}

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);  // validated against overflow when parsed
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: a FIFO in the model's place must not block the open (it is refused below).
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) FI_FAIL(path + ": cannot open: " + std::strerror(errno));
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) FI_FAIL(path + ": cannot stat: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) FI_FAIL(path + ": not a regular file");
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
    file_size_ = uint64_t(st.st_size);
    if (file_size_ < 8)
      FI_FAIL(path + ": file is " + std::to_string(file_size_) + " bytes, shorter than the 8-byte header length");

    uint8_t len[8];
    pread_all(fd_, path, len, 8, 0);
    header_len_ = 0;
    for (int i = 7; i >= 0; --i) header_len_ = (header_len_ << 8) | len[i];
    if (header_len_ > kMaxHeaderLen)
      FI_FAIL(path + ": header length " + std::to_string(header_len_) + " exceeds the limit of " +
              std::to_string(kMaxHeaderLen) + " bytes");
    if (8 + header_len_ > file_size_)
      FI_FAIL(path + ": header length " + std::to_string(header_len_) + " runs past the end of the file (" +
              std::to_string(file_size_) + " bytes)");

    std::string text(header_len_, '\0');
    pread_all(fd_, path, text.data(), header_len_, 8);
    nlohmann::json j = parse_header_json(path, text);
    if (!j.is_object()) FI_FAIL(path + ": header is not a JSON object");

    for (const auto& [name, v] : j.items()) {
      if (name == "__metadata__") {
        if (!v.is_object()) FI_FAIL(path + ": __metadata__ is not an object of string to string");
        for (const auto& [k, s] : v.items()) {
          if (!s.is_string()) FI_FAIL(path + ": __metadata__ value of " + quote(k) + " is not a string");
          metadata_[k] = s.get<std::string>();
        }
        continue;
      }
      tensors_[name] = parse_entry(path, name, v);
    }
    check_coverage(path, tensors_, file_size_ - 8 - header_len_);
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) FI_FAIL(path_ + ": missing tensor " + quote(name));
  return it->second;
}

void SafetensorsFile::read_bytes(const TensorInfo& t, uint64_t offset, uint64_t n, void* dst) const {
  uint64_t size = t.end - t.begin;
  if (offset > size || n > size - offset)
    FI_FAIL(path_ + ": tensor " + quote(t.name) + ": bytes [" + std::to_string(offset) + ", " +
            std::to_string(offset) + "+" + std::to_string(n) + ") outside its " + std::to_string(size) + " bytes");
  pread_all(fd_, path_, dst, n, header_bytes() + t.begin + offset);
}

// src: [nrows, cols] in t.dtype, one contiguous byte range -> dst: [nrows, cols] fp32.
void SafetensorsFile::read_rows_f32(const TensorInfo& t, int64_t row0, int64_t nrows, float* dst) const {
  check_2d(path_, t);
  check_range(path_, t, "rows", row0, nrows, t.shape[0]);
  const uint64_t w = dtype_size(t.dtype), cols = uint64_t(t.shape[1]), n = uint64_t(nrows) * cols;
  if (t.dtype == DType::F32) return read_bytes(t, uint64_t(row0) * cols * w, n * w, dst);
  std::vector<uint8_t> buf(n * w);
  read_bytes(t, uint64_t(row0) * cols * w, n * w, buf.data());
  widen_to_f32(t.dtype, buf.data(), n, dst);
}

// Column segment [col0, col0+ncols) of every row -> dst: [ncols, rows] fp32 (transposed).
// A segment that is most of its row is read in blocks of whole rows; a narrow one row by row.
void SafetensorsFile::read_cols_f32(const TensorInfo& t, int64_t col0, int64_t ncols, float* dst) const {
  check_2d(path_, t);
  check_range(path_, t, "columns", col0, ncols, t.shape[1]);
  const uint64_t w = dtype_size(t.dtype), rows = uint64_t(t.shape[0]), cols = uint64_t(t.shape[1]);
  const uint64_t seg = uint64_t(ncols) * w, span = cols * w;
  if (rows == 0 || ncols == 0) return;
  const uint64_t block = 2 * seg >= span ? std::max<uint64_t>(1, (16u << 20) / span) : 1;  // rows per read
  std::vector<uint8_t> buf(block == 1 ? seg : std::min(block, rows) * span);
  std::vector<float> row(static_cast<size_t>(ncols));
  for (uint64_t r0 = 0; r0 < rows; r0 += block) {
    const uint64_t nr = std::min(block, rows - r0);
    if (block == 1) read_bytes(t, r0 * span + uint64_t(col0) * w, seg, buf.data());
    else read_bytes(t, r0 * span, nr * span, buf.data());
    for (uint64_t r = 0; r < nr; ++r) {
      const uint8_t* src = block == 1 ? buf.data() : buf.data() + r * span + uint64_t(col0) * w;
      widen_to_f32(t.dtype, src, size_t(ncols), row.data());
      for (int64_t c = 0; c < ncols; ++c) dst[uint64_t(c) * rows + r0 + r] = row[size_t(c)];
    }
  }
}

std::vector<float> SafetensorsFile::read_f32(const TensorInfo& t) const {
  std::vector<float> out(t.numel());
  if (t.dtype == DType::F32) {
    read_bytes(t, 0, t.end - t.begin, out.data());
    return out;
  }
  std::vector<uint8_t> buf(t.end - t.begin);
  read_bytes(t, 0, buf.size(), buf.data());
  widen_to_f32(t.dtype, buf.data(), out.size(), out.data());
  return out;
}

void widen_to_f32(DType d, const void* src, size_t n, float* dst) {
  const auto* p = static_cast<const uint8_t*>(src);
  if (d == DType::F32) {
    std::memcpy(dst, p, n * 4);
    return;
  }
  if (is_fp8(d)) {
    static const auto table = [] {  // every code, both formats
      std::array<std::array<float, 256>, 2> t{};
      for (int c = 0; c < 256; ++c) {
        t[0][size_t(c)] = fp8_to_f32(DType::F8_E4M3, uint8_t(c));
        t[1][size_t(c)] = fp8_to_f32(DType::F8_E5M2, uint8_t(c));
      }
      return t;
    }();
    const auto& t = table[d == DType::F8_E4M3 ? 0 : 1];
    for (size_t i = 0; i < n; ++i) dst[i] = t[p[i]];
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);  // little-endian host, like the file
    dst[i] = d == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorData& t : tensors) {
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      FI_CHECK(d >= 0, path + ": tensor " + quote(t.name) + ": negative dimension");
      n *= uint64_t(d);
    }
    FI_CHECK(n * dtype_size(t.dtype) == t.bytes.size(),
             path + ": tensor " + quote(t.name) + ": shape " + shape_str(t.shape) + " needs " +
                 std::to_string(n * dtype_size(t.dtype)) + " bytes but " + std::to_string(t.bytes.size()) +
                 " were given");
    FI_CHECK(t.name != "__metadata__" && !h.contains(t.name), path + ": duplicate tensor name " + quote(t.name));
    h[t.name] = {{"dtype", dtype_name(t.dtype)},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data area starts 8-byte aligned

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) FI_FAIL(path + ": cannot create: " + std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), std::streamsize(text.size()));
  for (const TensorData& t : tensors)
    out.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
  out.close();
  if (!out) FI_FAIL(path + ": write failed");
}

}  // namespace fi
