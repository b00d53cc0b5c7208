#!/usr/bin/env bash
# The levers of configs/cpu.py that docs/cpu_recipe.md reports: comparison
# cpu_2026_12_01 of bench/compare_levers.py, where every arm's overrides are
# written out and what each arm writes is described.
#
#   bash bench/compare_cpu_levers.sh [ARM ...] [--runs DIR] [--inputs DIR] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/compare_levers.py cpu_2026_12_01 "$@"
