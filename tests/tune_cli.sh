#!/bin/sh
# tune_cli.sh KILN WORKDIR — checks `kiln tune` end to end (see tune_cli.cmake).  The cache
# directory is the test's own: a table in the suite's shared cache would change other tests'
# blocks (never their results).
set -u
kiln=$1 dir=$2
fail=0
no() { echo "FAIL: $*" >&2; fail=1; }
rm -rf "$dir" && mkdir -p "$dir" || exit 1
KILN_CACHE_DIR="$dir/cache"
export KILN_CACHE_DIR
"$kiln" model --classes 3 --width 4 --image-size 32 --cnet-hidden 8 -q -o "$dir/m.onnx" ||
  no "build the model"

"$kiln" tune --help | grep -q -- "--budget" || no "--help lacks --budget"
"$kiln" tune "$dir/m.onnx" --passes default --dry-run > "$dir/dry.txt" || no "dry run failed"
grep -q "distinct convolution" "$dir/dry.txt" || no "dry run lists no convolutions"
grep -q "layer1.0/conv1 .* 4 " "$dir/dry.txt" || no "dry run: layer1's 4 alike convolutions"
ls "$dir/cache" 2> /dev/null | grep -q "^tune-" && no "the dry run saved a table"

# margin 0: any confirmed gain is kept, so entries are likely (not certain: timing)
"$kiln" tune "$dir/m.onnx" --passes default --budget 4 --candidates 4 --margin 0 \
  > "$dir/tune.txt" 2> "$dir/tune.err" || no "tune failed: $(cat "$dir/tune.err")"
grep -q "^saved .*tune-.*entries" "$dir/tune.txt" || no "tune saved no table"
grep -q "ms .*tuned .*ms .*speedup" "$dir/tune.txt" || no "tune printed no table"
table=$(ls "$dir"/cache/tune-*.txt 2> /dev/null | head -n 1)
[ -n "$table" ] || no "no table file in the cache directory"
[ -n "$table" ] && { head -n 1 "$table" | grep -q "^kiln-tune 1$" || no "table header"; }
[ -n "$table" ] && { tail -n 1 "$table" | grep -q "^end [0-9]" || no "table end line"; }
ls "$dir/cache" | grep -q tmp && no "temporary file left behind"

"$kiln" run "$dir/m.onnx" --threads 2 > "$dir/run.txt" 2>&1 || no "run with the table"
grep -q "tuning table" "$dir/run.txt" && no "run warned about a good table"

if [ -n "$table" ]; then
  printf 'kiln-tune 1\ncpu ' > "$table" # truncated
  "$kiln" run "$dir/m.onnx" --threads 1 > "$dir/run2.txt" 2>&1 || no "run with a corrupt table"
  grep -q "warning: tuning table .* is ignored" "$dir/run2.txt" || no "no warning for a corrupt table"
  KILN_TUNE=0 "$kiln" run "$dir/m.onnx" --threads 1 > "$dir/run3.txt" 2>&1 || no "KILN_TUNE=0 run"
  grep -q "tuning table" "$dir/run3.txt" && no "KILN_TUNE=0 still read the table"
fi

"$kiln" tune "$dir/m.onnx" --budget 0 2> /dev/null
[ $? -eq 2 ] || no "--budget 0: exit status not 2"
"$kiln" tune "$dir/m.onnx" --bogus 2> /dev/null
[ $? -eq 2 ] || no "unknown option: exit status not 2"
"$kiln" tune 2> /dev/null
[ $? -eq 2 ] || no "no model: exit status not 2"
"$kiln" tune "$dir/missing.onnx" 2> /dev/null
[ $? -eq 1 ] || no "missing model: exit status not 1"
KILN_CACHE_DIR= "$kiln" tune "$dir/m.onnx" --budget 1 2> "$dir/nocache.txt"
[ $? -eq 1 ] || no "no cache directory: exit status not 1"
grep -q "no kernel cache directory" "$dir/nocache.txt" || no "no cache directory: message"
exit $fail
