// Writes the HDF5 neuron map (map/format.h, docs/MAP_FORMAT.md) from all ranks.
// Phase 1 (rank 0, serial HDF5 calls): the file, root attributes, vocab and every dataset,
// allocated early. Phase 2, in collective rounds: with parallel HDF5 every rank writes its own
// hyperslabs collectively (MPI-IO); with the serial writer rank 0 gathers each round's results
// and writes them. Both give the same datasets. done[l, c] is set after the chunk's data is
// flushed, and `complete` = 1 is written last, after a flush.
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
};

struct MatrixLayout {
  std::string name;     // up | gate | down
  std::string pattern;  // model.layers.{}.mlp.up_proj.weight
  bool columns = false;  // down: neurons are columns
  std::vector<int64_t> layers;  // layer ids, in dataset order
  int64_t neurons = 0, chunk_rows = 0;
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
  // Collective: writes matrix mi's token index (valid on rank 0) and which chunks it includes
  // ([L, C], the same on every rank).
  void write_token_index(size_t mi, const TokenIndex& ti, const std::vector<uint8_t>& included);

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
  int64_t k_ = 0, b_ = 0;
  int64_t round_ = 0;
  int64_t index_writes_ = 0;  // write_token_index calls so far (the test kill point index:N)
  WriterKind kind_;
  h5::Handle file_, dxpl_;
  std::vector<Datasets> ds_;
};

}  // namespace fi
