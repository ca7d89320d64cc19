#!/bin/sh
# cli_args.sh KILN — every command's option values are checked before any work starts:
#   - an option that takes a value, given last without one, is a usage error (exit 2, a
#     message naming the option), never a crash;
#   - each numeric option refuses a non-number, a number with trailing junk and an
#     out-of-range number with exit 2 and "option FLAG needs ...";
#   - kiln never dies of a signal on any of these.
set -u
kiln=$1
fail=0
no() { echo "FAIL: $*" >&2; fail=1; }
err=$(mktemp)
trap 'rm -f "$err"' EXIT

# Every --flag VALUE / --flag=VALUE a command's --help lists, given last with no value.
for cmd in $("$kiln" help | awk '/^commands:/{on=1; next} on && NF {print $1}' | grep -v '^help$'); do
  for flag in $("$kiln" "$cmd" --help 2>&1 | grep -o -- '--[a-z][a-z-]*[ =][A-Z][A-Z_,.|0-9]*' |
                sed 's/[ =].*//' | sort -u); do
    "$kiln" "$cmd" "$flag" >/dev/null 2>"$err"
    rc=$?
    [ $rc -ge 128 ] && no "kiln $cmd $flag (no value): killed by signal $((rc - 128))"
    [ $rc -eq 2 ] || no "kiln $cmd $flag (no value): exit $rc, not 2"
    grep -q -- "$flag" "$err" || no "kiln $cmd $flag (no value): message does not name it: $(head -c 200 "$err")"
  done
done

# Numeric options: command and flags (train's --profile takes =N).
check_num() { # cmd flag bad-value
  "$kiln" "$1" "$2" "$3" /nonexistent.onnx >/dev/null 2>"$err"
  rc=$?
  [ $rc -ge 128 ] && no "kiln $1 $2 '$3': killed by signal $((rc - 128))"
  [ $rc -eq 2 ] || no "kiln $1 $2 '$3': exit $rc, not 2"
  grep -q -- "option $2 needs" "$err" || no "kiln $1 $2 '$3': message: $(head -c 200 "$err")"
}
while read -r cmd flags; do
  for f in $flags; do
    for v in 12x '' -99999999999999999999999; do check_num "$cmd" "$f" "$v"; done
  done
done <<'LIST'
bench --iters --out-channels --peak --threads --top --warmup
compile --threads
conformance --atol --rtol --threads
dataset --count --loc-ratio --seed --size --synth-classes
demo --batch --epochs --loc-ratio --seed --size --threads --width
eval --batch --count --limit --threads
explain --alpha --batch --count --limit --threads --top
opt --batch --lambda --momentum --weight-decay
run --print --seed --threads
train --batch --count --data-seed --epochs --lambda --loc-ratio --lr --max-steps --momentum --seed --threads --weight-decay
tune --budget --candidates --margin --threads
LIST
# ranges: zero iterations, a negative thread count, a ratio above 1, a percentage above 100
check_num bench --iters 0
check_num run --threads -1
check_num train --loc-ratio 1.5
check_num explain --top 101
"$kiln" train --profile=abc /nonexistent.onnx >/dev/null 2>"$err"
[ $? -eq 2 ] && grep -q -- "option --profile needs" "$err" || no "kiln train --profile=abc"

[ $fail -eq 0 ] && echo "cli_args: ok"
exit $fail
