// Checkpoint directories: a single model.safetensors, sharded checkpoints with an index, and each
// way the index and the shards can disagree (missing, duplicated, unlisted tensors, bad shard names).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/checkpoint.h"

namespace {

fi::TensorData tensor(const std::string& name, int64_t n) {
  return fi::TensorData{name, fi::DType::F32, {n}, std::vector<uint8_t>(size_t(n) * 4, 0)};
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fi_test_checkpoint_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void shard(const std::string& name, const std::vector<std::string>& tensors) {
    std::vector<fi::TensorData> t;
    for (const auto& n : tensors) t.push_back(tensor(n, 2));
    fi::write_safetensors(dir_ + "/" + name, t);
  }
  void index(const std::string& weight_map_json) {
    std::ofstream(dir_ + "/model.safetensors.index.json")
        << R"({"metadata":{"total_size":48},"weight_map":)" << weight_map_json << "}";
  }
  // Two shards, a and b in the first, c in the second.
  void two_shards() {
    shard("model-00001-of-00002.safetensors", {"a", "b"});
    shard("model-00002-of-00002.safetensors", {"c"});
  }
  void expect_error(const std::vector<std::string>& words) {
    try {
      fi::Checkpoint ck(dir_);
      ADD_FAILURE() << "no fi::Error";
    } catch (const fi::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(dir_), std::string::npos) << msg;
      for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
    }
  }

  std::string dir_;
};

const char* kGoodMap = R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
                       R"("c":"model-00002-of-00002.safetensors"})";

TEST_F(CheckpointTest, SingleFile) {
  fi::write_safetensors(dir_ + "/model.safetensors", {tensor("y", 3), tensor("x", 1)});
  fi::Checkpoint ck(dir_);
  EXPECT_EQ(ck.dir(), dir_);
  EXPECT_EQ(ck.shards().size(), 1u);
  EXPECT_EQ(ck.tensor_names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(ck.has("y"));
  EXPECT_FALSE(ck.has("z"));
  EXPECT_EQ(ck.info("y").shape, std::vector<int64_t>{3});
  EXPECT_EQ(ck.file_of("x").path(), dir_ + "/model.safetensors");
}

TEST_F(CheckpointTest, ShardedWithIndex) {
  two_shards();
  index(kGoodMap);
  fi::Checkpoint ck(dir_);
  EXPECT_EQ(ck.shards().size(), 2u);
  EXPECT_EQ(ck.tensor_names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ck.file_of("a").path(), dir_ + "/model-00001-of-00002.safetensors");
  EXPECT_EQ(ck.file_of("c").path(), dir_ + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(&ck.file_of("a"), &ck.file_of("b"));  // each shard opened once
  EXPECT_EQ(ck.info("c").numel(), 2u);
}

TEST_F(CheckpointTest, IndexWinsOverSingleFile) {
  two_shards();
  index(kGoodMap);
  fi::write_safetensors(dir_ + "/model.safetensors", {tensor("other", 1)});
  fi::Checkpoint ck(dir_);
  EXPECT_FALSE(ck.has("other"));
  EXPECT_TRUE(ck.has("c"));
}

TEST_F(CheckpointTest, MissingTensorThrowsNamingIt) {
  fi::write_safetensors(dir_ + "/model.safetensors", {tensor("x", 1)});
  fi::Checkpoint ck(dir_);
  for (int i = 0; i < 2; ++i) {
    try {
      if (i == 0) ck.file_of("lm_head.weight");
      else ck.info("lm_head.weight");
      ADD_FAILURE() << "no error";
    } catch (const fi::Error& e) {
      EXPECT_EQ(std::string(e.what()), dir_ + ": missing tensor 'lm_head.weight'");
    }
  }
}

TEST_F(CheckpointTest, NoModelFiles) { expect_error({": no model.safetensors or model.safetensors.index.json"}); }

TEST_F(CheckpointTest, IndexNamesTensorMissingFromShard) {
  two_shards();
  index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
        R"("c":"model-00002-of-00002.safetensors","d":"model-00002-of-00002.safetensors"})");
  expect_error({"tensor 'd'", "not found in its shard 'model-00002-of-00002.safetensors'"});
}

TEST_F(CheckpointTest, IndexNamesTheWrongShard) {
  two_shards();
  index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors",)"
        R"("c":"model-00002-of-00002.safetensors"})");
  expect_error({"tensor 'b'", "not found in its shard 'model-00002-of-00002.safetensors'"});
}

