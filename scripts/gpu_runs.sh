#!/usr/bin/env bash
# The GPU runs of the project, ordered by value, for a lease of 15 minutes in
# two calls made back to back (the machine keeps runs/gpu only while warm):
#
#   bash scripts/gpu_runs.sh --call 1 --out DIR    ends within 9 minutes (520 s)
#   bash scripts/gpu_runs.sh --call 2 --out DIR    ends within 4 minutes (225 s)
#
# The stages, in their default order:
#   smoke        configs/tiny.py trained for an epoch, evaluated and exported (~30 s)
#   red          configs/default.py, 10 epochs, timed; evaluated on the test
#                split (200k lines) and on the real lines
#   export_red   red exported into checkpoints/red, packed as red.tar.gz
#   decode       bench/bench_decode.py: 200,000 lines decoded greedily, with a
#                profile of one batch
#   orange       configs/orange.py (red at batch 256), evaluated as red
#   best         configs/best.py: bench/bench_train.py measures the speed of
#                its training stream, then it trains for as many steps as fit
#                the time left in the call (at least 120 s, else skipped and
#                tried again in the next call), evaluated as red
#   export_best  best exported into checkpoints/best, packed as best.tar.gz
#
# Usage:
#   bash scripts/gpu_runs.sh [--call N | --budget SECONDS] [--out DIR] [--runs DIR]
#                            [--real FILE] [--fail STAGE]... [--plan] [STAGE ...]
#   bash scripts/gpu_runs.sh --rehearse [same options]
#
# Each call runs, in order, the stages not yet done until its deadline
# (--budget seconds after it starts; --call 1: 520, --call 2: 225). The last
# 40 s are kept for the summary and the packing: a training still running
# then is stopped with SIGTERM, saves a checkpoint and resumes at the next
# call; an evaluation still running is stopped and made again at the next
# call. A stage that is done (RUNS/STAGE.done) is skipped. A stage that fails
# is recorded with the last lines of its log (RUNS/STAGE.failed) and the call
# goes on with the next stage; a stage that needs it (export_red needs red's
# training) is skipped with that reason. A failed stage is not tried again by
# later calls unless named on the command line. STAGE arguments run those
# stages only, in the order given.
#
# --plan prints what each of the two calls is expected to run, and when,
# from the stages already done in --runs, then exits: nothing starts. Its
# times are estimates (see the plan's notes) until a lease has measured them.
#
# Every call ends with the summary (summary.md: each stage's status and
# seconds, the runs' figures, the failed stages' log tails) and writes into
# --out (default RUNS/out) at most 7 files, none meant to be over 16 MiB:
#   gpu_runs.log     everything the call printed
#   summary.md       the summary
#   results.tar.gz   each run's events, config, eval metrics and timings; the
#                    bench figures; each stage's log and status
#   profile.tar.gz   the jax profiler trace of one decoding batch (the call
#                    that made it)
#   red_orange.png   red's and orange's training and validation curves
#   red.tar.gz, best.tar.gz   the exported models (the call that exported them)
# The exit status is 1 when a stage failed in this call, else 0.
#
# Before the stages it installs the wheels carried in .whl/ for any of
# ml_collections and tensorboardX that python3 lacks, and prints the device
# and the versions of jax, flax, optax and orbax. --real names the real lines
# to evaluate on (default: .carry/real_dev.txt, an ignored copy made for the
# GPU machine); they are never trained on.
#
# --rehearse runs the same stages with tiny configs on the CPU, in
# runs/rehearse, exporting into runs/rehearse/checkpoints, with a budget of
# 1200 s unless --budget or --call says otherwise: the same commands, files
# and summary in a few minutes. --runs puts the runs elsewhere (default runs/gpu, or
# runs/rehearse). --fail STAGE (or GPU_RUNS_FAIL="STAGE ...") replaces each
# command of STAGE by one that fails, to see a failure handled.
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_STAGES=(smoke red export_red decode orange best export_best)
is_stage() { local name; for name in "${ALL_STAGES[@]}"; do [ "$1" = "$name" ] && return 0; done; return 1; }

