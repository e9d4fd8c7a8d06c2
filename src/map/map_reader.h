// Reads a neuron map (map/format.h): what --resume needs from OUT.partial (fingerprint, done
// masks, the stored token index) and single values for `clamp --map`. Errors name the file.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "h5/h5.h"

namespace fi {

struct TokenIndex;
struct TiKey;

class MapReader {
 public:
  // Opens path read-only; throws when it is not an HDF5 file.
  explicit MapReader(const std::string& path);
  // nullptr when path cannot be opened as HDF5 (e.g. cut off while being created).
  static std::unique_ptr<MapReader> try_open(const std::string& path);

  // Throws unless the file is a flashinterp map of format version 1 or 2 (and complete = 1).
  void require_map(bool complete) const;
  int64_t format_version() const;
  bool has_fingerprint() const;  // false: cut off before its creation finished
  std::string fingerprint() const;

  // A group is a matrix (up, gate, down) or, in version 2, moe/<matrix>, shared/<matrix>.
  std::vector<int64_t> layers(const std::string& matrix) const;  // model layer ids, dataset order
  std::vector<uint8_t> done(const std::string& group) const;     // [L, C] or [L, E, C]: chunk written
  std::vector<uint8_t> index_included(const std::string& group) const;  // the same shape
  // The stored token index of matrix into ti (already sized [V, M]); slots never written
  // (fill value 0) are marked empty again. Version 2: /token_index/<matrix>, its (layer, group,
  // expert) packed by key (decode/token_index.h TiKey).
  void read_token_index(const std::string& matrix, TokenIndex& ti, const TiKey& key) const;
  // [slices, C] 1 where chunk c of a slice (a dataset layer, or a (layer, expert)) holds sane
  // data: token ids in [-1, vocab), probabilities in [0, 1] and log-sum-exps finite (one layer
  // read at a time).
  std::vector<uint8_t> sane_chunks(const std::string& group, int64_t vocab, int64_t chunk_rows) const;
  // Whether a stored token index (read by read_token_index) names only real layers, groups,
  // experts and neurons (neurons[g]: the width of group code g, 0 where absent) with
  // log-probabilities <= 0.
  static bool sane_token_index(const TokenIndex& ti, const TiKey& key, int64_t num_layers,
                               const int64_t neurons[3]);
  // A neuron's top token: top_ids[index of layer, neuron, 0] of a group (up, gate, down,
  // shared/<matrix>), or top_ids[index of layer, index of expert, neuron, 0] of moe/<matrix>.
  int32_t top_token(const std::string& group, int64_t layer, int64_t neuron, int64_t expert = -1) const;

 private:
  MapReader(const std::string& path, h5::Handle f) : path_(path), f_(std::move(f)) {}
  std::string path_;
  h5::Handle f_;
};

}  // namespace fi
