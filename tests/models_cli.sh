#!/bin/sh
# models_cli.sh KILN WORKDIR DATA — checks `kiln model` end to end (see models_cli.cmake).
set -u
kiln=$1 dir=$2 data=$3
fail=0
no() { echo "FAIL: $*" >&2; fail=1; }
rm -rf "$dir" && mkdir -p "$dir" || exit 1
narrow="--width 8 --image-size 64 --classes 3 --cnet-hidden 16"

"$kiln" model --help | grep -q -- "--spn-scales" || no "--help lacks --spn-scales"
"$kiln" model $narrow --seed 5 -q -o "$dir/a.onnx" || no "build a"
"$kiln" model $narrow --seed 5 -q -o "$dir/b.onnx" || no "build b"
"$kiln" model $narrow --seed 6 -q -o "$dir/c.onnx" || no "build c"
cmp -s "$dir/a.onnx" "$dir/b.onnx" || no "same seed gave different bytes"
cmp -s "$dir/a.onnx" "$dir/c.onnx" && no "different seeds gave the same bytes"
ls "$dir" | grep -q tmp && no "temporary file left behind"

"$kiln" info "$dir/a.onnx" > "$dir/info.txt" || no "kiln info failed"
for g in fnet cnet spn; do
  grep -q "^  $g " "$dir/info.txt" || no "kiln info has no $g sub-network"
done

"$kiln" model $narrow --batch N -q -o "$dir/sym.onnx" || no "symbolic batch"
"$kiln" info "$dir/sym.onnx" --bind N=4 | grep -q "saliency .*\[4,1,64,64\]" || no "bound batch"

"$kiln" model --classes 3 --spn-scales 2,2,2 -o "$dir/bad.onnx" 2> "$dir/err.txt"
[ $? -eq 2 ] || no "bad scales: exit status not 2"
grep -q "multiply to 8" "$dir/err.txt" || no "bad scales: message"
[ -e "$dir/bad.onnx" ] && no "a failed build wrote a file"
"$kiln" model --classes 3 --bogus -o "$dir/bad.onnx" 2> /dev/null
[ $? -eq 2 ] || no "unknown option: exit status not 2"

"$kiln" model --width 8 --image-size 64 --classes 10 --cnet-hidden 0 --no-spn \
  --init-from "$data/resnet_narrow/model.onnx" -o "$dir/init.onnx" > "$dir/init.txt" ||
  no "--init-from failed"
grep -q "102 tensors matched .* 0 of 100 F-Net tensors not provided; 0 in the source unused" \
  "$dir/init.txt" || no "--init-from report: $(head -1 "$dir/init.txt")"

# kiln bench on the fused model: one row per node (a convolution's kernels summed), the
# JSON's nodes with their kernel counts adding up to the kernel calls
"$kiln" bench "$dir/a.onnx" --passes default --iters 2 --warmup 1 --threads 1 --top 0 \
  > "$dir/bench.txt" || no "kiln bench failed"
grep -q "^node (profiled run) .* kern$" "$dir/bench.txt" || no "bench: no per-node table"
calls=$(sed -n 's/.*; \([0-9]*\) kernel calls.*/\1/p' "$dir/bench.txt")
rows=$(awk '/^node \(profiled run\)/{on=1; next} on && NF {s += $NF} END {print s + 0}' "$dir/bench.txt")
[ -n "$calls" ] && [ "$calls" = "$rows" ] || no "bench: rows count $rows kernels, run had ${calls:-?}"
# --kernels: the same kernels by kind (the convolutions' own loops, their input copies, ...)
"$kiln" bench "$dir/a.onnx" --passes default --iters 2 --warmup 1 --threads 1 --top 0 --kernels \
  > "$dir/kinds.txt" || no "kiln bench --kernels failed"
grep -q "^fused_conv " "$dir/kinds.txt" || no "bench --kernels: no fused_conv row"
ksteps=$(awk '/^kernel kind \(profiled run\)/{on=1; next} on && NF {s += $NF} END {print s + 0}' "$dir/kinds.txt")
[ "$ksteps" = "$calls" ] || no "bench --kernels: kinds count $ksteps steps, run had ${calls:-?}"
"$kiln" bench "$dir/a.onnx" --passes default --iters 2 --warmup 1 --threads 1 --json \
  > "$dir/bench.json" || no "kiln bench --json failed"
grep -q '"nodes": \[{"label": "[^"]*", "op": "[^"]*", "ms": [0-9.]*, "macs": [0-9]*, "kernels": [0-9]' \
  "$dir/bench.json" || no "bench --json: no nodes"

[ $fail -eq 0 ] && echo "models_cli: ok"
exit $fail
