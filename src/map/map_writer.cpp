// MapWriter: the map file (map/format.h), written by all ranks in collective rounds.
#include "map/map_writer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/build_info.h"
#include "common/error.h"
#include "map/format.h"
#include "parallel/mpi_env.h"

namespace fi {

struct MapWriter::Datasets {
  h5::Handle field[kNumChunkFields];  // kChunkFields order; empty for a width-0 field
  h5::Handle done;
};

namespace {
hid_t field_type(const ChunkField& f) { return f.is_int ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT; }

// The leading dataset coordinates of slice s: {layer index} or, in a routed group, {layer
// index, expert index} (slice = layer index * E + expert index).
std::vector<hsize_t> lead(const MatrixLayout& m, int64_t s) {
  if (m.experts.empty()) return {hsize_t(s)};
  const int64_t E = int64_t(m.experts.size());
  return {hsize_t(s / E), hsize_t(s % E)};
}

// The leading dimensions of a group's datasets: [L] or [L, E].
std::vector<hsize_t> lead_dims(const MatrixLayout& m) {
  std::vector<hsize_t> d{hsize_t(m.layers.size())};
  if (!m.experts.empty()) d.push_back(hsize_t(m.experts.size()));
  return d;
}

std::vector<hsize_t> cat(std::vector<hsize_t> a, const std::vector<hsize_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
}  // namespace

WriterKind default_writer_kind() {
  const char* w = std::getenv("FLASHINTERP_WRITER");
  if (w && std::string(w) == "serial") return WriterKind::Serial;
#ifdef FI_PARALLEL_HDF5
  return WriterKind::Parallel;
#else
  return WriterKind::Serial;
#endif
}

MapWriter::MapWriter(MPI_Comm comm, const std::string& path, const MapMeta& meta,
                     const std::vector<MatrixLayout>& matrices, const Vocab& vocab, WriterKind kind,
                     bool resume)
    : comm_(comm), path_(path), mats_(matrices), k_(meta.top_k), b_(meta.bottom_k),
      version_(meta.format_version), experts_(meta.num_experts), kind_(kind) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
#ifndef FI_PARALLEL_HDF5
  FI_CHECK(kind == WriterKind::Serial, "built without parallel HDF5: only the serial writer exists");
#endif
  h5::silence_errors();
  // Phase 1 on rank 0; the others learn whether it worked before they open the file.
  collective(comm_, [&] {
    if (rank_ == 0 && !resume) create_file(meta, vocab);
  });
  collective(comm_, [&] {
#ifdef FI_PARALLEL_HDF5
    if (kind_ == WriterKind::Parallel) {
      h5::Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "H5Pcreate");
      h5::check(H5Pset_fapl_mpio(fapl, comm_, MPI_INFO_NULL), "H5Pset_fapl_mpio");
      file_ = h5::open_file(path_, true, fapl);
      dxpl_ = h5::Handle(H5Pcreate(H5P_DATASET_XFER), H5Pclose, "H5Pcreate");
      h5::check(H5Pset_dxpl_mpio(dxpl_, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");
      open_datasets();
      return;
    }
#endif
    if (rank_ == 0) {
      file_ = h5::open_file(path_, true);
      open_datasets();
    }
  });
}

MapWriter::~MapWriter() = default;

void MapWriter::create_file(const MapMeta& meta, const Vocab& vocab) {
  h5::Handle f = h5::create_file(path_);
  using namespace map;
  h5::attr_string(f, kAttrFormat, kFormat);
  h5::attr_int(f, kAttrFormatVersion, meta.format_version);
  h5::attr_string(f, kAttrToolVersion, FI_VERSION);
  h5::attr_string(f, kAttrBuild, build_line());
  h5::attr_string(f, kAttrModelDir, meta.model_dir);
  h5::attr_string(f, kAttrModelType, meta.model_type);
  h5::attr_int(f, kAttrHiddenSize, meta.hidden_size);
  h5::attr_int(f, kAttrIntermediateSize, meta.intermediate_size);
  h5::attr_int(f, kAttrNumLayers, meta.num_layers);
  h5::attr_int(f, kAttrVocabSize, meta.vocab_size);
  h5::attr_string(f, kAttrNorm, meta.norm);
  h5::attr_int(f, kAttrTopK, meta.top_k);
  h5::attr_int(f, kAttrBottomK, meta.bottom_k);
  h5::attr_int(f, kAttrTokenIndexM, meta.token_index_m);
  h5::attr_string(f, kAttrBackend, meta.backend);
  h5::attr_int(f, kAttrWorldSize, meta.world_size);
  h5::attr_string(f, kAttrCommandLine, meta.command_line);
  h5::attr_string(f, kAttrCreatedUtc, meta.created_utc);
  h5::attr_double(f, kAttrElapsedS, 0.0);
  h5::attr_int(f, kAttrComplete, 0);
  if (meta.format_version >= kFormatVersionMoe) {
    h5::attr_int(f, kAttrNumExperts, meta.num_experts);
    h5::attr_int(f, kAttrExpertSize, meta.expert_size);
    h5::attr_int(f, kAttrSharedSize, meta.shared_size);
  }

  // /vocab: variable-length data can't go through MPI-IO, so it is written here, serially.
  const hsize_t V = hsize_t(vocab.size());
  FI_CHECK(int64_t(V) == meta.vocab_size, "vocab size does not match the LM-head");
  h5::Handle g = h5::create_group(f, kVocab);
  h5::Handle space(H5Screate_simple(1, &V, nullptr), H5Sclose, "H5Screate_simple");
  {
    h5::Handle t(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
    h5::check(H5Tset_size(t, H5T_VARIABLE), "H5Tset_size");
    h5::check(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset");
    h5::Handle d(H5Dcreate2(g, kVocabText, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose,
                 "cannot create /vocab/text");
    // C strings end at NUL; the one token whose text is U+0000 is shown as U+2400 (␀).
    std::vector<std::string> texts(V);
    std::vector<const char*> ptrs(V);
    for (hsize_t i = 0; i < V; ++i) {
      const std::string& s = vocab.text[i];
      texts[i] = s.find('\0') == std::string::npos ? s : std::string("\xE2\x90\x80");
      ptrs[i] = texts[i].c_str();
    }
    h5::check(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), "write /vocab/text");
    test_kill_point("vocab");
  }
  {
    h5::Handle t(H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose, "H5Tvlen_create");
    h5::Handle d(H5Dcreate2(g, kVocabBytes, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose,
                 "cannot create /vocab/bytes");
    std::vector<hvl_t> vl(V);
    for (hsize_t i = 0; i < V; ++i)
      vl[i] = {vocab.bytes[i].size(), const_cast<char*>(vocab.bytes[i].data())};
    h5::check(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, vl.data()), "write /vocab/bytes");
  }
  {
    h5::Handle d = h5::create_dataset(g, kVocabSpecial, H5T_NATIVE_UINT8, {V}, {V}, false);
    h5::write_slab(d, H5T_NATIVE_UINT8, {0}, {V}, vocab.special.data());
  }

  // No compression: a filtered chunk moves when rewritten (a metadata change), while an
  // unfiltered, early-allocated chunk is written in place. That keeps collective writes simple
  // and makes a kill at any moment leave a readable file for --resume. The map is small
  // (8B, top-20: ~110 MB per matrix).
  const bool v2 = meta.format_version >= kFormatVersionMoe;
  const hsize_t M = hsize_t(meta.token_index_m);  // V: the vocabulary's, checked above
  const hsize_t cv = std::min<hsize_t>(V, 4096);
  std::vector<std::string> parents, indexes;  // /moe, /shared; the token indexes (version 2)
  for (const MatrixLayout& m : mats_) {
    const size_t slash = m.name.find('/');
    if (slash != std::string::npos && std::find(parents.begin(), parents.end(), m.name.substr(0, slash)) == parents.end()) {
      parents.push_back(m.name.substr(0, slash));
      h5::create_group(f, parents.back());
    }
    h5::Handle mg = h5::create_group(f, m.name);
    h5::attr_string(mg, kAttrTensorPattern, m.pattern);
    h5::attr_string(mg, kAttrAxis, m.columns ? "columns" : "rows");
    h5::attr_ints(mg, kAttrLayers, m.layers);
    if (!m.experts.empty()) {
      h5::attr_ints(mg, kAttrExperts, m.experts);
      h5::attr_int(mg, kAttrNumExperts, meta.num_experts);
    }
    const hsize_t N = hsize_t(m.neurons);
    const hsize_t cr = std::min<hsize_t>(hsize_t(m.chunk_rows), N);
    const hsize_t C = hsize_t(num_chunks(m.neurons, m.chunk_rows));
    const std::vector<hsize_t> ld = lead_dims(m), ones(ld.size(), 1);
    for (const ChunkField& fd : kChunkFields) {
      const hsize_t k = hsize_t(field_width(fd, meta.top_k, meta.bottom_k));
      if (fd.width == FieldWidth::One) h5::create_dataset(mg, fd.name, field_type(fd), cat(ld, {N}), cat(ones, {cr}), false);
      else if (k > 0) h5::create_dataset(mg, fd.name, field_type(fd), cat(ld, {N, k}), cat(ones, {cr, k}), false);
    }
    if (meta.token_index_m > 0 && !v2) {
      // token_index/{layer,neuron,probs} is the index; logp (float64) and included (which
      // chunks the stored index covers) let --resume continue the index exactly.
      h5::Handle tg = h5::create_group(mg, kTokenIndex);
      h5::create_dataset(tg, kTiLayer, H5T_NATIVE_INT32, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiNeuron, H5T_NATIVE_INT32, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiProbs, H5T_NATIVE_FLOAT, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiLogp, H5T_NATIVE_DOUBLE, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiIncluded, H5T_NATIVE_UINT8, cat(ld, {C}), cat(ones, {C}), false);
    }
    if (meta.token_index_m > 0 && v2) {  // the lists are in /token_index/<matrix>, below
      h5::create_dataset(mg, kTiIncluded, H5T_NATIVE_UINT8, cat(ld, {C}), cat(ones, {C}), false);
      if (std::find(indexes.begin(), indexes.end(), m.index_name()) == indexes.end()) indexes.push_back(m.index_name());
    }
    h5::Handle done = h5::create_dataset(mg, kDone, H5T_NATIVE_UINT8, cat(ld, {C}), cat(ones, {C}), false);
    h5::attr_int(done, kAttrChunkRows, m.chunk_rows);  // chunk c holds neurons [c·R, (c+1)·R)
    h5::attr_int(mg, kAttrChunkRows, m.chunk_rows);
  }
  if (!indexes.empty()) {
    h5::Handle root = h5::create_group(f, kTokenIndex);
    for (const std::string& x : indexes) {
      h5::Handle tg = h5::create_group(root, x);
      h5::create_dataset(tg, kTiGroup, H5T_NATIVE_INT8, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiLayer, H5T_NATIVE_INT32, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiExpert, H5T_NATIVE_INT32, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiNeuron, H5T_NATIVE_INT32, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiProbs, H5T_NATIVE_FLOAT, {V, M}, {cv, M}, false);
      h5::create_dataset(tg, kTiLogp, H5T_NATIVE_DOUBLE, {V, M}, {cv, M}, false);
    }
  }
  h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), "flush");
  // Last: a partial file without a fingerprint was cut off while being created; --resume
  // starts such a file over.
  h5::attr_string(f, kAttrFingerprint, meta.fingerprint);
  h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), "flush");
}

