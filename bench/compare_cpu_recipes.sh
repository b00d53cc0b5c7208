#!/usr/bin/env bash
# Model sizes for a CPU-only run, compared at equal wall-clock time: each
# candidate trains for MINUTES minutes on freshly generated lines, with an
# rsqrt schedule (no end, so a cut-off run is comparable at any point), and is
# validated every 19,000 examples on the 2,000-line validation split of a
# 50,000-line generated dataset. Prints each run's validation exact match
# over time.
#
#   bash bench/compare_cpu_recipes.sh [MINUTES] [RUNS_DIR] [NAME ...]
#
# Candidates (all batch 64 in every bucket, dropout 0, 3+3 layers, 8 heads):
#   h128   hidden 128, feed-forward 256 (998k parameters), learning rate 2e-3
#   h192   hidden 192, feed-forward 384 (2.23M), learning rate 1.5e-3
#   h256   hidden 256, feed-forward 512 (4.0M, the reference's), learning rate 1e-3
#   h128b128  h128 at batch 128
set -uo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-15}
runs=${2:-runs/cpu_recipes}
shift 2 2>/dev/null || shift $#
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(h128 h192 h256)
common=(--config configs/default.py
        --config.data_dir=inputs/compare_50k --config.generated_size=50000
        --config.train_data=generated --config.generated_examples_per_epoch=38000
        --config.batch_size=64 --config.constant_per_batch=examples
        --config.max_epochs=100000 --config.lr_schedule=rsqrt --config.warmup_steps=500
        --config.model.dropout_rate=0.0 --config.model.attention_dropout_rate=0.0
        --config.val_check_interval=0.5 --config.val_exact_match_examples=1000
        --config.log_every_steps=100)
size() {
  case $1 in
    h128*) echo --config.model.hidden_dim=128 --config.model.encoder_ff_dim=256 \
               --config.model.decoder_ff_dim=256 --config.learning_rate=2e-3 ;;
    h192*) echo --config.model.hidden_dim=192 --config.model.encoder_ff_dim=384 \
               --config.model.decoder_ff_dim=384 --config.learning_rate=1.5e-3 ;;
    h256*) echo --config.learning_rate=1e-3 ;;
  esac
}
for name in "${names[@]}"; do
  extra=($(size "$name"))
  case $name in *b128) extra+=(--config.batch_size=128) ;; esac
  echo "=== $name: ${extra[*]} ($minutes min)"
  timeout --signal=TERM --kill-after=120 $((minutes * 60)) \
      python main.py "${common[@]}" "${extra[@]}" --workdir "$runs/$name" > "$runs.$name.log" 2>&1
  tr '\r' '\n' < "$runs.$name.log" | grep -E '^(model:|step [0-9]+ )' \
      | sed -E 's/, val (loss|token_accuracy|sequence_accuracy) [0-9.]+//g'
done
