// format_schema(): every item of the map with its kind, dtype, shape and when it is present.
// Paths use {matrix} for each decoded matrix group (up, gate, down); a version 2 map (experts)
// adds /moe/{matrix}, /shared/{matrix} and /token_index/{matrix} ("when" names the version).
#include "map/format.h"

#include <string>

#include "decode/chunk_result.h"

namespace fi::map {
namespace {

nlohmann::json item(const std::string& path, const char* kind, const char* dtype, const char* shape,
                    const char* when = "always") {
  return {{"path", path}, {"kind", kind}, {"dtype", dtype}, {"shape", shape}, {"when", when}};
}

void root_attr_v2(nlohmann::json& items, const char* name, const char* when) {
  items.push_back(item(std::string("/@") + name, "attribute", "int64", "scalar", when));
}

}  // namespace

double matrix_group_bytes(int64_t layers, int64_t neurons, int64_t chunk_rows, int64_t top_k,
                          int64_t bottom_k, int64_t vocab, int64_t token_index_m) {
  const double L = double(layers), N = double(neurons), C = double((neurons + chunk_rows - 1) / chunk_rows);
  // ids, logits, probs; lse, entropy, margin
  const double per_neuron = double(top_k) * 12.0 + double(bottom_k) * 8.0 + 12.0;
  const double index = token_index_m > 0 ? double(vocab) * double(token_index_m) * 20.0 + L * C : 0.0;
  return L * N * per_neuron + L * C + index;  // + done [L, C]
}

double vocab_bytes(int64_t vocab) { return double(vocab) * 100.0; }

nlohmann::json format_schema() {
  nlohmann::json items = nlohmann::json::array();
  auto root_attr = [&](const char* name, const char* dtype) {
    items.push_back(item(std::string("/@") + name, "attribute", dtype, "scalar"));
  };
  root_attr(kAttrFormat, "string");
  root_attr(kAttrFormatVersion, "int64");
  root_attr(kAttrToolVersion, "string");
  root_attr(kAttrBuild, "string");
  root_attr(kAttrModelDir, "string");
  root_attr(kAttrModelType, "string");
  root_attr(kAttrHiddenSize, "int64");
  root_attr(kAttrIntermediateSize, "int64");
  root_attr(kAttrNumLayers, "int64");
  root_attr(kAttrVocabSize, "int64");
  root_attr(kAttrNorm, "string");
  root_attr(kAttrTopK, "int64");
  root_attr(kAttrBottomK, "int64");
  root_attr(kAttrTokenIndexM, "int64");
  root_attr(kAttrBackend, "string");
  root_attr(kAttrWorldSize, "int64");
  root_attr(kAttrCommandLine, "string");
  root_attr(kAttrCreatedUtc, "string");
  root_attr(kAttrElapsedS, "float64");
  root_attr(kAttrComplete, "int64");
  root_attr(kAttrFingerprint, "string");

  const std::string v = std::string("/") + kVocab;
  items.push_back(item(v, "group", "", ""));
  items.push_back(item(v + "/" + kVocabText, "dataset", "utf-8 string (variable length)", "[V]"));
  items.push_back(item(v + "/" + kVocabBytes, "dataset", "uint8 sequence (variable length)", "[V]"));
  items.push_back(item(v + "/" + kVocabSpecial, "dataset", "uint8", "[V]"));

  const std::string g = "/{matrix}";
  items.push_back(item(g, "group", "", ""));
  items.push_back(item(g + "/@" + kAttrTensorPattern, "attribute", "string", "scalar"));
  items.push_back(item(g + "/@" + kAttrAxis, "attribute", "string", "scalar"));
  items.push_back(item(g + "/@" + kAttrLayers, "attribute", "int64", "[L]"));
  items.push_back(item(g + "/@" + kAttrChunkRows, "attribute", "int64", "scalar"));
  for (const ChunkField& f : kChunkFields) {
    const bool bottom = f.width == FieldWidth::BottomK;
    const char* shape = f.width == FieldWidth::One ? "[L, N]" : bottom ? "[L, N, B]" : "[L, N, K]";
    items.push_back(item(g + "/" + f.name, "dataset", f.is_int ? "int32" : "float32", shape,
                         bottom ? "bottom_k > 0" : "always"));
  }
  items.push_back(item(g + "/" + kDone, "dataset", "uint8", "[L, C]"));
  items.push_back(item(g + "/" + kDone + "/@" + kAttrChunkRows, "attribute", "int64", "scalar"));

  const std::string t = g + "/" + kTokenIndex, when = "format_version 1, token_index_m > 0";
  items.push_back(item(t, "group", "", "", when.c_str()));
  items.push_back(item(t + "/" + kTiLayer, "dataset", "int32", "[V, M]", when.c_str()));
  items.push_back(item(t + "/" + kTiNeuron, "dataset", "int32", "[V, M]", when.c_str()));
  items.push_back(item(t + "/" + kTiProbs, "dataset", "float32", "[V, M]", when.c_str()));
  items.push_back(item(t + "/" + kTiLogp, "dataset", "float64", "[V, M]", when.c_str()));
  items.push_back(item(t + "/" + kTiIncluded, "dataset", "uint8", "[L, C]", when.c_str()));

  // Version 2: the expert groups and the token index over all groups.
  const char* v2 = "format_version 2";
  const std::string v2_index = std::string(v2) + ", token_index_m > 0";
  root_attr_v2(items, kAttrNumExperts, v2);
  root_attr_v2(items, kAttrExpertSize, v2);
  root_attr_v2(items, kAttrSharedSize, v2);
  items.push_back(item(g + "/" + kTiIncluded, "dataset", "uint8", "[L, C]", v2_index.c_str()));
  for (const char* kind : {kMoe, kShared}) {
    const bool routed = std::string(kind) == kMoe;
    const std::string k = std::string("/") + kind, p = k + "/{matrix}";
    items.push_back(item(k, "group", "", "", v2));
    items.push_back(item(p, "group", "", "", v2));
    items.push_back(item(p + "/@" + kAttrTensorPattern, "attribute", "string", "scalar", v2));
    items.push_back(item(p + "/@" + kAttrAxis, "attribute", "string", "scalar", v2));
    items.push_back(item(p + "/@" + kAttrLayers, "attribute", "int64", "[L]", v2));
    if (routed) {
      items.push_back(item(p + "/@" + kAttrExperts, "attribute", "int64", "[E]", v2));
      items.push_back(item(p + "/@" + kAttrNumExperts, "attribute", "int64", "scalar", v2));
    }
    items.push_back(item(p + "/@" + kAttrChunkRows, "attribute", "int64", "scalar", v2));
    const std::string lead = routed ? "[L, E, N" : "[L, N";
    const std::string bottom_when = std::string(v2) + ", bottom_k > 0";
    for (const ChunkField& f : kChunkFields) {
      const bool bottom = f.width == FieldWidth::BottomK;
      const std::string shape = lead + (f.width == FieldWidth::One ? "]" : bottom ? ", B]" : ", K]");
      items.push_back(item(p + "/" + f.name, "dataset", f.is_int ? "int32" : "float32", shape.c_str(),
                           bottom ? bottom_when.c_str() : v2));
    }
    const char* cshape = routed ? "[L, E, C]" : "[L, C]";
    items.push_back(item(p + "/" + kDone, "dataset", "uint8", cshape, v2));
    items.push_back(item(p + "/" + kDone + "/@" + kAttrChunkRows, "attribute", "int64", "scalar", v2));
    items.push_back(item(p + "/" + kTiIncluded, "dataset", "uint8", cshape, v2_index.c_str()));
  }
  const std::string ti = std::string("/") + kTokenIndex, tm = ti + "/{matrix}";
  items.push_back(item(ti, "group", "", "", v2_index.c_str()));
  items.push_back(item(tm, "group", "", "", v2_index.c_str()));
  items.push_back(item(tm + "/" + kTiGroup, "dataset", "int8", "[V, M]", v2_index.c_str()));
  items.push_back(item(tm + "/" + kTiLayer, "dataset", "int32", "[V, M]", v2_index.c_str()));
  items.push_back(item(tm + "/" + kTiExpert, "dataset", "int32", "[V, M]", v2_index.c_str()));
  items.push_back(item(tm + "/" + kTiNeuron, "dataset", "int32", "[V, M]", v2_index.c_str()));
  items.push_back(item(tm + "/" + kTiProbs, "dataset", "float32", "[V, M]", v2_index.c_str()));
  items.push_back(item(tm + "/" + kTiLogp, "dataset", "float64", "[V, M]", v2_index.c_str()));
  return {{"format", kFormat}, {"format_version", kFormatVersion}, {"items", items}};
}

}  // namespace fi::map
