#!/usr/bin/env bash
# MoE decode benchmark at Qwen3-30B-A3B's width (hidden 2048, vocab 151936, experts of 768 up_proj
# rows; EXPERTS of them, default 4 = 3072 rows), whole processes, loading included:
#   flashinterp decode --matrices up of the routed experts (map v2, /moe/up) under `mpirun -np 1`
#   and `-np 2`, default binding (one core per rank);
#   the bare OpenBLAS sgemm of the same rows with the same loading (cpu_decode_bench), numpy's
#   bare sgemm + load and numpy's whole pipeline, each on one core (taskset -c 0, one BLAS thread:
#   the core `mpirun -np 1` gives its rank), expert after expert, in the decode's chunks;
#   the dense decode of the same number of rows at the same H and V: layer 0 of the same checkpoint
#   is a dense MLP (mlp_only_layers) of intermediate_size EXPERTS x 768, same head, same file;
#   and, unless CHUNK_ROWS is already 768, the MoE decode -np 1 with --chunk-rows 768 (one item per
#   expert: no 256-row tail chunk).
# The token index is off everywhere (numpy has none). The checkpoint (tests/bench/
# make_moe_checkpoint.py, ~0.8 GB, made once under /tmp) is read into the page cache first. The
# programs run in turn, REPS rounds of all of them (default 2), so that a change of the machine's
# load hits every program alike; the best wall time of each is kept, and the least CPU time (user +
# sys, steadier than the wall on a shared machine). Prints every run's times, then the best and the
# ratios flashinterp / bare sgemm, flashinterp / numpy pipeline and MoE / dense.
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
DEC0=(decode --model "$MODEL" --matrices up --token-index 0 --overwrite)
DEC=("${DEC0[@]}" --chunk-rows "$CR")
ONE=(env OPENBLAS_NUM_THREADS=1 taskset -c 0)  # a floor on the one core of an -np 1 rank
OUT=/tmp/flashinterp-moe-bench
cat "$MODEL"/*.safetensors > /dev/null  # every program reads from the page cache
source "$ROOT/tests/bench/bench_lib.sh"
machine_line
echo "rows $ROWS ($EXPERTS experts x 768), hidden 2048, vocab 151936, chunk rows $CR"
NP=(/usr/bin/python3 "$ROOT/tests/bench/numpy_decode_bench.py" "$MODEL" "$ROWS" "$CR" 20)
NAMES=()
run() {  # run NAME CMD...: one timed run, its wall time printed
  [ -n "${T[$1]:-}" ] || NAMES+=("$1")
  timed_once "$@"
  printf '  %-34s wall %6.2f s, cpu %6.2f s\n' "$1" "$LAST" "$LAST_CPU"
}
for ((rep = 1; rep <= REPS; ++rep)); do
  echo "== round $rep of $REPS (load $(cut -d' ' -f1 /proc/loadavg))"
  run "MoE, mpirun -np 1" mpirun -np 1 "$FI" "${DEC[@]}" --layers 1 --out $OUT-1.h5 --quiet
  run "dense, mpirun -np 1" mpirun -np 1 "$FI" "${DEC[@]}" --layers 0 --out $OUT-1.h5 --quiet
  run "MoE, mpirun -np 2" mpirun -np 2 "$FI" "${DEC[@]}" --layers 1 --out $OUT-2.h5 --quiet
  run "dense, mpirun -np 2" mpirun -np 2 "$FI" "${DEC[@]}" --layers 0 --out $OUT-2.h5 --quiet
  if [ "$CR" != 768 ]; then
    run "MoE, mpirun -np 1, chunk 768" mpirun -np 1 "$FI" "${DEC0[@]}" --chunk-rows 768 --layers 1 --out $OUT-1.h5 --quiet
  fi
  run "MoE bare sgemm + load" "${ONE[@]}" "$BUILD/tests/bench/cpu_decode_bench" "$MODEL" "$ROWS" "$CR" 1
  run "dense bare sgemm + load" "${ONE[@]}" "$BUILD/tests/bench/cpu_decode_bench" "$MODEL" "$ROWS" "$CR" 0
  run "MoE numpy bare sgemm + load" "${ONE[@]}" "${NP[@]}" bare 1
  run "MoE numpy pipeline" "${ONE[@]}" "${NP[@]}" full 1
done
echo "== best of $REPS: wall, and the least CPU time (user + sys, every rank; -np 2's includes MPI's busy waits)"
for n in "${NAMES[@]}"; do printf '%-36s wall %6.2f s, cpu %6.2f s\n' "$n" "${T[$n]}" "${C[$n]}"; done
echo "== ratios"
r() { printf '%-44s wall %sx, cpu %sx\n' "$1" "$(ratio "$2" "$3")" "$(cpu_ratio "$2" "$3")"; }
r "MoE: flashinterp -np 1 / bare sgemm + load" "MoE, mpirun -np 1" "MoE bare sgemm + load"
r "dense: flashinterp -np 1 / bare sgemm + load" "dense, mpirun -np 1" "dense bare sgemm + load"
r "MoE: flashinterp -np 1 / numpy pipeline" "MoE, mpirun -np 1" "MoE numpy pipeline"
r "MoE: bare sgemm + load / numpy's" "MoE bare sgemm + load" "MoE numpy bare sgemm + load"
r "MoE / dense: flashinterp -np 1" "MoE, mpirun -np 1" "dense, mpirun -np 1"
r "MoE / dense: flashinterp -np 2" "MoE, mpirun -np 2" "dense, mpirun -np 2"
r "MoE / dense: bare sgemm + load" "MoE bare sgemm + load" "dense bare sgemm + load"
if [ "$CR" != 768 ]; then
  r "MoE chunk 768 / dense chunk $CR: -np 1" "MoE, mpirun -np 1, chunk 768" "dense, mpirun -np 1"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f $OUT-1.h5 $OUT-2.h5
