// The CUDA backend under mpirun: the LM-head replica that the node's ranks build (NCCL
// all-gather, or each rank alone when ranks outnumber devices) holds exactly the checkpoint's
// bytes; a chunk decodes to bit-identical results on every rank, and matches the CPU decoder.
// Runs with any number of ranks; without a device every rank skips.
#include <gtest/gtest.h>
#include <mpi.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "cuda_test_util.h"
#include "decode/cuda/cuda_decoder.h"
#include "decode/cuda/cuda_decoder_impl.h"
#include "gpu/device.h"
#include "model/config.h"

namespace {

constexpr int64_t kVocab = 1000, kHidden = 64, kInter = 96;

fi::TensorData bf16_tensor(const std::string& name, std::vector<int64_t> shape,
                           const std::vector<float>& v) {
  std::vector<uint16_t> raw;
  fi::test::round_bf16(v, &raw);
  fi::TensorData t{name, fi::DType::BF16, std::move(shape), {}};
  t.bytes.resize(raw.size() * 2);
  std::memcpy(t.bytes.data(), raw.data(), t.bytes.size());
  return t;
}

// A one-layer llama checkpoint, written once by world rank 0; every rank gets its path.
const std::string& checkpoint_dir() {
  static std::string dir;
  if (!dir.empty()) return dir;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char path[256] = {0};
  if (rank == 0) {
    std::snprintf(path, sizeof path, "/tmp/fi_cuda_mpi_XXXXXX");
    if (!mkdtemp(path)) path[0] = 0;
    if (path[0]) {
      std::ofstream(std::string(path) + "/config.json")
          << R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
                 "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 1000,
                 "rms_norm_eps": 1e-5, "tie_word_embeddings": false})";
      fi::write_safetensors(
          std::string(path) + "/model.safetensors",
          {bf16_tensor("lm_head.weight", {kVocab, kHidden}, fi::test::normal(kVocab * kHidden, 0.1f, 1)),
           bf16_tensor("model.norm.weight", {kHidden}, fi::test::uniform(kHidden, 0.5f, 1.5f, 2)),
           bf16_tensor("model.layers.0.mlp.up_proj.weight", {kInter, kHidden},
                       fi::test::normal(kInter * kHidden, 1.f, 3)),
           bf16_tensor("model.layers.0.mlp.gate_proj.weight", {kInter, kHidden},
                       fi::test::normal(kInter * kHidden, 1.f, 4)),
           bf16_tensor("model.layers.0.mlp.down_proj.weight", {kHidden, kInter},
                       fi::test::normal(kInter * kHidden, 1.f, 5))});
    }
  }
  MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
  dir = path;
  return dir;
}

struct NodeComm {
  MPI_Comm c = MPI_COMM_NULL;
  NodeComm() { MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &c); }
  ~NodeComm() { MPI_Comm_free(&c); }
};

TEST(CudaMpi, ReplicaHoldsTheCheckpointBytes) {
  FI_SKIP_WITHOUT_CUDA();
  ASSERT_FALSE(checkpoint_dir().empty());
  NodeComm node;
  fi::Model model(checkpoint_dir());
  const fi::TensorInfo& t = model.ckpt.info(model.lm_head_name());
  std::vector<unsigned char> want(t.end - t.begin), got(want.size());
  model.ckpt.file_of(model.lm_head_name()).read_bytes(t, 0, want.size(), want.data());
  for (bool force : {false, true}) {
    fi::gpu::select_device(node.c);
    double seconds = -1;
    fi::gpu::DeviceLmHead h =
        fi::gpu::replicate_lm_head(model, node.c, fi::gpu::ReplicaOptions{force}, &seconds);
    EXPECT_EQ(h.vocab, kVocab);
    EXPECT_EQ(h.hidden, kHidden);
    EXPECT_GE(seconds, 0.0);
    h.data.copy_to_host(got.data(), got.size());
    EXPECT_TRUE(want == got) << "force_nccl " << force;
  }
}

TEST(CudaMpi, ChunksAreIdenticalOnEveryRankAndMatchTheCpu) {
  FI_SKIP_WITHOUT_CUDA();
  ASSERT_FALSE(checkpoint_dir().empty());
  NodeComm node;
  fi::Model model(checkpoint_dir());
  const fi::SafetensorsFile& f = model.ckpt.file_of(model.names.final_norm);
  const std::vector<float> gamma = f.read_f32(f.info(model.names.final_norm));
  const std::string up = model.names.matrix(fi::Matrix::Up, 0);
  std::vector<float> rows(kInter * kHidden);
  model.ckpt.file_of(up).read_rows_f32(model.ckpt.info(up), 0, kInter, rows.data());
  const fi::TensorInfo& ht = model.ckpt.info(model.lm_head_name());
  const std::vector<float> head = model.ckpt.file_of(model.lm_head_name()).read_f32(ht);

  fi::DecodeParams p;
  p.top_k = 20;
  p.bottom_k = 5;
  fi::CudaSetup setup;
  setup.node_comm = node.c;
  setup.split_input = true;
  auto gpu = fi::make_cuda_decoder(model, gamma, p, setup);
  EXPECT_GE(setup.device, 0);
  auto cpu = fi::make_cpu_decoder(fi::LmHead{kVocab, kHidden, head.data()}, gamma, p);

  const int64_t chunk = 32;  // chunks never depend on the number of ranks
  for (int64_t r0 = 0; r0 < kInter; r0 += chunk) {
    fi::ChunkResult g, c;
    gpu->decode(rows.data() + r0 * kHidden, chunk, g);
    cpu->decode(rows.data() + r0 * kHidden, chunk, c);
    fi::test::Tolerance tol;
    EXPECT_EQ("", fi::test::compare_decodes(c, g, p.top_k, p.bottom_k, tol)) << "chunk at " << r0;
    // Rank 0's results, bit for bit, on every rank.
    fi::ChunkResult r = g;
    MPI_Bcast(r.top_ids.data(), int(r.top_ids.size()), MPI_INT32_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(r.top_probs.data(), int(r.top_probs.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(r.top_logits.data(), int(r.top_logits.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(r.lse.data(), int(r.lse.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(r.bottom_ids.data(), int(r.bottom_ids.size()), MPI_INT32_T, 0, MPI_COMM_WORLD);
    EXPECT_EQ(r.top_ids, g.top_ids);
    EXPECT_TRUE(std::memcmp(r.top_probs.data(), g.top_probs.data(), g.top_probs.size() * 4) == 0);
    EXPECT_TRUE(std::memcmp(r.top_logits.data(), g.top_logits.data(), g.top_logits.size() * 4) == 0);
    EXPECT_TRUE(std::memcmp(r.lse.data(), g.lse.data(), g.lse.size() * 4) == 0);
    EXPECT_EQ(r.bottom_ids, g.bottom_ids);
  }
}

// Last: rank 0 removes the checkpoint once every rank is done with it.
TEST(CudaMpi, Cleanup) {
  if (!fi::cuda_available()) GTEST_SKIP() << "SKIPPED (no CUDA device)";
  const std::string dir = checkpoint_dir();  // collective the first time: every rank calls it
  MPI_Barrier(MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0 && !dir.empty()) std::filesystem::remove_all(dir);
}

}  // namespace