void MapWriter::open_datasets() {
  for (const MatrixLayout& m : mats_) {
    Datasets d;
    const std::string g = "/" + m.name + "/";
    for (int i = 0; i < kNumChunkFields; ++i)
      if (kChunkFields[i].width == FieldWidth::One || field_width(kChunkFields[i], k_, b_) > 0)
        d.field[i] = h5::open_dataset(file_, g + kChunkFields[i].name);
    d.done = h5::open_dataset(file_, g + map::kDone);
    ds_.push_back(std::move(d));
  }
}

// Writes one item's results; in a collective round every rank calls this for every matrix,
// with an empty selection for the matrices it has nothing for.
void MapWriter::write_local(const WorkItem& it, const ChunkResult& r, hid_t dxpl) {
  for (size_t mi = 0; mi < mats_.size(); ++mi) {
    const bool mine = it.rows > 0 && size_t(it.matrix) == mi;
    Datasets& d = ds_[mi];
    const hsize_t r0 = hsize_t(it.row0), n = hsize_t(it.rows);
    const std::vector<hsize_t> at = lead(mats_[mi], mine ? it.layer_index : 0), ones(at.size(), 1);
    for (int i = 0; i < kNumChunkFields; ++i) {
      const ChunkField& f = kChunkFields[i];
      const hsize_t k = hsize_t(field_width(f, k_, b_));
      if (f.width != FieldWidth::One && k == 0) continue;
      std::vector<hsize_t> start = cat(at, {r0}), count = cat(ones, {n});
      if (f.width != FieldWidth::One) start.push_back(0), count.push_back(k);
      if (mine) h5::write_slab(d.field[i], field_type(f), start, count, r.data(i), dxpl);
      else h5::write_slab(d.field[i], field_type(f), {}, {}, nullptr, dxpl);
    }
  }
}

