#!/usr/bin/env bash
# `flashinterp generate --backend cuda` timed on the demo model (bf16, 4 layers of width 256) and
# on a model of 8B width with 2 layers (bf16, tied), each against the PyTorch float32 KV-cache
# greedy baseline on the same GPU (tests/bench/torch_generate_bench.py --device cuda); the demo
# model also on --backend cpu. Not a test. Models are written once under /tmp.
# usage: generate_gpu_bench.sh BUILD_DIR [NEW_TOKENS=64] [demo|8bwide]...
# The demo-model command needs the Llama 3.1 tokenizer.json (.cache/tokenizer, or
# $FLASHINTERP_TOKENIZER); without it this prints SKIPPED and exits 0.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
FI="$1/src/flashinterp"
N="${2:-64}"
shift
[ $# -gt 0 ] && shift
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(demo 8bwide)
TOK="${FLASHINTERP_TOKENIZER:-$ROOT/.cache/tokenizer/tokenizer.json}"
if [ ! -f "$TOK" ]; then
  echo "SKIPPED (no tokenizer.json at $TOK: carry .cache/tokenizer or set FLASHINTERP_TOKENIZER)"
  exit 0
fi
PROMPT="My favourite animal is the"

# gen BACKEND: flashinterp generate on $dir; its --stats lines, then the first 8 new ids (to
# compare with the baseline's).
gen() {
  local err out
  err=$(mktemp)
  if ! out=$("$FI" generate --model "$dir" --prompt-ids "$ids" --max-new-tokens "$N" --stats \
    --print-ids --backend "$1" 2>"$err"); then
    cat "$err"
    rm -f "$err"
    return 1
  fi
  cat "$err"
  rm -f "$err"
  echo "flashinterp --backend $1: ids [$(echo "$out" | tr ' ' '\n' | head -8 | paste -sd, | sed 's/,/, /g')]"
}

for name in "${MODELS[@]}"; do
  case "$name" in
    demo) args="" ;;
    8bwide) args="--hidden 4096 --intermediate 14336 --layers 2 --heads 32 --kv-heads 8 --tied" ;;
    *) echo "unknown model '$name' (demo | 8bwide)" >&2; exit 2 ;;
  esac
  dir="/tmp/flashinterp-gpugen-$name"
  [ -f "$dir/config.json" ] || "$FI" demo-model --out "$dir" --tokenizer "$TOK" $args >/dev/null
  ids="128000,$("$FI" tokenize --model "$dir" "$PROMPT" | tr ' ' ',')"
  echo "== $name ($args), $N new tokens"
  gen cuda
  [ "$name" = demo ] && gen cpu
  python3 "$ROOT/tests/bench/torch_generate_bench.py" "$dir" "$ids" "$N" --device cuda ||
    echo "torch baseline failed (rc $?)"
done
