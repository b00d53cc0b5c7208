#!/usr/bin/env bash
# The GPU runs of the project, in stages that each fit one command of at most
# 10 minutes on a lent GPU machine, resumable across commands:
#
#   smoke   the tiny config trained, evaluated, predicted and exported (~1 min)
#   bench   training and decoding benchmarks of the default config (and of
#           configs/best.py's training), with profiles of one step of each
#   red     configs/default.py, 10 epochs, timed; evaluated on the 200k test
#           split and on the real lines
#   best    configs/best.py, timed and evaluated the same way, greedy and beam
#   orange  configs/orange.py, evaluated
#   export  red and best exported into checkpoints/, packed to be fetched
#
# Usage:
#   bash scripts/gpu_runs.sh [--out DIR] [--budget SECONDS] [--real FILE] [--runs DIR] [STAGE ...]
#   bash scripts/gpu_runs.sh --rehearse [--out DIR] [--runs DIR] [STAGE ...]
#
# With no STAGE, every stage not yet finished runs, in the order above, until
# --budget seconds (default 540) are spent: a training cut short by the budget
# is stopped with SIGTERM, saves a checkpoint and continues on the next call;
# a finished stage (runs/gpu/STAGE.done) is skipped. Call the same command
# again until it prints "all stages done". Every call ends with the summary
# table, and writes into --out (default runs/gpu/out) at most 8 files, none
# over 15 MiB:
#   gpu_runs.log     everything the call printed
#   summary.md       the table (training time, compile time, examples/s,
#                    exact match on the test split and the real lines, decode time)
#   results.tar.gz   each run's events, config, eval metrics, calls; bench JSON
#   profile.tar.gz   jax profiler traces of one training and one decoding step
#   red_orange.png   red's and orange's training and validation curves
#   red.tar.gz, best.tar.gz   the exported models (after the export stage)
#
# Before the stages it installs the wheels carried in .whl/ for any of
# ml_collections and tensorboardX that python3 lacks, and prints the device
# and the versions of jax, flax, optax and orbax. --real names the real lines
# to evaluate on (default: .carry/real_dev.txt, an ignored copy made for the
# GPU machine); they are never trained on.
#
# --rehearse runs every stage with tiny configs on the CPU, in runs/rehearse,
# exporting into runs/rehearse/checkpoints: the same commands, files and
# table in a few minutes. --runs puts the runs elsewhere (default runs/gpu,
# or runs/rehearse).
set -uo pipefail
cd "$(dirname "$0")/.."

REHEARSE=0
BUDGET=540
OUT=""
REAL=""
RUNS_ARG=""
STAGES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --out) OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    --budget) BUDGET=$2; shift ;;
    --budget=*) BUDGET=${1#--budget=} ;;
    --runs) RUNS_ARG=$2; shift ;;
    --runs=*) RUNS_ARG=${1#--runs=} ;;
    --real) REAL=$2; shift ;;
    --real=*) REAL=${1#--real=} ;;
    smoke|bench|red|best|orange|export) STAGES+=("$1") ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//;/^set -uo/d'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
