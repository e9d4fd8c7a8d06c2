#!/usr/bin/env bash
# gpu-check.sh: everything the CUDA backend needs checked on a GPU machine, in one call of at
# most 8 minutes: configure (serial-HDF5 writer, CUDA on, the GPU's own architecture), build the
# CUDA tests and benchmark, run ctest -R cuda and the forward pass's Python checks (which add
# --backend cuda on a device), gpu_decode_bench (8B map shape) and the PyTorch
# baseline, then `flashinterp generate --backend cuda` (demo model; 8B width, 2 layers) against
# a PyTorch fp32 KV-cache baseline on the GPU (tests/bench/gpu/generate_gpu_bench.sh; needs the
# tokenizer: carry .cache/tokenizer to the GPU machine, else that step prints SKIPPED). Every
# step has its own time limit inside a total budget; a step that would start with too little
# time left is skipped and says so. Logs go to $OUT (when set) or
# /tmp/fi-gpu-check-logs: summary.txt (read this first), configure/build/ctest/bench/torch/generate.log.
# Runs as root (mpirun is allowed through the environment). No network needed.
# Env: FI_GPU_BUILD (build dir, default /tmp/fi-gpu-build), FI_GPU_BUDGET (seconds, default 470),
#      FI_GPU_ARCH (e.g. 90; default: read from nvidia-smi).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${OUT:-/tmp/fi-gpu-check-logs}"
BUILD="${FI_GPU_BUILD:-/tmp/fi-gpu-build}"
BUDGET="${FI_GPU_BUDGET:-470}"
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
ARCH="${FI_GPU_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}"
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=90
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
say "cmake $(cmake --version | head -1 | awk '{print $3}'), nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*'), arch sm_$ARCH"

step configure 120 configure.log \
  cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DFLASHINTERP_SERIAL_HDF5=ON \
  -DFLASHINTERP_CUDA=ON -DFLASHINTERP_CUDA_LINEINFO=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DFI_PYTHON="$(command -v python3)" || FAILED=1

if ((FAILED == 0)); then
  step build 300 build.log \
    cmake --build "$BUILD" -j 16 --target test_cuda_reduce test_cuda_decoder test_cuda_forward \
    test_cuda_mpi gpu_decode_bench flashinterp ||
    FAILED=1
fi

if ((FAILED == 0)); then
  step "ctest -R cuda" 150 ctest.log \
    ctest --test-dir "$BUILD" -R cuda --output-on-failure --timeout 140 || FAILED=1
  grep -E "tests passed|Passed|Failed|SKIPPED" "$LOGS/ctest.log" | grep -v "^\[" | head -20 >>"$SUMMARY"
  # The Python checks that take the CUDA paths on a device: the forward pass (--backend cuda
  # against the float64 torch forward at 1e-3, pipelines over ranks sharing the GPU bit-identical
  # to one process, the clamp experiment) and the decode's token index (auto = cuda) against
  # float64. python3 of the PATH (the image's, with torch and h5py).
  step "ctest forward (python, cuda)" 150 ctest.log \
    ctest --test-dir "$BUILD" -R "py.test_(forward_torch|pipeline|clamp|token_index)" --output-on-failure --timeout 140 ||
    FAILED=1
  grep -E "tests passed|\[cuda\]|cuda:|Failed|FAIL" "$LOGS/ctest.log" | tail -12 >>"$SUMMARY"

  BENCH="$BUILD/tests/bench/gpu/gpu_decode_bench"
  # The 8B up-map shape: chunks of 2048 rows (the FACTS.md baseline), a whole layer per call,
  # the split-input (hi + lo) precision mode, and the job's small chunks on 4 layers.
  step "bench chunk 2048" 60 bench.log "$BENCH" --chunk-rows 2048
  step "bench chunk 14336" 60 bench.log "$BENCH" --chunk-rows 14336
  step "bench chunk 14336 split input" 60 bench.log "$BENCH" --chunk-rows 14336 --split-input
  step "bench chunk 256, 4 layers" 60 bench.log "$BENCH" --chunk-rows 256 --layers 4
  step "bench chunk 14336 split input, token index 32" 60 bench.log "$BENCH" --chunk-rows 14336 --split-input --token-index 32

  # Generation through the CUDA forward stage: 64 new tokens, flashinterp vs torch (GPU, fp32).
  GENB="$ROOT/tests/bench/gpu/generate_gpu_bench.sh"
  step "generate demo model (cuda, cpu, torch)" 60 generate.log "$GENB" "$BUILD" 64 demo
  step "generate 8B width, 2 layers (cuda, torch)" 120 generate.log "$GENB" "$BUILD" 64 8bwide
fi

TORCH="$ROOT/tests/bench/gpu/torch_decode_bench.py"
step "torch bf16 chunk 2048" 90 torch.log python3 "$TORCH" --chunk-rows 2048
step "torch fp32 GEMM, 4 layers" 60 torch.log python3 "$TORCH" --chunk-rows 2048 --layers 4 --fp32-gemm

say ""
say "--- benchmark figures"
grep -hE "^(device|pieces|decode total|cuBLAS|reduction|norm alone|ratio|LM-head|torch|RESULT|SKIPPED)" \
  "$LOGS/bench.log" "$LOGS/torch.log" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
grep -hE "^(==|flashinterp|torch|SKIPPED)" "$LOGS/generate.log" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
say "gpu-check: done in $((SECONDS - START)) s, $([ $FAILED = 0 ] && echo 'build and CUDA tests OK' || echo 'FAILED (see the logs)')"
cat "$SUMMARY"
exit $FAILED
