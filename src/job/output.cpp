// check_output_path and OutputLock: plain POSIX (stat, realpath, open with O_EXCL, kill(pid, 0)).
#include "job/output.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "map/map_reader.h"

namespace fi {

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}
namespace {

std::string os_error() { return std::strerror(errno); }

std::string parent_of(const std::string& p) {
  const size_t s = p.find_last_of('/');
  if (s == std::string::npos) return ".";
  return s == 0 ? "/" : p.substr(0, s);
}

std::string base_of(const std::string& p) {
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

// The canonical form of an existing path ("" when it cannot be resolved).
std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

bool is_map(const std::string& path) {
  try {
    MapReader r(path);
    r.require_map(false);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string host_name() {
  char h[256] = {0};
  ::gethostname(h, sizeof h - 1);
  return h;
}

// Whether pid is a live flashinterp on this host: not gone, not a zombie (a rank SIGKILLed by
// mpirun stays one until reaped), and not another program that was given the same pid since.
bool live_decode(long pid) {
  if (pid <= 0 || (::kill(pid_t(pid), 0) != 0 && errno == ESRCH)) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (std::getline(stat, line)) {
    const size_t paren = line.rfind(')');
    if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z') return false;
  }
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
  std::string argv0;
  if (std::getline(cmd, argv0, '\0') && argv0.find("flashinterp") == std::string::npos) return false;
  return true;
}

std::string slurm_job() {
  const char* j = std::getenv("SLURM_JOB_ID");
  return j ? j : "";
}

}  // namespace

void check_output_path(const std::string& out, const std::string& model_dir, bool replace) {
  const std::string dir = parent_of(out), name = base_of(out);
  if (name.empty()) FI_FAIL("--out " + out + ": names a directory, not a file");
  struct stat ds {};
  if (::stat(dir.c_str(), &ds) != 0) FI_FAIL(dir + ": cannot use the directory of --out (" + os_error() + ")");
  if (!S_ISDIR(ds.st_mode)) FI_FAIL(dir + ": the directory of --out is not a directory");
  const long name_max = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  if (name_max > 0 && long(name.size() + std::strlen(".partial")) > name_max)
    FI_FAIL("--out " + out + ": the name is too long: " + name + ".partial (written while the decode runs) "
            "would exceed this file system's " + std::to_string(name_max) + " characters");
  const std::string model = real(model_dir), where = real(dir);
  const bool in_model = !model.empty() && (where == model || where.rfind(model + "/", 0) == 0);
  struct stat st {};
  if (::stat(out.c_str(), &st) != 0) {
    if (errno != ENOENT) FI_FAIL(out + ": cannot check the output path (" + os_error() + ")");
    return;  // a new file
  }
  if (S_ISDIR(st.st_mode)) FI_FAIL(out + ": --out is a directory; name the map file to write");
  if (!S_ISREG(st.st_mode))
    FI_FAIL(out + ": --out exists and is not a regular file (a device, FIFO or socket); refusing to replace it");
  if (!replace) return;  // the caller refuses an existing OUT without --overwrite
  if (in_model) FI_FAIL(out + ": is inside the model directory " + model_dir + "; refusing to replace it");
  if (!is_map(out))
    FI_FAIL(out + ": exists and is not a flashinterp map; --overwrite replaces only maps");
}

void check_free_space(const std::string& out, double bytes) {
  struct statvfs fs {};
  const std::string dir = parent_of(out);
  if (::statvfs(dir.c_str(), &fs) != 0) FI_FAIL(dir + ": cannot read its free space (" + os_error() + ")");
  const double free_bytes = double(fs.f_bavail) * double(fs.f_frsize);
  if (bytes > free_bytes)
    FI_FAIL(out + ": the map needs " + std::to_string(int64_t(bytes / 1048576 + 1)) + " MiB, the file system has " +
            std::to_string(int64_t(free_bytes / 1048576)) + " MiB free");
}

OutputLock::OutputLock(const std::string& out) : path_(out + ".lock") {
  const std::string me = host_name() + " " + std::to_string(::getpid()) + " " + slurm_job();
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
      const std::string line = me + "\n";
      const bool ok = ::write(fd, line.data(), line.size()) == ssize_t(line.size());
      ::close(fd);
      if (!ok) {
        ::unlink(path_.c_str());
        FI_FAIL(path_ + ": cannot write the lock file (" + os_error() + ")");
      }
      return;
    }
    if (errno != EEXIST) FI_FAIL(path_ + ": cannot create the lock file (" + os_error() + ")");
    std::ifstream f(path_);
    std::string host, job;
    long pid = 0;
    f >> host >> pid >> job;
    const bool same_host = host == host_name();
    const bool gone = (same_host && !live_decode(pid)) || (!job.empty() && job == slurm_job());
    if (!gone)
      FI_FAIL(path_ + ": another decode of this output is running (host " + host + ", pid " +
              std::to_string(pid) + (job.empty() ? "" : ", Slurm job " + job) +
              "); wait for it, or remove the lock file if that process is gone");
    std::fprintf(stderr, "flashinterp: %s was left by a decode that is gone (host %s, pid %ld); taking it over\n",
                 path_.c_str(), host.c_str(), pid);
    ::unlink(path_.c_str());
  }
  FI_FAIL(path_ + ": cannot take the lock file");
}

OutputLock::~OutputLock() { ::unlink(path_.c_str()); }

}  // namespace fi