ALL_STAGES=(smoke bench red best orange export)
[ ${#STAGES[@]} -eq 0 ] && STAGES=("${ALL_STAGES[@]}")
PY=${PYTHON:-python3}
START=$(date +%s)
DEADLINE=$((START + BUDGET))

if [ $REHEARSE -eq 1 ]; then
  RUNS=${RUNS_ARG:-runs/rehearse}
  EXPORTS=$RUNS/checkpoints
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
  # Tiny stand-ins for each config: the same commands, in seconds.
  TINY=(--config configs/tiny.py --config.data_dir=$RUNS/inputs --config.generated_size=3000)
  SMOKE=("${TINY[@]}" --config.max_epochs=1)
  RED=("${TINY[@]}" --config.max_epochs=2)
  ORANGE=("${TINY[@]}" --config.max_epochs=2 --config.batch_size=32)
  BEST=("${TINY[@]}" --config.max_epochs=2 --config.train_data=generated)
  BENCH_TRAIN=(--config configs/tiny.py --steps 20 --examples 4000)
  BENCH_BEST=(--config configs/tiny.py --config.train_data=generated --steps 20 --examples 4000)
  BENCH_DECODE=(--config configs/tiny.py --num 2000 --batch_size 256)
  EVAL_LIMIT=(--config.eval.limit=2000)
  BEAM=2
  BEST_SECONDS=""
  [ -z "$REAL" ] && [ -f ../shared/data/real_dev.txt ] && REAL=../shared/data/real_dev.txt
else
  RUNS=${RUNS_ARG:-runs/gpu}
  EXPORTS=checkpoints
  SMOKE=(--config configs/tiny.py --config.data_dir=$RUNS/inputs_tiny)
  RED=(--config configs/default.py)
  ORANGE=(--config configs/orange.py)
  BEST=(--config configs/best.py)
  BENCH_TRAIN=(--config configs/default.py --steps 300)
  BENCH_BEST=(--config configs/best.py --steps 300)
  BENCH_DECODE=(--config configs/default.py --num 200000 --batch_size 4096)
  EVAL_LIMIT=()
  BEAM=4
  # Training time of best, in seconds (its max_steps is sized to fit).
  BEST_SECONDS=${BEST_SECONDS:-420}
fi
[ -z "$REAL" ] && [ -f .carry/real_dev.txt ] && REAL=.carry/real_dev.txt
if [ -n "$REAL" ] && [ ! -f "$REAL" ]; then
  echo "warning: no real lines at $REAL: their evaluations are skipped"
  REAL=""
fi
OUT=${OUT:-$RUNS/out}
mkdir -p "$RUNS" "$OUT"
exec > >(tee -a "$OUT/gpu_runs.log") 2>&1
# Compiled programs are kept between the calls of one lease (a resumed run
# recompiles nothing it compiled before).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$RUNS/jax_cache}
export PYTHONUNBUFFERED=1

remaining() { echo $((DEADLINE - $(date +%s))); }
say() { echo "[gpu_runs $(date -u +%H:%M:%S), $(remaining) s left] $*"; }

# --- Set-up: carried wheels, device, versions ------------------------------------
missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(name for name in ("ml_collections", "tensorboardX")
               if importlib.util.find_spec(name) is None))
EOF
)
if [ -n "$missing" ]; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    say "installing carried wheels for: $missing"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$RUNS/site" .whl/*.whl || { echo "error: installing .whl/*.whl failed"; exit 1; }
    export PYTHONPATH="$PWD/$RUNS/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "error: python3 lacks $missing and no wheels are carried in .whl/"; exit 1
  fi
fi
$PY - <<'EOF' || { echo "error: the Python environment cannot run polyflax"; exit 1; }
import platform
import jax, flax, optax, orbax.checkpoint, ml_collections, tensorboardX
print(f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
      f"optax {optax.__version__}, orbax-checkpoint {orbax.checkpoint.__version__}")
print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})")
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader

# --- Helpers -------------------------------------------------------------------------------
# timed RUN PART LIMIT COMMAND...: runs COMMAND under a SIGTERM after LIMIT
# seconds, and appends "PART<TAB>seconds<TAB>status" to runs/RUN.calls.
timed() {
  local run=$1 part=$2 limit=$3; shift 3
  local begin=$(date +%s%N) status milliseconds
  timeout --signal=TERM --kill-after=60 "$limit" "$@"
  status=$?
  milliseconds=$((($(date +%s%N) - begin) / 1000000))
  printf '%s\t%d.%03d\t%d\n' "$part" $((milliseconds / 1000)) $((milliseconds % 1000)) \
      "$status" >> "$RUNS/$run.calls"
  return $status
}

# evaluate RUN OUTPUT_FOLDER CONFIG_ARGS... [--config.eval.* ...]
evaluate() {
  local run=$1 folder=$2; shift 2
  [ -f "$RUNS/$run/$folder/metrics.json" ] && return 0
  timed "$run" "$folder" $(($(remaining) > 60 ? $(remaining) : 60)) \
      $PY main.py "$@" --workdir "$RUNS/$run" --mode=evaluate \
      --config.eval.output_dir="$RUNS/$run/$folder" "${EVAL_LIMIT[@]}" 2>&1 \
      | tr '\r' '\n' | grep -v '^decode:' | tail -12
  return "${PIPESTATUS[0]}"
}

# train_and_evaluate RUN CONFIG_ARGS...: trains (resuming), then evaluates on the
# test split, the real lines and, for best, with beam search. Fails (status 1)
# when the budget ran out first; the next call continues.
train_and_evaluate() {
  local run=$1; shift
  if [ ! -e "$RUNS/$run/trained" ]; then
    local limit=$(($(remaining) - 60))
    if [ $limit -lt 60 ]; then say "no time left to train $run: call again"; return 1; fi
    say "training $run (stopped after $limit s if not done)"
    timed "$run" train "$limit" $PY main.py "$@" --workdir "$RUNS/$run" 2>&1 \
        | tr '\r' '\n' \
        | grep -E --line-buffered '^(generating|model:|compiled|step [0-9]+ |resuming|received|error|Traceback|  File|[A-Za-z]*Error)'
    local status=${PIPESTATUS[0]}
    case $status in
      0) touch "$RUNS/$run/trained" ;;
      143|124) say "$run was stopped for the budget after saving a checkpoint: call again"; return 1 ;;
      *) say "training $run failed with status $status"; return 1 ;;
    esac
  fi
  say "evaluating $run"
  evaluate "$run" eval "$@" || return 1
  if [ -n "$REAL" ]; then
    evaluate "$run" eval_real "$@" --config.eval.test_file="$REAL" || return 1
  fi
  if [ "$run" = best ]; then
    evaluate "$run" eval_beam "$@" --config.eval.beam_size=$BEAM || return 1
  fi
}

stage_smoke() {
  train_and_evaluate smoke "${SMOKE[@]}" || return 1
  timed smoke predict 120 $PY main.py "${SMOKE[@]}" --workdir "$RUNS/smoke" --mode=predict \
      --expr "(k-15)*(2*k+29)" || return 1
  rm -rf "$RUNS/smoke_export"
  timed smoke export 120 $PY main.py "${SMOKE[@]}" --workdir "$RUNS/smoke" --mode=export \
      --config.export.dir="$RUNS/smoke_export" || return 1
}

stage_bench() {
  mkdir -p "$RUNS/bench"
  timed bench train_default 300 $PY bench/bench_train.py "${BENCH_TRAIN[@]}" \
      --json "$RUNS/bench/train_default.json" --profile "$RUNS/bench/profile_train" || return 1
  timed bench train_best 300 $PY bench/bench_train.py "${BENCH_BEST[@]}" \
      --json "$RUNS/bench/train_best.json" || return 1
  timed bench decode 300 $PY bench/bench_decode.py "${BENCH_DECODE[@]}" --methods greedy \
      --json "$RUNS/bench/decode_default.json" --profile "$RUNS/bench/profile_decode" || return 1
}

stage_red() { train_and_evaluate red "${RED[@]}"; }
stage_orange() { train_and_evaluate orange "${ORANGE[@]}"; }
stage_best() {
  # Training steps that fit BEST_SECONDS at the speed the bench stage measured
  # for configs/best.py (the schedule ends there); chosen once, kept on resume.
  if [ -n "$BEST_SECONDS" ] && [ ! -f "$RUNS/best.max_steps" ]; then
    $PY - "$RUNS/bench/train_best.json" "$BEST_SECONDS" > "$RUNS/best.max_steps" <<'EOF'
import json, sys
try:
  with open(sys.argv[1], encoding="utf-8") as f:
    steps_per_second = json.load(f)["steps_per_second"]
except (OSError, ValueError, KeyError):
  steps_per_second = 0.0  # no bench figures: the config's own max_steps
# 15% for validation, checkpoints and the generator thread.
print(int(steps_per_second * float(sys.argv[2]) * 0.85) // 1000 * 1000)
EOF
  fi
  local steps=0
  [ -f "$RUNS/best.max_steps" ] && steps=$(cat "$RUNS/best.max_steps")
  if [ "$steps" -gt 0 ]; then
    say "best: max_steps=$steps (fits ${BEST_SECONDS} s at the measured speed)"
    train_and_evaluate best "${BEST[@]}" --config.max_steps="$steps"
  else
    train_and_evaluate best "${BEST[@]}"
  fi
}

stage_export() {
  local run
  for run in red best; do
    [ -e "$RUNS/$run/trained" ] || { say "$run is not trained yet"; return 1; }
  done
  timed red export 300 $PY main.py "${RED[@]}" --workdir "$RUNS/red" --mode=export \
      --config.export.dir="$EXPORTS/red" || return 1
  timed best export 300 $PY main.py "${BEST[@]}" --workdir "$RUNS/best" --mode=export \
      --config.export.dir="$EXPORTS/best" || return 1
}

pack() {
  # Everything to fetch, at most 8 files of at most 15 MiB each.
  (cd "$RUNS" && find smoke red orange best -maxdepth 3 \( -name 'events.out.tfevents.*' \
      -o -name metrics.json -o -name config.json -o -name trained \) 2>/dev/null;
   ls ./*.calls ./*.max_steps summary.json bench/*.json 2>/dev/null) > "$RUNS/pack.list"
  [ -s "$RUNS/pack.list" ] && tar -czf "$OUT/results.tar.gz" -C "$RUNS" -T "$RUNS/pack.list"
  if [ -d "$RUNS/bench/profile_train" ] || [ -d "$RUNS/bench/profile_decode" ]; then
    tar -czf "$OUT/profile.tar.gz" -C "$RUNS/bench" \
        $(cd "$RUNS/bench" && ls -d profile_train profile_decode 2>/dev/null)
  fi
  if [ -e "$RUNS/red/trained" ] && [ -e "$RUNS/orange/trained" ]; then
    $PY scripts/plot_runs.py "$RUNS/red" "$RUNS/orange" --out "$OUT/red_orange.png" \
        --title "red (batch 512) and orange (batch 256)" || say "warning: no plot (matplotlib?)"
  fi
  for run in red best; do
    if [ -f "$EXPORTS/$run/model.json" ]; then
      tar -czf "$OUT/$run.tar.gz" -C "$EXPORTS" "$run"
    fi
  done
  for file in "$OUT"/*; do
    if [ "$(stat -c %s "$file")" -gt $((15 * 1024 * 1024)) ]; then
      say "warning: $file is over 15 MiB and may not come back"
    fi
  done
}

# --- The stages ------------------------------------------------------------------------------
say "runs in $RUNS, outputs in $OUT; stages: ${STAGES[*]}; real lines: ${REAL:-none}"
for stage in "${STAGES[@]}"; do
  if [ -e "$RUNS/$stage.done" ]; then say "$stage: done before, skipped"; continue; fi
  if [ "$(remaining)" -lt 60 ]; then say "$stage: no time left in this call"; break; fi
  say "=== stage $stage"
  if "stage_$stage"; then
    touch "$RUNS/$stage.done"
    say "$stage: done"
  else
    say "$stage: not finished"
    break
  fi
done

$PY scripts/summarize_runs.py "$RUNS" --json "$RUNS/summary.json" > "$OUT/summary.md"
pack
left=()
for stage in "${ALL_STAGES[@]}"; do [ -e "$RUNS/$stage.done" ] || left+=("$stage"); done
echo
cat "$OUT/summary.md"
if [ ${#left[@]} -eq 0 ]; then
  echo "all stages done"
else
  echo "stages left: ${left[*]} (run the same command again)"
fi
