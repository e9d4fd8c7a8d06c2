// safetensors: one crafted file per header validation rule (each must fail with a message naming
// the file and the fault), the accepted corner cases, and row/column reads of BF16/F16/F32 data.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "io/safetensors.h"

namespace {

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fi_test_safetensors_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A file of: u64 LE header_len (the real length unless given), header text, data_len zero bytes.
  std::string craft(const std::string& header, uint64_t data_len, int64_t header_len = -1) {
    std::string path = dir_ + "/model.safetensors";
    uint64_t n = header_len < 0 ? header.size() : uint64_t(header_len);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (int i = 0; i < 8; ++i) out.put(char(n >> (8 * i)));
    out << header << std::string(data_len, '\0');
    return path;
  }

  // The message of the fi::Error opening path throws, after checking it names the file.
  std::string error_of(const std::string& path) {
    try {
      fi::SafetensorsFile f(path);
    } catch (const fi::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      return msg;
    }
    ADD_FAILURE() << "no fi::Error for " << path;
    return "";
  }

  void expect_error(const std::string& header, uint64_t data_len, const std::vector<std::string>& words) {
    std::string msg = error_of(craft(header, data_len));
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
  }

  std::string dir_;
};

const char* kOk = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

// ---- header length and JSON ------------------------------------------------------------------

TEST_F(Safetensors, FileShorterThan8Bytes) {
  std::string path = dir_ + "/model.safetensors";
  std::ofstream(path, std::ios::binary) << "abcde";
  std::string msg = error_of(path);
  EXPECT_NE(msg.find("shorter than the 8-byte header length"), std::string::npos) << msg;
}

TEST_F(Safetensors, HeaderLengthOver100MB) {
  std::string msg = error_of(craft(kOk, 8, 100'000'001));
  EXPECT_NE(msg.find("header length 100000001 exceeds the limit"), std::string::npos) << msg;
}

TEST_F(Safetensors, HeaderBeyondFileEnd) {
  std::string msg = error_of(craft(kOk, 8, 1000));
  EXPECT_NE(msg.find("runs past the end of the file"), std::string::npos) << msg;
}

TEST_F(Safetensors, InvalidJson) { expect_error(R"({"x": {"dtype": )", 0, {"not valid JSON"}); }

TEST_F(Safetensors, InvalidUtf8) { expect_error("{\"\xff\xfe\":1}", 0, {"not valid JSON"}); }

TEST_F(Safetensors, TopLevelNotObject) { expect_error("[1,2,3]", 0, {"not a JSON object"}); }

// ---- tensor entries ----------------------------------------------------------------------------

TEST_F(Safetensors, EntryNotObject) { expect_error(R"({"x":[1,2]})", 0, {"tensor 'x'", "not an object"}); }

TEST_F(Safetensors, UnsupportedDtypes) {
  expect_error(R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8,
               {"tensor 'ids'", "unsupported dtype", "I64"});
  expect_error(R"({"q":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})", 1, {"tensor 'q'", "unsupported dtype", "Q4"});
  expect_error(R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8, {"tensor 'x'", "unsupported dtype"});
}

TEST_F(Safetensors, MissingDtype) {
  expect_error(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", 4, {"tensor 'x'", "'dtype'"});
  expect_error(R"({"x":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", 4, {"tensor 'x'", "'dtype'"});
}

TEST_F(Safetensors, ShapeNotArray) {
  expect_error(R"({"x":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16, {"tensor 'x'", "'shape'", "not an array"});
  expect_error(R"({"x":{"dtype":"F32","data_offsets":[0,16]}})", 16, {"tensor 'x'", "'shape'"});
}

TEST_F(Safetensors, ShapeNegativeOrNonInteger) {
  expect_error(R"({"x":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,0]}})", 0, {"tensor 'x'", "negative dimension -1"});
  expect_error(R"({"x":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, {"tensor 'x'", "2.5"});
  expect_error(R"({"x":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8, {"tensor 'x'", "shape dimension"});
}

TEST_F(Safetensors, DataOffsetsMalformed) {
  expect_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4, {"tensor 'x'", "data_offsets"});
  expect_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", 4, {"tensor 'x'", "data_offsets"});
  expect_error(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4, {"tensor 'x'", "begin > end"});
}

TEST_F(Safetensors, ByteLengthMismatch) {
  expect_error(R"({"x":{"dtype":"F16","shape":[3,4],"data_offsets":[0,20]}})", 20,
               {"tensor 'x'", "shape [3,4] needs 24 bytes but data_offsets span 20"});
}

TEST_F(Safetensors, ShapeProductOverflow) {
  expect_error(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0,
               {"tensor 'x'", "overflows"});
  // the product fits in 64 bits but times the dtype width does not
  expect_error(R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
               {"tensor 'x'", "overflows"});
}

TEST_F(Safetensors, DuplicateTensorName) {
  expect_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
               R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
               8, {"duplicate tensor name 'x'"});
}

TEST_F(Safetensors, DuplicateFieldInEntry) {
  expect_error(R"({"x":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4, {"duplicate key 'dtype'"});
}

TEST_F(Safetensors, BadMetadata) {
  expect_error(R"({"__metadata__":{"format":1},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4,
               {"__metadata__", "'format'", "not a string"});
  expect_error(R"({"__metadata__":"pt","x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4,
               {"__metadata__", "not an object"});
}

// ---- how the data area is covered ------------------------------------------------------------

TEST_F(Safetensors, OffsetsWithHole) {
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
               20, {"tensor 'b'", "hole after tensor 'a'"});
}

TEST_F(Safetensors, OffsetsOverlap) {
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12, {"tensor 'b'", "overlap tensor 'a'"});
}

TEST_F(Safetensors, OffsetsNotStartingAtZero) {
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, {"tensor 'a'", "do not start at 0"});
}

