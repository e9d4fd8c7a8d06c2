// The project's one error type and the check macros that throw it.
// Parsers and libraries throw; the CLI catches at the top, prints one line, exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace fi {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg);

// For the resume tests: SIGKILLs this process when $FLASHINTERP_TEST_KILL_AT equals `point`
// (points: vocab, data:R, done:R, complete, rename; R a round number; index:N, inside the N-th
// token index write (one per matrix per save), after its lists and before its included mask).
// A no-op otherwise.
void test_kill_point(const std::string& point);

// For the failure tests: the rank named by $FLASHINTERP_TEST_FAIL_RANK (-1 when unset) throws
// mid-run (decode: in round 1; clamp/generate: in its stage's second forward).
int test_fail_rank();

// For the stop-signal tests: $FLASHINTERP_TEST_HOLD_ROUND (-1 when unset). A fresh (not resumed)
// decode waits after that round until a stop signal arrives, so the signal certainly finds the
// job running however fast the machine is.
int test_hold_round();

}  // namespace fi

// FI_FAIL(msg): throw fi::Error with msg (file:line kept for debug builds' messages).
#define FI_FAIL(msg) ::fi::fail_at(__FILE__, __LINE__, (msg))
#define FI_CHECK(cond, msg)         \
  do {                              \
    if (!(cond)) FI_FAIL(msg);      \
  } while (0)
