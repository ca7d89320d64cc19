#!/bin/bash
# train_upsample_bench.sh — kiln's training step with and without fuse-train-upsample-conv
# (the SPN blocks' Resize + Conv fused forward, backward and in the weight gradient), in one
# run.
#
# Network: ResNet-18 + C-Net (1024 hidden, 8 classes) + SPN (`kiln model` defaults: 5 x2
# nearest blocks at 224, 5 at 128), batch 8, at each size in SIZES, on a synthetic tensor
# dataset (tests/make_tensor_dataset), as bench/train_fusion_bench.sh:
#   off  --passes eliminate-identity,fold,dce,fuse-train-bn,fuse-elementwise,dce
#   on   the default training pipeline (with fuse-train-upsample-conv)
# Interleaved round by round (the machine drifts).  Each round runs `kiln train --max-steps
# 1+STEPS --profile` per configuration (kernels from the cache, which a warm-up run fills):
# CPU ms per step = the profile's kernel CPU time (all threads) over the steps after the
# first; "SPN CPU ms" = the profile's per-node CPU time of the nodes named spn/... or
# grad/spn/... (the SPN's forward and backward, BatchNorms included); planned arena from
# --stats.  Min and median over rounds.
#
# usage: bench/train_upsample_bench.sh [BUILD_DIR]   (default build; needs kiln and
#        tests/make_tensor_dataset built there, Release)
# env:   ROUNDS=3 STEPS=4 SIZES="128 224" THREADS=2 WORK=/tmp/kiln-train-upsample-bench
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
KILN=$BUILD/kiln
MKDATA=$BUILD/tests/make_tensor_dataset
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-4}
SIZES=${SIZES:-128 224}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/kiln-train-upsample-bench}
BATCH=8
OFF=eliminate-identity,fold,dce,fuse-train-bn,fuse-elementwise,dce

[ -x "$KILN" ] && [ -x "$MKDATA" ] || { echo "build kiln_cli and make_tensor_dataset in $BUILD" >&2; exit 2; }
mkdir -p "$WORK"
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$WORK/kernel-cache} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
RES=$WORK/results.txt
: >"$RES"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# kiln $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), threads $THREADS, batch $BATCH," \
     "sizes $SIZES, $STEPS steps, $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for s in $SIZES; do
  "$KILN" model -q -o "$WORK/model$s.onnx" --classes 8 --image-size "$s" --batch $BATCH
  "$MKDATA" "$WORK/data$s" $((BATCH * (STEPS + 1))) "$s" 8 >/dev/null
done

train() { # size off|on steps -> $WORK/out.txt
  local s=$1 cfg=$2 n=$3 passes=()
  [ "$cfg" = off ] && passes=(--passes "$OFF")
  rm -f "$WORK/log.csv"
  "$KILN" train "${passes[@]}" "$WORK/model$s.onnx" --data "$WORK/data$s" --epochs 1 \
    --max-steps "$n" --threads "$THREADS" --stats --profile=1000 --log "$WORK/log.csv" \
    -o "$WORK/ck.onnx" >"$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; exit 1; }
}

run() { # round size off|on
  local r=$1 s=$2 cfg=$3 cpu arena spn
  train "$s" "$cfg" $((STEPS + 1))
  cpu=$(sed -n 's/.*kernels per step: [0-9.]* ms wall, \([0-9.]*\) ms CPU.*/\1/p' "$WORK/out.txt")
  arena=$(sed -n 's/.*planned memory \([0-9.]*\) MiB arena.*/\1/p' "$WORK/out.txt")
  spn=$(awk '$2 ~ /^(grad\/)?spn\// && $(NF-4) ~ /^[0-9.]+$/ {t += $(NF-3)} END {printf "%.2f", t}' "$WORK/out.txt")
  echo "$cfg $s $r $cpu $spn $arena" | tee -a "$RES"
}

for s in $SIZES; do # compile both programs into the kernel cache
  train "$s" off 1
  train "$s" on 1
done
echo "# config size round cpu_ms_per_step spn_cpu_ms arena_mib"
for r in $(seq 1 "$ROUNDS"); do
  for s in $SIZES; do
    run "$r" "$s" off
    run "$r" "$s" on
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

awk '
function median(a, n,   i, j, t) {
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
  k = $1 " " $2; c = ++cnt[k]; cpus[k, c] = $4; spns[k, c] = $5; arena[k] = $6
  if (!(k in bcpu) || $4 < bcpu[k]) bcpu[k] = $4
  if (!(k in bspn) || $5 < bspn[k]) bspn[k] = $5
}
END {
  print ""
  print "| size | config | CPU ms/step (min) | CPU ms/step (median) | SPN CPU ms/step (min) | SPN CPU ms/step (median) | planned arena MiB |"
  print "|---|---|---|---|---|---|---|"
  for (k in cnt) {
    for (i = 1; i <= cnt[k]; i++) v[i] = cpus[k, i]
    mcpu[k] = median(v, cnt[k]); delete v
    for (i = 1; i <= cnt[k]; i++) v[i] = spns[k, i]
    mspn[k] = median(v, cnt[k]); delete v
    split(k, p, " ")
    printf "| %s | %s | %.1f | %.1f | %.1f | %.1f | %s |\n", p[2], p[1], bcpu[k], mcpu[k], bspn[k], mspn[k], arena[k]
  }
  for (k in cnt) {
    split(k, p, " ")
    o = "off " p[2]
    if (p[1] == "on" && (o in cnt))
      printf "%s: on / off: CPU per step %.3f (min) %.3f (median), %.1f ms saved (median, %.1f%%); SPN %.1f -> %.1f ms (median); arena %.3f\n",
        p[2], bcpu[k] / bcpu[o], mcpu[k] / mcpu[o], mcpu[o] - mcpu[k], 100 * (mcpu[o] - mcpu[k]) / mcpu[o],
        mspn[o], mspn[k], arena[k] / arena[o]
  }
}' "$RES"
