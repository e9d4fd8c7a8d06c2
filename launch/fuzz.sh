#!/usr/bin/env bash
# Fuzzes the parsers of untrusted files with libFuzzer + ASan + UBSan: launch/fuzz.sh SECONDS
# builds tests/fuzz with clang in build-fuzz/ (or $FI_FUZZ_BUILD_DIR), generates the demo models
# (companions) and the seed corpora there, then runs each harness for SECONDS, $FI_FUZZ_JOBS
# (default 2) at a time under nice. Corpora grow in build-fuzz/tests/fuzz/corpus/<harness> and
# are kept between runs. Exits non-zero when a harness finds something; the crashing input is
# in build-fuzz/tests/fuzz/artifacts/<harness>/ and the log says how to replay it.
# Environment: FI_FUZZ_HARNESSES (a subset, space-separated), FI_FUZZ_JOBS, FLASHINTERP (the
# gcc-built binary used for demo-model; default build/src/flashinterp, built when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:?usage: launch/fuzz.sh SECONDS (per harness)}"
BUILD="${FI_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
JOBS="${FI_FUZZ_JOBS:-2}"
HARNESSES=(${FI_FUZZ_HARNESSES:-fuzz_safetensors fuzz_index fuzz_config fuzz_tokenizer_json})
FI="${FLASHINTERP:-$ROOT/build/src/flashinterp}"

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (launch/setup-deps.sh --with-fuzz installs it)" >&2; exit 2; }

echo "fuzz.sh: building the harnesses with clang in $BUILD"
mkdir -p "$BUILD"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -DFLASHINTERP_FUZZ=ON -DFLASHINTERP_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/fuzz-configure.log" 2>&1 \
  || { cat "$BUILD/fuzz-configure.log" >&2; exit 1; }
cmake --build "$BUILD" --target fuzz_all -j "$(nproc)" >/dev/null
FUZZ="$BUILD/tests/fuzz"

# Companions and seeds from the demo model (generated once; delete $FUZZ/data to redo).
DATA="$FUZZ/data"
if [ ! -s "$DATA/sharded/model.safetensors.index.json" ] || [ ! -d "$FUZZ/seeds" ]; then
  [ -x "$FI" ] || { echo "fuzz.sh: $FI missing, building it"; bash "$ROOT/launch/build.sh" >/dev/null; }
  rm -rf "$DATA" "$FUZZ/seeds"
  mkdir -p "$DATA"
  "$FI" demo-model --out "$DATA/model" --hidden 64 --intermediate 128 --layers 2 >/dev/null
  "$FI" demo-model --out "$DATA/sharded" --hidden 64 --intermediate 128 --layers 2 --shards 2 >/dev/null
  /usr/bin/python3 "$ROOT/tests/fuzz/make_seeds.py" "$DATA/model" "$DATA/sharded" "$FUZZ/seeds"
fi

declare -A MAX_LEN=([fuzz_safetensors]=16384 [fuzz_index]=16384 [fuzz_config]=8192 [fuzz_tokenizer_json]=65536)
export FI_FUZZ_DATA="$DATA"
# Leaks are findings; UBSan stops at the first report (compiled with -fno-sanitize-recover too).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

run_one() {
  local h="$1" seed="${1#fuzz_}"
  mkdir -p "$FUZZ/corpus/$h" "$FUZZ/artifacts/$h"
  nice -n 10 "$FUZZ/$h" "$FUZZ/corpus/$h" "$FUZZ/seeds/$seed" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len="${MAX_LEN[$h]}" \
    -dict="$ROOT/tests/fuzz/$seed.dict" -artifact_prefix="$FUZZ/artifacts/$h/" -print_final_stats=1 \
    >"$FUZZ/$h.log" 2>&1
}

echo "fuzz.sh: ${#HARNESSES[@]} harnesses, $SECONDS_EACH s each, $JOBS at a time (logs in $FUZZ/<harness>.log)"
declare -A PID RC
for h in "${HARNESSES[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run_one "$h" &
  PID[$h]=$!
done
for h in "${HARNESSES[@]}"; do
  if wait "${PID[$h]}"; then RC[$h]=0; else RC[$h]=$?; fi
done

status=0
for h in "${HARNESSES[@]}"; do
  log="$FUZZ/$h.log"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
  corpus=$(ls "$FUZZ/corpus/$h" | wc -l)
  if [ "${RC[$h]}" -eq 0 ]; then
    printf 'fuzz.sh: %-20s ok      %10s executions  %-22s corpus %d\n' "$h" "$runs" "$cov" "$corpus"
  else
    status=1
    art=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/Test unit written to //' || true)
    printf 'fuzz.sh: %-20s FINDING (exit %d) %s executions %s\n' "$h" "${RC[$h]}" "$runs" "$cov"
    grep -E "ERROR: |FUZZ FINDING|runtime error|terminate called|what\(\)" "$log" | head -5 | sed 's/^/    /'
    [ -n "$art" ] && echo "    input: $art   replay: FI_FUZZ_DATA=$DATA $FUZZ/$h $art"
  fi
done
exit $status
