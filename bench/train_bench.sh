#!/bin/bash
# train_bench.sh — kiln's training step beside PyTorch's on the same machine, in one run.
#
# Network: ResNet-18 + C-Net (1024 hidden, 8 classes) + 5-block SPN (`kiln model`
# defaults), batch 8, at each size in SIZES.  Step: forward with BatchNorm in training
# mode, cross-entropy + BCE-with-logits on the saliency with half the images lacking a
# mask, backward, Adam.  Systems, interleaved round by round (the machine drifts):
#   kiln         `kiln train --max-steps STEPS` on a synthetic tensor dataset; per-step
#                times from its CSV log, planned memory from --stats
#   torch        bench/train_step.py (Debian's python3-torch), torch.set_num_threads(THREADS)
#   torch+knobs  the same with MALLOC_TRIM_THRESHOLD_=17179869184
#                MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=1073741824
# Peak RSS of each process from /usr/bin/time -v (kiln's includes compiling the step).
# Step time = median of the steps after the first; medians over rounds; ratios kiln/torch.
#
# usage: bench/train_bench.sh [KILN_BINARY]      (default build/kiln; build Release)
# env:   ROUNDS=3 STEPS=4 SIZES="224 128" THREADS=2 WORK=/tmp/kiln-train-bench
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KILN=${1:-$ROOT/build/kiln}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-4}
SIZES=${SIZES:-"224 128"}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/kiln-train-bench}
PY=/usr/bin/python3
BATCH=8
KNOBS="MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=1073741824"

[ -x "$KILN" ] || { echo "no kiln binary at $KILN (build first, or pass its path)" >&2; exit 2; }
$PY -c "import torch, torchvision" 2>/dev/null || { echo "needs python3-torch and python3-torchvision" >&2; exit 2; }
mkdir -p "$WORK"
RES=$WORK/results.txt
: >"$RES"

echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# kiln $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), torch $($PY -c 'import torch; print(torch.__version__)')," \
     "threads $THREADS, batch $BATCH, sizes $SIZES, $STEPS steps, $ROUNDS rounds"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for s in $SIZES; do
  "$KILN" model -q -o "$WORK/model$s.onnx" --classes 8 --image-size "$s" --batch $BATCH
  $PY - "$WORK/data$s" "$s" $((BATCH * STEPS)) <<'EOF'
import os, sys
import numpy as np
d, s, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(0)
np.save(d + "/images.npy", rng.standard_normal((n, 3, s, s), dtype=np.float32))
np.save(d + "/labels.npy", (np.arange(n) % 8).astype(np.int64))
np.save(d + "/masks.npy", (rng.random((n, 1, s, s)) > 0.7).astype(np.float32))
np.save(d + "/mask_present.npy", (np.arange(n) % 2 == 0).astype(np.float32))
EOF
done

rss_kb() { grep 'Maximum resident set size' "$1" | awk '{print $NF}'; }
wall_s() { grep 'Elapsed (wall clock)' "$1" | awk '{n=split($NF,a,":"); print (n==3? a[1]*3600+a[2]*60+a[3] : a[1]*60+a[2])}'; }

run_kiln() { # round size
  local r=$1 s=$2 log=$WORK/kiln$s.csv tv=$WORK/time.txt out=$WORK/kiln.out
  rm -f "$log"
  /usr/bin/time -v -o "$tv" "$KILN" train "$WORK/model$s.onnx" --data "$WORK/data$s" --epochs 1 \
    --max-steps "$STEPS" --threads "$THREADS" --stats --log "$log" -o "$WORK/ck$s.onnx" >"$out" 2>&1 \
    || { cat "$out" >&2; exit 1; }
  local planned
  planned=$(sed -n 's/.*planned memory \([0-9.]*\) MiB arena + \([0-9.]*\) MiB state.*/\1 \2/p' "$out")
  # per-step seconds: differences of the log's elapsed-seconds column (9), which starts at
  # the first step (images_per_s, column 8, has only 2 decimals)
  local steps
  steps=$(awk -F, 'NR>1 {printf "%s%.4f", (NR>2?",":""), $9-prev; prev=$9}' "$log")
  echo "kiln $s $r $steps $(rss_kb "$tv") $(wall_s "$tv") $planned" | tee -a "$RES"
}

run_torch() { # round size name env...
  local r=$1 s=$2 name=$3 tv=$WORK/time.txt out=$WORK/torch.out
  shift 3
  env "$@" /usr/bin/time -v -o "$tv" $PY "$ROOT/bench/train_step.py" --batch $BATCH --size "$s" \
    --steps "$STEPS" --threads "$THREADS" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
  local steps
  steps=$(sed -n 's/.*steps_s=\([0-9.,]*\).*/\1/p' "$out")
  echo "$name $s $r $steps $(rss_kb "$tv") $(wall_s "$tv") - -" | tee -a "$RES"
}

echo "# system size round step_seconds(comma-separated) peak_rss_kb wall_s planned_arena_mib planned_state_mib"
for r in $(seq 1 "$ROUNDS"); do
  for s in $SIZES; do
    run_kiln "$r" "$s"
    run_torch "$r" "$s" torch
    # shellcheck disable=SC2086
    run_torch "$r" "$s" torch+knobs $KNOBS
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg) (a load above the CPU count means other processes shared the cores)"

$PY - "$RES" <<'EOF'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    sysname, size, rnd, steps, rss, wall, arena, state = line.split()
    t = [float(x) for x in steps.split(",")]
    rows.setdefault((sysname, int(size)), []).append(
        dict(first=t[0], step=st.median(t[1:] if len(t) > 1 else t), rss=int(rss) / 1048576,
             wall=float(wall), arena=arena, state=state))
print()
print("| system | size | first step s | step s (median) | images/s | peak RSS GiB | planned GiB | wall s |")
print("|---|---|---|---|---|---|---|---|")
med = {}
for (name, size), rs in sorted(rows.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
    m = {k: st.median(r[k] for r in rs) for k in ("first", "step", "rss", "wall")}
    med[(name, size)] = m
    planned = "-"
    if rs[0]["arena"] != "-":
        planned = "%.2f (arena %.0f + state %.0f MiB)" % (
            (float(rs[0]["arena"]) + float(rs[0]["state"])) / 1024, float(rs[0]["arena"]),
            float(rs[0]["state"]))
    print("| %s | %d | %.3f | %.3f | %.2f | %.2f | %s | %.0f |" % (
        name, size, m["first"], m["step"], 8 / m["step"], m["rss"], planned, m["wall"]))
print()
for size in sorted({k[1] for k in med}, reverse=True):
    k = med.get(("kiln", size))
    for other in ("torch", "torch+knobs"):
        o = med.get((other, size))
        if k and o:
            print("%d: kiln / %s: step time %.2fx, peak RSS %.2fx" % (
                size, other, k["step"] / o["step"], k["rss"] / o["rss"]))
EOF
