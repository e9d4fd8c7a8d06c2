// build_info: the version lines and the data directory (common/build_info.h).
#include "common/build_info.h"

#include <filesystem>

#include "fi_revision.h"  // FI_GIT_REVISION: written at every build by cmake/revision.cmake

// FI_VERSION (the CMake project version) and FI_BACKENDS come from src/CMakeLists.txt.
namespace fi {
namespace {

const char* const kLines[] = {"flashinterp " FI_VERSION, "git " FI_GIT_REVISION, "backends: " FI_BACKENDS};

std::string joined(const char* sep) {
  std::string s;
  for (const char* line : kLines) s += (s.empty() ? "" : sep) + std::string(line);
  return s;
}

}  // namespace

std::string version_text() { return joined("\n"); }

std::string build_line() { return joined("; "); }

std::string executable_dir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec || exe.empty() ? std::string() : exe.parent_path().string();
}

std::string data_dir() {
  const std::string bin = executable_dir();
  if (bin.empty()) return "";
  return (std::filesystem::path(bin).parent_path() / "share" / "flashinterp").string();
}

}  // namespace fi
