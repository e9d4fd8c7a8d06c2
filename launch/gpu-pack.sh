#!/usr/bin/env bash
# gpu-pack.sh: builds, on this machine (nvcc here, no GPU), the bundle launch/gpu-check.sh falls
# back to on a GPU machine where configure cannot succeed (a missing development package there):
# the binary, the CUDA tests and the decode benchmark for sm_90 (H100/H200), Release, stripped,
# with the shared libraries they need that such a machine may lack (HDF5, PCRE2, CLI-free: the
# binary links no CLI11), under .cache/gpu-bundle/ (git-ignored; carry it with the run). The
# libraries a GPU machine has by definition are left out: glibc, libstdc++/libgcc, the CUDA
# driver and toolkit libraries (cudart, cuBLAS, cuBLASLt, NCCL), MPI (the machine's own mpirun
# must start the ranks) and OpenBLAS (35 MiB; the GPU machines as probed have 0.3.26). bin/run.sh sets LD_LIBRARY_PATH to lib/. Keeps the bundle under
# 64 MiB (the device tool's carry limit) or fails saying by how much.
# usage: launch/gpu-pack.sh [ARCH]   (default 90)   Env: FI_PACK_BUILD (default /tmp/fi-pack-build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARCH="${1:-90}"
BUILD="${FI_PACK_BUILD:-/tmp/fi-pack-build}"
OUT="$ROOT/.cache/gpu-bundle"
TARGETS=(flashinterp test_cuda_reduce test_cuda_decoder test_cuda_forward test_cuda_rescore test_cuda_widen test_cuda_mpi gpu_decode_bench)

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFLASHINTERP_SERIAL_HDF5=ON \
  -DFLASHINTERP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >/dev/null
cmake --build "$BUILD" -j "${FI_JOBS:-$(nproc)}" --target "${TARGETS[@]}"

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib"
for t in "${TARGETS[@]}"; do
  f="$(find "$BUILD" -type f -name "$t" -perm -u+x | head -1)"
  [ -n "$f" ] || { echo "gpu-pack: $t not built" >&2; exit 1; }
  strip -o "$OUT/bin/$t" "$f"
done
# The non-system libraries: what ldd resolves, less what a CUDA + MPI machine provides.
SKIP='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|libmpi|libopen-(pal|rte)|libevent|libhwloc|libpmix|libz|libgomp|libnvidia|libopenblas)\.'
for b in "$OUT"/bin/*; do
  ldd "$b" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $SKIP ]] && continue
  cp -L "$path" "$OUT/lib/$name"
done
cat >"$OUT/bin/run.sh" <<'EOF'
#!/usr/bin/env bash
# run.sh PROGRAM [ARGS]: a bundled program with the bundle's libraries first.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LD_LIBRARY_PATH="$HERE/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
p="$1"; shift
exec "$HERE/$p" "$@"
EOF
chmod +x "$OUT/bin/run.sh"
{
  echo "built $(date -u +%FT%TZ) from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) for sm_$ARCH"
  echo "libraries: $(ls "$OUT/lib" | tr '\n' ' ')"
} >"$OUT/BUNDLE.txt"
size=$(du -sb "$OUT" | cut -f1)
echo "gpu-pack: $OUT: $((size / 1048576)) MiB ($(ls "$OUT/bin" | wc -l) programs, $(ls "$OUT/lib" | wc -l) libraries)"
if ((size > 64 * 1048576)); then
  echo "gpu-pack: FAILED: the bundle is $((size / 1048576)) MiB, over the 64 MiB carry limit" >&2
  exit 1
fi
