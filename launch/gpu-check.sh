#!/usr/bin/env bash
# gpu-check.sh: everything the CUDA backend needs checked on a GPU machine, in one call of about
# 7 minutes, ordered by value so the figures come first:
#   0. preflight (seconds): what the machine has and lacks for configure, printed in the summary;
#   1. configure + build (serial-HDF5 writer, CUDA on, the GPU's own architecture) when the
#      preflight finds every package; else the bundle launch/gpu-pack.sh built elsewhere
#      (.cache/gpu-bundle, carry it), which needs nothing but the CUDA libraries and MPI;
#   2. gpu_decode_bench at the 8B map shape (bf16 + re-scoring and split with rows checked against
#      float64 (--check), fast mode, chunk sizes, the token index,
#      k = 256 with bottom-k) and at the 70B width;
#   3. the CUDA unit tests with CUDA_LAUNCH_BLOCKING=1, then compute-sanitizer (memcheck,
#      racecheck) on the reduction kernels' small tests;
#   4. (built tree only) the forward pass's and the token index's Python checks, which add
#      --backend cuda on a device, and the generate benchmarks (tests/bench/gpu/
#      generate_gpu_bench.sh, needs .cache/tokenizer: carry it);
#   5. the end-to-end `flashinterp decode --backend cuda` on a real-layout checkpoint
#      (tests/python/family_models.py, Llama 3 layout; needs numpy and .cache/tokenizer).
#   6. the PyTorch pipeline (its figure is known already: 1.84 s for the 8B up map on an H200),
#      only when time is left.
# Every step has its own time limit inside a total budget; a step that would start with too little
# time left is skipped and says so. Logs go to $OUT (when set) or /tmp/fi-gpu-check-logs:
# summary.txt (read this first; a compact table of figures at its end) and one log per stage.
# Runs as root (mpirun is allowed through the environment). No network needed.
# Env: FI_GPU_BUILD (build dir, default /tmp/fi-gpu-build), FI_GPU_BUDGET (seconds, default 420),
#      FI_GPU_ARCH (e.g. 90; default: read from nvidia-smi), FI_GPU_BUNDLE=1 (use the bundle even
#      when configure could work).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${OUT:-/tmp/fi-gpu-check-logs}"
BUILD="${FI_GPU_BUILD:-/tmp/fi-gpu-build}"
BUDGET="${FI_GPU_BUDGET:-420}"
START=$SECONDS
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.txt"
: >"$SUMMARY"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export PYTHONUNBUFFERED=1
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - (SECONDS - START))); }

# step NAME LIMIT_S LOG CMD...: runs CMD with a time limit (cut to the budget left), output
# appended to LOG; records rc and time in the summary. Returns CMD's rc (124 = timed out).
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local l
  l=$(left)
  if ((l < 15)); then
    say "SKIP  $name: time budget spent"
    return 99
  fi
  ((limit > l - 5)) && limit=$((l - 5))
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*" >>"$LOGS/$log"
  timeout --kill-after=10 "$limit" "$@" >>"$LOGS/$log" 2>&1
  local rc=$?
  say "$(printf '%-5s %-40s rc=%-3s %4ss' "$([ $rc = 0 ] && echo ok || echo FAIL)" "$name" "$rc" $((SECONDS - t0)))"
  return $rc
}

say "gpu-check: $(date -u +%FT%TZ) on $(hostname), budget ${BUDGET}s"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
else
  say "no nvidia-smi: the CUDA tests will skip and the benchmarks print SKIPPED"
fi
DEVICE=0
nvidia-smi -L 2>/dev/null | grep -q "^GPU " && DEVICE=1
[ "$DEVICE" = 1 ] || say "no GPU: the CUDA tests and benchmarks print SKIPPED, the device-only steps are skipped"
ARCH="${FI_GPU_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}"
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=90
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

