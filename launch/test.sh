#!/usr/bin/env bash
# Set-up if needed, build, run every test (unit, MPI under mpirun, CUDA (skipped without a
# device), Python checks against the real binary). Exits non-zero on any failure.
# Then a short fuzz of each parser, the unit tests under ASan + UBSan, and the Slurm scripts on a
# local Slurm (each stage says what it runs; FI_TEST_FUZZ_S / FI_TEST_ASAN / FI_TEST_SLURM).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$(date +%s)
# The fuzz and Slurm stages below need extra packages (clang; slurm-wlm, munge): ask for them
# only when those stages run. FI_TEST_FUZZ_S=0, FI_TEST_ASAN=0, FI_TEST_SLURM=0 skip a stage.
SETUP_EXTRA=(--with-browser)   # chromium + selenium: test_serve drives analysis/serve in a browser
[ "${FI_TEST_FUZZ_S:-20}" -gt 0 ] && SETUP_EXTRA+=(--with-fuzz)
[ "${FI_TEST_SLURM:-1}" = 1 ] && SETUP_EXTRA+=(--with-slurm)
bash "$ROOT/launch/setup-deps.sh" "${SETUP_EXTRA[@]}"
bash "$ROOT/launch/build.sh"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" --timeout 900)
# Hostile input: each libFuzzer harness (safetensors, index, config, tokenizer.json) for a short
# time, two at a time; a crash, leak or sanitizer report fails the run (launch/fuzz.sh).
if [ "${FI_TEST_FUZZ_S:-20}" -gt 0 ]; then
  echo "launch/test.sh: fuzzing each parser for ${FI_TEST_FUZZ_S:-20} s (launch/fuzz.sh: clang, libFuzzer, ASan, UBSan)"
  FLASHINTERP="$BUILD/src/flashinterp" bash "$ROOT/launch/fuzz.sh" "${FI_TEST_FUZZ_S:-20}"
else
  echo "launch/test.sh: fuzzing SKIPPED (FI_TEST_FUZZ_S=0)"
fi

# The unit tests again, built with ASan + UBSan (FLASHINTERP_SANITIZE, gcc, no CUDA) in build-asan.
if [ "${FI_TEST_ASAN:-1}" = 1 ]; then
  echo "launch/test.sh: unit tests under ASan + UBSan (${FI_ASAN_BUILD_DIR:-build-asan})"
  ASAN_BUILD="${FI_ASAN_BUILD_DIR:-$ROOT/build-asan}"
  cmake -S "$ROOT" -B "$ASAN_BUILD" -DFLASHINTERP_SANITIZE=ON -DFLASHINTERP_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  mapfile -t UNIT_TARGETS < <(cd "$ROOT/tests/unit" && ls test_*.cpp | sed 's/\.cpp$//')
  cmake --build "$ASAN_BUILD" -j "$(nproc)" --target "${UNIT_TARGETS[@]}" >/dev/null
  (cd "$ASAN_BUILD" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j "$(nproc)" -R '^unit\.')
else
  echo "launch/test.sh: ASan + UBSan unit tests SKIPPED (FI_TEST_ASAN=0)"
fi

# Slurm: a real munge + slurmctld + slurmd on localhost runs slurm/decode.sbatch, then a job that
# hits its time limit, requeues and resumes to an identical map (launch/slurm-test.sh, ~3 min).
if [ "${FI_TEST_SLURM:-1}" = 1 ]; then
  echo "launch/test.sh: Slurm scripts on a local slurmctld/slurmd (launch/slurm-test.sh)"
  FLASHINTERP="$BUILD/src/flashinterp" bash "$ROOT/launch/slurm-test.sh"
else
  echo "launch/test.sh: Slurm test SKIPPED (FI_TEST_SLURM=0)"
fi

echo "launch/test.sh: all tests passed in $(( $(date +%s) - start )) s"
