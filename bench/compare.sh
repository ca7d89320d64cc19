#!/bin/bash
# compare.sh — kiln, ONNX Runtime and PyTorch on the same model, in one run, with ratios.
#
# usage: bench/compare.sh MODEL.onnx [--batch B] [--iters N] [--rounds R] [--threads T]
#            [--warmup W] [--kiln PATH] [--torch-model auto|resnet18spn|resnet18|resnet50|none]
#            [--runtimes kiln,ort-all,ort-basic,torch,torch+malloc] [--no-install]
#            [--kiln-passes LIST|none] [--kiln-env VAR=VALUE]... [--out FILE]
#
# Runtimes, each a fresh process per round, rounds interleaved (the order rotates each
# round, as these VMs drift 10-30% over minutes; compare only numbers from one run):
#   kiln          `kiln bench MODEL --json --threads T --passes default` (JIT, after kiln's
#                 default graph passes: folding and fusion; --kiln-passes none: the model as
#                 given, or another pipeline)
#   kiln+passive  the same with OMP_WAIT_POLICY=passive (not run unless --runtimes names it)
#   ort-all       onnxruntime-node 1.30 (bench/compare_ort.mjs), graphOptimizationLevel 'all',
#   ort-basic     ... 'basic'; intraOpNumThreads T.  Installed into bench/node_modules on
#                 first use (ONNXRUNTIME_NODE_INSTALL=skip npm install); skipped with a note
#                 when that fails (no registry) or node is missing
#   torch         Debian's python3-torch (bench/compare_torch.py): the equivalent PyTorch
#                 module (rebuilt from a `kiln model` graph, or --torch-model), eval +
#                 no_grad, torch.set_num_threads(T)
#   torch+malloc  the same with glibc's MALLOC_TRIM_THRESHOLD_=17179869184
#                 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=1073741824
# Each process warms up W runs (default 3) and reports the median of N (default 10); the
# table shows, per runtime, the median over R rounds (default 3), GFLOP/s from kiln's MAC
# count, the share of the fp32 FMA peak that kiln_peak measures at T threads in the same run,
# and time / kiln's time (> 1: kiln is faster).  Load averages are printed with every round.
# CPU ms is the process's CPU time per run (all threads, median): on a machine shared with
# other work it moves far less than wall time, and at --threads 1 it is the fairest measure
# of the code itself; "per CPU-s" divides the FLOPs by it and is held against kiln_peak's
# per-core peak (threads that spin while waiting add CPU time without FLOPs).
# The symbolic batch dimension (if any) takes --batch (default 1); a fixed one must match.
# T defaults to all online CPUs.  The kiln binary: --kiln, $KILN, or build/kiln; kiln_peak is
# taken from beside it.  --kiln-env sets a variable for kiln's runs only (e.g.
# OMP_WAIT_POLICY=passive, which helps kiln a lot on a machine loaded by other work).
# --out also appends the markdown table to FILE.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
KNOBS=(MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_MMAP_THRESHOLD_=33554432
       MALLOC_TOP_PAD_=1073741824)
NOKNOBS=(-u MALLOC_TRIM_THRESHOLD_ -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TOP_PAD_)

usage() { sed -n '2,39s/^# \{0,1\}//p' "$0"; }
die() { echo "compare.sh: $*" >&2; exit 2; }

MODEL= BATCH= ITERS=10 ROUNDS=3 WARMUP=3 THREADS=$(nproc) TORCH_MODEL=auto INSTALL=1 OUT=
RUNTIMES=kiln,ort-all,ort-basic,torch,torch+malloc
KILN=${KILN:-$ROOT/build/kiln}
KILN_ENV=()
KILN_PASSES=default
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --batch) BATCH=$2; shift ;;
    --iters) ITERS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --kiln) KILN=$2; shift ;;
    --torch-model) TORCH_MODEL=$2; shift ;;
    --runtimes) RUNTIMES=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --kiln-passes) KILN_PASSES=$2; shift ;;
    --kiln-env) [[ $2 == *=* ]] || die "--kiln-env needs VAR=VALUE"; KILN_ENV+=("$2"); shift ;;
    --out) OUT=$2; shift ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$MODEL" ] || die "more than one model given"; MODEL=$1 ;;
  esac
  shift
