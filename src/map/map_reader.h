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

class MapReader {
 public:
  // Opens path read-only; throws when it is not an HDF5 file.
  explicit MapReader(const std::string& path);
  // nullptr when path cannot be opened as HDF5 (e.g. cut off while being created).
  static std::unique_ptr<MapReader> try_open(const std::string& path);

  // Throws unless the file is a flashinterp map of this format version (and complete = 1).
  void require_map(bool complete) const;
  bool has_fingerprint() const;  // false: cut off before its creation finished
  std::string fingerprint() const;

  std::vector<int64_t> layers(const std::string& matrix) const;  // model layer ids, dataset order
  std::vector<uint8_t> done(const std::string& matrix) const;    // [L, C]: chunk written
  std::vector<uint8_t> index_included(const std::string& matrix) const;  // [L, C]
  // The stored token index of matrix into ti (already sized [V, M]); slots never written
  // (fill value 0) are marked empty again.
  void read_token_index(const std::string& matrix, TokenIndex& ti) const;
  // [L, C] 1 where chunk c of dataset layer l holds sane data: token ids in [-1, vocab),
  // probabilities in [0, 1] and log-sum-exps finite (one layer read at a time).
  std::vector<uint8_t> sane_chunks(const std::string& matrix, int64_t vocab, int64_t chunk_rows) const;
  // Whether a stored token index (read by read_token_index) names only real layers and neurons
  // with log-probabilities <= 0.
  static bool sane_token_index(const TokenIndex& ti, int64_t num_layers, int64_t neurons);
  // top_ids[index of layer, neuron, 0]
  int32_t top_token(const std::string& matrix, int64_t layer, int64_t neuron) const;

 private:
  MapReader(const std::string& path, h5::Handle f) : path_(path), f_(std::move(f)) {}
  std::string path_;
  h5::Handle f_;
};

}  // namespace fi
