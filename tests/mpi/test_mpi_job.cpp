// Under mpirun with 1-3 ranks: the collective error agreement (one failing rank fails every
// rank, no hang), and the parallel and serial HDF5 writers producing identical datasets with
// the values each rank computed (checked against the formula that made them).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdlib>

#include "common/error.h"
#include "parallel/mpi_env.h"
#include "map/map_writer.h"

namespace {

int rank() {
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world() {
  int s;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

TEST(Collective, OneFailingRankFailsEveryRank) {
  const int bad = world() - 1;
  bool failed = false;
  try {
    fi::collective(MPI_COMM_WORLD, [&] {
      if (rank() == bad) FI_FAIL("rank " + std::to_string(bad) + " cannot read its shard (test)");
    });
  } catch (const fi::JobFailed&) {
    failed = true;
  }
  EXPECT_TRUE(failed);
  bool ok = true;
  try {
    fi::collective(MPI_COMM_WORLD, [] {});
  } catch (const fi::JobFailed&) {
    ok = false;
  }
  EXPECT_TRUE(ok);
}

// The synthetic result of row n of (matrix m, layer l): values only a formula can give.
void fill(const fi::WorkItem& it, int k, int b, fi::ChunkResult& r) {
  r.resize(it.rows, k, b);
  for (int64_t i = 0; i < it.rows; ++i) {
    int64_t n = it.row0 + i;
    for (int j = 0; j < k; ++j) {
      r.top_ids[i * k + j] = int32_t(n * 31 + j + 1000 * it.matrix + 100000 * it.layer_index);
      r.top_logits[i * k + j] = float(n) - 0.25f * j;
      r.top_probs[i * k + j] = 1.f / float(n + j + 1);
    }
    r.lse[i] = float(n) + 0.5f;
    for (int j = 0; j < b; ++j) {
      r.bottom_ids[i * b + j] = int32_t(n + j);
      r.bottom_logits[i * b + j] = -float(n) - j;
    }
  }
}

std::string write_map(const std::string& path, fi::WriterKind kind) {
  const int k = 4, b = 2;
  const int64_t N = 37, cr = 5;
  std::vector<fi::MatrixLayout> mats = {{"up", "model.layers.{}.mlp.up_proj.weight", false, {2, 3}, N, cr, {}, ""},
                                        {"down", "model.layers.{}.mlp.down_proj.weight", true, {2, 3}, N, cr, {}, ""}};
  fi::MapMeta meta;
  meta.top_k = k;
  meta.bottom_k = b;
  meta.vocab_size = 3;
  meta.world_size = world();
  fi::Vocab v;
  v.bytes = {"a", " dog", "\xff"};
  v.text = {"a", " dog", "\xEF\xBF\xBD"};
  v.special = {0, 0, 1};
  if (rank() == 0) std::remove(path.c_str());
  fi::MapWriter w(MPI_COMM_WORLD, path, meta, mats, v, kind);
  auto plan = fi::make_plan(2, 2, N, cr);
  fi::Range s = fi::rank_share(plan.size(), rank(), world());
  fi::ChunkResult r;
  for (size_t round = 0; round < fi::num_rounds(plan.size(), world()); ++round) {
    const fi::WorkItem* it = round < s.size() ? &plan[s.begin + round] : nullptr;
    if (it) fill(*it, k, b, r);
    w.write_round(it, it ? &r : nullptr);
  }
  w.finish(1.0);
  return path;
}

template <class T>
std::vector<T> read_all(hid_t f, const char* name, hid_t type) {
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  hid_t s = H5Dget_space(d);
  std::vector<T> v(size_t(H5Sget_simple_extent_npoints(s)));
  H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Sclose(s);
  H5Dclose(d);
  return v;
}

TEST(MapWriter, ParallelAndSerialWritersAgreeWithTheFormula) {
  char tmpl[] = "/tmp/fi_mpi_XXXXXX";
  std::string dir;
  if (rank() == 0) dir = mkdtemp(tmpl);
  int n = int(dir.size());
  MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
  dir.resize(size_t(n));
  MPI_Bcast(dir.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD);

  std::vector<std::string> files;
#ifdef FI_PARALLEL_HDF5
  files.push_back(write_map(dir + "/parallel.h5", fi::WriterKind::Parallel));
#endif
  files.push_back(write_map(dir + "/serial.h5", fi::WriterKind::Serial));
  if (rank() != 0) return;

  const int k = 4;
  const int64_t N = 37;
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    auto ids = read_all<int32_t>(f, "/down/top_ids", H5T_NATIVE_INT32);
    auto probs = read_all<float>(f, "/up/top_probs", H5T_NATIVE_FLOAT);
    auto lse = read_all<float>(f, "/up/logsumexp", H5T_NATIVE_FLOAT);
    auto bl = read_all<float>(f, "/down/bottom_logits", H5T_NATIVE_FLOAT);
    auto done = read_all<uint8_t>(f, "/up/done", H5T_NATIVE_UINT8);
    ASSERT_EQ(ids.size(), size_t(2 * N * k));
    for (int l = 0; l < 2; ++l)
      for (int64_t row = 0; row < N; ++row) {
        for (int j = 0; j < k; ++j) {
          ASSERT_EQ(ids[(l * N + row) * k + j], row * 31 + j + 1000 + 100000 * l);
          ASSERT_EQ(probs[(l * N + row) * k + j], 1.f / float(row + j + 1));
        }
        ASSERT_EQ(lse[l * N + row], float(row) + 0.5f);
        ASSERT_EQ(bl[(l * N + row) * 2 + 1], -float(row) - 1);
      }
    for (uint8_t d : done) EXPECT_EQ(d, 1);
    int64_t complete = 0;
    hid_t a = H5Aopen(f, "complete", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, &complete);
    H5Aclose(a);
    EXPECT_EQ(complete, 1);
    H5Fclose(f);
  }
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
