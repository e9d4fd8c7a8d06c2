// Shared by the libFuzzer harnesses: a scratch directory per process (removed at exit), the
// input written to a real file there (the parsers read files, by path), and the companion files
// (the demo model that launch/fuzz.sh generates) that some harnesses put beside the input.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace fi_fuzz {

// A harness found something that is not a clean fi::Error: say what, then abort so libFuzzer
// saves the input and prints the stack.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::abort();
}

inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/fi_fuzz_XXXXXX";
    if (!::mkdtemp(tmpl.data())) finding("cannot create a scratch directory under " + tmpl);
    static std::string removed_at_exit;
    removed_at_exit = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return tmpl;
  }();
  return dir;
}

// Replaces path's contents with data[0, size).
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) finding("cannot write " + path);
  for (size_t done = 0; done < size;) {
    ssize_t w = ::write(fd, data + done, size - done);
    if (w <= 0) finding("short write to " + path);
    done += size_t(w);
  }
  ::close(fd);
}

// The directory with the generated companions: $FI_FUZZ_DATA, else the build's default.
inline std::string data_dir() {
  const char* e = std::getenv("FI_FUZZ_DATA");
  std::string dir = e && *e ? e : FI_FUZZ_DATA_DEFAULT;
  if (!std::filesystem::is_directory(dir))
    finding("companion data " + dir + " is missing: run launch/fuzz.sh (it generates it) or set FI_FUZZ_DATA");
  return dir;
}

// dir/name -> target (a symbolic link), so the companions are read in place, never copied.
inline void link_companion(const std::string& dir, const std::string& target, const std::string& name) {
  if (!std::filesystem::is_regular_file(target)) finding("companion " + target + " is missing");
  std::error_code ec;
  std::filesystem::remove(dir + "/" + name, ec);
  std::filesystem::create_symlink(target, dir + "/" + name, ec);
  if (ec) finding("cannot link " + dir + "/" + name + ": " + ec.message());
}

}  // namespace fi_fuzz