REHEARSE=0
PLAN=0
CALL=""
BUDGET=""
OUT=""
REAL=""
RUNS_ARG=""
STAGES=()
GPU_RUNS_FAIL=${GPU_RUNS_FAIL:-}
FAIL=(${GPU_RUNS_FAIL//,/ })
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --plan) PLAN=1 ;;
    --call) CALL=${2:-}; shift ;;
    --call=*) CALL=${1#--call=} ;;
    --out) OUT=${2:-}; shift ;;
    --out=*) OUT=${1#--out=} ;;
    --budget) BUDGET=${2:-}; shift ;;
    --budget=*) BUDGET=${1#--budget=} ;;
    --runs) RUNS_ARG=${2:-}; shift ;;
    --runs=*) RUNS_ARG=${1#--runs=} ;;
    --real) REAL=${2:-}; shift ;;
    --real=*) REAL=${1#--real=} ;;
    --fail) FAIL+=("${2:-}"); shift ;;
    --fail=*) FAIL+=("${1#--fail=}") ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//;/^set -uo/d'; exit 0 ;;
    *) if is_stage "$1"; then STAGES+=("$1")
       else echo "error: unknown argument $1 (stages: ${ALL_STAGES[*]}; see --help)" >&2; exit 2; fi ;;
  esac
  shift
done
for stage in "${FAIL[@]}"; do
  is_stage "$stage" || { echo "error: --fail $stage is not a stage (${ALL_STAGES[*]})" >&2; exit 2; }
done
BUDGET_GIVEN=$BUDGET
case "$CALL" in
  "") ;;
  1) BUDGET=${BUDGET:-520} ;;
  2) BUDGET=${BUDGET:-225} ;;
  *) echo "error: --call takes 1 or 2, not '$CALL'" >&2; exit 2 ;;
esac
case "$BUDGET" in
  ""|*[!0-9]*) [ -n "$BUDGET" ] && { echo "error: --budget takes whole seconds, not '$BUDGET'" >&2; exit 2; } ;;
