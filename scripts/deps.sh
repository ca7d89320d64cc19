#!/usr/bin/env bash
# deps.sh — installs the Debian packages kiln needs, only those missing.
#   scripts/deps.sh          build + run (compiler, LLVM 19, protobuf-c, onnx.proto, image libs)
#   scripts/deps.sh --test   also what the test suite needs (ONNX backend test data,
#                            PyTorch for the ResNet-18 parity test, sanitizer runtimes,
#                            clang with libFuzzer for the fuzz smoke test, Chromium for
#                            the headless check of report.html)
#   scripts/deps.sh --fuzz   build deps plus clang 14 and its libFuzzer/OpenMP runtimes
#                            (scripts/fuzz.sh)
set -euo pipefail

pkgs=(gcc make cmake pkg-config llvm-19-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev
      libpng-dev libjpeg62-turbo-dev zlib1g-dev)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(libonnx-testdata python3-torch python3-torchvision python3-onnx python3-numpy chromium)
fi
if [[ "${1:-}" == "--test" || "${1:-}" == "--fuzz" ]]; then
  pkgs+=(clang-14 libclang-rt-14-dev libomp-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: all present"
fi
