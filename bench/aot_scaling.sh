#!/bin/bash
# aot_scaling.sh — multicore scaling of kiln's generated code on a machine that cannot build
# kiln (no LLVM/protobuf-c there): the model is compiled here ahead of time into a shared
# library (which needs only libc and libgomp) and timed there at 1..16 threads by
# bench/aot_scaling.c, beside the machine's FMA peak (bench/peak.c) and, where Python's
# onnxruntime and torch exist there, ONNX Runtime on the same network exported by torch.
#
#   bench/aot_scaling.sh prepare DIR [KILN]   here: ResNet-18 + C-Net + SPN, batch 8, into DIR
#   bash DIR/aot_scaling.sh run               there (DIR travels with the repository)
# Note: the library holds code for the CPU it was compiled on (e.g. znver3: AVX2), not for
# the machine it runs on.
set -euo pipefail
MACS=23767613440
case ${1:-} in
  prepare)
    ROOT=$(cd "$(dirname "$0")/.." && pwd); DIR=$2; KILN=$(realpath "${3:-$ROOT/build/kiln}")
    mkdir -p "$DIR"
    "$KILN" model -q --backbone resnet18 --classes 8 --batch 8 -o "$DIR/model.onnx"
    (cd "$DIR" && "$KILN" compile model.onnx -o libmodel.so --header model.h --weights weights.bin)
    rm -f "$DIR/model.onnx"
    cp "$ROOT/bench/aot_scaling.c" "$ROOT/bench/peak.c" "$ROOT/bench/aot_scaling.sh" "$DIR/"
    cp "$(ldconfig -p | awk '/libgomp.so.1 .*x86-64/ {print $NF; exit}')" "$DIR/"
    du -sh "$DIR" ;;
  run)
    D=$(cd "$(dirname "$0")" && pwd); R=$(cd "$D" && git rev-parse --show-toplevel 2>/dev/null || echo "$D/../..")
    echo "== machine"; lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket'
    grep -o -w -E 'avx512f|avx2|amx_tile' /proc/cpuinfo | sort | uniq -c; uptime
    ldconfig -p | grep -q libgomp.so.1 || export LD_LIBRARY_PATH=$D
    echo "== peak"
    gcc -O3 -march=native -funroll-loops -fopenmp "$D/peak.c" -o /tmp/kiln_peak -lm
    for t in 1 2 4 8 16; do /tmp/kiln_peak --threads $t --runs 5; done
    /tmp/kiln_peak --threads 16 --isa avx2 --runs 5
    echo "== kiln AOT library, ResNet-18 + C-Net + SPN, batch 8"
    gcc -O2 "$D/aot_scaling.c" -ldl -o /tmp/aot_scaling
    L=$D/libmodel.so
    /tmp/aot_scaling "$D/weights.bin" $((8 * 3 * 224 * 224 * 4)) $MACS 5 1:$L 2:$L 4:$L 8:$L 16:$L
    python3 -c "import onnxruntime, torch" 2>/dev/null || { echo "no onnxruntime/torch in python3"; exit 0; }
    echo "== ONNX Runtime (python), the same network exported by torch, batch 8"
    cd "$R" && timeout 150 python3 - "$MACS" <<'PY'
import statistics, sys, time
import onnxruntime as ort, torch
sys.path.insert(0, "scripts")
from make_fixtures import KilnNet, parse_kiln_args
macs = int(sys.argv[1])
print("onnxruntime", ort.__version__, "torch", torch.__version__)
net = KilnNet(parse_kiln_args("--backbone resnet18 --classes 8")).eval()
x = torch.rand(8, 3, 224, 224)
torch.onnx.export(net, x, "/tmp/m.onnx", opset_version=13, input_names=["image"])
base = None
for t in (1, 2, 4, 8, 16):
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = t, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession("/tmp/m.onnx", so, providers=["CPUExecutionProvider"])
    feed = {"image": x.numpy()}
    for _ in range(2):
        s.run(None, feed)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        s.run(None, feed)
        ts.append(time.perf_counter() - t0)
    m = statistics.median(ts)
    base = base or m
    print(f"ort threads {t:2d}: median {m * 1e3:9.2f} ms  {2 * macs / m / 1e9:7.1f} GFLOP/s  "
          f"speedup {base / m:5.2f}x", flush=True)
PY
    ;;
  *) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
