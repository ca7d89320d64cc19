#!/usr/bin/env bash
# fuzz.sh — builds kiln's libFuzzer targets (clang, ASan+UBSan) and runs each for a while.
#
#   scripts/fuzz.sh [SECONDS] [options]     e.g. scripts/fuzz.sh 600 (10 minutes per target)
#     --build-dir DIR   where to build (default build-fuzz)
#     --targets A,B     only these targets (default: all built; fuzz_onnx fuzz_tensor_pb fuzz_npy
#                       fuzz_infer fuzz_image fuzz_dataset)
#     --parallel N      run N targets at once (default 1)
#     --ci              CI smoke mode: exit 77 (skipped) when clang or libFuzzer is missing
#     --no-build        use the targets already in the build directory
#
# Each target starts from the committed seeds (fuzz/corpus/<name>/) plus what earlier runs
# found (DIR/corpus/<target>/, grown in place).  A crash leaves its input in
# DIR/artifacts/<target>/; turn each one into a regression test under tests/data/regress/
# (see docs/security.md).  The summary lists executions, coverage and time per target;
# the exit status is non-zero when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=60 dir=build-fuzz targets="" ci=0 build=1 parallel=1
while (($#)); do
  case "$1" in
    --build-dir) dir=$2; shift ;;
    --targets) targets=${2//,/ }; shift ;;
    --parallel) parallel=$2; shift ;;
    --ci) ci=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) secs=$1 ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

skip() { # no fuzzing toolchain: a skip in CI, an error otherwise
  echo "fuzz.sh: $1" >&2
  if ((ci)); then exit 77; fi
  echo "fuzz.sh: install it with scripts/deps.sh --fuzz" >&2
  exit 1
}
cc=""
for c in clang-14 clang; do
  if command -v "$c" >/dev/null; then cc=$(command -v "$c"); break; fi
done
[[ -n $cc ]] || skip "clang not found"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){return 0;}\n' >"$probe/p.c"
"$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>/dev/null ||
  skip "$cc cannot link -fsanitize=fuzzer (libclang-rt-14-dev missing?)"

if ((build)); then
  echo "fuzz.sh: building the fuzz targets in $dir with $cc"
  cmake -S . -B "$dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" \
    -DKILN_SANITIZE=ON -DKILN_FUZZ=ON >/dev/null
  cmake --build "$dir" --target fuzz -j"$(nproc)" >"$dir/fuzz-build.log" 2>&1 ||
    { tail -30 "$dir/fuzz-build.log"; echo "fuzz.sh: build failed (log: $dir/fuzz-build.log)" >&2; exit 1; }
fi
if [[ -z $targets ]]; then
  for t in fuzz_onnx fuzz_tensor_pb fuzz_npy fuzz_infer fuzz_image fuzz_dataset; do
    [[ -x $dir/fuzz/$t ]] && targets+=" $t"
  done
fi

# A dictionary of protobuf-encoded op types, domains and attribute names, so mutations
# reach every op's shape inference rather than only the seeds' ops.
dict=$dir/onnx.dict
{
  for op in $(grep -ho '^OP([A-Za-z0-9_]*' ir/ops/*.def | sed 's/OP(//' | sort -u); do
    printf '"\\x22\\x%02x%s"\n' "${#op}" "$op"
    printf '"%s"\n' "$op"
  done
  for a in $(grep -ho 'A_[A-Z]*("[a-z_A-Z0-9]*"' ir/ops/*.c | sed 's/.*("//;s/"//' | sort -u); do
    printf '"\\x0a\\x%02x%s"\n' "${#a}" "$a"
  done
  printf '"\\x3a\\x04kiln"\n"\\x0a\\x00"\n"\\x12\\x00"\n'
} >"$dict"

seeds_of() {
  case "$1" in
    fuzz_onnx) echo "fuzz/corpus/onnx" ;;
    fuzz_infer) echo "fuzz/corpus/infer fuzz/corpus/onnx" ;;
    fuzz_tensor_pb) echo "fuzz/corpus/tensor_pb" ;;
    fuzz_npy) echo "fuzz/corpus/npy" ;;
    fuzz_image) echo "fuzz/corpus/image" ;;
    fuzz_dataset) echo "fuzz/corpus/dataset" ;;
  esac
}

run_one() {
  local t=$1 work=$dir/corpus/$1 art=$dir/artifacts/$1/ log=$dir/logs/$1.log
  mkdir -p "$work" "$art" "$dir/logs"
  local extra=()
  case "$t" in fuzz_onnx|fuzz_infer) extra+=(-dict="$dict") ;; esac
  # -rss_limit_mb: kiln refuses huge inputs before allocating; a model that makes it
  # allocate gigabytes is a finding.  -timeout: a single input taking 30 s is too.
  local rc=0
  nice -n 10 "$dir/fuzz/$t" "$work" $(seeds_of "$t") -max_total_time="$secs" -timeout=30 \
    -rss_limit_mb=3072 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art" \
    "${extra[@]}" >"$log" 2>&1 || rc=$?
  echo "$rc" >"$dir/logs/$t.rc"
}

echo "fuzz.sh: running ${targets# } for ${secs}s each (logs in $dir/logs/)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
running=0
for t in $targets; do
  run_one "$t" &
  running=$((running + 1))
  if ((running >= parallel)); then wait -n || true; running=$((running - 1)); fi
done
wait

status=0
set +e +o pipefail # the greps below find nothing in a crashed target's log
printf '%-16s %12s %8s %8s %8s %8s  %s\n' target executions seconds exec/s cov features result
for t in $targets; do
  log=$dir/logs/$t.log
  rc=$(cat "$dir/logs/$t.rc" 2>/dev/null || echo 1)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  res=ok
  if [[ $rc != 0 ]]; then
    res="CRASH (rc $rc): $(ls -t "$dir/artifacts/$t/" 2>/dev/null | head -1)"
    status=1
  fi
  printf '%-16s %12s %8s %8s %8s %8s  %s\n' "$t" "${runs:-?}" "${took:-$secs}" "${eps:-?}" "${cov:-?}" \
    "${ft:-?}" "$res"
done
if ((status)); then
  echo "fuzz.sh: crashes found; reproduce with $dir/fuzz/<target> <artifact>" >&2
  for t in $targets; do
    [[ $(cat "$dir/logs/$t.rc" 2>/dev/null) == 0 ]] || grep -m3 -E 'ERROR|SUMMARY|runtime error|fuzz:' \
      "$dir/logs/$t.log" >&2 || true
  done
fi
exit $status
