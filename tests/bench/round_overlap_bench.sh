#!/usr/bin/env bash
# The round overlap on the CPU backend (src/job/round_overlap.h): one decode where the write is a
# visible share of each round (a narrow demo model, hidden 32, one layer of 2048 up rows, chunks
# of 8 rows: 128 rounds at -np 2), under plain `mpirun -np 2`, with FLASHINTERP_ROUND_OVERLAP=0
# (each round decoded after the previous write) and =1 (round r+1 decoded while round r is
# written), REPS times each, interleaved. Prints each run's wall time (the decode's own "done"
# line) and its per-round split summed over the rounds (FLASHINTERP_ROUND_TIMES: decode, the
# main thread's wait for it, the write), then the medians. Extra arguments go to the decode.
# Not a test. usage: tests/bench/round_overlap_bench.sh [REPS] [DECODE ARGS...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
FI="$BUILD/src/flashinterp"
REPS="${1:-3}"
shift || true
MODEL="${FI_BENCH_MODEL:-/tmp/flashinterp-bench-overlap}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$MODEL/config.json" ] || "$FI" demo-model --out "$MODEL" --hidden 32 --intermediate 2048 --layers 1 >/dev/null
echo "machine: $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$REPS"); do
  for ov in 0 1; do
    line=$(FLASHINTERP_ROUND_OVERLAP=$ov FLASHINTERP_ROUND_TIMES=1 mpirun -np 2 "$FI" decode --model "$MODEL" \
           --out "$OUT/map.h5" --overwrite --matrices up --top-k 256 --chunk-rows 8 "$@" 2>&1 |
           grep -E "rounds \(overlap|done:" | sed 's/flashinterp: //; s/ -> .*//' | tr '\n' ' ')
    echo "overlap=$ov run $i: $line"
    echo "$ov $(sed -E 's/.* in ([0-9.]+) s .*/\1/' <<<"$line")" >>"$OUT/times"
  done
done
for ov in 0 1; do
  echo "overlap=$ov: median wall $(awk -v o="$ov" '$1 == o {print $2}' "$OUT/times" | sort -g |
    awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}') s"
done