TEST_F(Safetensors, TrailingBytes) {
  expect_error(kOk, 12, {"data area is 12 bytes but tensors cover only 8", "trailing"});
}

TEST_F(Safetensors, OffsetsBeyondFile) {
  expect_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
               {"tensor 'a'", "beyond the end of the file"});
}

// ---- accepted files --------------------------------------------------------------------------

TEST_F(Safetensors, AcceptsMetadataZeroSizeScalarAndPadding) {
  // unsorted entries, a zero-size tensor between two others, a scalar, header padded with spaces
  std::string header = R"({"__metadata__":{"format":"pt","note":""},)"
                       R"("s":{"dtype":"F32","shape":[],"data_offsets":[8,12]},)"
                       R"("z":{"dtype":"BF16","shape":[0,5],"data_offsets":[8,8]},)"
                       R"("a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}})";
  header.append(13, ' ');
  std::string path = craft(header, 12);
  fi::SafetensorsFile f(path);
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "");
  EXPECT_EQ(f.info("z").numel(), 0u);
  EXPECT_TRUE(f.read_f32(f.info("z")).empty());
  EXPECT_EQ(f.info("s").numel(), 1u);
  EXPECT_TRUE(f.info("s").shape.empty());
  EXPECT_EQ(f.read_f32(f.info("s")), std::vector<float>{0.0f});
  EXPECT_EQ(f.header_bytes(), 8 + header.size());
  EXPECT_EQ(f.file_size(), 8 + header.size() + 12);
}

TEST_F(Safetensors, AcceptsEmptyHeaderObject) {
  fi::SafetensorsFile f(craft("{}", 0));
  EXPECT_TRUE(f.tensors().empty());
}

TEST_F(Safetensors, MissingTensorNamesFileAndTensor) {
  fi::SafetensorsFile f(craft(kOk, 8));
  try {
    f.info("nope");
    FAIL() << "no error";
  } catch (const fi::Error& e) {
    EXPECT_EQ(std::string(e.what()), f.path() + ": missing tensor 'nope'");
  }
}

TEST_F(Safetensors, CannotOpen) {
  std::string msg = error_of(dir_ + "/absent.safetensors");
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
}

// ---- writer and reads --------------------------------------------------------------------------

float value_at(int64_t r, int64_t c) { return float(r * 7 + c) * 0.5f - 3.0f; }  // exact in bf16 and f16

fi::TensorData make_tensor(const std::string& name, fi::DType dt, int64_t rows, int64_t cols) {
  fi::TensorData t{name, dt, {rows, cols}, {}};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float v = value_at(r, c);
      uint8_t b[4];
      if (dt == fi::DType::F32) std::memcpy(b, &v, 4);
      uint16_t h = dt == fi::DType::BF16 ? fi::f32_to_bf16(v) : fi::f32_to_f16(v);
      if (dt != fi::DType::F32) std::memcpy(b, &h, 2);
      t.bytes.insert(t.bytes.end(), b, b + fi::dtype_size(dt));
    }
  return t;
}

TEST_F(Safetensors, WriterPadsHeaderAndRoundTrips) {
  std::string path = dir_ + "/w.safetensors";
  fi::write_safetensors(path, {make_tensor("b", fi::DType::F16, 3, 2), make_tensor("a", fi::DType::F32, 1, 3)},
                        {{"format", "pt"}});
  fi::SafetensorsFile f(path);
  EXPECT_EQ(f.header_bytes() % 8, 0u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.info("b").begin, 0u);  // tensors in the order given
  EXPECT_EQ(f.info("b").end, 12u);
  EXPECT_EQ(f.info("a").begin, 12u);
  EXPECT_EQ(f.info("a").end, 24u);
  EXPECT_EQ(f.read_f32(f.info("a")), (std::vector<float>{value_at(0, 0), value_at(0, 1), value_at(0, 2)}));

  // the header text: metadata first, then tensors in order, padded with spaces
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string header = bytes.substr(8, f.header_bytes() - 8);
  EXPECT_LT(header.find("__metadata__"), header.find("\"b\""));
  EXPECT_LT(header.find("\"b\""), header.find("\"a\""));
  EXPECT_EQ(header.back() == ' ' || header.back() == '}', true);

  fi::write_safetensors(path, {make_tensor("a", fi::DType::F32, 1, 1)});
  fi::SafetensorsFile g(path);
  EXPECT_TRUE(g.metadata().empty());
  EXPECT_THROW(fi::write_safetensors(path, {fi::TensorData{"x", fi::DType::F32, {2}, {0, 0, 0}}}), fi::Error);
}