esac
NAMED=("${STAGES[@]}")
[ ${#STAGES[@]} -eq 0 ] && STAGES=("${ALL_STAGES[@]}")
PY=${PYTHON:-python3}
# The end of each call kept for stopping a training (its checkpoint), the
# summary, the plot and the packing.
END_MARGIN=40
SETUP_SECONDS=20  # expected: carried wheels, imports, device query

if [ $REHEARSE -eq 1 ]; then
  RUNS=${RUNS_ARG:-runs/rehearse}
  EXPORTS=$RUNS/checkpoints
  BUDGET=${BUDGET:-1200}
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
  # Tiny stand-ins for each config: the same commands, in seconds.
  TINY=(--config configs/tiny.py --config.data_dir=$RUNS/inputs --config.generated_size=3000)
  SMOKE=(--config configs/tiny.py --config.data_dir=$RUNS/inputs_smoke --config.max_epochs=1)
  RED=("${TINY[@]}" --config.max_epochs=2)
  ORANGE=("${TINY[@]}" --config.max_epochs=2 --config.batch_size=32)
  BEST=("${TINY[@]}" --config.train_data=generated)
  BENCH_BEST=("${TINY[@]}" --config.train_data=generated --steps 20 --examples 4000)
  BENCH_DECODE=(--config configs/tiny.py --num 2000 --batch_size 256)
  REAL_LIMIT=(--config.eval.limit=2000)
  SMOKE_LIMIT=(--config.eval.limit=200)
  # best's training: at least 5 s, at most 20 s on this CPU.
  BEST_MIN_SECONDS=5
  BEST_MAX_SECONDS=20
  BEST_AFTER_SECONDS=60
  # Limits of single commands: generous, the CPU is shared.
  CAP_SHORT=600; CAP_EVAL=600
  [ -z "$REAL" ] && [ -f ../shared/data/real_dev.txt ] && REAL=../shared/data/real_dev.txt
else
  RUNS=${RUNS_ARG:-runs/gpu}
  EXPORTS=checkpoints
  BUDGET=${BUDGET:-520}
  SMOKE=(--config configs/tiny.py --config.data_dir=$RUNS/inputs_tiny --config.max_epochs=1)
  RED=(--config configs/default.py)
  ORANGE=(--config configs/orange.py)
  BEST=(--config configs/best.py)
  BENCH_BEST=(--config configs/best.py --steps 300)
  BENCH_DECODE=(--config configs/default.py --num 200000 --batch_size 4096)
  REAL_LIMIT=()
  SMOKE_LIMIT=(--config.eval.limit=200)
  BEST_MIN_SECONDS=120
  BEST_MAX_SECONDS=100000
  # Kept after the bench for best's start-up (30 s), its evaluations (55 s)
  # and export_best (15 s).
  BEST_AFTER_SECONDS=100
  # A command that runs past these (training apart, which the deadline
  # stops) has hung or met a far slower machine than planned: it fails.
  CAP_SHORT=90; CAP_EVAL=150
fi
[ -z "$REAL" ] && [ -f .carry/real_dev.txt ] && REAL=.carry/real_dev.txt
OUT=${OUT:-$RUNS/out}

# --- The plan -------------------------------------------------------------------------
# Expected seconds of each stage on the machine (see the notes printed with
# the plan): stage|kind|start-up|training|after training|what it runs
# kind: once (cannot be split), train (training stopped at a call's end and
# resumed in the next, paying start-up again), best (start-up includes the
# bench; trains for what is left), export.
if [ $REHEARSE -eq 1 ]; then
  PLAN_SPECS="smoke|once|60|0|0|configs/tiny.py, 1 epoch: trained, evaluated on 200 lines, exported
red|train|40|15|50|configs/tiny.py, 2 epochs, for configs/default.py; evaluated on its test split and 2,000 real lines
export_red|export|20|0|0|into $EXPORTS/red, packed as red.tar.gz
decode|once|30|0|0|bench_decode.py: 2,000 generated lines, greedy, batch 256, one profiled batch
orange|train|40|20|50|configs/tiny.py at batch 32, for configs/orange.py; evaluated as red
best|best|70|20|50|bench_train.py of its generated stream, then configs/tiny.py on generated lines for 5-20 s; evaluated as red
export_best|export|20|0|0|into $EXPORTS/best, packed as best.tar.gz"
  PLAN_NOTES="Rehearsal on this CPU: tiny configs, seconds guessed for a shared 2-core machine."
else
  PLAN_SPECS="smoke|once|30|0|0|configs/tiny.py, 1 epoch: trained, evaluated on 200 lines, exported
red|train|30|180|55|configs/default.py, 10 epochs (~14,800 steps of 512); evaluated on the test split (200k lines) and the real lines
export_red|export|15|0|0|into checkpoints/red, packed as red.tar.gz
decode|once|40|0|0|bench_decode.py: 200,000 lines, greedy, batch 4096, one profiled batch
orange|train|30|360|55|configs/orange.py, 10 epochs (~29,700 steps of 256); evaluated as red
best|best|65|0|55|bench_train.py of configs/best.py's generated stream (300 steps), then configs/best.py for the steps that fit (at least 120 s); evaluated as red
export_best|export|15|0|0|into checkpoints/best, packed as best.tar.gz"
  PLAN_NOTES="Every time here is an estimate until a lease measures it: no GPU has run this project.
- red's training: 180 s, the target for its 10 epochs (the goal is 90 s).
- orange: twice red's steps (batch 256), each assumed to cost what red's does,
  since a step of this 4M-parameter model is bound by launches, not arithmetic.
- start-up and compilation: 30 s per training process, 15-20 s per evaluation,
  export or bench process (\"tens of seconds\"); set-up (wheels, versions): 20 s.
- evaluations: 35 s on the 200k test split (decoding within the 10 s target),
  20 s on the real lines.
- best: 35 s of bench (compile and 300 steps), 30 s of start-up, then trains
  for the time left before the evaluations it still needs, at the speed the
  bench measured (90% of it); under 120 s it is skipped until a later call."
fi

print_plan() {
  local done_list="" failed_list="" stage
  for stage in "${ALL_STAGES[@]}"; do
    [ -e "$RUNS/$stage.done" ] && done_list+="$stage "
    [ -e "$RUNS/$stage.failed" ] && failed_list+="$stage "
  done
  local trained_list=""
  for stage in red orange best; do [ -e "$RUNS/$stage/trained" ] && trained_list+="$stage "; done
  # The calls planned: this one and, for --call 1 or none, the second.
  local budgets
  if [ $REHEARSE -eq 1 ] || [ -n "$BUDGET_GIVEN" ] || [ "$CALL" = 2 ]; then
    budgets=$BUDGET
  else
    budgets="$BUDGET 225"
  fi
  PLAN_BUDGETS=$budgets PLAN_MARGIN=$END_MARGIN PLAN_SETUP=$SETUP_SECONDS \
  PLAN_BEST_MIN=$BEST_MIN_SECONDS PLAN_BEST_MAX=$BEST_MAX_SECONDS PLAN_DONE=$done_list \
  PLAN_FAILED=$failed_list PLAN_TRAINED=$trained_list PLAN_NAMED="${NAMED[*]}" \
  PLAN_ORDER="${STAGES[*]}" PLAN_RUNS=$RUNS PLAN_SPECS=$PLAN_SPECS PLAN_FIRST=${CALL:-1} \
  $PY - <<'EOF'
import os

env = os.environ
margin, setup = int(env["PLAN_MARGIN"]), int(env["PLAN_SETUP"])
best_min, best_max = int(env["PLAN_BEST_MIN"]), int(env["PLAN_BEST_MAX"])
done, failed = set(env["PLAN_DONE"].split()), set(env["PLAN_FAILED"].split())
trained, named, order = set(env["PLAN_TRAINED"].split()), set(env["PLAN_NAMED"].split()), env["PLAN_ORDER"].split()
specs = {}
for line in env["PLAN_SPECS"].splitlines():
  name, kind, start, train, after, what = line.split("|", 5)
  specs[name] = dict(kind=kind, start=int(start), train=int(train), after=int(after), what=what)
needs = {"export_red": "red", "export_best": "best"}
export_seconds = specs["export_best"]["start"]


def row(start, end, stage, text):
  print(f"  {start:>5} {end:>5}  {stage:<12} {text}")


calls = [int(budget) for budget in env["PLAN_BUDGETS"].split()]
print(f"The plan of {len(calls)} call{'s' if len(calls) > 1 else ''} on {env['PLAN_RUNS']}, "
      f"in this order: {' '.join(order)}")
pending = []
for stage in order:
  if stage in done:
    print(f"  {stage}: done before, skipped")
  elif stage in failed and stage not in named:
    print(f"  {stage}: failed before, not tried again (name it to retry)")
  else:
    pending.append(stage)
training_left = {stage: specs[stage]["train"] for stage in pending}
resumed = set()
for number, budget in enumerate(calls, int(env["PLAN_FIRST"])):
  end = budget - margin
  print(f"call {number}: ends within {budget} s; seconds from its start (expected):")
  row(0, setup, "set-up", "carried wheels, versions, device")
  t = setup
  for stage in list(pending):
    spec, need = specs[stage], needs.get(stage)
    if need and need not in trained:
      row(t, t, stage, f"waits for {need}'s training" if need in pending
          else f"skipped: {need} is not trained")
      continue
    if end - t < 15:
      break
    if spec["kind"] == "best":
      seconds = min(end - t - spec["start"] - spec["after"] - export_seconds, best_max)
      if seconds < best_min:
        row(t, t, stage, f"skipped in this call: {max(seconds, 0)} s of training would be left, "
            f"under its {best_min} s")
        continue
      stop = t + spec["start"] + seconds + spec["after"]
      row(t, stop, stage, f"{spec['what']}: ~{seconds} s of training")
    else:
      stop = t + spec["start"] + training_left[stage] + spec["after"]
      if stop > end:
        if spec["kind"] == "train" and end - t > spec["start"]:
          trained_now = end - t - spec["start"]
          training_left[stage] -= trained_now
          resumed.add(stage)
          row(t, end, stage, f"{spec['what']}: trains ~{trained_now} s of ~{spec['train']}, "
              "then SIGTERM (checkpoint saved); the next call resumes it")
        else:
          row(t, end, stage, f"{spec['what']}: cut at the deadline; the next call makes it again")
        t = end
        break
      row(t, stop, stage, spec["what"] + (", resumed (~%d s of training)" % training_left[stage]
                                          if stage in resumed else ""))
    t = stop
    pending.remove(stage)
    trained.add(stage)
  row(end, budget, "summary", "summary.md and the files to fetch")
print("not reached in these calls: " + " ".join(pending) if pending
      else "every stage is expected to be done in these calls")
EOF
  echo
  echo "$PLAN_NOTES"
}

if [ $PLAN -eq 1 ]; then
  print_plan
  exit $?
fi

# --- The call --------------------------------------------------------------------------
START=$(date +%s)
DEADLINE=$((START + BUDGET))
WORK_END=$((DEADLINE - END_MARGIN))
mkdir -p "$RUNS/logs" "$OUT"
exec > >(tee -a "$OUT/gpu_runs.log") 2>&1
# Compiled programs are kept between the calls of one lease (a resumed run
# recompiles nothing it compiled before).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$RUNS/jax_cache}
export PYTHONUNBUFFERED=1
CALL_NO=$(( $(cat "$RUNS/calls_made" 2>/dev/null || echo 0) + 1 ))
echo "$CALL_NO" > "$RUNS/calls_made"
rm -f "$RUNS"/*.pack_now
FAILED_NOW=()

remaining() { echo $((WORK_END - $(date +%s))); }
say() { echo "[gpu_runs $(date -u +%H:%M:%S), call $CALL_NO, $(remaining) s of work left] $*"; }
record() {  # STAGE STATUS SECONDS NOTE: one line of the stage ledger
  printf '%s\t%s\t%s\t%s\t%s\n' "$CALL_NO" "$1" "$2" "$3" "$4" >> "$RUNS/stages.tsv"
}

finish() {
  trap - EXIT
  say "summary"
  $PY scripts/summarize_runs.py "$RUNS" --stages "${STAGES[*]}" --call "$CALL_NO" \
      --json "$RUNS/summary.json" > "$OUT/summary.md" \
    || { echo "warning: scripts/summarize_runs.py failed; the stage ledger instead" >&2
         { echo "| call | stage | status | seconds | note |"; echo "| --- | --- | --- | --- | --- |"
           sed 's/\t/ | /g;s/^/| /;s/$/ |/' "$RUNS/stages.tsv" 2>/dev/null; } > "$OUT/summary.md"; }
  pack
  local stage left=()
  for stage in "${ALL_STAGES[@]}"; do [ -e "$RUNS/$stage.done" ] || left+=("$stage"); done
  echo
  cat "$OUT/summary.md"
  echo
  if [ ${#left[@]} -eq 0 ]; then
    echo "all stages done"
  else
    echo "stages not done: ${left[*]}"
  fi
  echo "call $CALL_NO ended after $(($(date +%s) - START)) s of its $BUDGET s"
  [ ${#FAILED_NOW[@]} -eq 0 ] && exit 0
  echo "failed in this call: ${FAILED_NOW[*]}"
  exit 1
}
trap finish EXIT

pack() {
  # At most 7 files, each meant to be under 16 MiB.
  (cd "$RUNS" && find smoke red orange best -maxdepth 3 \( -name 'events.out.tfevents.*' \
      -o -name metrics.json -o -name config.json -o -name trained \) 2>/dev/null;
   ls ./*.calls ./*.max_steps ./*.done ./*.failed stages.tsv calls_made environment.txt \
      summary.json bench/*.json logs/*.log 2>/dev/null) > "$RUNS/pack.list"
  [ -s "$RUNS/pack.list" ] && tar -czf "$OUT/results.tar.gz" -C "$RUNS" -T "$RUNS/pack.list"
  if [ -e "$RUNS/decode.pack_now" ] && [ -d "$RUNS/bench/profile_decode" ]; then
    tar -czf "$OUT/profile.tar.gz" -C "$RUNS/bench" profile_decode
  fi
  if [ -e "$RUNS/red/trained" ] && ls "$RUNS"/orange/events.out.tfevents.* >/dev/null 2>&1; then
    $PY scripts/plot_runs.py "$RUNS/red" "$RUNS/orange" --out "$OUT/red_orange.png" \
        --title "red (batch 512) and orange (batch 256)" >/dev/null 2>&1 \
        || echo "warning: no plot of red and orange (matplotlib?)"
  fi
  local run file
  for run in red best; do
    if [ -e "$RUNS/$run.pack_now" ] && [ -f "$EXPORTS/$run/model.json" ]; then
      tar -czf "$OUT/$run.tar.gz" -C "$EXPORTS" "$run"
    fi
  done
  for file in "$OUT"/*; do
    [ -f "$file" ] || continue
    if [ "$(stat -c %s "$file")" -gt $((16 * 1024 * 1024)) ]; then
      echo "warning: $file is over 16 MiB and may not come back"
    fi
  done
}

# --- Set-up: carried wheels, device, versions ------------------------------------------
setup() {
  local missing site
  site=$(cd "$RUNS" && pwd)/site
  # Wheels an earlier call of this lease installed.
  [ -d "$site" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(name for name in ("ml_collections", "tensorboardX")
               if importlib.util.find_spec(name) is None))
EOF
) || return 1
  if [ -n "$missing" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
      say "installing carried wheels for: $missing"
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target "$site" .whl/*.whl || { echo "error: installing .whl/*.whl failed"; return 1; }
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "error: python3 lacks $missing and no wheels are carried in .whl/"; return 1
    fi
  fi
  $PY - > "$RUNS/environment.txt" <<'EOF' || { cat "$RUNS/environment.txt"; echo "error: the Python environment cannot run polyflax"; return 1; }
import platform
import jax, flax, optax, orbax.checkpoint, ml_collections, tensorboardX
print(f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
      f"optax {optax.__version__}, orbax-checkpoint {orbax.checkpoint.__version__}; "
      f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})")
EOF
  cat "$RUNS/environment.txt"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  return 0
}

# --- Running the commands of a stage ------------------------------------------------------
# part RUN PART CAP COMMAND...: runs COMMAND until CAP seconds have passed or
# the call's work must end, whichever is first; its output goes to the
# stage's log (progress bars left out) and to the console; appends
# "PART<TAB>seconds<TAB>status" to RUNS/RUN.calls. Returns 0 (done), 1
# (failed: its exit status, or running past CAP) or 3 (stopped or not
# started for the call's deadline: the next call makes it again; a training
# stopped so has saved a checkpoint).
STAGE=""
STAGE_LOG=/dev/null
part() {
  local run=$1 name=$2 cap=$3; shift 3
  local left limit why=cap status begin milliseconds
  left=$(remaining)
  limit=$cap
  if [ "$left" -lt "$cap" ]; then limit=$left; why=deadline; fi
  if [ "$limit" -lt 10 ]; then
    echo "$name: not started, $left s of work left in this call" | tee -a "$STAGE_LOG"
    return 3
  fi
  local command=("$@")
  if [[ " ${FAIL[*]} " == *" $STAGE "* ]]; then
    command=("$PY" -c "import sys; print('$name of stage $STAGE: about to fail'); sys.exit('error: a failure injected into stage $STAGE (--fail)')")
  fi
  echo "\$ ${command[*]}" >> "$STAGE_LOG"
  begin=$(date +%s%N)
  timeout --signal=TERM --kill-after=15 "$limit" "${command[@]}" 2>&1 \
      | tr '\r' '\n' | grep --line-buffered -v -E '^(train|decode|training lines|generate):|^\s*$' \
      | tee -a "$STAGE_LOG" | grep --line-buffered -v -E '^(Input|Target|Predicted|score):'
  status=${PIPESTATUS[0]}
  milliseconds=$((($(date +%s%N) - begin) / 1000000))
  printf '%s\t%d.%03d\t%d\n' "$name" $((milliseconds / 1000)) $((milliseconds % 1000)) \
      "$status" >> "$RUNS/$run.calls"
  case $status in
    0) return 0 ;;
    124|137)
      if [ $why = deadline ]; then
        echo "$name: stopped at the end of the call's work time, after $((milliseconds / 1000)) s" \
            | tee -a "$STAGE_LOG"
        return 3
      fi
      echo "failed: $name ran past its limit of $cap s" | tee -a "$STAGE_LOG"
      return 1 ;;
    *) echo "failed: $name exited with status $status" | tee -a "$STAGE_LOG"; return 1 ;;
  esac
}

# evaluate RUN FOLDER CAP CONFIG_ARGS... [--config.eval.* ...]: once (metrics.json marks it).
evaluate() {
  local run=$1 folder=$2 cap=$3; shift 3
  [ -f "$RUNS/$run/$folder/metrics.json" ] && return 0
  part "$run" "$folder" "$cap" $PY main.py "$@" --workdir "$RUNS/$run" --mode=evaluate \
      --config.eval.output_dir="$RUNS/$run/$folder" --config.eval.examples_to_print=2
}

# train_and_evaluate RUN CONFIG_ARGS...: trains (resuming) until done or the
# call's deadline, then evaluates on the test split and the real lines.
train_and_evaluate() {
  local run=$1; shift
  if [ ! -e "$RUNS/$run/trained" ]; then
    part "$run" train 100000 $PY main.py "$@" --workdir "$RUNS/$run" || return $?
    touch "$RUNS/$run/trained"
  fi
  evaluate "$run" eval "$CAP_EVAL" "$@" || return $?
  if [ -n "$REAL" ]; then
    evaluate "$run" eval_real "$CAP_EVAL" "$@" --config.eval.test_file="$REAL" "${REAL_LIMIT[@]}" \
        || return $?
  fi
}

# --- The stages ---------------------------------------------------------------------------
stage_smoke() {
  part smoke train "$CAP_SHORT" $PY main.py "${SMOKE[@]}" --workdir "$RUNS/smoke" || return $?
  evaluate smoke eval "$CAP_SHORT" "${SMOKE[@]}" "${SMOKE_LIMIT[@]}" || return $?
  part smoke export "$CAP_SHORT" $PY main.py "${SMOKE[@]}" --workdir "$RUNS/smoke" --mode=export \
      --config.export.dir="$RUNS/smoke_export"
}

stage_red() { train_and_evaluate red "${RED[@]}"; }
stage_orange() { train_and_evaluate orange "${ORANGE[@]}"; }

stage_decode() {
  mkdir -p "$RUNS/bench"
  rm -rf "$RUNS/bench/profile_decode"
  part decode bench "$CAP_EVAL" $PY bench/bench_decode.py "${BENCH_DECODE[@]}" --methods greedy \
      --json "$RUNS/bench/decode.json" --profile "$RUNS/bench/profile_decode" || return $?
  touch "$RUNS/decode.pack_now"
}

stage_best() {
  mkdir -p "$RUNS/bench"
  if [ ! -f "$RUNS/best.max_steps" ]; then
    # The speed of best's own training stream, measured by the bench (whose
    # configs/best.py iterator is the generated stream best trains on).
    if [ ! -f "$RUNS/bench/train_best.json" ]; then
      part best bench "$CAP_SHORT" $PY bench/bench_train.py "${BENCH_BEST[@]}" \
          --json "$RUNS/bench/train_best.json" || return $?
      if ! sed -n '/^\$ .*bench_train/,$p' "$STAGE_LOG" | grep -v -E '^(config:|\$ )' | grep -qi 'generat'; then
        say "warning: bench_train.py did not say that it timed the generated stream of" \
            "configs/best.py: best's max_steps rests on the speed it printed" | tee -a "$STAGE_LOG"
      fi
    fi
    # The steps that fit the time left before best's start-up and evaluations.
    local seconds
    seconds=$(( $(remaining) - BEST_AFTER_SECONDS ))
    [ "$seconds" -gt "$BEST_MAX_SECONDS" ] && seconds=$BEST_MAX_SECONDS
    if [ "$seconds" -lt "$BEST_MIN_SECONDS" ]; then
      echo "best: $seconds s of training would be left, under its $BEST_MIN_SECONDS s: tried again by the next call" \
          | tee -a "$STAGE_LOG"
      return 4
    fi
    $PY - "$RUNS/bench/train_best.json" "$seconds" > "$RUNS/best.max_steps.new" 2>> "$STAGE_LOG" <<'EOF' || {
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
  figures = json.load(f)
steps_per_second = figures.get("steps_per_second")
if not steps_per_second:
  sys.exit(f"error: no steps_per_second in {sys.argv[1]}")
# 90% of the measured speed: validations and checkpoints take the rest.
steps = int(steps_per_second * float(sys.argv[2]) * 0.9)
print(max(steps // 100 * 100, 10))
EOF
      echo "failed: cannot size best's training from $RUNS/bench/train_best.json" | tee -a "$STAGE_LOG"
      return 1
    }
    mv "$RUNS/best.max_steps.new" "$RUNS/best.max_steps"
    echo "best: max_steps=$(cat "$RUNS/best.max_steps") for $seconds s of training at the measured speed" \
        | tee -a "$STAGE_LOG"
  fi
  train_and_evaluate best "${BEST[@]}" --config.max_steps="$(cat "$RUNS/best.max_steps")"
}

export_run() {  # RUN CONFIG_ARGS...
  local run=$1; shift
  part "$run" export "$CAP_SHORT" $PY main.py "$@" --workdir "$RUNS/$run" --mode=export \
      --config.export.dir="$EXPORTS/$run" || return $?
  touch "$RUNS/$run.pack_now"
}
stage_export_red() { export_run red "${RED[@]}"; }
stage_export_best() { export_run best "${BEST[@]}" --config.max_steps="$(cat "$RUNS/best.max_steps")"; }

# The run a stage needs trained first.
needs() { case $1 in export_red) echo red ;; export_best) echo best ;; *) echo "" ;; esac; }

# --- The call -------------------------------------------------------------------------------
say "runs in $RUNS, outputs in $OUT; deadline in $BUDGET s; stages: ${STAGES[*]}; real lines: ${REAL:-none}"
if [ -n "$REAL" ] && [ ! -f "$REAL" ]; then
  say "warning: no real lines at $REAL: their evaluations are skipped"
  REAL=""
fi
if [ "$CALL" = 2 ] && [ "$CALL_NO" = 1 ]; then
  say "warning: --call 2 finds no earlier call in $RUNS (a fresh machine?): starting from the first stage"
fi
if ! setup; then
  record setup failed 0 "the Python environment cannot run polyflax (see gpu_runs.log)"
  FAILED_NOW+=(setup)
  exit 1  # finish() prints the summary
fi

for stage in "${STAGES[@]}"; do
  if [ -e "$RUNS/$stage.done" ]; then say "$stage: done before, skipped"; continue; fi
  if [ -e "$RUNS/$stage.failed" ]; then
    if [[ " ${NAMED[*]} " != *" $stage "* ]]; then
      say "$stage: failed in an earlier call, not tried again (name it to retry)"
      continue
    fi
    rm -f "$RUNS/$stage.failed"
  fi
  need=$(needs "$stage")
  if [ -n "$need" ] && [ ! -e "$RUNS/$need/trained" ]; then
    if [ -e "$RUNS/$need.failed" ]; then
      say "$stage: skipped, $need failed before its training finished"
      record "$stage" skipped 0 "$need failed before its training finished"
    else
      say "$stage: waits for $need's training"
      record "$stage" waiting 0 "$need is not trained yet"
    fi
    continue
  fi
  if [ "$(remaining)" -lt 15 ]; then
    say "$stage: not reached, no time left in this call"
    record "$stage" "not reached" 0 "no time left in call $CALL_NO"
    continue
  fi
  say "=== stage $stage"
  STAGE=$stage
  STAGE_LOG=$RUNS/logs/$stage.log
  echo "=== call $CALL_NO, $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$STAGE_LOG"
  first_line=$(wc -l < "$STAGE_LOG")
  begin=$(date +%s)
  "stage_$stage"
  status=$?
  seconds=$(($(date +%s) - begin))
  case $status in
    0) touch "$RUNS/$stage.done"; record "$stage" done "$seconds" ""; say "$stage: done in $seconds s" ;;
    3) record "$stage" unfinished "$seconds" "stopped at the end of call $CALL_NO; the next call goes on"
       say "$stage: unfinished, the next call goes on" ;;
    4) record "$stage" skipped "$seconds" "$(tail -n 1 "$STAGE_LOG")"; say "$stage: skipped in this call" ;;
    *) # The failed.. line and the program's last error line, then the log's last lines.
       attempt=$(tail -n +"$((first_line + 1))" "$STAGE_LOG")
       reason=$(grep -E '^failed: ' <<< "$attempt" | tail -n 1)
       detail=$(grep -v -E '^failed: ' <<< "$attempt" | grep -E '^error: |[A-Za-z]+(Error|Exception): ' \
                | tail -n 1)
       reason=${reason:-failed: status $status}
       { echo "${reason#failed: }${detail:+; $detail}"; echo "last lines of logs/$stage.log:"
         grep -v '^\$ ' <<< "$attempt" | tail -n 15; } > "$RUNS/$stage.failed"
       record "$stage" failed "$seconds" "$(head -n 1 "$RUNS/$stage.failed")"
       FAILED_NOW+=("$stage")
       say "$stage: FAILED after $seconds s; the call goes on" ;;
  esac
  STAGE=""
  STAGE_LOG=/dev/null
done
# finish() (the EXIT trap) prints the summary and packs the files.
