#!/usr/bin/env bash
# crash_safety.sh KILN MAKE_DATASET WORKDIR — kills `kiln train` with SIGKILL at many
# points (including while a checkpoint is being written) and resumes each time:
#   - the checkpoint file, whenever present, is complete: `kiln info` loads it and its
#     step count never goes backwards;
#   - a half-written temporary file is never taken for the checkpoint;
#   - the run that finally completes ends with a checkpoint byte-identical to an
#     uninterrupted run's with the same seed and thread count.
# Also interrupts with SIGINT (a checkpoint in the middle of an epoch) and resumes.
set -uo pipefail
kiln=$1 mkdata=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
cd "$work" || exit 1
fail() { echo "crash_safety: FAIL: $*" >&2; exit 1; }
log() { echo "crash_safety: $*"; }

"$kiln" model --width 4 --image-size 32 --classes 3 --cnet-hidden 8 --batch 4 -o m.onnx >/dev/null ||
  fail "kiln model"
"$mkdata" data 24 32 3 || fail "make_tensor_dataset"
epochs=${KILN_CRASH_EPOCHS:-8}
train=(--data data --epochs "$epochs" --seed 7 --threads 1 --lr 0.01)

# Kernels compiled once, so every later start is quick and kill times are comparable.
export KILN_CACHE_DIR=$work/cache
"$kiln" train m.onnx --data data --epochs 1 --threads 1 -o warm.onnx >warm.log 2>&1 ||
  { cat warm.log; fail "warm-up run"; }

# The uninterrupted reference run.
t0=$(date +%s%N)
"$kiln" train m.onnx "${train[@]}" -o ref.onnx >ref.log 2>&1 || { cat ref.log; fail "reference run"; }
t1=$(date +%s%N)
ref_ms=$(((t1 - t0) / 1000000))
log "uninterrupted run: $epochs epochs in ${ref_ms} ms"
[[ -s ref.onnx ]] || fail "no reference checkpoint"

# The checkpoint's kiln.step metadata (a protobuf key/value pair of short strings).
step_of() { tr -c '[:print:]' '\n' <"$1" | grep -A2 -x 'kiln.step' | sed -n 's/^\([0-9][0-9]*\).*/\1/p' | head -1; }

# Checks the checkpoint after a kill: it loads, and its step (kept in $last) never
# goes backwards.
check_ckpt() {
  [[ -e ck.onnx ]] || return 0
  "$kiln" info ck.onnx >info.log 2>&1 || { cat info.log; fail "checkpoint after a kill does not load"; }
  local s
  s=$(step_of ck.onnx)
  [[ -n $s ]] || fail "checkpoint has no kiln.step"
  ((s >= last)) || fail "checkpoint went back from step $last to $s"
  last=$s
}