TEST_F(CheckpointTest, TensorListedTwiceInIndex) {
  two_shards();
  index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
        R"("c":"model-00002-of-00002.safetensors","a":"model-00002-of-00002.safetensors"})");
  expect_error({"model.safetensors.index.json", "tensor 'a' is listed twice"});
}

TEST_F(CheckpointTest, TensorInTwoShards) {
  shard("model-00001-of-00002.safetensors", {"a", "b"});
  shard("model-00002-of-00002.safetensors", {"b", "c"});
  index(kGoodMap);
  expect_error({"tensor 'b' is in two shards", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST_F(CheckpointTest, TensorInShardButNotInIndex) {
  shard("model-00001-of-00002.safetensors", {"a", "b", "extra"});
  shard("model-00002-of-00002.safetensors", {"c"});
  index(kGoodMap);
  expect_error({"model-00001-of-00002.safetensors", "tensor 'extra' is not listed in the weight_map"});
}

TEST_F(CheckpointTest, ShardNamesMustBePlainFileNames) {
  two_shards();
  for (std::string bad : {"../model-00002-of-00002.safetensors", "sub/x.safetensors", "..", ".", "",
                          "a\\\\b.safetensors", "/etc/passwd"}) {
    index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":")" + bad + "\"}");
    std::string shown = bad == "a\\\\b.safetensors" ? "a\\b.safetensors" : bad;
    expect_error({"tensor 'c'", "shard name '" + shown + "' is not a plain file name"});
  }
}

TEST_F(CheckpointTest, MissingShardFile) {
  shard("model-00001-of-00002.safetensors", {"a", "b"});
  index(kGoodMap);
  expect_error({"model-00002-of-00002.safetensors", "cannot open"});
}

TEST_F(CheckpointTest, BadShardIsReportedByItsPath) {
  two_shards();
  std::ofstream(dir_ + "/model-00002-of-00002.safetensors", std::ios::binary) << "abc";
  index(kGoodMap);
  expect_error({"model-00002-of-00002.safetensors", "shorter than the 8-byte header length"});
}

TEST_F(CheckpointTest, MalformedIndex) {
  two_shards();
  std::ofstream(dir_ + "/model.safetensors.index.json") << "{\"weight_map\": {";
  expect_error({"model.safetensors.index.json", "not valid JSON"});
  std::ofstream(dir_ + "/model.safetensors.index.json") << R"({"metadata":{}})";
  expect_error({"model.safetensors.index.json", "no \"weight_map\" object"});
  std::ofstream(dir_ + "/model.safetensors.index.json") << R"({"weight_map":["a"]})";
  expect_error({"model.safetensors.index.json", "no \"weight_map\" object"});
  index(R"({"a":1})");
  expect_error({"tensor 'a'", "shard name is not a string"});
}

}  // namespace

// ---- FP8 weights and their scales ------------------------------------------------------------

namespace {

fi::TensorData f32_tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
  fi::TensorData t{name, fi::DType::F32, shape, std::vector<uint8_t>(v.size() * 4)};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

}  // namespace

