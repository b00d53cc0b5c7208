#!/usr/bin/env bash
# The generated stream against the fixed split, at small scale on any machine:
# the same model, data folder, batches and number of steps; only train_data
# differs. Prints each run's validation figures at every validation, and the
# last ones side by side.
#
#   bash bench/compare_train_data.sh [RUNS_DIR] [--config.FIELD=VALUE ...]
#
# Defaults: a 998k-parameter model (hidden 128, 3+3 layers, feed-forward
# 256) on a 50,000-line generated dataset (38,000 training lines), batch 64,
# 4,000 steps (about 6.7 epochs of the split), validation every half epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/compare_train_data}
shift || true
common=(--config configs/default.py
        --config.data_dir=inputs/compare_50k --config.generated_size=50000
        --config.model.hidden_dim=128 --config.model.encoder_ff_dim=256
        --config.model.decoder_ff_dim=256
        --config.batch_size=64 --config.max_steps=4000 --config.warmup_steps=300
        --config.val_check_interval=0.5 --config.val_exact_match_examples=1000
        --config.log_every_steps=100 "$@")
for train_data in split generated; do
  echo "=== train_data=$train_data" >&2
  python main.py "${common[@]}" --config.train_data=$train_data \
      --workdir "$runs/$train_data" 2>&1 | tr '\r' '\n' | grep -E "^(model:|step [0-9]+ )" \
      | tee "$runs.$train_data.log"
done
echo
echo "last validation of each run:"
for train_data in split generated; do
  printf '%-10s %s\n' "$train_data" "$(grep '^step ' "$runs.$train_data.log" | tail -1)"
done
