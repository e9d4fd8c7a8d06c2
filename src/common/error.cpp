// fail_at: the single place errors are made, so a debugger breakpoint catches all of them.
#include "common/error.h"

#include <csignal>
#include <cstdlib>

namespace fi {

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg) {
  // User-facing messages name the input file and fault; the source location only helps us,
  // so it is appended only when FLASHINTERP_DEBUG is set.
  if (std::getenv("FLASHINTERP_DEBUG"))
    throw Error(msg + " [" + file + ":" + std::to_string(line) + "]");
  throw Error(msg);
}

void test_kill_point(const std::string& point) {
  static const char* at = std::getenv("FLASHINTERP_TEST_KILL_AT");
  if (at && point == at) std::raise(SIGKILL);
}

int test_fail_rank() {
  static const char* r = std::getenv("FLASHINTERP_TEST_FAIL_RANK");
  return r ? std::atoi(r) : -1;
}

int test_hold_round() {
  static const char* r = std::getenv("FLASHINTERP_TEST_HOLD_ROUND");
  return r ? std::atoi(r) : -1;
}

}  // namespace fi
