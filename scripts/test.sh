#!/usr/bin/env bash
# test.sh — the README's test command (and CI's): installs what is missing, builds
# kiln, runs the test suite, then runs it again in an ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
jobs=$(nproc)
scripts/build.sh build
ctest --test-dir build --output-on-failure -j"$jobs"
if [[ "${KILN_SKIP_SANITIZE:-0}" != 1 ]]; then
  KILN_BUILD_TYPE=Debug scripts/build.sh build-asan -DKILN_SANITIZE=ON
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
