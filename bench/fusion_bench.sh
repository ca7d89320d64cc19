#!/bin/bash
# fusion_bench.sh — ResNet-18 + C-Net + 5-block SPN (`kiln model --classes 8`) with kiln's
# fusion passes on and off, in one run: latency (kiln bench, JIT) and planned peak memory (the
# static arena) of the whole network and of its SPN alone, at batch 1 and 8.
#
# usage: bench/fusion_bench.sh [--kiln PATH] [--batches 1,8] [--size S] [--rounds R]
#            [--iters N] [--warmup W] [--threads T] [--upsample nearest|bilinear]
#            [--torch] [--no-check] [--out FILE]
#
#   fused     kiln bench --passes default: folding, fold-bn and the fusion passes
#   unfused   kiln bench --no-fuse: the same pipeline without the fusion passes (folding and
#             BatchNorm folding stay, so the difference is the fusions alone)
# The SPN alone is the sub-model from the F-Net's `features` to `saliency` (the 5 upsample
# blocks and the 1x1 head; onnx.utils.extract_model), so the blocks' own latency shows.
# Each round runs every model in both configurations (the order alternates per round, as
# these VMs drift; compare only numbers from one run); each process warms up W runs
# (default 2) and reports min and median of N (default 10).  The table shows, per model and
# configuration, the best min over R rounds (default 3), the median of the medians, the
# kernel calls per run and the planned arena.  Kernels run with OMP_WAIT_POLICY=passive
# (spinning threads lose badly on a loaded machine).
# Before timing, `kiln opt --stats --check` on the batch-1 model shows the fusions and checks
# the optimized model against the original (1e-4) with the reference kernels; --torch also
# exports the same network with PyTorch at full size (scripts/make_fusion_fixtures.py --full,
# Debian's python3-torch) and checks it the same way.  --no-check skips both.
# The kiln binary: --kiln, $KILN, or build/kiln.  --out appends the markdown table to FILE.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3

usage() { sed -n '2,27s/^# \{0,1\}//p' "$0"; }
die() { echo "fusion_bench.sh: $*" >&2; exit 2; }

KILN=${KILN:-$ROOT/build/kiln}
BATCHES=1,8 SIZE=224 ROUNDS=3 ITERS=10 WARMUP=2 THREADS=$(nproc) UPSAMPLE=nearest
TORCH=0 CHECK=1 OUT=
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --kiln) KILN=$2; shift ;;
    --batches) BATCHES=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --iters) ITERS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --upsample) UPSAMPLE=$2; shift ;;
    --torch) TORCH=1 ;;
    --no-check) CHECK=0 ;;
    --out) OUT=$2; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ -x "$KILN" ] || die "no kiln binary at $KILN (build it, or pass --kiln)"
TMP=$(mktemp -d /tmp/kiln-fusion-bench-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$TMP/cache}

IFS=, read -r -a BS <<< "$BATCHES"
MODELS=()
for b in "${BS[@]}"; do
  "$KILN" model --classes 8 --image-size "$SIZE" --batch "$b" --upsample "$UPSAMPLE" -q \
    -o "$TMP/net-b$b.onnx"
  "$PY" -c 'import sys, onnx.utils; onnx.utils.extract_model(*sys.argv[1:3], ["features"], ["saliency"])' \
    "$TMP/net-b$b.onnx" "$TMP/spn-b$b.onnx"
  MODELS+=("net-b$b" "spn-b$b")
done
echo "# kiln fusion benchmark: ResNet-18 + C-Net + 5-block SPN ($UPSAMPLE), ${SIZE}x$SIZE," \
     "batches $BATCHES, $THREADS threads, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) online"

if [ "$CHECK" = 1 ]; then
  echo "## kiln opt --stats --check (batch ${BS[0]})"
  "$KILN" opt "$TMP/net-b${BS[0]}.onnx" -o "$TMP/opt.onnx" --stats --check |
    grep -E '^(fold-bn|fuse-|nodes:|check)'
  if [ "$TORCH" = 1 ]; then
    echo "## the same network exported by PyTorch (opset 13, batch ${BS[0]})"
    "$PY" "$ROOT/scripts/make_fusion_fixtures.py" --full "$TMP/torch.onnx" --batch "${BS[0]}" \
      2>/dev/null
    "$KILN" opt "$TMP/torch.onnx" -o "$TMP/torch_opt.onnx" --stats --check |
      grep -E '^(eliminate|fold|fuse-|nodes:|check)'
  fi
fi

for r in $(seq 1 "$ROUNDS"); do
  echo "## round $r (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  if [ $((r % 2)) = 1 ]; then CFGS="fused unfused"; else CFGS="unfused fused"; fi
  for m in "${MODELS[@]}"; do
    for c in $CFGS; do
      if [ "$c" = fused ]; then P=(--passes default); else P=(--no-fuse); fi
      OMP_WAIT_POLICY=passive "$KILN" bench "$TMP/$m.onnx" "${P[@]}" --json --top 0 \
        --iters "$ITERS" --warmup "$WARMUP" --threads "$THREADS" > "$TMP/r$r-$m-$c.json"
    done
  done
done

"$PY" - "$TMP" "$ROUNDS" "${MODELS[@]}" <<'EOF' | tee -a "${OUT:-/dev/null}"
import json, statistics, sys
tmp, rounds, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("\n| model | batch | fusion | latency min (ms) | median (ms) | kernel calls | "
      "planned peak (MiB) |")
print("|---|---|---|---|---|---|---|")
res = {}
for m in models:
    for c in ("unfused", "fused"):
        runs = [json.load(open(f"{tmp}/r{r}-{m}-{c}.json")) for r in range(1, rounds + 1)]
        best = min(runs, key=lambda j: j["min_ms"])
        row = dict(min=best["min_ms"], med=statistics.median(j["median_ms"] for j in runs),
                   calls=sum(k["kernels"] for k in best["nodes"]), peak=best["planned_peak_bytes"] / 2**20)
        res[m, c] = row
        name, b = m.split("-b")
        print(f"| {'ResNet-18 + C-Net + SPN' if name == 'net' else 'SPN alone'} | {b} | "
              f"{'on' if c == 'fused' else 'off'} | {row['min']:.1f} | {row['med']:.1f} | "
              f"{row['calls']} | {row['peak']:.2f} |")
print()
for m in models:
    u, f = res[m, "unfused"], res[m, "fused"]
    print(f"{m}: fused/unfused latency min {f['min'] / u['min']:.2f}x, median "
          f"{f['med'] / u['med']:.2f}x, planned peak {f['peak'] / u['peak']:.2f}x")
EOF
