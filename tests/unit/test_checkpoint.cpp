// Checkpoint directories: a single model.safetensors, sharded checkpoints with an index, and each
// way the index and the shards can disagree (missing, duplicated, unlisted tensors, bad shard names).
#include <gtest/gtest.h>
#include <stdlib.h>

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