void MapWriter::write_done(const WorkItem* it, hid_t dxpl) {
  const uint8_t one = 1;
  for (size_t mi = 0; mi < mats_.size(); ++mi) {
    if (it && it->rows > 0 && size_t(it->matrix) == mi) {
      const std::vector<hsize_t> at = lead(mats_[mi], it->layer_index);
      h5::write_slab(ds_[mi].done, H5T_NATIVE_UINT8, cat(at, {hsize_t(it->chunk)}), std::vector<hsize_t>(at.size() + 1, 1),
                     &one, dxpl);
    }
    else if (kind_ == WriterKind::Parallel)
      h5::write_slab(ds_[mi].done, H5T_NATIVE_UINT8, {}, {}, nullptr, dxpl);
  }
}

namespace {

// One rank's round result as bytes, for the serial writer's gather.
std::vector<char> pack(const WorkItem* it, const ChunkResult* r) {
  std::vector<char> buf;
  if (!it) return buf;
  auto put = [&](const void* p, size_t n) {
    buf.insert(buf.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
  };
  put(it, sizeof(WorkItem));
  for (int i = 0; i < kNumChunkFields; ++i) put(r->data(i), size_t(r->rows * r->width(i)) * 4);
  return buf;
}

void unpack(const char* p, int64_t k, int64_t b, WorkItem& it, ChunkResult& r) {
  std::memcpy(&it, p, sizeof(WorkItem));
  p += sizeof(WorkItem);
  r.resize(it.rows, int(k), int(b));
  auto get = [&](void* dst, size_t n) {
    std::memcpy(dst, p, n);
    p += n;
  };
  for (int i = 0; i < kNumChunkFields; ++i) get(r.data(i), size_t(r.rows * r.width(i)) * 4);
}

}  // namespace

void MapWriter::write_round(const WorkItem* item, const ChunkResult* result) {
  if (kind_ == WriterKind::Parallel) {
    collective(comm_, [&] {
      static const WorkItem none{};
      static const ChunkResult empty{};
      write_local(item ? *item : none, item ? *result : empty, dxpl_);
      test_kill_point("data:" + std::to_string(round_));
      h5::check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_ + ": flush failed");
      write_done(item, dxpl_);
      test_kill_point("done:" + std::to_string(round_++));
    });
    return;
  }
  // Serial: gather every rank's packed result on rank 0, which writes them all.
  std::vector<char> mine = pack(item, result);
  int n = int(mine.size());
  std::vector<int> sizes(size_), displs(size_);
  MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm_);
  std::vector<char> all;
  if (rank_ == 0) {
    int total = 0;
    for (int i = 0; i < size_; ++i) {
      displs[i] = total;
      total += sizes[i];
    }
    all.resize(size_t(total));
  }
  MPI_Gatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), displs.data(), MPI_CHAR, 0,
              comm_);
  collective(comm_, [&] {
    if (rank_ != 0) return;
    std::vector<WorkItem> items(size_);
    ChunkResult r;
    for (int i = 0; i < size_; ++i) {
      if (sizes[i] == 0) continue;
      unpack(all.data() + displs[i], k_, b_, items[i], r);
      write_local(items[i], r, H5P_DEFAULT);
    }
    test_kill_point("data:" + std::to_string(round_));
    h5::check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_ + ": flush failed");
    for (int i = 0; i < size_; ++i)
      if (sizes[i] > 0) write_done(&items[i], H5P_DEFAULT);
    test_kill_point("done:" + std::to_string(round_++));
  });
}

