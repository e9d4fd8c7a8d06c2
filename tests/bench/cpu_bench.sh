#!/usr/bin/env bash
# CPU decode benchmark at the 8B width (hidden 4096, vocab 128256, one layer of ROWS up_proj
# rows): `flashinterp decode` (whole process, loading included) vs the bare sgemm with the same
# loading vs numpy doing the same work. Not a test. usage: tests/bench/cpu_bench.sh [ROWS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
ROWS="${1:-2048}"
MODEL="${FI_BENCH_MODEL:-/tmp/flashinterp-bench-8bwide}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ ! -f "$MODEL/config.json" ]; then
  "$BUILD/src/flashinterp" demo-model --out "$MODEL" --hidden 4096 --intermediate "$ROWS" \
    --layers 1 --heads 32 --kv-heads 8 --tied --dtype bf16
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== flashinterp decode (1 rank, $(nproc) threads; whole process), without and with the token index"
/usr/bin/time -f "decode (token index off) wall %e s, max RSS %M KiB" "$BUILD/src/flashinterp" decode --model "$MODEL" \
  --out /tmp/flashinterp-bench.h5 --overwrite --layers 0 --chunk-rows 512 --token-index 0
/usr/bin/time -f "decode (token index 32) wall %e s, max RSS %M KiB" "$BUILD/src/flashinterp" decode --model "$MODEL" \
  --out /tmp/flashinterp-bench.h5 --overwrite --layers 0 --chunk-rows 512
echo "== flashinterp decode under mpirun -np 2 (1 thread each; whole job)"
/usr/bin/time -f "decode -np 2 wall %e s" mpirun --oversubscribe -np 2 "$BUILD/src/flashinterp" decode \
  --model "$MODEL" --out /tmp/flashinterp-bench2.h5 --overwrite --layers 0 --chunk-rows 512 --quiet
echo "== bare OpenBLAS sgemm, same loading"
/usr/bin/time -f "bare wall %e s, max RSS %M KiB" "$BUILD/tests/bench/cpu_decode_bench" "$MODEL" "$ROWS" 512
echo "== numpy"
/usr/bin/time -f "numpy wall %e s, max RSS %M KiB" /usr/bin/python3 "$ROOT/tests/bench/numpy_decode_bench.py" "$MODEL" "$ROWS" 512 20
