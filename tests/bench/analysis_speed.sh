#!/usr/bin/env bash
# Speed of analysis/search (goal: < 1 s), analysis/compare (goal: < 10 s), analysis/export and the
# pages of analysis/serve (goal: < 1 s each, tests/bench/serve_speed.py) on maps of the Llama
# 3.1 8B shape (32 layers x 14336 up_proj neurons, V = 128256, top-20, token index M = 32), made
# synthetically by tests/python/make_synthetic_map.py (~190 MB each, kept in $FI_BENCH_DIR for
# reruns). Whole processes are timed (interpreter start and imports included), each run 3 times
# after one warm-up run. Not a test. usage: tests/bench/analysis_speed.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${FI_BENCH_DIR:-/tmp/flashinterp-analysis-bench}"
PY=/usr/bin/python3
mkdir -p "$DIR"
[ -f "$DIR/a.h5" ] || $PY "$ROOT/tests/python/make_synthetic_map.py" "$DIR/a.h5" --seed 0
[ -f "$DIR/b.h5" ] || $PY "$ROOT/tests/python/make_synthetic_map.py" "$DIR/b.h5" --seed 0 --changed 0.25
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
bench() {  # label, command...
  local label="$1"; shift
  "$@" >/dev/null
  for i in 1 2 3; do
    /usr/bin/time -f "$label: wall %e s (user %U s, sys %S s, max RSS %M KiB)" "$@" >/dev/null
  done
}
bench "search dog" $PY "$ROOT/analysis/search" "$DIR/a.h5" dog
bench "search dog --case --top 50 --json" $PY "$ROOT/analysis/search" "$DIR/a.h5" dog --case --top 50 --json
bench "search dog --variants all (22 multi-token spellings scanned)" $PY "$ROOT/analysis/search" "$DIR/a.h5" dog --variants all --json
bench "search ' Golden Gate' (split, summed log-probabilities)" $PY "$ROOT/analysis/search" "$DIR/a.h5" " Golden Gate" --json
bench "search --regex '^ ?[Dd]og'" $PY "$ROOT/analysis/search" "$DIR/a.h5" --regex '^ ?[Dd]og' --json
bench "compare (tables only)" $PY "$ROOT/analysis/compare" "$DIR/a.h5" "$DIR/b.h5"
bench "compare --out (CSV, JSON, 3 PNG)" $PY "$ROOT/analysis/compare" "$DIR/a.h5" "$DIR/b.h5" --out "$DIR/compare"
/usr/bin/time -f "export (458752 neurons, JSONL + CSV): wall %e s (max RSS %M KiB)" \
  $PY "$ROOT/analysis/export" "$DIR/a.h5" --out "$DIR/export" >/dev/null
ls -l "$DIR/export"
# Page times of analysis/serve on the same shape (with exact entropy/margin and concept sets).
$PY "$ROOT/tests/bench/serve_speed.py" "$DIR"
$PY "$ROOT/analysis/compare" "$DIR/a.h5" "$DIR/b.h5" | grep '^overall'
$PY "$ROOT/analysis/search" "$DIR/a.h5" dog --top 3
