// What a decode may do to its --out: checked on rank 0 before any work, and a lock file held for
// the whole job so that two decodes of one OUT can never write into each other's files.
#pragma once
#include <chrono>
#include <string>

namespace fi {

bool file_exists(const std::string& path);  // stat() succeeds (any kind of file)
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Throws (one line naming the path) unless OUT may be written: a missing path in an existing
// directory, or (with --overwrite / --resume) an existing regular file that is a flashinterp
// map. Never a directory, a special file, or anything inside the model directory; OUT.partial
// and OUT.lock must fit the file system's name limit.
void check_output_path(const std::string& out, const std::string& model_dir, bool replace);

// Throws "needs N MiB, has M MiB free" when the file system of `out` has less room than `bytes`.
void check_free_space(const std::string& out, double bytes);

// OUT.lock, created atomically (O_EXCL) with this host, pid and Slurm job id in it, removed by
// the destructor. A lock left by a process that is gone (same host, no such pid; or the same
// Slurm job, requeued) is taken over with a notice; a live one is an error naming its holder.
class OutputLock {
 public:
  explicit OutputLock(const std::string& out);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  std::string path_;
};

}  // namespace fi
