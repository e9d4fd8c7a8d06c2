// The per-row results of one chunk of neurons, described once as a table of fields. Backends
// fill them, the serial writer packs them, the map stores each field as a dataset of the same
// name (docs/MAP_FORMAT.md): every one of those iterates kChunkFields rather than naming fields.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fi {

enum class FieldWidth { TopK, BottomK, One };  // values per row: top_k, bottom_k or 1

struct ChunkField {
  const char* name;  // the map's dataset name
  bool is_int;       // int32 token ids; otherwise float32
  FieldWidth width;
};

inline constexpr int kNumChunkFields = 8;
inline constexpr ChunkField kChunkFields[kNumChunkFields] = {
    {"top_ids", true, FieldWidth::TopK},         // best logit first; -1 past the vocabulary
    {"top_logits", false, FieldWidth::TopK},
    {"top_probs", false, FieldWidth::TopK},      // exp(logit - logsumexp)
    {"logsumexp", false, FieldWidth::One},
    {"bottom_ids", true, FieldWidth::BottomK},   // lowest logit first
    {"bottom_logits", false, FieldWidth::BottomK},
    {"entropy", false, FieldWidth::One},         // nats, of softmax over every logit
    {"margin", false, FieldWidth::One},          // top-1 logit minus top-2 logit
};

inline int64_t field_width(const ChunkField& f, int64_t top_k, int64_t bottom_k) {
  return f.width == FieldWidth::TopK ? top_k : f.width == FieldWidth::BottomK ? bottom_k : 1;
}

// Results of one chunk of `rows` neurons; every field is [rows, width] of 4-byte values.
struct ChunkResult {
  int64_t rows = 0;
  int top_k = 0, bottom_k = 0;
  std::vector<int32_t> top_ids;      // [rows, top_k]
  std::vector<float> top_logits;     // [rows, top_k]
  std::vector<float> top_probs;      // [rows, top_k]
  std::vector<float> lse;            // [rows]
  std::vector<int32_t> bottom_ids;   // [rows, bottom_k]
  std::vector<float> bottom_logits;  // [rows, bottom_k]
  std::vector<float> entropy;        // [rows] nats (RowReducer::entropy)
  std::vector<float> margin;         // [rows] logits (RowReducer::margin)

  // Sizes every field; ids start at -1, values at 0.
  void resize(int64_t rows, int top_k, int bottom_k);
  // Field i of kChunkFields: its first element, and values per row.
  void* data(int i);
  const void* data(int i) const { return const_cast<ChunkResult*>(this)->data(i); }
  int64_t width(int i) const { return field_width(kChunkFields[i], top_k, bottom_k); }
};

}  // namespace fi
