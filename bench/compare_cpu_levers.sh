#!/usr/bin/env bash
# Levers of the CPU recipe, each compared against configs/cpu.py as it stands:
# every arm trains configs/cpu.py for the same STEPS steps (cosine to zero over
# them, so each arm ends as a finished short run), with one lever changed, then
# is scored by greedy decoding of the first 20,000 lines of the generated
# validation split (never real lines). The levers cost the same per step, so
# equal steps are equal wall-clock time; the script prints each arm's time so
# that this can be checked.
#
#   bash bench/compare_cpu_levers.sh [STEPS] [RUNS_DIR] [ARM ...]
#
# Needs the generated splits in inputs/ (`python -m polyflax.data split
# --inputs inputs --seed 0 --size 1000000`). Run it on an otherwise idle
# machine, in the background: `nohup nice bash bench/compare_cpu_levers.sh
# > levers.log 2>&1 &`. Arms:
#   base      configs/cpu.py as it is
#   reversed  digit_order=reversed: digits least significant first in the model
#   ema       reversed, plus an average of the parameters (ema_decay=0.999)
#   mix       reversed, plus 5% of training lines whose linear term cancels
#   lr3       reversed at learning rate 3e-3
#   b32       reversed at batch 32 (twice the steps, at the same examples)
#   reversed_seed1  reversed with another seed (initialisation and batch
#             order): how far two runs of one recipe differ
set -uo pipefail
cd "$(dirname "$0")/.."
steps=${1:-7500}
runs=${2:-runs/levers}
shift 2 2>/dev/null || shift $#
arms=("$@")
[ ${#arms[@]} -eq 0 ] && arms=(base reversed ema mix lr3)
mkdir -p "$runs"
common=(--config configs/cpu.py --config.max_steps="$steps"
        --config.val_check_interval=0.1 --config.val_exact_match_examples=1024
        --config.log_every_steps=500)
lever() {
  case $1 in
    base) ;;
    reversed) echo --config.digit_order=reversed ;;
    ema) echo --config.digit_order=reversed --config.ema_decay=0.999 ;;
    mix) echo --config.digit_order=reversed --config.generated_cancel_fraction=0.05 ;;
    lr3) echo --config.digit_order=reversed --config.learning_rate=3e-3 ;;
    reversed_seed1) echo --config.digit_order=reversed --config.seed=1 ;;
    b32) echo --config.digit_order=reversed --config.batch_size=32 \
              --config.max_steps=$((steps * 2)) ;;
    *) echo "unknown arm $1" >&2; return 1 ;;
  esac
}
for arm in "${arms[@]}"; do
  extra=($(lever "$arm")) || exit 2
  workdir="$runs/$arm"
  echo "=== $arm: ${extra[*]:-(configs/cpu.py)}"
  start=$(date +%s)
  python main.py "${common[@]}" "${extra[@]}" --workdir "$workdir" > "$runs/$arm.train.log" 2>&1
  status=$?
  seconds=$(( $(date +%s) - start ))
  tr '\r' '\n' < "$runs/$arm.train.log" | grep -E '^(model:|compiled|step [0-9]+ )' \
      | sed -E 's/, val (token_accuracy|sequence_accuracy) [0-9.]+//g'
  echo "$arm: training exited $status after ${seconds} s"
  python main.py --config configs/cpu.py "${extra[@]}" --workdir "$workdir" --mode=evaluate \
      --config.eval.test_file=inputs/val_set.txt --config.eval.limit=20000 \
      --config.eval.output_dir="$runs/$arm.val20k" > "$runs/$arm.eval.log" 2>&1
  echo "$arm: 20,000 validation lines, greedy: $(tail -1 "$runs/$arm.eval.log")"
done
