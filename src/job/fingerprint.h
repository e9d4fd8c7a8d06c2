// The decode's fingerprint: what a partial (or complete) map must share with a run that resumes
// it. Rank 0 computes it before any work; MapWriter stores it as the map's `fingerprint`.
#pragma once
#include <string>
#include <vector>

#include "decode/decoder.h"
#include "model/config.h"

namespace fi {

struct FingerprintInputs {
  const Model& model;
  const std::vector<Matrix>& mats;
  const std::vector<int64_t>& layers;
  const DecodeParams& p;
  int token_index = 0;
  std::string backend;  // cpu | cuda (+ the GEMM mode): the numerics of every chunk
  // A version 2 map (a model with experts): every tensor the groups read, in plan order (the
  // weights hash covers them instead of mats x layers), and the items experts=A-B (the decoded
  // routed experts) and groups=up,moe/up,... . A version 1 fingerprint has none of them.
  int64_t format_version = 1;
  std::vector<std::string> tensors;
  std::string experts, groups;
};

// The format and tool versions; every model file's size and header hash, config.json and
// tokenizer.json; the content of every tensor the decode reads (their sizes and a hash of 16
// blocks of 4 KiB spread evenly over each, its first and last bytes included: a different
// checkpoint of the same shapes, e.g. a fine-tune or another seed, differs in all of them); and
// every option that changes the datasets.
std::string decode_fingerprint(const FingerprintInputs& in);

// Where two fingerprints first differ, for an error line: "theirs X, ours Y" of the first item
// (model file, weights or option) that is not the same.
std::string fingerprint_difference(const std::string& theirs, const std::string& ours);

}  // namespace fi