# ---- 0. preflight ---------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
MISSING=()
pre() {  # pre NAME OK: one line of the summary; a missing build prerequisite is remembered
  if [ "$2" = 1 ]; then say "have     $1"; else say "MISSING  $1"; MISSING+=("$1"); fi
}
pc() { pkg-config --exists "$1" 2>/dev/null && echo 1 || echo 0; }
hdr() { for d in "$@"; do [ -e "$d" ] && { echo 1; return; }; done; echo 0; }
pre "cmake $(cmake --version 2>/dev/null | head -1 | awk '{print $3}')" "$(have cmake && echo 1 || echo 0)"
pre "nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*')" "$(have nvcc && echo 1 || echo 0)"
pre "mpicc/mpirun" "$(have mpicc && have mpirun && echo 1 || echo 0)"
pre "PCRE2 (libpcre2-dev)" "$(pc libpcre2-8)"
pre "HDF5 (serial or parallel)" "$(hdr /usr/include/hdf5.h /usr/include/hdf5/serial/hdf5.h /usr/include/hdf5/openmpi/hdf5.h)"
pre "OpenBLAS cblas.h" "$(hdr /usr/include/cblas.h /usr/include/openblas/cblas.h /usr/include/x86_64-linux-gnu/cblas.h /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h)"
pre "nlohmann-json" "$(hdr /usr/include/nlohmann/json.hpp)"
pre "CLI11" "$(hdr /usr/include/CLI/CLI.hpp)"
pre "GoogleTest" "$(hdr /usr/include/gtest/gtest.h)"
PY="$(command -v python3)"
PYOK=$("$PY" -c "import numpy, h5py, torch" 2>/dev/null && echo 1 || echo 0)
say "$([ "$PYOK" = 1 ] && echo 'have    ' || echo 'missing ') python3 with numpy, h5py, torch (the Python checks)"
[ -s "$ROOT/.cache/tokenizer/tokenizer.json" ] && say "have     .cache/tokenizer" || say "missing  .cache/tokenizer (generate and e2e steps skip)"
BUNDLE="$ROOT/.cache/gpu-bundle"
[ -x "$BUNDLE/bin/flashinterp" ] && say "have     bundle: $(head -1 "$BUNDLE/BUNDLE.txt" 2>/dev/null)" || say "missing  .cache/gpu-bundle (launch/gpu-pack.sh)"
DEVICE=0
nvidia-smi -L 2>/dev/null | grep -q "^GPU " && DEVICE=1
[ "$DEVICE" = 1 ] || say "no GPU: the CUDA tests and benchmarks print SKIPPED, the device-only steps are skipped"
ARCH="${FI_GPU_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}"
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=90

# ---- 1. the programs: built here, or the bundle ----------------------------------------------
BUILT=0
if [ "${#MISSING[@]}" -eq 0 ] && [ "${FI_GPU_BUNDLE:-0}" != 1 ]; then
  if step configure 90 configure.log \
      cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DFLASHINTERP_SERIAL_HDF5=ON \
      -DFLASHINTERP_CUDA=ON -DFLASHINTERP_CUDA_LINEINFO=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DFI_PYTHON="$PY" &&
     step build 240 build.log \
      cmake --build "$BUILD" -j 16 --target test_cuda_reduce test_cuda_decoder test_cuda_forward test_cuda_rescore \
      test_cuda_widen test_cuda_mpi gpu_decode_bench flashinterp; then
    BUILT=1
  fi
fi
BENV=()  # what runs a bundled program: its libraries first (never set for python3 or torch)
prog() {  # prog NAME: the path of a program, built or bundled
  if [ "$BUILT" = 1 ]; then find "$BUILD" -type f -name "$1" -perm -u+x | head -1
  else echo "$BUNDLE/bin/$1"; fi
}
if [ "$BUILT" = 1 ]; then
  :