// The 8-bit formats from values worked out by hand from their bit layouts.
TEST(Fp8, CodesDecodeExactly) {
  using fi::DType;
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0x00), 0.f);
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0x38), 1.f);        // e 7 (bias 7), m 0
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0x7E), 448.f);      // the largest: 1.75 * 2^8
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0xFE), -448.f);
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0x01), 0.001953125f);  // the smallest subnormal, 2^-9
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0x08), 0.015625f);     // the smallest normal, 2^-6
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E4M3, 0x3A), 1.25f);
  EXPECT_TRUE(std::isnan(fi::fp8_to_f32(DType::F8_E4M3, 0x7F)));  // no infinities in E4M3 (fn)
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E5M2, 0x3C), 1.f);           // e 15 (bias 15)
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E5M2, 0x7B), 57344.f);       // 1.75 * 2^15
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E5M2, 0x7C), INFINITY);
  EXPECT_TRUE(std::isnan(fi::fp8_to_f32(DType::F8_E5M2, 0x7D)));
  EXPECT_EQ(fi::fp8_to_f32(DType::F8_E5M2, 0x01), 1.52587890625e-05f);  // 2^-16
  std::vector<uint8_t> codes = {0x38, 0xBA, 0x01};
  std::vector<float> out(3);
  fi::widen_to_f32(DType::F8_E4M3, codes.data(), 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{1.f, -1.25f, 0.001953125f}));
}

// Rows and columns of FP8 weights come out times their scale (per row, per block, per tensor);
// a missing or misshapen scale names both tensors.
TEST_F(CheckpointTest, Fp8ScalesPerRowBlockAndTensor) {
  // w [3, 4] codes: row r, column c holds 1.0 + 0.25 * (c % 2) (codes 0x38, 0x3A).
  std::vector<uint8_t> q(12);
  for (int i = 0; i < 12; ++i) q[size_t(i)] = i % 2 ? 0x3A : 0x38;
  auto w = [&](const std::string& n) { return fi::TensorData{n, fi::DType::F8_E4M3, {3, 4}, q}; };
  fi::write_safetensors(dir_ + "/model.safetensors",
                        {w("row"), f32_tensor("row_scale", {3, 1}, {2, 3, 4}),
                         w("block"), f32_tensor("block_scale_inv", {2, 2}, {1, 2, 3, 4}),
                         w("whole"), f32_tensor("whole_scale", {}, {0.5f}),
                         w("bare"), w("bad"), f32_tensor("bad_scale", {2, 1}, {1, 1})});
  fi::Checkpoint c(dir_);
  c.set_weight_block(2, 2);  // blocks of 2 x 2: rows {0,1}, {2}; columns {0,1}, {2,3}
  auto value = [](int c_) { return c_ % 2 ? 1.25f : 1.f; };
  std::vector<float> got(12);
  c.read_rows_f32("row", 0, 3, got.data());
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 4; ++k) EXPECT_EQ(got[size_t(r * 4 + k)], value(k) * float(2 + r)) << r << "," << k;
  c.read_rows_f32("block", 1, 2, got.data());  // rows 1 and 2
  for (int r = 1; r < 3; ++r)
    for (int k = 0; k < 4; ++k)
      EXPECT_EQ(got[size_t((r - 1) * 4 + k)], value(k) * float(1 + (r / 2) * 2 + k / 2)) << r << "," << k;
  c.read_cols_f32("block", 1, 2, got.data());  // columns 1 and 2, transposed: [2, 3]
  for (int k = 1; k < 3; ++k)
    for (int r = 0; r < 3; ++r)
      EXPECT_EQ(got[size_t((k - 1) * 3 + r)], value(k) * float(1 + (r / 2) * 2 + k / 2)) << r << "," << k;
  const std::vector<float> whole = c.read_f32("whole");
  for (int i = 0; i < 12; ++i) EXPECT_EQ(whole[size_t(i)], value(i % 4) * 0.5f);
  auto error_of = [&](const char* name) {
    try {
      c.read_rows_f32(name, 0, 1, got.data());
    } catch (const fi::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("bare").find("FP8 tensor 'bare' has no scale: neither 'bare_scale_inv' nor 'bare_scale'"),
            std::string::npos) << error_of("bare");
  EXPECT_NE(error_of("bad").find("its scale 'bad_scale' has shape [2,1]; a per-row scale is [3,1] or [3]"),
            std::string::npos) << error_of("bad");
  c.set_weight_block(128, 128);  // one block: the 2 x 2 scale no longer fits
  EXPECT_NE(error_of("block").find("in blocks of weight_block_size [128,128] needs [1,1]"), std::string::npos)
      << error_of("block");
}