done
[ -n "$MODEL" ] || { usage >&2; exit 2; }
[ -f "$MODEL" ] || die "no such model: $MODEL"
[ -x "$KILN" ] || die "no kiln binary at $KILN (build it, or pass --kiln PATH)"
[ "$THREADS" -ge 1 ] 2>/dev/null || die "--threads must be a positive number"

WORK=$(mktemp -d /tmp/kiln-compare.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
NOTES=$WORK/notes
: >"$NOTES"
note() { echo "note: $*" | tee -a "$NOTES" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- the model's batch: bind a symbolic leading dimension to --batch ----
BIND=()
if ! info=$("$KILN" info "$MODEL" 2>&1); then
  sym=$(sed -n "s/.*unbound dimension 0 ('\([^']*\)').*/\1/p" <<<"$info")
  [ -n "$sym" ] || die "kiln info failed: $info"
  BIND=(--bind "$sym=${BATCH:-1}")
  info=$("$KILN" info "$MODEL" "${BIND[@]}") || die "kiln info failed"
fi
shape=$(awk '/^inputs:/ {getline; print $3; exit}' <<<"$info")
fixed=$(sed -n 's/^\[\([0-9]*\),.*/\1/p' <<<"$shape")
if [ ${#BIND[@]} -eq 0 ]; then
  [ -z "$BATCH" ] || [ "$BATCH" = "$fixed" ] ||
    die "the model's batch is fixed at $fixed; rebuild it (kiln model --batch $BATCH) or give --batch $fixed"
  BATCH=${fixed:-1}
fi
BATCH=${BATCH:-1}
MACS=$(sed -n 's/^MACs: \([0-9]*\).*/\1/p' <<<"$info")

# ---- which runtimes can run here ----
want() { [[ ",$RUNTIMES," == *",$1,"* ]]; }
HAVE_ORT=0
if want ort-all || want ort-basic; then
  if ! command -v node >/dev/null; then
    note "ONNX Runtime skipped: node is not installed (apt-get install nodejs npm)"
  else
    if ! (cd "$ROOT/bench" && node -e "require('onnxruntime-node')" 2>/dev/null) && [ $INSTALL = 1 ]; then
      echo "installing onnxruntime-node into bench/node_modules ..." >&2
      (cd "$ROOT/bench" && ONNXRUNTIME_NODE_INSTALL=skip timeout 600 npm install --no-audit --no-fund \
        >"$WORK/npm.log" 2>&1) || true
    fi
    if (cd "$ROOT/bench" && node -e "require('onnxruntime-node')" 2>/dev/null); then
      HAVE_ORT=1
    else
      note "ONNX Runtime skipped: onnxruntime-node is not installed and npm could not install it" \
           "(registry unreachable?); see bench/package.json"
    fi
  fi
fi
HAVE_TORCH=0
if (want torch || want torch+malloc) && [ "$TORCH_MODEL" != none ]; then
  if ! $PY -c "import torch, torchvision, onnx" 2>/dev/null; then
    note "PyTorch skipped: /usr/bin/python3 lacks torch/torchvision/onnx" \
         "(apt-get install python3-torch python3-torchvision python3-onnx)"
  elif ! $PY "$ROOT/bench/compare_torch.py" "$MODEL" --torch-model "$TORCH_MODEL" --probe \
         >"$WORK/torch.probe" 2>"$WORK/torch.err"; then
    note "PyTorch skipped: $(tail -1 "$WORK/torch.err")"
  else
    HAVE_TORCH=1
    TORCH_DESC=$(sed -n 's/.*"model": "\([^"]*\)".*/\1/p' "$WORK/torch.probe")
  fi
fi
RUN=()
want kiln && RUN+=(kiln)
want kiln+passive && RUN+=(kiln+passive)
[ $HAVE_ORT = 1 ] && want ort-all && RUN+=(ort-all)
[ $HAVE_ORT = 1 ] && want ort-basic && RUN+=(ort-basic)
[ $HAVE_TORCH = 1 ] && want torch && RUN+=(torch)
[ $HAVE_TORCH = 1 ] && want torch+malloc && RUN+=(torch+malloc)
[ ${#RUN[@]} -gt 0 ] || die "nothing to run"

echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "$(nproc) CPUs, flags: $(grep -m1 -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | xargs)"
echo "# model $MODEL, batch $BATCH, threads $THREADS, $ITERS iters after $WARMUP warm-up," \
     "$ROUNDS rounds: ${RUN[*]}"
[ $HAVE_TORCH = 1 ] && echo "# PyTorch runs: $TORCH_DESC"
[ ${#KILN_ENV[@]} -eq 0 ] || echo "# kiln runs with: ${KILN_ENV[*]}"
echo "# kiln passes: $KILN_PASSES"
echo "# kiln binary $KILN (built $(date -u -r "$KILN" +%FT%TZ)),"\
     "repository at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")"

# ---- peak ----
PEAK=$(dirname "$KILN")/kiln_peak
PEAK_JSON=$WORK/peak.json
if [ -x "$PEAK" ]; then
  echo "# load before peak: $(load)"
  "$PEAK" --threads "$THREADS" --runs 5 --json >"$PEAK_JSON"
  echo "# peak: $(cat "$PEAK_JSON")"
else
  note "no kiln_peak beside $KILN (make kiln_peak); no share of peak"
  echo '{}' >"$PEAK_JSON"
fi

# ---- rounds ----
RES=$WORK/results.jsonl
: >"$RES"
run_one() { # runtime round
  local rt=$1 r=$2 out=$WORK/out.txt la
  la=$(load)
  case $rt in
    kiln|kiln+passive)
      local kenv=("${KILN_ENV[@]}") kargs=("${BIND[@]}")
      [ $rt = kiln ] || kenv+=(OMP_WAIT_POLICY=passive)
      [ "$KILN_PASSES" = none ] || kargs+=(--passes "$KILN_PASSES")
      env "${kenv[@]}" "$KILN" bench "$MODEL" "${kargs[@]}" --json --iters "$ITERS" \
        --warmup "$WARMUP" --threads "$THREADS" >"$out" 2>"$WORK/err.txt" ;;
    ort-all|ort-basic)
      node "$ROOT/bench/compare_ort.mjs" "$MODEL" --opt "${rt#ort-}" --threads "$THREADS" \
        --iters "$ITERS" --warmup "$WARMUP" --batch "$BATCH" >"$out" 2>"$WORK/err.txt" ;;
    torch)
      env "${NOKNOBS[@]}" $PY "$ROOT/bench/compare_torch.py" "$MODEL" --torch-model "$TORCH_MODEL" \
        --batch "$BATCH" --threads "$THREADS" --iters "$ITERS" --warmup "$WARMUP" \
        >"$out" 2>"$WORK/err.txt" ;;
    torch+malloc)
      env "${KNOBS[@]}" $PY "$ROOT/bench/compare_torch.py" "$MODEL" --torch-model "$TORCH_MODEL" \
        --batch "$BATCH" --threads "$THREADS" --iters "$ITERS" --warmup "$WARMUP" \
        >"$out" 2>"$WORK/err.txt" ;;
  esac || { echo "compare.sh: $rt failed:" >&2; cat "$WORK/err.txt" >&2; exit 1; }
  local line
  line=$(grep -m1 '^{' "$out")
  printf '{"rt": "%s", "round": %d, "load": "%s", "res": %s}\n' "$rt" "$r" "$la" "$line" >>"$RES"
  printf '%-13s round %d  median %9.2f ms  (load %s)\n' "$rt" "$r" \
    "$(sed -n 's/.*"median_ms": *\([0-9.]*\).*/\1/p' <<<"$line")" "$la"
}
n=${#RUN[@]}
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    run_one "${RUN[$(((k + r - 1) % n))]}" "$r"
  done
done
echo "# load at end: $(load)"

# ---- summary ----
$PY - "$RES" "$PEAK_JSON" "$NOTES" "$MODEL" "$BATCH" "$THREADS" "${MACS:-0}" <<'EOF' | tee "$WORK/table.md"
import json, statistics as st, sys
res, peak, notes, model, batch, threads, macs = sys.argv[1:8]
rows = [json.loads(l) for l in open(res)]
peak = json.load(open(peak))
pk, pcore = peak.get("gflops_n"), peak.get("gflops_per_cpu_s")
macs = int(macs) or next((r["res"]["macs"] for r in rows if r["rt"] == "kiln"), 0)
order = ["kiln", "kiln+passive", "ort-all", "ort-basic", "torch", "torch+malloc"]
names = {"kiln": "kiln (JIT)", "kiln+passive": "kiln, OMP_WAIT_POLICY=passive",
         "ort-all": "ONNX Runtime 1.30, opt all", "ort-basic": "ONNX Runtime 1.30, opt basic",
         "torch": "PyTorch (stock)", "torch+malloc": "PyTorch + malloc knobs"}
med = {}
for rt in order:
    rs = [r["res"] for r in rows if r["rt"] == rt]
    if rs:
        cpu = [r["cpu_median_ms"] for r in rs if "cpu_median_ms" in r]
        med[rt] = dict(ms=st.median(r["median_ms"] for r in rs), min=min(r["min_ms"] for r in rs),
                       cpu=st.median(cpu) if cpu else None)
print()
print(f"model {model}, batch {batch}, {threads} threads" +
      (f", {macs / 1e9:.3f} GMAC per run" if macs else "") +
      (f"; peak {pk:.1f} GFLOP/s ({peak['isa']}, {threads} threads; 1 thread "
       f"{peak['gflops_1']:.1f}; per core while running {pcore:.1f})" if pk else ""))
print()
print("| runtime | median ms | min ms | GFLOP/s | of peak | time / kiln | CPU ms | "
      "GFLOP per CPU-s | of core peak |")
print("|---|---|---|---|---|---|---|---|---|")
k = med.get("kiln")
for rt, m in med.items():
    g = 2 * macs / (m["ms"] / 1e3) / 1e9 if macs else None
    gc = 2 * macs / (m["cpu"] / 1e3) / 1e9 if macs and m["cpu"] else None
    cells = [names[rt], f"{m['ms']:.2f}", f"{m['min']:.2f}", f"{g:.1f}" if g else "-",
             f"{100 * g / pk:.0f}%" if g and pk else "-",
             f"{m['ms'] / k['ms']:.2f}" if k else "-",
             f"{m['cpu']:.1f}" if m["cpu"] else "-", f"{gc:.1f}" if gc else "-",
             f"{100 * gc / pcore:.0f}%" if gc and pcore else "-"]
    print("| " + " | ".join(cells) + " |")
if k:
    print()
    for rt, m in med.items():
        if rt != "kiln":
            r = m["ms"] / k["ms"]
            line = f"vs {names[rt]}: kiln is " + (f"{r:.2f}x faster" if r >= 1 else f"{1 / r:.2f}x slower")
            if m["cpu"] and k["cpu"]:
                line += f" (CPU time: {m['cpu'] / k['cpu']:.2f}x)"
            print(line)
loads = sorted({r["load"].split()[0] for r in rows}, key=float)
print(f"\nload averages (1 min) seen before the runs: {loads[0]} .. {loads[-1]}")
for line in open(notes):
    print(line.rstrip())
EOF
if [ -n "$OUT" ]; then cat "$WORK/table.md" >>"$OUT"; fi
