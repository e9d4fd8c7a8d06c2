// Writes the HDF5 neuron map (map/format.h, docs/MAP_FORMAT.md) from all ranks.
// Phase 1 (rank 0, serial HDF5 calls): the file, root attributes, vocab and every dataset,
// allocated early. Phase 2, in collective rounds: with parallel HDF5 every rank writes its own
// hyperslabs collectively (MPI-IO); with the serial writer rank 0 gathers each round's results
// and writes them. Both give the same datasets. done[l, c] is set after the chunk's data is
// flushed, and `complete` = 1 is written last, after a flush. A version 2 map (an MoE model) has
// the same writes over more groups: /moe/<matrix> with an expert axis ([L, E, N, K]), and
// /shared/<matrix>; a work item's slice names (layer, expert) there (parallel/partition.h).
#pragma once
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "decode/chunk_result.h"
#include "decode/token_index.h"
#include "parallel/partition.h"
#include "h5/h5.h"
#include "model/vocab.h"

namespace fi {

struct MapMeta {
  std::string model_dir, model_type, norm, backend, command_line, created_utc;
  std::string fingerprint;  // model files + options; --resume refuses a partial map made otherwise
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0, vocab_size = 0;
  int64_t top_k = 0, bottom_k = 0, token_index_m = 0, world_size = 1;
  int64_t format_version = 1;                             // 2: a model with experts
  int64_t num_experts = 0, expert_size = 0, shared_size = 0;  // version 2's root attributes
};

// One group of the map: a matrix (version 1), or in version 2 also moe/<matrix>, shared/<matrix>.
struct MatrixLayout {
  std::string name;     // up | gate | down | moe/up ... | shared/up ...
  std::string pattern;  // model.layers.{}.mlp.up_proj.weight ({e}: the expert)
  bool columns = false;  // down: neurons are columns
  std::vector<int64_t> layers;  // layer ids, in dataset order
  int64_t neurons = 0, chunk_rows = 0;
  std::vector<int64_t> experts;  // routed (moe/*): expert ids along axis 1; empty: no expert axis
  std::string matrix;            // the token index it contributes to (version 2); "": name
  int64_t slices() const { return int64_t(layers.size()) * (experts.empty() ? 1 : int64_t(experts.size())); }
  const std::string& index_name() const { return matrix.empty() ? name : matrix; }
};

enum class WriterKind { Parallel, Serial };
WriterKind default_writer_kind();  // parallel when built with parallel HDF5, unless
                                   // FLASHINTERP_WRITER=serial is set in the environment

class MapWriter {
 public:
  // Collective. vocab is read on rank 0 only. resume: the file exists (checked by the caller)
  // and is opened as it is.
  MapWriter(MPI_Comm comm, const std::string& path, const MapMeta& meta,
            const std::vector<MatrixLayout>& matrices, const Vocab& vocab, WriterKind kind,
            bool resume = false);
  ~MapWriter();
  // Collective: every rank calls once per round, with its item and result or nulls.
  void write_round(const WorkItem* item, const ChunkResult* result);
  // Collective: closes the file; rank 0 sets elapsed_s and complete = 1 last.
  void finish(double elapsed_s);
  // Collective: closes the file as it is (complete stays 0), e.g. after a stop signal.
  void close();
  // Collective: writes the token index of `matrix` (valid on rank 0) and which chunks it
  // includes: the [slices, C] masks of every group contributing to it (index_name() ==
  // matrix), concatenated in layout order, the same on every rank. Version 1: one group.
  void write_token_index(const std::string& matrix, const TokenIndex& ti, const std::vector<uint8_t>& included);

 private:
  struct Datasets;
  void create_file(const MapMeta& meta, const Vocab& vocab);
  void open_datasets();
  void write_local(const WorkItem& item, const ChunkResult& r, hid_t dxpl);
  void write_done(const WorkItem* item, hid_t dxpl);
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::string path_;
  std::vector<MatrixLayout> mats_;
  int64_t k_ = 0, b_ = 0, version_ = 1, experts_ = 0;
  int64_t round_ = 0;
  int64_t index_writes_ = 0;  // write_token_index calls so far (the test kill point index:N)
  WriterKind kind_;
  h5::Handle file_, dxpl_;
  std::vector<Datasets> ds_;
};

}  // namespace fi
