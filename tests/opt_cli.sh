#!/bin/sh
# opt_cli.sh KILN WORKDIR DATA — checks `kiln opt` end to end (see opt_cli.cmake).
set -u
kiln=$1 dir=$2 data=$3
fail=0
no() { echo "FAIL: $*" >&2; fail=1; }
rm -rf "$dir" && mkdir -p "$dir" || exit 1

"$kiln" opt --help | grep -q -- "--print-after" || no "--help lacks --print-after"
"$kiln" opt --list-passes > "$dir/list.txt" || no "--list-passes failed"
for p in dce fold eliminate-identity fold-bn; do
  grep -q "^  $p " "$dir/list.txt" || no "--list-passes lacks $p"
done
grep -q "inference: .*fold-bn" "$dir/list.txt" || no "--list-passes lacks the default pipelines"

# kiln's own network: every BatchNormalization folds, outputs unchanged after a reload
"$kiln" model --width 8 --image-size 64 --classes 8 --cnet-hidden 16 -q -o "$dir/r18.onnx" ||
  no "kiln model"
"$kiln" opt "$dir/r18.onnx" -o "$dir/r18_opt.onnx" --stats --check > "$dir/r18.txt" 2>&1 ||
  no "opt r18 failed: $(cat "$dir/r18.txt")"
grep -q "^fold-bn  *25 .*25 BatchNormalization folded" "$dir/r18.txt" || no "r18: fold-bn stats"
grep -q "check logits: .* ok" "$dir/r18.txt" || no "r18: logits check"
grep -q "check saliency: .* ok" "$dir/r18.txt" || no "r18: saliency check"
"$kiln" info "$dir/r18_opt.onnx" | grep -q BatchNormalization && no "r18: BatchNormalization left"
ls "$dir" | grep -q tmp && no "temporary file left behind"

# a PyTorch export with shape chains: 48 nodes down to 7 (two Conv + ReLU fused)
"$kiln" opt "$data/passes/torch_shapes/model.onnx" -o "$dir/ts.onnx" --stats --check \
  > "$dir/ts.txt" 2>&1 || no "opt torch_shapes failed: $(cat "$dir/ts.txt")"
grep -q "nodes: 48 -> 7" "$dir/ts.txt" || no "torch_shapes: node counts"
"$kiln" run "$dir/ts.onnx" --backend ref \
  --input "input=$data/passes/torch_shapes/test_data_set_0/input_0.pb" --print 3 |
  grep -q "0.12201, -0.441226, 0.0214563" || no "torch_shapes: optimized output"

# training mode keeps BatchNormalization; an explicit pipeline; --print-after
"$kiln" opt "$dir/r18.onnx" --mode training --stats > "$dir/train.txt" || no "training mode"
grep -q "fold-bn" "$dir/train.txt" && no "training mode ran fold-bn"
"$kiln" opt "$dir/r18.onnx" --passes fold-bn --print-after fold-bn -q > "$dir/pa.txt" ||
  no "--print-after"
grep -q "^; after fold-bn (25 changes)" "$dir/pa.txt" || no "--print-after output"

# a symbolic batch is bound and the result has fixed dims
"$kiln" model --width 8 --image-size 64 --classes 3 --cnet-hidden 16 --no-spn --batch N -q \
  -o "$dir/sym.onnx" || no "symbolic model"
"$kiln" opt "$dir/sym.onnx" --bind N=2 -o "$dir/sym_opt.onnx" --check -q || no "opt --bind"
"$kiln" info "$dir/sym_opt.onnx" | grep -q "logits .*\[2,3\]" || no "bound dims not fixed"

# errors
"$kiln" opt "$dir/r18.onnx" --passes fold,nope 2> "$dir/err.txt"
[ $? -eq 1 ] || no "unknown pass: exit status not 1"
grep -q "unknown pass 'nope'" "$dir/err.txt" || no "unknown pass: message"
"$kiln" opt "$dir/r18.onnx" --mode fast 2> /dev/null
[ $? -eq 2 ] || no "bad --mode: exit status not 2"
"$kiln" opt "$dir/r18.onnx" --print-after nope 2> /dev/null
[ $? -eq 2 ] || no "bad --print-after: exit status not 2"
"$kiln" opt "$dir/missing.onnx" -o "$dir/x.onnx" 2> /dev/null && no "missing model accepted"
[ -e "$dir/x.onnx" ] && no "a failed run wrote a file"

[ $fail -eq 0 ] && echo "opt_cli: all checks passed"
exit $fail
