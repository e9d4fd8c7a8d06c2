// MapReader: the read side of map/format.h over the h5/ wrappers.
#include "map/map_reader.h"

#include <cmath>

#include "common/error.h"
#include "decode/chunk_result.h"
#include "decode/token_index.h"
#include "map/format.h"

namespace fi {

MapReader::MapReader(const std::string& path) : path_(path) {
  h5::silence_errors();
  f_ = h5::open_file(path, false);
}

std::unique_ptr<MapReader> MapReader::try_open(const std::string& path) {
  h5::silence_errors();
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return nullptr;
  return std::unique_ptr<MapReader>(new MapReader(path, h5::Handle(id, H5Fclose, path)));
}

void MapReader::require_map(bool complete) const {
  using namespace map;
  if (!h5::has_attr(f_, kAttrFormat) || h5::read_attr_string(f_, kAttrFormat) != kFormat)
    FI_FAIL(path_ + ": not a flashinterp map");
  const int64_t v = h5::has_attr(f_, kAttrFormatVersion) ? h5::read_attr_int(f_, kAttrFormatVersion) : -1;
  if (v != kFormatVersion)
    FI_FAIL(path_ + ": map format_version " + std::to_string(v) + ", this flashinterp reads " +
            std::to_string(kFormatVersion));
  if (complete && (!h5::has_attr(f_, kAttrComplete) || h5::read_attr_int(f_, kAttrComplete) != 1))
    FI_FAIL(path_ + ": the map is incomplete (complete = 0)");
}

bool MapReader::has_fingerprint() const { return h5::has_attr(f_, map::kAttrFingerprint); }
std::string MapReader::fingerprint() const { return h5::read_attr_string(f_, map::kAttrFingerprint); }

std::vector<int64_t> MapReader::layers(const std::string& matrix) const {
  if (!h5::exists(f_, "/" + matrix)) FI_FAIL(path_ + ": the map has no '" + matrix + "' matrix");
  h5::Handle g(H5Gopen2(f_, matrix.c_str(), H5P_DEFAULT), H5Gclose, path_ + ": cannot open /" + matrix);
  if (!h5::has_attr(g, map::kAttrLayers)) FI_FAIL(path_ + ": /" + matrix + " has no layers attribute");
  return h5::read_attr_ints(g, map::kAttrLayers);
}

std::vector<uint8_t> MapReader::done(const std::string& matrix) const {
  return h5::read_u8(f_, "/" + matrix + "/" + map::kDone);
}

std::vector<uint8_t> MapReader::index_included(const std::string& matrix) const {
  return h5::read_u8(f_, "/" + matrix + "/" + map::kTokenIndex + "/" + map::kTiIncluded);
}

void MapReader::read_token_index(const std::string& matrix, TokenIndex& ti) const {
  const std::string g = "/" + matrix + "/" + map::kTokenIndex + "/";
  auto read = [&](const char* name, hid_t type, void* dst) {
    h5::Handle ds = h5::open_dataset(f_, g + name);
    FI_CHECK(h5::dataset_dims(ds) == (std::vector<hsize_t>{hsize_t(ti.vocab), hsize_t(ti.m)}),
             path_ + ": " + g + name + " does not have the shape [vocab, M] of this run");
    h5::read_slab(ds, type, {}, {}, dst);
  };
  read(map::kTiLayer, H5T_NATIVE_INT32, ti.layer.data());
  read(map::kTiNeuron, H5T_NATIVE_INT32, ti.neuron.data());
  read(map::kTiLogp, H5T_NATIVE_DOUBLE, ti.logp.data());
  for (size_t i = 0; i < ti.layer.size(); ++i)
    if (ti.layer[i] < 0 || ti.neuron[i] < 0 || (ti.layer[i] == 0 && ti.neuron[i] == 0 && ti.logp[i] == 0)) {
      ti.layer[i] = ti.neuron[i] = -1;
      ti.logp[i] = -INFINITY;
    }
  ti.refresh_worst();
}

int32_t MapReader::top_token(const std::string& matrix, int64_t layer, int64_t neuron) const {
  const std::vector<int64_t> ls = layers(matrix);
  int64_t li = -1;
  for (size_t i = 0; i < ls.size(); ++i)
    if (ls[i] == layer) li = int64_t(i);
  if (li < 0) FI_FAIL(path_ + ": the map has no layer " + std::to_string(layer) + " for " + matrix);
  const std::string name = "/" + matrix + "/" + kChunkFields[0].name;  // top_ids
  h5::Handle d = h5::open_dataset(f_, name);
  const std::vector<hsize_t> dims = h5::dataset_dims(d);
  if (dims.size() != 3) FI_FAIL(path_ + ": " + name + " is not 3-D");
  if (hsize_t(neuron) >= dims[1] || dims[2] == 0)
    FI_FAIL(path_ + ": neuron " + std::to_string(neuron) + " is not in " + name);
  int32_t id = -1;
  h5::read_slab(d, H5T_NATIVE_INT32, {hsize_t(li), hsize_t(neuron), 0}, {1, 1, 1}, &id);
  return id;
}

}  // namespace fi
