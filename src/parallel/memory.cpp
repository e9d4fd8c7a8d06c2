// check_memory and memory_report: getrlimit, /proc/self/status, /proc/meminfo, the cgroup files.
#include "parallel/memory.h"

#include <sys/resource.h>

#include <cstdint>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace fi {
namespace {

constexpr double kMiB = 1048576.0;

// A "Key: N kB" field of a /proc file, in bytes (0 when absent).
double proc_field(const char* file, const std::string& key) {
  std::ifstream f(file);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream in(line.substr(key.size() + 1));
      double kb = 0;
      in >> kb;
      return kb * 1024.0;
    }
  return 0;
}

double address_space_limit() {  // 0: none
  rlimit r{};
  if (getrlimit(RLIMIT_AS, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 0;
  return double(r.rlim_cur);
}

double cgroup_limit() {  // 0: none (cgroup v2 memory.max, else v1 limit_in_bytes)
  for (const char* p : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream f(p);
    std::string v;
    if (!(f >> v) || v == "max") continue;
    const double b = std::stod(v);
    if (b > 0 && b < 1e18) return b;
  }
  return 0;
}

double cgroup_usage() {
  for (const char* p : {"/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}) {
    std::ifstream f(p);
    double v = 0;
    if (f >> v) return v;
  }
  return 0;
}

std::string mib(double b) { return std::to_string(int64_t(b / kMiB + 0.5)) + " MiB"; }

}  // namespace

void check_memory(const std::string& what, double extra_virtual, double extra_resident) {
  const double as_limit = address_space_limit();
  const double in_use = proc_field("/proc/self/status", "VmSize");
  if (as_limit > 0 && in_use + extra_virtual > as_limit)
    FI_FAIL(what + " needs " + mib(in_use + extra_virtual) + " of address space on this rank, has " +
            mib(as_limit) + " (ulimit -v; " + mib(in_use) + " in use before it starts)");
  const double cg = cgroup_limit();
  if (cg > 0 && cgroup_usage() + extra_resident > cg)
    FI_FAIL(what + " needs " + mib(extra_resident) + " more memory, has " + mib(cg - cgroup_usage()) +
            " left of the cgroup's " + mib(cg) + " (memory.max)");
  const double avail = proc_field("/proc/meminfo", "MemAvailable");
  if (avail > 0 && extra_resident > avail)
    FI_FAIL(what + " needs " + mib(extra_resident) + " more memory, the node has " + mib(avail) + " available");
}

std::string memory_report() {
  std::string r = "in use: " + mib(proc_field("/proc/self/status", "VmRSS")) + " resident, " +
                  mib(proc_field("/proc/self/status", "VmSize")) + " address space";
  if (const double l = address_space_limit()) r += "; ulimit -v " + mib(l);
  if (const double c = cgroup_limit()) r += "; cgroup memory.max " + mib(c);
  return r;
}

}  // namespace fi