class SafetensorsReads : public Safetensors, public ::testing::WithParamInterface<fi::DType> {};

TEST_P(SafetensorsReads, RowsAndColumnsMatchWrittenValues) {
  const fi::DType dt = GetParam();
  const int64_t R = 5, C = 7;
  std::string path = dir_ + "/r.safetensors";
  fi::write_safetensors(path, {make_tensor("pad", dt, 1, 3), make_tensor("w", dt, R, C)});
  fi::SafetensorsFile f(path);
  const fi::TensorInfo& w = f.info("w");

  for (int64_t r0 = 0; r0 <= R; ++r0)
    for (int64_t n = 0; r0 + n <= R; ++n) {
      std::vector<float> dst(size_t(n * C), NAN);
      f.read_rows_f32(w, r0, n, dst.data());
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < C; ++c) ASSERT_EQ(dst[size_t(r * C + c)], value_at(r0 + r, c)) << r0 << " " << n;
    }
  // every column segment, narrow ones (read row by row) and wide ones (read in row blocks)
  for (int64_t c0 = 0; c0 <= C; ++c0)
    for (int64_t n = 0; c0 + n <= C; ++n) {
      std::vector<float> dst(size_t(n * R), NAN);
      f.read_cols_f32(w, c0, n, dst.data());
      for (int64_t c = 0; c < n; ++c)
        for (int64_t r = 0; r < R; ++r) ASSERT_EQ(dst[size_t(c * R + r)], value_at(r, c0 + c)) << c0 << " " << n;
    }
  std::vector<float> all = f.read_f32(w);
  ASSERT_EQ(all.size(), size_t(R * C));
  for (int64_t i = 0; i < R * C; ++i) EXPECT_EQ(all[size_t(i)], value_at(i / C, i % C));
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, SafetensorsReads, ::testing::Values(fi::DType::BF16, fi::DType::F16, fi::DType::F32),
                         [](const auto& info) { return std::string(fi::dtype_name(info.param)); });

TEST_F(Safetensors, ReadRangesAreChecked) {
  std::string path = dir_ + "/r.safetensors";
  fi::write_safetensors(path, {make_tensor("w", fi::DType::BF16, 4, 3),
                               fi::TensorData{"v", fi::DType::F32, {2}, std::vector<uint8_t>(8)}});
  fi::SafetensorsFile f(path);
  std::vector<float> dst(64);
  const auto& w = f.info("w");
  EXPECT_THROW(f.read_rows_f32(w, 3, 2, dst.data()), fi::Error);
  EXPECT_THROW(f.read_rows_f32(w, -1, 1, dst.data()), fi::Error);
  EXPECT_THROW(f.read_rows_f32(w, 0, -1, dst.data()), fi::Error);
  EXPECT_THROW(f.read_cols_f32(w, 2, 2, dst.data()), fi::Error);
  EXPECT_THROW(f.read_cols_f32(w, 4, 0, dst.data()), fi::Error);
  EXPECT_THROW(f.read_bytes(w, 20, 8, dst.data()), fi::Error);
  EXPECT_THROW(f.read_bytes(w, ~uint64_t(0), 2, dst.data()), fi::Error);
  try {
    f.read_rows_f32(f.info("v"), 0, 1, dst.data());
    FAIL() << "no error";
  } catch (const fi::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'v': shape [2] is not 2-D"), std::string::npos) << e.what();
  }
}

TEST_F(Safetensors, RowReadsTouchOnlyTheirByteRange) {
  // Truncate the file after opening: rows before the cut still read, rows after it hit EOF.
  std::string path = dir_ + "/r.safetensors";
  fi::write_safetensors(path, {make_tensor("w", fi::DType::F32, 100, 10)});
  fi::SafetensorsFile f(path);
  const auto& w = f.info("w");
  ASSERT_EQ(truncate(path.c_str(), off_t(f.header_bytes() + 3 * 10 * 4)), 0);
  std::vector<float> dst(30);
  f.read_rows_f32(w, 1, 2, dst.data());
  EXPECT_EQ(dst[0], value_at(1, 0));
  EXPECT_EQ(dst[19], value_at(2, 9));
  try {
    f.read_rows_f32(w, 2, 2, dst.data());
    FAIL() << "no error";
  } catch (const fi::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": unexpected end of file"), std::string::npos) << e.what();
  }
}

}  // namespace
