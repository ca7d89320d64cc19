#!/bin/bash
# layout_bench.sh — plain against channel-blocked convolutions (the layout-blocked pass,
# docs/passes.md) on the same models in one run: kiln bench --passes default --layout
# plain|blocked, alternating per round (these machines drift; compare only numbers from one
# run), then the ratio of the best minima and of the median medians.
#
# usage: bench/layout_bench.sh [--kiln PATH] [--threads 1,2] [--rounds R] [--iters N]
#            [--warmup W] [--models "r50 s1 s8"]
#
#   r50  ResNet-50, 1000 classes, batch 1   (kiln model --backbone resnet50 --no-spn ...)
#   s1   ResNet-18 + C-Net + SPN, batch 1   (kiln model --backbone resnet18 --classes 8)
#   s8   the same at batch 8 (iterations divided by 4)
# Models are built into a temporary folder.  Kernels run with OMP_WAIT_POLICY=passive.  The
# kiln binary: --kiln, $KILN, or build/kiln.  Each line: model, threads, layout, best min and
# median median over the rounds (ms); then "blocked/plain" ratios (< 1: blocked is faster).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }

KILN=${KILN:-$ROOT/build/kiln}
THREADS=1,2
ROUNDS=3
ITERS=10
WARMUP=2
MODELS="r50 s1 s8"
while [ $# -gt 0 ]; do
  case "$1" in
  --kiln) KILN=$2; shift 2 ;;
  --threads) THREADS=$2; shift 2 ;;
  --rounds) ROUNDS=$2; shift 2 ;;
  --iters) ITERS=$2; shift 2 ;;
  --warmup) WARMUP=$2; shift 2 ;;
  --models) MODELS=$2; shift 2 ;;
  -h|--help) usage; exit 0 ;;
  *) echo "layout_bench.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -x "$KILN" ] || { echo "layout_bench.sh: no kiln binary at $KILN (build it, or --kiln)" >&2; exit 1; }
export OMP_WAIT_POLICY=passive
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

for m in $MODELS; do
  case $m in
  r50) "$KILN" model --backbone resnet50 --no-spn --cnet-hidden 0 --classes 1000 -q -o "$TMP/r50.onnx" ;;
  s1) "$KILN" model --backbone resnet18 --classes 8 --batch 1 -q -o "$TMP/s1.onnx" ;;
  s8) "$KILN" model --backbone resnet18 --classes 8 --batch 8 -q -o "$TMP/s8.onnx" ;;
  *) echo "layout_bench.sh: unknown model '$m' (r50, s1, s8)" >&2; exit 2 ;;
  esac
done

# one "min median" pair from kiln bench's latency line
run_one() { # model threads layout iters
  "$KILN" bench "$TMP/$1.onnx" --passes default --layout "$3" --threads "$2" --iters "$4" \
    --warmup "$WARMUP" --top 0 |
    awk '/^latency:/ {gsub(",", ""); print $3, $6}'
}

echo "model threads layout  min_ms  median_ms   (best min, median median of $ROUNDS rounds)"
for m in $MODELS; do
  it=$ITERS
  [ "$m" = s8 ] && it=$(( (ITERS + 3) / 4 ))
  for t in ${THREADS//,/ }; do
    : >"$TMP/plain" && : >"$TMP/blocked"
    for r in $(seq "$ROUNDS"); do
      order="plain blocked"
      [ $((r % 2)) -eq 0 ] && order="blocked plain"
      for lay in $order; do run_one "$m" "$t" "$lay" "$it" >>"$TMP/$lay"; done
    done
    for lay in plain blocked; do
      mn=$(cut -d' ' -f1 "$TMP/$lay" | sort -g | head -1)
      md=$(cut -d' ' -f2 "$TMP/$lay" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
      printf "%-5s %7s %-8s %7.2f %9.2f\n" "$m" "$t" "$lay" "$mn" "$md"
    done | tee "$TMP/rows"
    awk '{ mn[$3] = $4; md[$3] = $5 }
         END { printf "%-5s %7s blocked/plain: min %.3f, median %.3f\n", $1, $2, mn["blocked"] / mn["plain"], md["blocked"] / md["plain"] }' "$TMP/rows"
  done
done
