#!/usr/bin/env bash
# `flashinterp sweep` neurons per second on this machine (not a test), beside a PyTorch loop doing
# the same work (tests/bench/torch_sweep_bench.py: float32, the same clamps, prefix states reused
# and values batched the same way; it checks its deltas against the sweep file's) and beside the
# cost model of `flashinterp inspect --sweep`. Two models: the demo model with its decoded map,
# and one of Llama 3.1 8B width (hidden 4096, 14336 neurons, 32/8 heads, vocab 128256) with 2
# layers and a synthetic map of that shape (tests/python/make_synthetic_map.py; the sweep only
# reads the map's top tokens). Default prompts (8) and values (0,2,5,10), so a neuron is 32 clamped
# runs of the layers from its own to the LM-head. Each sweep runs under mpirun -np 1 (one core:
# mpirun binds the rank) and -np 2, and as one pipeline of 2 stages (-np 2 --stages 2); torch runs
# on one core (taskset, against -np 1) and on all (against the others).
# "loop" figures leave out the model load and the unclamped runs (the same for both programs).
# usage: sweep_bench.sh [DEMO_NEURONS] [NEURONS_PER_LAYER_8B]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FI="${FI_BUILD_DIR:-$ROOT/build}/src/flashinterp"
ND="${1:-32}"
N8="${2:-2}"
PY=/usr/bin/python3
dir="${FI_BENCH_DIR:-/tmp/flashinterp-sweepbench}"
mkdir -p "$dir"
mpi() { local np=$1; shift; local a=(mpirun --oversubscribe -np "$np"); [ "$(id -u)" = 0 ] && a+=(--allow-run-as-root); "${a[@]}" "$@"; }

# flashinterp's loop rate from its summary line; torch's from its JSON.
fi_rate() { sed -n 's/.*the neuron loop \([0-9.]*\) s, \([0-9.e+-]*\) neurons\/s.*/\2/p' "$1"; }
fi_loop() { sed -n 's/.*the neuron loop \([0-9.]*\) s.*/\1/p' "$1"; }

bench() {  # name model map select
  local name=$1 model=$2 map=$3 select=$4 stages
  echo "== $name: --select $select (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  for run in "1 1" "2 1" "2 2"; do
    set -- $run
    mpi "$1" "$FI" sweep --model "$model" --map "$map" --out "$dir/$name-np$1-s$2.h5" --select "$select" \
      --stages "$2" --overwrite 2> "$dir/$name-np$1-s$2.log"
    echo "flashinterp -np $1 --stages $2: $(grep 'sweep done' "$dir/$name-np$1-s$2.log" | sed 's/.*sweep done: //; s/ ->.*//')"
  done
  # torch on the cores the sweep had: one (mpirun -np 1 binds its rank to one core) and all.
  taskset -c 0 $PY "$ROOT/tests/bench/torch_sweep_bench.py" "$model" "$dir/$name-np1-s1.h5" > "$dir/$name-torch1.json"
  $PY "$ROOT/tests/bench/torch_sweep_bench.py" "$model" "$dir/$name-np1-s1.h5" > "$dir/$name-torch$(nproc).json"
  local tr fr c
  for f in "$dir/$name"-np*.log; do
    case "$f" in *-np1-*) c=1 ;; *) c=$(nproc) ;; esac
    tr=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['neurons_per_s'])" "$dir/$name-torch$c.json")
    fr=$(fi_rate "$f")
    echo "ratio $(basename "$f" .log) / torch on $c core(s) (neurons/s of the loop): $fr / $tr = $($PY -c "print(f'{$fr / $tr:.2f}')")"
  done
  echo "torch, 1 core: $(cat "$dir/$name-torch1.json")"
  echo "torch, $(nproc) cores: $(cat "$dir/$name-torch$(nproc).json")"
  # The cost model for the same neurons, values, prompts and mean prompt length, one rank.
  local k tok
  read -r k tok < <($PY -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); print(len(f['neuron']), round(float(f['prompt_len'][()].mean())))" "$dir/$name-np1-s1.h5")
  echo "inspect --sweep --sweep-neurons $k --sweep-tokens $tok --cores-per-rank 1 (as -np 1 is bound):"
  "$FI" inspect --model "$model" --sweep --sweep-neurons "$k" --sweep-tokens "$tok" --cores-per-rank 1 \
    | grep -A1 "^sweep" | sed 's/^ */  /'
  echo "  measured: the neuron loop $(fi_loop "$dir/$name-np1-s1.log") s on 1 rank"
}

[ -f "$dir/demo/config.json" ] || "$FI" demo-model --out "$dir/demo" >/dev/null
[ -f "$dir/demo.h5" ] || mpi 2 "$FI" decode --model "$dir/demo" --out "$dir/demo.h5" \
  --matrices up,gate,down --top-k 5 --token-index 0 --quiet
bench demo "$dir/demo" "$dir/demo.h5" "top:$ND"

[ -f "$dir/w8b/config.json" ] || "$FI" demo-model --out "$dir/w8b" --hidden 4096 --intermediate 14336 \
  --layers 2 --heads 32 --kv-heads 8 >/dev/null
if [ ! -f "$dir/w8b.h5" ]; then
  FI_TOKENIZER_DIR="$dir/w8b" $PY "$ROOT/tests/python/make_synthetic_map.py" "$dir/w8b.h5" --layers 2 \
    --top-k 5 --token-index 0 >/dev/null
  $PY -c "import h5py,sys,numpy as np; f=h5py.File(sys.argv[1],'r+'); f.attrs['fingerprint']=np.bytes_(b'synthetic'); f.attrs['complete']=np.int64(1)" "$dir/w8b.h5"
fi
: > "$dir/w8b.txt"
for l in 0 1; do for i in $(seq 1 "$N8"); do echo "up $l $((i * 997))" >> "$dir/w8b.txt"; done; done
bench w8b "$dir/w8b" "$dir/w8b.h5" "list:$dir/w8b.txt"
