// The neuron map's format, owned here once: its name and version, and the name of every group,
// dataset and attribute the writer writes and the reader reads. format_schema() lists them all
// with dtypes and shapes (`flashinterp map-format`); tests/python/test_map_format.py holds
// analysis/flashinterp_map.py, docs/MAP_FORMAT.md and a real decoded map to that list.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>

namespace fi::map {

inline constexpr const char* kFormat = "flashinterp-map";
// A dense model's map is version 1; a model with routed experts gets version 2 (version 1 plus
// the /moe and /shared groups and one token index per matrix over all groups). kFormatVersion
// is the newest; readers accept both.
inline constexpr int64_t kFormatVersionDense = 1;
inline constexpr int64_t kFormatVersionMoe = 2;
inline constexpr int64_t kFormatVersion = kFormatVersionMoe;

// Root attributes.
inline constexpr const char* kAttrFormat = "format";
inline constexpr const char* kAttrFormatVersion = "format_version";
inline constexpr const char* kAttrToolVersion = "tool_version";
inline constexpr const char* kAttrBuild = "build";  // common/build_info.h build_line()
inline constexpr const char* kAttrModelDir = "model_dir";
inline constexpr const char* kAttrModelType = "model_type";
inline constexpr const char* kAttrHiddenSize = "hidden_size";
inline constexpr const char* kAttrIntermediateSize = "intermediate_size";
inline constexpr const char* kAttrNumLayers = "num_layers";
inline constexpr const char* kAttrVocabSize = "vocab_size";
inline constexpr const char* kAttrNorm = "norm";
inline constexpr const char* kAttrTopK = "top_k";
inline constexpr const char* kAttrBottomK = "bottom_k";
inline constexpr const char* kAttrTokenIndexM = "token_index_m";
inline constexpr const char* kAttrBackend = "backend";
inline constexpr const char* kAttrWorldSize = "world_size";
inline constexpr const char* kAttrCommandLine = "command_line";
inline constexpr const char* kAttrCreatedUtc = "created_utc";
inline constexpr const char* kAttrElapsedS = "elapsed_s";
inline constexpr const char* kAttrComplete = "complete";        // 1 once every chunk is written
inline constexpr const char* kAttrFingerprint = "fingerprint";  // written last at creation
// Version 2 only (also on each /moe/<matrix> group: kAttrNumExperts).
inline constexpr const char* kAttrNumExperts = "num_experts";  // routed experts per MoE layer
inline constexpr const char* kAttrExpertSize = "expert_size";  // neurons per routed expert
inline constexpr const char* kAttrSharedSize = "shared_size";  // shared experts' neurons (0: none)

// /vocab
inline constexpr const char* kVocab = "vocab";
inline constexpr const char* kVocabText = "text";
inline constexpr const char* kVocabBytes = "bytes";
inline constexpr const char* kVocabSpecial = "special";

// One group per decoded matrix (/up, /gate, /down: model/config.h matrix_name); its datasets
// are the ChunkResult fields (decode/chunk_result.h kChunkFields) plus these.
inline constexpr const char* kAttrTensorPattern = "tensor_pattern";
inline constexpr const char* kAttrAxis = "axis";  // rows | columns
inline constexpr const char* kAttrLayers = "layers";
inline constexpr const char* kAttrChunkRows = "chunk_rows";  // on the group and on done
inline constexpr const char* kDone = "done";

// Version 2: /moe/<matrix> (routed experts; datasets with an expert axis after the layer axis,
// attribute kAttrExperts = the decoded expert ids) and /shared/<matrix> (the shared experts).
inline constexpr const char* kMoe = "moe";
inline constexpr const char* kShared = "shared";
inline constexpr const char* kAttrExperts = "experts";

// /<matrix>/token_index (version 1); version 2: /token_index/<matrix> over every group of the
// matrix, with group and expert per entry, and each contributing group's `included`.
inline constexpr const char* kTokenIndex = "token_index";
inline constexpr const char* kTiGroup = "group";    // int8: 0 dense, 1 routed, 2 shared
inline constexpr const char* kTiExpert = "expert";  // int32: -1 outside routed groups
inline constexpr const char* kTiLayer = "layer";
inline constexpr const char* kTiNeuron = "neuron";
inline constexpr const char* kTiProbs = "probs";
inline constexpr const char* kTiLogp = "logp";
inline constexpr const char* kTiIncluded = "included";

// Bytes on disk (datasets are allocated in full when the map is created): one matrix group of
// `layers` x `neurons` with its token index, and the vocabulary (about 100 bytes a token with
// HDF5's variable-length overhead, measured on Llama 3's 128256 tokens: 85).
double matrix_group_bytes(int64_t layers, int64_t neurons, int64_t chunk_rows, int64_t top_k,
                          int64_t bottom_k, int64_t vocab, int64_t token_index_m);
double vocab_bytes(int64_t vocab);

// Every item above with its kind, dtype and shape, as JSON (the format's machine-readable form).
nlohmann::json format_schema();

}  // namespace fi::map
