#!/usr/bin/env bash
# MoE decode benchmark at Qwen3-30B-A3B's width (hidden 2048, vocab 151936, experts of 768 up_proj
# rows; EXPERTS of them, default 4 = 3072 rows), whole processes, loading included:
#   flashinterp decode --matrices up of the routed experts (map v2, /moe/up) under `mpirun -np 1`
#   and `-np 2`, default binding (one core per rank);
#   the bare OpenBLAS sgemm of the same rows with the same loading (cpu_decode_bench), numpy's
#   bare sgemm + load and numpy's whole pipeline, each on one core (taskset -c 0, one BLAS thread:
#   the core `mpirun -np 1` gives its rank), expert after expert, in the decode's chunks;
#   the dense decode of the same number of rows at the same H and V: layer 0 of the same checkpoint
#   is a dense MLP (mlp_only_layers) of intermediate_size EXPERTS x 768, same head, same file.
# The token index is off everywhere (numpy has none). The checkpoint (tests/bench/
# make_moe_checkpoint.py, ~0.8 GB, made once under /tmp) is read into the page cache first, and each
# program runs REPS times (default 2), the best wall time kept. Prints the wall times and the ratios
# flashinterp / bare sgemm, flashinterp / numpy pipeline and MoE / dense.
# Not a test. usage: tests/bench/moe_bench.sh [EXPERTS] [REPS] [CHUNK_ROWS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${FI_BUILD_DIR:-$ROOT/build}"
EXPERTS="${1:-4}"
REPS="${2:-2}"
CR="${3:-512}"
ROWS=$((EXPERTS * 768))
MODEL="${FI_BENCH_MODEL:-/tmp/flashinterp-bench-moe-a3b-$EXPERTS}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ ! -f "$MODEL/config.json" ]; then
  /usr/bin/python3 "$ROOT/tests/bench/make_moe_checkpoint.py" "$MODEL" "$EXPERTS"
fi
FI="$BUILD/src/flashinterp"
DEC=(decode --model "$MODEL" --matrices up --chunk-rows "$CR" --token-index 0 --overwrite)
ONE=(env OPENBLAS_NUM_THREADS=1 taskset -c 0)  # a floor on the one core of an -np 1 rank
OUT=/tmp/flashinterp-moe-bench
cat "$MODEL"/*.safetensors > /dev/null  # every program reads from the page cache
source "$ROOT/tests/bench/bench_lib.sh"
machine_line
echo "rows $ROWS ($EXPERTS experts x 768), hidden 2048, vocab 151936, chunk rows $CR"
echo "== MoE layer 1: the routed experts' up_proj"
timed "MoE, mpirun -np 1" mpirun -np 1 "$FI" "${DEC[@]}" --layers 1 --out $OUT-1.h5
timed "MoE, mpirun -np 2" mpirun -np 2 "$FI" "${DEC[@]}" --layers 1 --out $OUT-2.h5 --quiet
timed "MoE bare sgemm + load" "${ONE[@]}" "$BUILD/tests/bench/cpu_decode_bench" "$MODEL" "$ROWS" "$CR" 1
timed "MoE numpy bare sgemm" "${ONE[@]}" /usr/bin/python3 "$ROOT/tests/bench/numpy_decode_bench.py" "$MODEL" "$ROWS" "$CR" 20 bare 1
timed "MoE numpy pipeline" "${ONE[@]}" /usr/bin/python3 "$ROOT/tests/bench/numpy_decode_bench.py" "$MODEL" "$ROWS" "$CR" 20 full 1
echo "== dense layer 0: up_proj of the same rows"
timed "dense, mpirun -np 1" mpirun -np 1 "$FI" "${DEC[@]}" --layers 0 --out $OUT-1.h5
timed "dense, mpirun -np 2" mpirun -np 2 "$FI" "${DEC[@]}" --layers 0 --out $OUT-2.h5 --quiet
timed "dense bare sgemm + load" "${ONE[@]}" "$BUILD/tests/bench/cpu_decode_bench" "$MODEL" "$ROWS" "$CR" 0
echo "== ratios"
for k in MoE dense; do
  echo "$k: flashinterp -np 1 / bare sgemm + load     $(ratio "$k, mpirun -np 1" "$k bare sgemm + load")"
done
echo "MoE: flashinterp -np 1 / numpy pipeline        $(ratio "MoE, mpirun -np 1" "MoE numpy pipeline")"
echo "MoE: bare sgemm + load / numpy bare sgemm     $(ratio "MoE bare sgemm + load" "MoE numpy bare sgemm")"
echo "MoE / dense, flashinterp -np 1                $(ratio "MoE, mpirun -np 1" "dense, mpirun -np 1")"
echo "MoE / dense, flashinterp -np 2                $(ratio "MoE, mpirun -np 2" "dense, mpirun -np 2")"
echo "MoE / dense, bare sgemm + load                $(ratio "MoE bare sgemm + load" "dense bare sgemm + load")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f $OUT-1.h5 $OUT-2.h5
