#!/usr/bin/env bash
# The decode's reader vs cat on the 8B up matrix (32 x [14336, 4096] bf16, 3.76 GB) from the
# page cache: writes the checkpoint once (make_feed_checkpoint.py; content random), reads it
# through cat once, then runs feed_bench (reader and cat alternated, best of REPS).
# Not a test. usage: tests/bench/feed_bench.sh [DIR] [REPS] [WIDEN_THREADS] [READERS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
DIR="${1:-/tmp/flashinterp-feed-8b-up}"
REPS="${2:-3}"
WIDEN="${3:-0}"
READERS="${4:-1}"
if [ ! -f "$DIR/model.safetensors.index.json" ]; then
  /usr/bin/python3 "$ROOT/tests/bench/make_feed_checkpoint.py" "$DIR"
fi
cat "$DIR"/*.safetensors > /dev/null  # into the page cache
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/tests/bench/feed_bench" "$DIR" --chunk-rows 4096 --reps "$REPS" --widen "$WIDEN" --readers "$READERS"