# One attempt: start (fresh or resumed), kill -9 after $1 (a sleep argument) or, with
# $1 = "write", as soon as a temporary checkpoint file appears.  Returns 0 when the
# run finished before the kill.
attempt() {
  local when=$1 args
  if [[ -e ck.onnx ]]; then args=(--resume ck.onnx); else args=(m.onnx -o ck.onnx); fi
  "$kiln" train "${args[@]}" "${train[@]}" >>runs.log 2>&1 &
  local pid=$!
  if [[ $when == write* ]]; then
    # busy-wait for the n-th appearance of the temporary file (ck.onnx.tmp.<pid>)
    # and kill at once: the kill lands during the write or before its rename
    local want=${when#write} seen=0 present=0
    while kill -0 "$pid" 2>/dev/null; do
      if compgen -G "ck.onnx.tmp.$pid" >/dev/null; then
        if ((!present)); then
          present=1 seen=$((seen + 1))
          if ((seen >= want)); then
            kill -9 "$pid" 2>/dev/null
            break
          fi
        fi
      else
        present=0
      fi
    done
  else
    sleep "$when"
    kill -9 "$pid" 2>/dev/null
  fi
  { wait "$pid"; } 2>/dev/null # (no "Killed" notice)
  local rc=$?
  if ((rc == 0)); then return 0; fi
  if ((rc != 137)); then tail -5 runs.log; fail "kiln train exited with $rc (not killed)"; fi
  return 1
}

# Rounds of kill-and-resume from scratch until at least $min_kills kills have landed.
# In a round, kill points alternate between a fraction of the reference run's time
# and the n-th checkpoint write of the run, until a run survives to the end; its final
# checkpoint must equal the reference.
min_kills=${KILN_CRASH_KILLS:-16}
kills=0 write_kills=0 partial=0 rounds=0 i=0
fractions=(0.05 0.5 0.13 0.9 0.21 0.35 0.62 0.08 0.77 0.44 0.29 0.55 0.7 0.16 0.95 0.4 0.85)
while ((kills < min_kills)); do
  rm -f ck.onnx
  last=0 done=0
  for ((k = 0; k < 40 && !done; k++, i++)); do
    if ((i % 2 == 1)); then
      when=write$((1 + (i / 2) % 3))
    else
      f=${fractions[$(((i / 2) % ${#fractions[@]}))]}
      when=$(awk -v ms="$ref_ms" -v f="$f" 'BEGIN { printf "%.3f", ms * f / 1000 }')
    fi
    if attempt "$when"; then
      # the run finished before this kill point: the next round starts from the next one
      # (kill points are fractions of the reference run's time, and a later run may be much
      # faster than the reference was; retrying the same point could then loop for ever)
      done=1
      i=$((i + 1))
      break
    fi
    kills=$((kills + 1))
    shopt -s nullglob
    tmps=(ck.onnx.tmp.*)
    shopt -u nullglob
    if ((${#tmps[@]})); then
      write_kills=$((write_kills + 1))
      # the interrupted write's temporary file: left behind, never read or renamed
      for t in "${tmps[@]}"; do
        "$kiln" info "$t" >/dev/null 2>&1 || partial=$((partial + 1))
        rm -f "$t"
      done
    fi
    check_ckpt
  done
  ((done)) || attempt 100000 || fail "final resume did not finish"
  cmp ck.onnx ref.onnx || fail "round $rounds: the resumed run's final checkpoint differs from the uninterrupted run's"
  rounds=$((rounds + 1))
done
log "$kills SIGKILLs in $rounds rounds, $write_kills during a checkpoint write ($partial left a partial" \
  "temporary file); every checkpoint loaded; each round ended byte-identical to the uninterrupted run"
((write_kills > 0)) || log "warning: no kill landed during a checkpoint write"
grep -q "resuming from ck.onnx" runs.log || fail "no run resumed from the checkpoint"

# SIGINT: a graceful stop writes a checkpoint, in the middle of an epoch when it lands
# there; resuming it ends the same.  Sent once the first checkpoint exists (the handler
# is installed by then).
rm -f ck.onnx
"$kiln" train m.onnx "${train[@]}" -o ck.onnx >int.log 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && [[ ! -e ck.onnx ]]; do sleep 0.01; done
sleep "$(awk -v ms="$ref_ms" -v e="$epochs" 'BEGIN { printf "%.3f", ms / e / 2500 }')"
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
if ((rc == 130)); then
  "$kiln" info ck.onnx >/dev/null 2>&1 || fail "checkpoint written on SIGINT does not load"
  grep -q "stopped after" int.log || fail "no stop message after SIGINT"
  "$kiln" train --resume ck.onnx "${train[@]}" >>int.log 2>&1 || { tail -5 int.log; fail "resume after SIGINT"; }
  cmp ck.onnx ref.onnx || fail "run stopped by SIGINT and resumed differs from the uninterrupted run"
  log "SIGINT at step $(grep -o 'at step [0-9]*' int.log | head -1 | grep -o '[0-9]*'): resumed to the same weights"
elif ((rc == 0)); then
  log "SIGINT came after the run finished (machine too fast); skipped"
else
  tail -5 int.log
  fail "kiln train exited with $rc on SIGINT"
fi
# stray temporary files from the interrupted runs are not checkpoints of any run
log "ok"