elif [ -x "$BUNDLE/bin/flashinterp" ]; then
  why="${MISSING[*]:-}"
  [ "${FI_GPU_BUNDLE:-0}" = 1 ] && why="FI_GPU_BUNDLE=1"
  say "using the bundle ($BUNDLE): ${why:-configure or build failed}"
  BENV=(env "LD_LIBRARY_PATH=$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
else
  say "no build and no bundle: nothing CUDA can run (run launch/gpu-pack.sh and carry .cache/gpu-bundle)"
  FAILED=1
fi
B="$(prog gpu_decode_bench)"

if ((FAILED == 0)); then
  # ---- 2. the decode benchmarks (the 8B up map: V 128256, H 4096, 32 x 14336 rows) ---------
  step "bench chunk 14336 bf16 + re-scoring (the default), 8 rows checked vs float64" 60 bench.log "${BENV[@]}" "$B" --chunk-rows 14336 --rescore --check 8
  step "bench chunk 14336 fast (1 GEMM)" 45 bench.log "${BENV[@]}" "$B" --chunk-rows 14336
  step "bench chunk 14336 split (hi + lo), 4 rows checked" 55 bench.log "${BENV[@]}" "$B" --chunk-rows 14336 --split-input --check 4
  step "bench chunk 2048 fast" 40 bench.log "${BENV[@]}" "$B" --chunk-rows 2048
  step "bench chunk 14336 split, token index 32" 45 bench.log "${BENV[@]}" "$B" --chunk-rows 14336 --split-input --token-index 32
  step "bench k 256 + bottom-k 256, split" 45 bench.log "${BENV[@]}" "$B" --chunk-rows 14336 --split-input --top-k 256 --bottom-k 256
  step "bench 70B width (H 8192, 4 layers x 28672)" 60 bench.log "${BENV[@]}" "$B" --hidden 8192 --neurons 28672 --layers 4 --chunk-rows 14336 --split-input

  # ---- 3. CUDA unit tests, synchronous launches, then the sanitizers ------------------------
  for t in test_cuda_reduce test_cuda_decoder test_cuda_forward test_cuda_rescore test_cuda_widen; do
    step "$t (CUDA_LAUNCH_BLOCKING=1)" 60 ctest.log env CUDA_LAUNCH_BLOCKING=1 "${BENV[@]}" "$(prog $t)" || FAILED=1
  done
  step "test_cuda_mpi -np 2" 60 ctest.log mpirun -np 2 "${BENV[@]}" "$(prog test_cuda_mpi)" || FAILED=1
  grep -hE "^\[  (PASSED|FAILED|SKIPPED) |tests? from .* ran" "$LOGS/ctest.log" | tail -12 >>"$SUMMARY"
  if [ "$DEVICE" = 0 ]; then
    say "SKIP  compute-sanitizer: no GPU"
  elif have compute-sanitizer; then
    for tool in memcheck racecheck; do
      step "compute-sanitizer $tool test_cuda_reduce" 60 sanitizer.log \
        env CUDA_LAUNCH_BLOCKING=1 "${BENV[@]}" compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$(prog test_cuda_reduce)" || FAILED=1
    done
    grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$LOGS/sanitizer.log" >>"$SUMMARY"
  else
    say "SKIP  compute-sanitizer: not on PATH"
  fi

  # ---- 4. Python checks and generate benchmarks (need the build tree) -----------------------
  if [ "$BUILT" = 1 ] && [ "$PYOK" = 1 ]; then
    step "ctest forward (dense, MoE) + token index (python, cuda)" 300 ctest.log \
      ctest --test-dir "$BUILD" -R "py.test_(forward_torch|forward_moe|pipeline|token_index)" --output-on-failure --timeout 290 ||
      FAILED=1
    grep -E "tests passed|\[cuda\]|cuda:|Failed|FAIL" "$LOGS/ctest.log" | tail -12 >>"$SUMMARY"
    GENB="$ROOT/tests/bench/gpu/generate_gpu_bench.sh"
    step "generate demo model (cuda, cpu, torch)" 60 generate.log "$GENB" "$BUILD" 64 demo
    step "generate 8B width, 2 layers (cuda, torch)" 90 generate.log "$GENB" "$BUILD" 64 8bwide
  else
    say "SKIP  Python checks and generate benchmarks: $([ "$BUILT" = 1 ] && echo 'python3 lacks numpy/h5py/torch' || echo 'no build tree (bundle)')"
  fi

  # ---- 5. end to end on a real-layout checkpoint --------------------------------------------
  if [ "$DEVICE" = 0 ]; then
    say "SKIP  e2e decode --backend cuda: no GPU"
  elif [ "$PYOK" = 1 ] && [ -s "$ROOT/.cache/tokenizer/tokenizer.json" ]; then
    E2E=/tmp/fi-gpu-e2e
    step "e2e: make a Llama 3 layout checkpoint" 30 e2e.log env FI_BUILD_DIR="$E2E" FI_SOURCE_DIR="$ROOT" \
      "$PY" "$ROOT/tests/python/family_models.py" "$E2E" llama3
    step "e2e: decode --backend cuda (3 matrices, mpirun -np 1)" 60 e2e.log mpirun -np 1 "${BENV[@]}" "$(prog flashinterp)" \
      decode --model "$E2E/llama3" --out "$E2E/map.h5" --overwrite --backend cuda --matrices up,gate,down || FAILED=1
    step "e2e: the map against float64 numpy" 60 e2e.log env FI_SOURCE_DIR="$ROOT" "$PY" - "$E2E" <<'PYEOF'
import os, sys, h5py, numpy as np
sys.path.insert(0, os.path.join(os.environ["FI_SOURCE_DIR"], "tests", "python"))
import fi_testlib as t
d = sys.argv[1]
ref = t.Reference(d + "/llama3")
worst = 0.0
with h5py.File(d + "/map.h5") as f:
    for m in ("up", "gate", "down"):
        for layer in range(2):
            lg = ref.logits(m, layer, np.arange(96), "rms")
            lse = t.logsumexp(lg)
            ids = f[m]["top_ids"][layer]
            pref = np.exp(lg[np.arange(96)[:, None], ids] - lse[:, None])
            worst = max(worst, float((np.abs(f[m]["top_probs"][layer] - pref) / pref).max()))
            assert (ids[:, 0] == lg.argmax(axis=1)).all(), f"{m} layer {layer}: top-1 ids differ"
print(f"e2e cuda map: top-1 ids exact, worst top-k probability error {worst:.2e} relative")
assert worst < 1e-3
PYEOF
    grep -h "e2e cuda map" "$LOGS/e2e.log" >>"$SUMMARY"
  else
    say "SKIP  e2e decode: needs python3 with numpy/h5py and .cache/tokenizer"
  fi
fi

# ---- 6. the PyTorch pipeline, when time is left -----------------------------------------------
TORCH="$ROOT/tests/bench/gpu/torch_decode_bench.py"
if [ "$PYOK" = 1 ] && (( $(left) > 120 )); then
  step "torch bf16 chunk 2048" 90 torch.log "$PY" "$TORCH" --chunk-rows 2048
else
  say "SKIP  torch pipeline (known: 1.84 s for the 8B up map on an H200)"
fi

say ""
say "--- benchmark figures"
grep -hE "^(device|pieces|decode total|cuBLAS|second GEMM|check|reduction|norm alone|ratio|LM-head|torch|RESULT|SKIPPED)" \
  "$LOGS/bench.log" "$LOGS/torch.log" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
grep -hE "^(==|flashinterp|torch|SKIPPED)" "$LOGS/generate.log" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
say "gpu-check: done in $((SECONDS - START)) s, $([ $FAILED = 0 ] && echo 'build and CUDA tests OK' || echo 'FAILED (see the logs)')"
cat "$SUMMARY"
exit $FAILED
