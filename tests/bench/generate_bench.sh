#!/usr/bin/env bash
# `flashinterp generate` vs the PyTorch baseline (float32, KV cache, greedy) on the same CPU:
# the demo model, and a model of 8B width with 2 layers. Not a test. usage: generate_bench.sh [N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FI="${FI_BUILD_DIR:-$ROOT/build}/src/flashinterp"
N="${1:-32}"
PROMPT="My favourite animal is the"
for spec in "demo:" "8bwide:--hidden 4096 --intermediate 14336 --layers 2 --heads 32 --kv-heads 8 --tied"; do
  name="${spec%%:*}"; args="${spec#*:}"
  dir="/tmp/flashinterp-genbench-$name"
  [ -f "$dir/config.json" ] || "$FI" demo-model --out "$dir" $args >/dev/null
  ids=$("$FI" tokenize --model "$dir" "$PROMPT" | tr ' ' ',')
  ids="128000,$ids"
  echo "== $name ($args)"
  "$FI" generate --model "$dir" --prompt-ids "$ids" --max-new-tokens "$N" --stats --print-ids 2>&1 | tail -3
  /usr/bin/python3 "$ROOT/tests/bench/torch_generate_bench.py" "$dir" "$ids" "$N"
done
