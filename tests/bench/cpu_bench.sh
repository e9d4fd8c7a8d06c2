#!/usr/bin/env bash
# CPU decode benchmark at the 8B width (hidden 4096, vocab 128256, one layer of ROWS up_proj
# rows, default 1536), whole processes, loading included, in one run:
#   flashinterp decode (the exact default) under `mpirun -np 1` and `-np 2`, default binding;
#   flashinterp decode --gemm bf16 (one bf16 GEMM + re-scoring) under `mpirun -np 1`;
#   the bare OpenBLAS sgemm with the same loading (cpu_decode_bench);
#   numpy's bare sgemm + load, and numpy's whole pipeline.
# The token index is off everywhere (numpy has none). The checkpoint is read into the page cache
# first, and each program runs REPS times (default 2), the best wall time kept (a shared machine
# is noisy). Prints the wall times and the ratios to numpy's bare sgemm + load.
# Not a test. usage: tests/bench/cpu_bench.sh [ROWS] [REPS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
ROWS="${1:-1536}"
REPS="${2:-2}"
MODEL="${FI_BENCH_MODEL:-/tmp/flashinterp-bench-8bwide-$ROWS}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ ! -f "$MODEL/config.json" ]; then
  "$BUILD/src/flashinterp" demo-model --out "$MODEL" --hidden 4096 --intermediate "$ROWS" \
    --layers 1 --heads 32 --kv-heads 8 --tied --dtype bf16
fi
FI="$BUILD/src/flashinterp"
DEC=(decode --model "$MODEL" --layers 0 --chunk-rows 512 --token-index 0 --overwrite)
cat "$MODEL"/*.safetensors > /dev/null  # every program reads from the page cache
source "$ROOT/tests/bench/bench_lib.sh"
machine_line
echo "== flashinterp decode"
timed "exact, mpirun -np 1" mpirun -np 1 "$FI" "${DEC[@]}" --out /tmp/flashinterp-bench.h5
timed "exact, mpirun -np 2" mpirun -np 2 "$FI" "${DEC[@]}" --out /tmp/flashinterp-bench2.h5 --quiet
timed "bf16, mpirun -np 1" mpirun -np 1 "$FI" "${DEC[@]}" --out /tmp/flashinterp-bench3.h5 --gemm bf16
# mpirun binds each rank to one core when np <= 2: the same with every core, for comparison
timed "exact, -np 1 --bind-to none" mpirun -np 1 --bind-to none "$FI" "${DEC[@]}" --out /tmp/flashinterp-bench.h5 --quiet
timed "bf16, -np 1 --bind-to none" mpirun -np 1 --bind-to none "$FI" "${DEC[@]}" --out /tmp/flashinterp-bench3.h5 --gemm bf16 --quiet
echo "== floors and numpy"
timed "C++ bare sgemm + load" "$BUILD/tests/bench/cpu_decode_bench" "$MODEL" "$ROWS" 512
timed "numpy bare sgemm + load" /usr/bin/python3 "$ROOT/tests/bench/numpy_decode_bench.py" "$MODEL" "$ROWS" 512 20 bare
timed "numpy pipeline" /usr/bin/python3 "$ROOT/tests/bench/numpy_decode_bench.py" "$MODEL" "$ROWS" 512 20
echo "== ratios to numpy's bare sgemm + load (${T[numpy bare sgemm + load]} s)"
for n in "exact, mpirun -np 1" "exact, mpirun -np 2" "bf16, mpirun -np 1" "exact, -np 1 --bind-to none" \
         "bf16, -np 1 --bind-to none" "C++ bare sgemm + load" "numpy pipeline"; do
  printf '%-28s %.2fx\n' "$n" "$(echo "${T[$n]} / ${T[numpy bare sgemm + load]}" | bc -l)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f /tmp/flashinterp-bench.h5 /tmp/flashinterp-bench2.h5 /tmp/flashinterp-bench3.h5
