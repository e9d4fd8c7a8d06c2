#!/usr/bin/env bash
# `flashinterp sweep` neurons per second on this machine (not a test): the demo model with its
# decoded map, and a model of Llama 3.1 8B width (hidden 4096, 14336 neurons, 32/8 heads) with 2
# layers and a synthetic map of that shape (tests/python/make_synthetic_map.py; the sweep only
# reads the map's top tokens). Default prompts (8) and values (0,2,5,10), so a neuron is 32 clamped
# runs of the layers from its own to the LM-head. usage: sweep_bench.sh [RANKS] [NEURONS_8B]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FI="${FI_BUILD_DIR:-$ROOT/build}/src/flashinterp"
NP="${1:-1}"
N8="${2:-4}"
PY=/usr/bin/python3
MPI=(mpirun --oversubscribe -np "$NP")
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
dir=/tmp/flashinterp-sweepbench
mkdir -p "$dir"

echo "== demo model (4 layers, hidden 256, 1024 neurons), --select top:32, $NP rank(s)"
[ -f "$dir/demo/config.json" ] || "$FI" demo-model --out "$dir/demo" >/dev/null
[ -f "$dir/demo.h5" ] || "${MPI[@]}" "$FI" decode --model "$dir/demo" --out "$dir/demo.h5" \
  --matrices up,gate,down --top-k 5 --token-index 0 --quiet
"${MPI[@]}" "$FI" sweep --model "$dir/demo" --map "$dir/demo.h5" --out "$dir/demo-sweep.h5" \
  --select top:32 --overwrite 2>&1 | grep -E "sweep:.*prompts|done"

echo "== 8B width, 2 layers, $N8 neurons of each layer (list), $NP rank(s)"
[ -f "$dir/w8b/config.json" ] || "$FI" demo-model --out "$dir/w8b" --hidden 4096 --intermediate 14336 \
  --layers 2 --heads 32 --kv-heads 8 >/dev/null
if [ ! -f "$dir/w8b.h5" ]; then
  FI_TOKENIZER_DIR="$dir/w8b" $PY "$ROOT/tests/python/make_synthetic_map.py" "$dir/w8b.h5" --layers 2 \
    --top-k 5 --token-index 0 >/dev/null
  $PY -c "import h5py,sys,numpy as np; f=h5py.File(sys.argv[1],'r+'); f.attrs['fingerprint']=np.bytes_(b'synthetic'); f.attrs['complete']=np.int64(1)" "$dir/w8b.h5"
fi
: > "$dir/w8b.txt"
for l in 0 1; do for i in $(seq 1 "$N8"); do echo "up $l $((i * 997))" >> "$dir/w8b.txt"; done; done
"${MPI[@]}" "$FI" sweep --model "$dir/w8b" --map "$dir/w8b.h5" --out "$dir/w8b-sweep.h5" \
  --select "list:$dir/w8b.txt" --overwrite 2>&1 | grep -E "sweep:.*prompts|done"
