#!/usr/bin/env bash
# Set-up if needed, build, run every test (unit, MPI under mpirun, CUDA (skipped without a
# device), Python checks against the real binary). Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$(date +%s)
bash "$ROOT/launch/setup-deps.sh"
bash "$ROOT/launch/build.sh"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" --timeout 900)
echo "launch/test.sh: all tests passed in $(( $(date +%s) - start )) s"