void MapWriter::write_token_index(const std::string& matrix, const TokenIndex& ti, const std::vector<uint8_t>& inc) {
  collective(comm_, [&] {
    const bool par = kind_ == WriterKind::Parallel;
    if (!par && rank_ != 0) return;
    const hid_t dxpl = par ? hid_t(dxpl_) : H5P_DEFAULT;
    const bool v2 = version_ >= map::kFormatVersionMoe;
    // The contributing groups, and where each one's mask starts in inc.
    std::vector<size_t> groups, offset;
    size_t total = 0;
    for (size_t i = 0; i < mats_.size(); ++i)
      if (mats_[i].index_name() == matrix) {
        groups.push_back(i);
        offset.push_back(total);
        total += size_t(mats_[i].slices() * num_chunks(mats_[i].neurons, mats_[i].chunk_rows));
      }
    FI_CHECK(!groups.empty() && inc.size() == total && (v2 || groups.size() == 1),
             path_ + ": token index of '" + matrix + "' does not match the map's groups");
    const std::string lists = v2 ? std::string("/") + map::kTokenIndex + "/" + matrix + "/"
                                 : "/" + matrix + "/" + map::kTokenIndex + "/";
    const hsize_t V = hsize_t(ti.vocab), M = hsize_t(ti.m);
    std::vector<float> probs = rank_ == 0 ? ti.probs() : std::vector<float>();
    auto put = [&](const std::string& path, hid_t type, std::vector<hsize_t> count, const void* mem) {
      h5::Handle d = h5::open_dataset(file_, path);
      if (rank_ == 0) h5::write_slab(d, type, std::vector<hsize_t>(count.size(), 0), count, mem, dxpl);
      else h5::write_slab(d, type, {}, {}, nullptr, dxpl);
    };
    auto put_included = [&](const uint8_t* mask) {  // every contributing group's mask
      for (size_t j = 0; j < groups.size(); ++j) {
        const MatrixLayout& m = mats_[groups[j]];
        const std::string path = v2 ? "/" + m.name + "/" + map::kTiIncluded : lists + map::kTiIncluded;
        put(path, H5T_NATIVE_UINT8, cat(lead_dims(m), {hsize_t(num_chunks(m.neurons, m.chunk_rows))}),
            mask ? mask + offset[j] : nullptr);
      }
    };
    // Crash-safe order: the included masks are cleared and flushed before the lists change and
    // set again after they are flushed, so a kill at any moment leaves either lists that
    // cover exactly the chunks marked included, or nothing marked (read_partial then drops the
    // lists and those chunks are indexed again).
    const std::vector<uint8_t> none(rank_ == 0 ? inc.size() : 0, 0);
    put_included(rank_ == 0 ? none.data() : nullptr);
    h5::check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_ + ": flush failed");
    if (v2) {  // the packed keys (decode/token_index.h TiKey) as group, layer, expert
      const TiKey codec{experts_};
      const size_t n = rank_ == 0 ? ti.layer.size() : 0;
      std::vector<int8_t> group(n);
      std::vector<int32_t> layer(n), expert(n);
      for (size_t i = 0; i < n; ++i) codec.split(ti.layer[i], &layer[i], &group[i], &expert[i]);
      put(lists + map::kTiGroup, H5T_NATIVE_INT8, {V, M}, group.data());
      put(lists + map::kTiLayer, H5T_NATIVE_INT32, {V, M}, layer.data());
      put(lists + map::kTiExpert, H5T_NATIVE_INT32, {V, M}, expert.data());
    } else {
      put(lists + map::kTiLayer, H5T_NATIVE_INT32, {V, M}, ti.layer.data());
    }
    put(lists + map::kTiNeuron, H5T_NATIVE_INT32, {V, M}, ti.neuron.data());
    put(lists + map::kTiProbs, H5T_NATIVE_FLOAT, {V, M}, probs.data());
    put(lists + map::kTiLogp, H5T_NATIVE_DOUBLE, {V, M}, ti.logp.data());
    h5::check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_ + ": flush failed");
    if (rank_ == 0) test_kill_point("index:" + std::to_string(++index_writes_));
    put_included(rank_ == 0 ? inc.data() : nullptr);
  });
}

void MapWriter::close() {
  collective(comm_, [&] {
    ds_.clear();
    dxpl_.reset();
    file_.reset();
  });
}

void MapWriter::finish(double elapsed_s) {
  collective(comm_, [&] {
    ds_.clear();
    dxpl_.reset();
    file_.reset();  // collective close in the parallel writer
  });
  collective(comm_, [&] {
    if (rank_ != 0) return;
    test_kill_point("complete");
    h5::Handle f = h5::open_file(path_, true);
    h5::set_attr_double(f, map::kAttrElapsedS, elapsed_s);
    h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), path_ + ": flush failed");
    h5::set_attr_int(f, map::kAttrComplete, 1);
    h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), path_ + ": flush failed");
  });
}

}  // namespace fi
