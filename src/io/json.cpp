// Reading a JSON file (see json.h).
#include "io/json.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"

namespace fi {

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) FI_FAIL(path + ": cannot open (a directory)");
  // A FIFO or device would block the read or never end it.
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    FI_FAIL(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) FI_FAIL(path + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    FI_FAIL(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace fi
