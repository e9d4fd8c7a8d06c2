#!/usr/bin/env bash
# Set-up if needed, build, write the demo model, decode it with 2 MPI ranks, and show what the
# planted neurons stand for.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup-deps.sh"
bash "$ROOT/launch/build.sh"
FI="${FI_BUILD_DIR:-$ROOT/build}/src/flashinterp"
DEMO="${FI_DEMO_DIR:-$ROOT/build/demo}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "== demo model: $DEMO/model"
"$FI" demo-model --out "$DEMO/model" --overwrite
"$FI" inspect --model "$DEMO/model"
echo "== decode (mpirun -np 2): up, gate and down neurons of every layer"
mpirun --oversubscribe -np 2 "$FI" decode --model "$DEMO/model" --out "$DEMO/map.h5" \
  --matrices up,gate,down --chunk-rows 256 --overwrite
echo "== the planted neurons (from planted.json) and what the map says they stand for"
/usr/bin/python3 - "$DEMO/model/planted.json" <<'PY' | while read -r m l n t; do
import json, sys
for p in json.load(open(sys.argv[1]))["planted"]:
    print(p["matrix"], p["layer"], p["neuron"], repr(p["token"]))
PY
  echo "-- planted $m layer $l neuron $n: $t"
  /usr/bin/python3 "$ROOT/analysis/show" "$DEMO/map.h5" --matrix "$m" --layer "$l" --neuron "$n" --top 5
done
echo "== map: $DEMO/map.h5"
echo "== which neurons stand for a planted word? analysis/search for \" dog\""
/usr/bin/python3 "$ROOT/analysis/search" "$DEMO/map.h5" " dog" --top 5
/usr/bin/python3 "$ROOT/analysis/report" "$DEMO/map.h5" --out "$DEMO/report" >/dev/null
echo "== HTML report: $DEMO/report/index.html"
echo "== the paper's causal check in miniature: clamp the planted ' Paris' down_proj neuron (it writes"
echo "   the ' Paris' direction) to rising values and watch P(' Paris') rise; then generate with it clamped"
read -r PL PN < <(/usr/bin/python3 -c "import json,sys; p=[p for p in json.load(open(sys.argv[1]))['planted'] if p['token']==' Paris'][0]; print(p['layer'], p['neuron'])" "$DEMO/model/planted.json")
"$FI" clamp --model "$DEMO/model" --matrix down --layer "$PL" --neuron "$PN" --values 0,2,5,10,20 \
  --prompt "My favourite city is" --watch " Paris" " London"
"$FI" generate --model "$DEMO/model" --prompt "My favourite city is" --clamp "$PL:$PN=20" --max-new-tokens 8
echo
echo "== the same generation as a pipeline: mpirun -np 2 splits the layers over two ranks (how a model"
echo "   bigger than one GPU runs); the text is the same"
mpirun --oversubscribe -np 2 "$FI" generate --model "$DEMO/model" --prompt "My favourite city is" \
  --clamp "$PL:$PN=20" --max-new-tokens 8 --stats
