#!/bin/bash
# train_fusion_bench.sh — kiln's training step with training-time fusion off and on, in one run.
#
# Network: ResNet-18 + C-Net (1024 hidden, 8 classes) + SPN (`kiln model` defaults), batch 8,
# at each size in SIZES; the step as bench/train_bench.sh has it (BatchNorm on batch
# statistics, cross-entropy + BCE-with-logits on the saliency with every second image lacking
# a mask, backward, Adam), on a synthetic tensor dataset (tests/make_tensor_dataset).
#   off  --passes eliminate-identity,fold,dce (the training pipeline before fusion)
#   on   the default training pipeline (fuse-train-bn, fuse-elementwise)
# Interleaved round by round (the machine drifts).  Each round runs `kiln train --max-steps
# 1+STEPS --profile` per configuration (kernels from the cache, which a warm-up run fills):
# CPU ms per step = the profile's kernel CPU time (all threads) over the steps after the
# first — steadier than wall time on a shared machine; wall s per step = the median of the
# CSV log's steps after the first; "BN+elementwise CPU ms" = the profile's per-op CPU time
# of every op but the convolutions (Conv, ConvTranspose, ConvGradWeight), the optimizer,
# Gemm, pooling and resizing: the part of the step fusion rewrites, free of the convolutions'
# noise.  Planned arena and state from --stats.  Min and median over rounds.
#
# usage: bench/train_fusion_bench.sh [BUILD_DIR]   (default build; needs kiln and
#        tests/make_tensor_dataset built there, Release)
# env:   ROUNDS=3 STEPS=5 SIZES="128" THREADS=2 WORK=/tmp/kiln-train-fusion-bench
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
KILN=$BUILD/kiln
MKDATA=$BUILD/tests/make_tensor_dataset
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-5}
SIZES=${SIZES:-128}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/kiln-train-fusion-bench}
BATCH=8
UNFUSED=eliminate-identity,fold,dce

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

train() { # size off|on steps -> $WORK/out.txt, $WORK/log.csv
  local s=$1 cfg=$2 n=$3 passes=()
  [ "$cfg" = off ] && passes=(--passes "$UNFUSED")
  rm -f "$WORK/log.csv"
  "$KILN" train "${passes[@]}" "$WORK/model$s.onnx" --data "$WORK/data$s" --epochs 1 \
    --max-steps "$n" --threads "$THREADS" --stats --profile=1 --log "$WORK/log.csv" \
    -o "$WORK/ck.onnx" >"$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; exit 1; }
}

run() { # round size off|on
  local r=$1 s=$2 cfg=$3 cpu planned steps
  train "$s" "$cfg" $((STEPS + 1))
  cpu=$(sed -n 's/.*kernels per step: [0-9.]* ms wall, \([0-9.]*\) ms CPU.*/\1/p' "$WORK/out.txt")
  planned=$(sed -n 's/.*planned memory \([0-9.]*\) MiB arena + \([0-9.]*\) MiB state.*/\1 \2/p' "$WORK/out.txt")
  steps=$(awk -F, 'NR>1 {printf "%s%.4f", (NR>2?",":""), $9-prev; prev=$9}' "$WORK/log.csv")
  local rest
  rest=$(awk '/^op +nodes/ {on=1; next} on && NF >= 6 && $1 !~ /^(Conv|ConvTranspose|ConvGradWeight|Adam|SGD|Gemm|MaxPool|MaxPoolGrad|Resize|ResizeGrad)$/ {t += $4} END {printf "%.2f", t}' "$WORK/out.txt")
  echo "$cfg $s $r $steps $(awk -v c="$cpu" 'BEGIN {printf "%.4f", c / 1000}') $planned $rest" | tee -a "$RES"
}

for s in $SIZES; do # compile both programs into the kernel cache
  train "$s" off 1
  train "$s" on 1
done
echo "# config size round wall_step_seconds cpu_s_per_step arena_mib state_mib bn_elementwise_cpu_ms"
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
  k = $1 " " $2; n = split($4, t, ","); m = 0
  for (i = 2; i <= n; i++) u[++m] = t[i]
  step = median(u, m); delete u
  cnt[k]++; steps[k, cnt[k]] = step; cpus[k, cnt[k]] = $5; arena[k] = $6; state[k] = $7
  rests[k, cnt[k]] = $8
  if (!(k in best) || step < best[k]) best[k] = step
  if (!(k in bcpu) || $5 < bcpu[k]) bcpu[k] = $5
}
END {
  print ""
  print "| size | fusion | CPU s/step (min) | CPU s/step (median) | wall s/step (min) | wall s/step (median) | BN+elementwise CPU ms/step (median) | planned arena MiB | state MiB |"
  print "|---|---|---|---|---|---|---|---|---|"
  for (k in cnt) {
    for (i = 1; i <= cnt[k]; i++) v[i] = steps[k, i]
    med[k] = median(v, cnt[k]); delete v
    for (i = 1; i <= cnt[k]; i++) v[i] = cpus[k, i]
    mcpu[k] = median(v, cnt[k]); delete v
    for (i = 1; i <= cnt[k]; i++) v[i] = rests[k, i]
    mrest[k] = median(v, cnt[k]); delete v
    split(k, p, " ")
    printf "| %s | %s | %.3f | %.3f | %.3f | %.3f | %.1f | %s | %s |\n", p[2], p[1], bcpu[k], mcpu[k],
      best[k], med[k], mrest[k], arena[k], state[k]
  }
  for (k in cnt) {
    split(k, p, " ")
    o = "off " p[2]
    if (p[1] == "on" && (o in cnt))
      printf "%s: on / off: CPU per step %.3f (min) %.3f (median); wall %.3f (min) %.3f (median); BN+elementwise CPU %.3f (%.1f ms saved, %.1f%% of the unfused step); arena %.3f\n",
        p[2], bcpu[k] / bcpu[o], mcpu[k] / mcpu[o], best[k] / best[o], med[k] / med[o],
        mrest[k] / mrest[o], mrest[o] - mrest[k], 100 * (mrest[o] - mrest[k]) / (1000 * mcpu[o]),
        arena[k] / arena[o]
  }
}' "$RES"
